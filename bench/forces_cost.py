"""What one force evaluation of a molecule costs, the quantity a relaxation step pays: the backbone's ASE calculator
against its ``energies_and_forces`` (and, for CHGNet, the network's own ``task="ef"`` pass, which keeps the graph of
the gradient for training), on the same MMFF94-optimised BBBP conformers, alternating, in one process.

    OMP_NUM_THREADS=1 python bench/forces_cost.py --backbone chgnet --n 12 --repeats 3

One torch thread, CPU time (``time.process_time``). Prints CPU seconds per evaluation for each path and each repeat,
the mean, its ratio to the calculator's, and the largest difference in forces from the calculator's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "moleculenet" / "bbbp.csv"


def paths(backbone):
    """name -> function(atoms) -> forces"""
    calculator = backbone.calculator()

    def with_calculator(atoms):
        atoms = atoms.copy()
        atoms.calc = calculator
        return atoms.get_forces()

    found = {"ASE calculator": with_calculator,
             "energies_and_forces": lambda atoms: backbone.energies_and_forces([atoms])[0][1]}
    if backbone.name == "chgnet":
        def chgnet_ef(atoms):
            output = backbone.network([backbone._graph(atoms, 0)], task="ef")
            return output["f"][0].detach().numpy()

        found["CHGNet task='ef'"] = chgnet_ef
    return found


def mmff94_conformers(data: Path, n: int, vacuum: float) -> list:
    """The first ``n`` molecules of ``data`` that embed, MMFF94-optimised and boxed as a relaxation boxes them."""
    import pandas as pd

    from hacknip.data.molecules import EmbedOptions, MoleculeError, embed, parse_smiles
    from hacknip.data.structures import boxed

    molecules = []
    for text in pd.read_csv(data)["smiles"]:
        try:
            molecules.append(boxed(embed(parse_smiles(text), EmbedOptions(force_field="MMFF94")), vacuum))
        except MoleculeError:
            continue
        if len(molecules) == n:
            break
    return molecules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="chgnet")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import torch

    from hacknip.plugins.registry import load_backbone

    torch.set_num_threads(1)
    backbone = load_backbone(args.backbone)
    molecules = mmff94_conformers(args.data, args.n, backbone.cutoff)
    found = paths(backbone)
    reference = [found["ASE calculator"](atoms) for atoms in molecules]
    # comparing every path with the calculator also pays for each path's first call before the timing starts
    differences = {name: max(float(np.abs(np.asarray(force(atoms)) - ref).max())
                             for atoms, ref in zip(molecules, reference, strict=True)) for name, force in found.items()}
    print(f"{len(molecules)} molecules, {min(map(len, molecules))}-{max(map(len, molecules))} atoms")
    seconds = {name: [] for name in found}
    for repeat in range(args.repeats):
        for name, force in found.items():
            started = time.process_time()
            for atoms in molecules:
                force(atoms)
            seconds[name].append((time.process_time() - started) / len(molecules))
            print(f"repeat {repeat}: {name}: {seconds[name][-1]:.4f} CPU s per evaluation", flush=True)
    reference_cost = statistics.mean(seconds["ASE calculator"])
    print("\n| path | CPU s per evaluation | fewer CPU s than the calculator | largest force difference (eV/Å) |")
    print("|---|---|---|---|")
    for name, costs in seconds.items():
        mean = statistics.mean(costs)
        print(f"| {name} | {mean:.4f} | {reference_cost / mean:.2f}× | {differences[name]:.1e} |")


if __name__ == "__main__":
    main()
