"""Relaxing many molecules at once against one at a time: the same BFGS, the same start geometries, the same fmax.

    python bench/relax_batched.py --n 50 --save-geometries bbbp50.extxyz          # makes the MMFF94 starts (RDKit)
    python bench/relax_batched.py --geometries bbbp50.extxyz --device cuda --batch-sizes 1,8,50 --json relax.json

Arms: ``one`` relaxes each molecule alone through an ASE calculator over ``energies_and_forces`` (today's path in a
worker process); ``batch N`` relaxes them N at a time with :func:`hacknip.data.relaxation.relax_in_batches` (every
step's forces in one pass; a molecule leaves as it converges and the next takes its place). For each arm: wall-clock
seconds (after CUDA has finished), CPU seconds of this process and its live children (the graph workers of a
backbone given ``--option graph_workers=N``, started by the warm-up; psutil), the
backbone's passes, molecules converged, mean steps, and how far its geometries are from the first arm's (largest
atomic distance, Å). One warm-up pass before the first arm. The first 50 BBBP molecules are the issue's benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "moleculenet" / "bbbp.csv"


def start_geometries(data: Path, n: int, smiles_column: str) -> list:
    """The first ``n`` molecules of ``data`` that RDKit embeds, MMFF94-optimised (the start a relaxation gets)."""
    import pandas as pd

    from hacknip.data.molecules import EmbedOptions, MoleculeError, embed, parse_smiles

    molecules = []
    for smiles in pd.read_csv(data)[smiles_column]:
        try:
            atoms = embed(parse_smiles(smiles), EmbedOptions(force_field="MMFF94"))
        except MoleculeError:
            continue
        atoms.info = {"smiles": smiles}
        molecules.append(atoms)
        if len(molecules) == n:
            return molecules
    return molecules


class Counting:
    """The backbone, counting its passes and the structures in them."""

    def __init__(self, backbone) -> None:
        self.backbone = backbone
        self.name = backbone.name
        self.passes = 0
        self.structures = 0

    def energies_and_forces(self, structures):
        self.passes += 1
        self.structures += len(structures)
        return self.backbone.energies_and_forces(structures)


def cpu_seconds() -> float:
    """CPU seconds of this process and of its live children (a backbone's graph workers), all threads."""
    import psutil

    processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run_arm(backbone, molecules, batch: int, options, vacuum: float, device: str) -> tuple[dict, list]:
    from hacknip.data.relaxation import BackboneForces, relax, relax_in_batches

    counting = Counting(backbone)
    synchronise(device)
    wall, cpu = time.perf_counter(), cpu_seconds()
    if batch == 1:
        results = [relax(atoms, BackboneForces(counting), options, vacuum) for atoms in molecules]
    else:
        finished = dict(relax_in_batches(molecules, counting, options, vacuum, batch_size=batch))
        failed = {index: outcome for index, outcome in finished.items() if isinstance(outcome, Exception)}
        if failed:
            raise SystemExit(f"batch {batch}: {len(failed)} molecules failed, e.g. {next(iter(failed.values()))!r}")
        results = [finished[index] for index in range(len(molecules))]
    synchronise(device)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    steps = [result.steps for result in results]
    return {
        "arm": "one at a time" if batch == 1 else f"batches of {batch}",
        "batch": batch,
        "molecules": len(molecules),
        "converged": sum(result.converged for result in results),
        "mean_steps": statistics.mean(steps),
        "max_steps": max(steps),
        "passes": counting.passes,
        "evaluations": counting.structures,
        "wall_s": wall,
        "cpu_s": cpu,
        "wall_s_per_molecule": wall / len(molecules),
        "cpu_s_per_molecule": cpu / len(molecules),
    }, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="chgnet")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--smiles-column", default="smiles")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--start", type=int, default=0, help="skip the first molecules (to share the arms' molecules "
                                                             "among processes)")
    parser.add_argument("--geometries", type=Path, help="start geometries (extxyz) instead of embedding --data")
    parser.add_argument("--save-geometries", type=Path, help="write the start geometries here (extxyz) and stop")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--option", action="append", default=[],
                        help="backbone load option KEY=VALUE, e.g. graph_workers=8 (chgnet)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--batch-sizes", default="1,8,50", help="comma-separated; 1 is one molecule at a time")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import ase.io

    if args.geometries:
        molecules = ase.io.read(args.geometries, index=f"{args.start}:{args.start + args.n}")
    else:
        molecules = start_geometries(args.data, args.start + args.n, args.smiles_column)[args.start:]
    if args.save_geometries:
        ase.io.write(args.save_geometries, molecules, format="extxyz")
        print(f"wrote {len(molecules)} start geometries to {args.save_geometries}")
        return

    import torch

    from hacknip.data.relaxation import RelaxOptions
    from hacknip.plugins.registry import load_backbone

    torch.set_num_threads(args.threads)
    options = {key: json.loads(value) for key, _, value in (text.partition("=") for text in args.option)}
    backbone = load_backbone(args.backbone, device=args.device, **options)
    relax_options = RelaxOptions(fmax=args.fmax, steps=args.steps)
    vacuum = float(backbone.cutoff)
    backbone.energies_and_forces(molecules[:2])  # warm-up; starts a backbone's graph workers
    sizes = sorted({len(atoms) for atoms in molecules})
    print(f"{len(molecules)} molecules, {sizes[0]}-{sizes[-1]} atoms, {args.backbone} on {args.device}, "
          f"{args.threads} torch thread(s), BFGS to {args.fmax} eV/Å, at most {args.steps} steps, options {options}",
          flush=True)
    if args.device.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    rows, reference = [], None
    for batch in (int(text) for text in args.batch_sizes.split(",")):
        row, results = run_arm(backbone, molecules, batch, relax_options, vacuum, args.device)
        if reference is None:
            reference = results
        row["largest_distance_from_first_arm"] = max(
            float(abs(result.atoms.positions - first.atoms.positions).max()) for result, first in zip(results, reference))
        row["steps_differ_from_first_arm"] = sum(r.steps != f.steps for r, f in zip(results, reference))
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]
    print("\n| arm | converged | mean steps | passes | wall s / molecule | CPU s / molecule | fewer wall s | "
          "fewer CPU s |\n|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['arm']} | {row['converged']}/{row['molecules']} | {row['mean_steps']:.1f} | {row['passes']} | "
              f"{row['wall_s_per_molecule']:.3f} | {row['cpu_s_per_molecule']:.3f} | "
              f"{base['wall_s'] / row['wall_s']:.1f}× | {base['cpu_s'] / row['cpu_s']:.1f}× |")
    if args.json:
        args.json.write_text(json.dumps({"argv": sys.argv, "device": args.device, "threads": args.threads,
                                         "options": options, "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
