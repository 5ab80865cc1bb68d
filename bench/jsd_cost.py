"""Cost of a per-atom JSD map (hacknip.analysis.jsd): the backbone forward pass and the JSD, timed apart, on the
ordered 192-atom cubic LLZO cell of tests/llzo.py (built offline).

    python bench/jsd_cost.py --backbone chgnet --repeats 3

Prints the seconds to load the backbone, then for each repeat the forward pass over every layer and the JSD between
consecutive layers (views and divergences), and the best of the repeats.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the LLZO builder lives with the tests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="chgnet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch
    from llzo import llzo_atoms

    from hacknip.analysis.jsd import jsd_across_depth
    from hacknip.plugins.registry import load_backbone

    atoms = llzo_atoms()
    started = time.perf_counter()
    backbone = load_backbone(args.backbone, device=args.device)
    print(f"{backbone.name}: loaded in {time.perf_counter() - started:.2f} s; {len(atoms)} atoms "
          f"({atoms.get_chemical_formula()}), layers 0-{len(backbone.layer_widths) - 1}, "
          f"torch threads {torch.get_num_threads()}, cpu count {os.cpu_count()}")
    layers = list(range(len(backbone.layer_widths)))
    forward, divergence = [], []
    for repeat in range(args.repeats):
        started = time.perf_counter()
        features = backbone.per_atom_features([atoms], layers)[0]
        forward.append(time.perf_counter() - started)
        started = time.perf_counter()
        matrix = jsd_across_depth(features)
        divergence.append(time.perf_counter() - started)
        print(f"repeat {repeat + 1}: forward pass {forward[-1]:.3f} s, JSD {divergence[-1] * 1000:.1f} ms "
              f"({matrix.shape[1]} transitions, max {matrix.max():.4f} bits)")
    print(f"best: forward pass {min(forward):.3f} s, JSD {min(divergence) * 1000:.1f} ms, "
          f"together {min(forward) + min(divergence):.3f} s")


if __name__ == "__main__":
    main()
