"""What relaxing molecules with a backbone costs, and what makes it cheaper: CPU seconds and steps per molecule for
the path before (ETKDG conformer, the backbone's ASE calculator, BFGS) against today's (an MMFF94-optimised start,
the backbone's own energy-and-forces pass, each optimiser of ``--optimizers``), to fmax 0.05 and then on to 0.01 eV/Å
along the same trajectory; and the cost of one force evaluation per molecule when molecules are batched.

    OMP_NUM_THREADS=1 python bench/relax_cost.py --backbone chgnet --n 8 --max-steps 500 --optimizers BFGS,Sella

A long set can run in parts side by side (``--skip 25 --n 50`` beside ``--n 25``, each output to a log), and
``--summarise LOG LOG`` prints the summary of them all.

One process, one torch thread, CPU time (``time.process_time``); each molecule goes through every arm in turn. For
each arm and molecule it prints the steps and
CPU seconds to reach each fmax, then per arm: molecules converged, mean steps and CPU s, and the ratio to the path
before. It also prints how far the 0.05 geometry is from the 0.01 one: RMSD after alignment and the distance between
the two mean-pooled last-layer embeddings, against the median distance between different molecules' embeddings.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "moleculenet" / "bbbp.csv"
THRESHOLDS = (0.05, 0.01)


def relax_in_stages(atoms, calculator, max_steps: int, optimizer_name: str = "BFGS"):
    """The optimiser to each threshold in turn on one trajectory, converged when the largest atomic force is below
    it: [(fmax, converged, steps so far, CPU s so far, positions)]."""
    import numpy as np

    from hacknip.data.relaxation import optimizer_class

    atoms.calc = calculator
    started = time.process_time()
    optimizer = optimizer_class(optimizer_name)(atoms, logfile=None)  # Sella's set-up counts: it is part of its cost
    stages = []
    for fmax in THRESHOLDS:
        optimizer.run(fmax=fmax, steps=max(0, max_steps - optimizer.nsteps))
        converged = float(np.linalg.norm(atoms.get_forces(), axis=1).max()) < fmax
        stages.append((fmax, converged, optimizer.nsteps, time.process_time() - started, atoms.positions.copy()))
    return stages


def start_geometry(smiles: str, force_field: str | None, vacuum: float):
    from hacknip.data.molecules import EmbedOptions, embed, parse_smiles
    from hacknip.data.structures import boxed

    return boxed(embed(parse_smiles(smiles), EmbedOptions(force_field=force_field)), vacuum)


def batch_costs(backbone, molecules, sizes) -> dict[int, float]:
    """CPU seconds of energies_and_forces per molecule, for each batch size, over the same molecules."""
    costs = {}
    backbone.energies_and_forces(molecules[:1])  # warm up
    for size in sizes:
        started = time.process_time()
        for first in range(0, len(molecules), size):
            backbone.energies_and_forces(molecules[first:first + size])
        costs[size] = (time.process_time() - started) / len(molecules)
    return costs


def embedding(backbone, atoms):
    import numpy as np

    last = len(backbone.layer_widths) - 1
    return np.asarray(backbone.per_atom_features([atoms], [last])[0][last]).mean(axis=0)


def print_summary(summary: dict[str, list], max_steps: int) -> None:
    """Per arm and threshold: molecules converged, mean steps and CPU s, and the ratio to the first arm's."""
    before = {}  # fmax -> the first arm's CPU s per molecule
    for arm, rows in summary.items():
        for index, fmax in enumerate(THRESHOLDS):
            done = [row[index] for row in rows]
            converged = sum(stage[1] for stage in done)
            steps = statistics.mean(stage[2] for stage in done)
            seconds = statistics.mean(stage[3] for stage in done)
            ratio = before.setdefault(fmax, seconds) / seconds
            print(f"{arm} | fmax {fmax}: {converged}/{len(done)} converged within {max_steps} steps, "
                  f"mean {steps:.0f} steps, {seconds:.1f} CPU s per molecule ({ratio:.2f}x fewer than before)")


MOLECULE_LINE = re.compile(r"^(?P<arm>[^|]+?) \| +\d+ atoms \| (?P<stages>.*)$")
STAGE = re.compile(r"fmax (?P<fmax>[\d.]+): (?P<state>converged|NOT converged) at step (?P<steps>\d+), "
                   r"(?P<seconds>[\d.]+) CPU s")


def read_logs(paths: list[Path]) -> dict[str, list]:
    """The per-molecule lines this script printed, from one or more logs (parts of one set run side by side)."""
    summary: dict[str, list] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if match := MOLECULE_LINE.match(line):
                summary.setdefault(match["arm"], []).append([
                    (float(stage["fmax"]), stage["state"] == "converged", int(stage["steps"]), float(stage["seconds"]),
                     None) for stage in STAGE.finditer(match["stages"])])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="chgnet")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--smiles-column", default="smiles")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--batch-sizes", default="1,2,4,8")
    parser.add_argument("--optimizers", default="BFGS", help="today's path with each of these (BFGS, Sella, ...)")
    parser.add_argument("--skip", type=int, default=0, help="start at this row: to run a set's parts side by side")
    parser.add_argument("--summarise", type=Path, nargs="+", metavar="LOG",
                        help="only print the summary of the molecules in these logs of this script")
    args = parser.parse_args()
    if args.summarise:
        print_summary(read_logs(args.summarise), args.max_steps)
        return

    import numpy as np
    import pandas as pd
    import torch
    from ase.build import minimize_rotation_and_translation

    from hacknip.data.relaxation import BackboneForces
    from hacknip.plugins.registry import load_backbone

    torch.set_num_threads(1)
    table = pd.read_csv(args.data)
    column = next(c for c in table.columns if c.lower() == args.smiles_column.lower())
    smiles = list(table[column][args.skip: args.n])
    backbone = load_backbone(args.backbone)
    vacuum = backbone.cutoff
    arms = {"before: ETKDG, ASE calculator, BFGS": (None, backbone.calculator(), "BFGS")}
    for name in args.optimizers.split(","):
        arms[f"now: MMFF94 start, energies_and_forces, {name}"] = ("MMFF94", BackboneForces(backbone), name)
    summary, embeddings, drifts = {arm: [] for arm in arms}, [], []
    for force_field, calculator, _ in arms.values():
        warm = start_geometry(smiles[0], force_field, vacuum)
        warm.calc = calculator
        warm.get_forces()  # the first pass pays for torch's start-up, not the arm
    for text in smiles:  # each molecule through every arm in turn, so that a busy spell slows all arms alike
        for arm, (force_field, calculator, optimizer_name) in arms.items():
            atoms = start_geometry(text, force_field, vacuum)
            stages = relax_in_stages(atoms, calculator, args.max_steps, optimizer_name)
            summary[arm].append(stages)
            print(f"{arm} | {len(atoms):3d} atoms | " + " | ".join(
                f"fmax {f}: {'converged' if ok else 'NOT converged'} at step {steps}, {seconds:.1f} CPU s"
                for f, ok, steps, seconds, _ in stages), flush=True)
            if force_field is not None and optimizer_name == "BFGS":
                loose, tight = atoms.copy(), atoms.copy()
                loose.positions, tight.positions = stages[0][4], stages[1][4]
                minimize_rotation_and_translation(tight, loose)
                rmsd = float(np.sqrt(((loose.positions - tight.positions) ** 2).sum(axis=1).mean()))
                pair = embedding(backbone, loose), embedding(backbone, tight)
                embeddings.append(pair[1])
                drifts.append((rmsd, float(np.linalg.norm(pair[0] - pair[1]))))
    print()
    print_summary(summary, args.max_steps)
    if drifts:
        between = [float(np.linalg.norm(a - b)) for i, a in enumerate(embeddings) for b in embeddings[i + 1:]]
        print(f"0.05 against 0.01 geometry: RMSD {statistics.mean(d[0] for d in drifts):.3f} Å (max "
              f"{max(d[0] for d in drifts):.3f}); embedding distance {statistics.mean(d[1] for d in drifts):.4f} "
              f"(max {max(d[1] for d in drifts):.4f}) against {statistics.median(between):.4f} between molecules "
              "(median)")
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    molecules = [start_geometry(text, None, vacuum) for text in smiles]
    costs = batch_costs(backbone, molecules, sizes)
    print("energies_and_forces, CPU s per molecule: " + ", ".join(f"batch {size}: {cost:.3f}"
                                                                  for size, cost in costs.items()))


if __name__ == "__main__":
    main()
