"""Featurisation throughput: hacknip (batched, every layer from one forward pass, no needless supercell) versus
the paper's protocol (the network re-run truncated at each layer L, one structure at a time, on supercells
whose lattice vectors exceed the cutoff), same backbone, same process, same structures.

    python bench/featurize_throughput.py --backbone chgnet --n 200
    python bench/featurize_throughput.py --backbone orb-v2-paper:orb-v2-random.ckpt --paper-option inference=orb
    python bench/featurize_throughput.py --backbone orb-v2-paper:orb-v2-random.ckpt --ours-only --threads 1

A backbone that needs supercells (a capped neighbour graph is not supercell-invariant) is compared on identical
inputs: the paper's protocol gets the same supercells as hacknip, built by the backbone's own rule (``orb-v2-paper``'s
is the paper's). ``--option``/``--paper-option KEY=VALUE`` are load options of hacknip's / the paper protocol's
backbone (e.g. ORB's ``inference=orb``: orb-models' own forward pass); both must have the same identity.

Prints structures/second for both, their ratio, and how far apart the two protocols' mean embeddings are: they
must agree as ``numpy.allclose(ours, paper, rtol=1e-5, atol=1e-5)`` (float32 networks summing over 8x more atoms in
a supercell differ from the primitive cell in the last digits). ``--json FILE`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from hacknip.data.read import read_dataset
from hacknip.features.featurize import batch_threads, featurize, layer_matrix
from hacknip.features.store import FeatureStore
from hacknip.features.supercell import cutoff_supercell
from hacknip.plugins.backbone import LATTICE_LENGTHS, supercell_rule
from hacknip.plugins.registry import load_backbone

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matbench" / "matbench_phonons.json.gz"
TOLERANCE = 1e-5


def paper_supercell(atoms, cutoff):
    """The paper's expansion: repeat until every lattice vector is longer than the cutoff."""
    lengths = atoms.cell.lengths()
    return atoms.repeat([max(1, math.ceil(cutoff / length)) for length in lengths])


def paper_inputs(backbone, structures):
    """The paper's supercells, or for a backbone that needs supercells, the very cells hacknip featurises."""
    if not backbone.needs_supercell:
        return [paper_supercell(atoms, backbone.cutoff) for atoms in structures]
    rule = supercell_rule(backbone)
    cells = [cutoff_supercell(atoms, backbone.cutoff, rule) for atoms in structures]
    if rule == LATTICE_LENGTHS:
        assert all(len(cell) == len(paper_supercell(atoms, backbone.cutoff)) for cell, atoms in zip(cells, structures))
    return cells


def paper_protocol(backbone, cells, layers):
    """One structure at a time, the network re-run (truncated) for each layer: mean embeddings (layer, n, width)."""
    out = {layer: [] for layer in layers}
    for layer in layers:
        for cell in cells:
            (features,) = backbone.per_atom_features([cell], [layer])
            out[layer].append(features[layer].astype(np.float64).mean(axis=0))
    return {layer: np.stack(rows) for layer, rows in out.items()}


def load_options(pairs):
    options = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)  # numbers and true/false as the CLI's --backbone-option reads them
        except json.JSONDecodeError:
            options[key] = value
    return options


class Timing:
    """Wall-clock and CPU seconds (this process, all threads) of one protocol. On a shared machine the CPU seconds are
    the fairer measure: other jobs stretch the wall clock of whichever protocol runs while they do."""

    def __init__(self, wall: float, cpu: float) -> None:
        self.wall, self.cpu = wall, cpu


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    return value, Timing(time.perf_counter() - wall, time.process_time() - cpu)


def main():
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as hacknip's CLI does; must precede the torch import
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="chgnet")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--option", action="append", default=[], help="load option of hacknip's backbone, KEY=VALUE")
    parser.add_argument("--paper-option", action="append", default=[],
                        help="load option of the paper protocol's backbone, KEY=VALUE")
    parser.add_argument("--threads", type=int, help="hacknip's batches at once (default: featurize's own choice)")
    parser.add_argument("--ours-only", action="store_true",
                        help="time hacknip's side alone (e.g. to compare --threads settings); no paper protocol, "
                             "no agreement check")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-without-supercells", action="store_true",
                        help="do not also time the paper's protocol on primitive cells")
    args = parser.parse_args()

    import torch

    dataset = read_dataset(args.data).head(args.n)
    structures = [sample.atoms for sample in dataset.samples]
    backbone = load_backbone(args.backbone, **load_options(args.option))
    paper_backbone = backbone if args.ours_only else load_backbone(args.backbone, **load_options(args.paper_option))
    if paper_backbone.identity() != backbone.identity():
        raise SystemExit("--option / --paper-option changed the backbone identity: the features would differ")
    layers = list(range(len(backbone.layer_widths)))
    backbone.per_atom_features(structures[:2], layers)  # warm-up (lazy initialisation, allocator)
    paper_backbone.per_atom_features(structures[:2], layers)

    at_once = batch_threads(backbone, args.threads)
    with tempfile.TemporaryDirectory() as home:
        load_at_start = os.getloadavg()[0]
        report, ours_seconds = timed(lambda: featurize(dataset, backbone, FeatureStore(home), batch_size=args.batch_size,
                                                       threads=args.threads))
        ours = {layer: layer_matrix(report.features, report.keys, [layer], ("mean",)) for layer in layers}
    if args.ours_only:
        print(f"ours: {len(structures) / ours_seconds.wall:.3g} structures/s, {len(structures) / ours_seconds.cpu:.3g} per "
              f"CPU second, {ours_seconds.cpu / ours_seconds.wall:.2f} cores busy, "
              f"{at_once} batch(es) at once, load {load_at_start:.2f} -> {os.getloadavg()[0]:.2f}")
        return
    cells = paper_inputs(paper_backbone, structures)
    paper, paper_seconds = timed(lambda: paper_protocol(paper_backbone, cells, layers))
    unbatched, unbatched_seconds = (None, None) if args.skip_without_supercells else timed(
        lambda: paper_protocol(paper_backbone, structures, layers))

    difference = max(float(np.abs(ours[layer] - paper[layer]).max()) for layer in layers)
    relative = max(float((np.abs(ours[layer] - paper[layer]) / np.maximum(np.abs(paper[layer]), 1e-12)).max())
                   for layer in layers)
    worst = max(layers, key=lambda layer: float(np.abs(ours[layer] - paper[layer]).max()))
    at_worst = np.unravel_index(np.argmax(np.abs(ours[worst] - paper[worst])), paper[worst].shape)
    value_at_worst = float(abs(paper[worst][at_worst]))
    agree = all(np.allclose(ours[layer], paper[layer], rtol=TOLERANCE, atol=TOLERANCE) for layer in layers)
    results = {
        "backbone": args.backbone,
        "identity": backbone.identity(),
        "structures": len(structures),
        "layers": len(layers),
        "needs_supercell": backbone.needs_supercell,
        "supercell_rule": supercell_rule(backbone) if backbone.needs_supercell else None,
        "options": load_options(args.option),
        "paper_options": load_options(args.paper_option),
        "atoms_featurised_per_structure_paper": sum(map(len, cells)) / len(cells),
        "torch_threads": torch.get_num_threads(),
        "ours_batches_at_once": at_once,
        "load_average_1min_at_start": load_at_start,
        "machine": platform.processor() or platform.machine(),
        "load_average_1min_at_end": os.getloadavg()[0],
        "ours_structures_per_s": len(structures) / ours_seconds.wall,
        "paper_structures_per_s": len(structures) / paper_seconds.wall,
        "speedup_vs_paper": paper_seconds.wall / ours_seconds.wall,
        "ours_structures_per_cpu_s": len(structures) / ours_seconds.cpu,
        "paper_structures_per_cpu_s": len(structures) / paper_seconds.cpu,
        "speedup_vs_paper_cpu_time": paper_seconds.cpu / ours_seconds.cpu,
        "ours_cores_busy": ours_seconds.cpu / ours_seconds.wall,
        "paper_cores_busy": paper_seconds.cpu / paper_seconds.wall,
        "max_abs_difference_of_mean_embeddings": difference,
        "max_relative_difference_of_mean_embeddings": relative,
        "magnitude_where_the_difference_is_largest": value_at_worst,
        "allclose_rtol_atol_1e-5": agree,
    }
    if unbatched is not None:
        results.update({
            "paper_without_supercells_structures_per_s": len(structures) / unbatched_seconds.wall,
            "speedup_vs_paper_without_supercells": unbatched_seconds.wall / ours_seconds.wall,
            "speedup_vs_paper_without_supercells_cpu_time": unbatched_seconds.cpu / ours_seconds.cpu,
            "max_abs_difference_without_supercells": max(
                float(np.abs(ours[layer] - unbatched[layer]).max()) for layer in layers),
        })
    for key, value in results.items():
        if key not in ("identity", "options", "paper_options"):
            print(f"{key:45s} {value:.4g}" if isinstance(value, float) else f"{key:45s} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not agree:
        raise SystemExit(f"embeddings differ by up to {difference:.3g} (relative {relative:.3g}): beyond rtol=atol="
                         f"{TOLERANCE}, the protocols do not agree")


if __name__ == "__main__":
    main()
