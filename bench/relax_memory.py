"""How much memory one process keeps as it relaxes molecule after molecule: its resident set size after each one.
Sella's JAX code keeps memory it never gives back, which is why hacknip replaces a Sella worker every
``molecules_per_process("Sella")`` molecules (docs/molecules.md, "Relaxing in internal coordinates (Sella)").

    OMP_NUM_THREADS=1 python bench/relax_memory.py --optimizer Sella --start 900 --n 30
    OMP_NUM_THREADS=1 python bench/relax_memory.py --optimizer BFGS --start 900 --n 30

One process relaxing one molecule after another (``hacknip.data.relaxation.relax``, as a worker does, but never
replaced), BBBP rows ``start`` to ``start + n``, CHGNet, MMFF94 starts, fmax 0.05. Linux only (reads ``/proc/self/status``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from hacknip.data.molecules import EmbedOptions, molecules_to_dataset
from hacknip.data.relaxation import RelaxOptions, calculator_of, relax
from hacknip.plugins.registry import load_backbone

BBBP = Path(__file__).resolve().parents[2] / "shared" / "data" / "moleculenet" / "bbbp.csv"


def resident_mb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="Sella")
    parser.add_argument("--start", type=int, default=900)
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--data", type=Path, default=BBBP)
    parser.add_argument("--target", default="p_np", help="the table's target column (read, not used)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        table = Path(folder) / "rows.csv"
        pd.read_csv(args.data).iloc[args.start:args.start + args.n].to_csv(table, index=False)
        molecules = molecules_to_dataset(table, target=args.target, embed_options=EmbedOptions(force_field="MMFF94"),
                                         on_error="skip")
        calculator = calculator_of(load_backbone("chgnet"))
        print(f"before: {resident_mb()} MB", flush=True)
        options = RelaxOptions(optimizer=args.optimizer)
        started = time.perf_counter()
        for done, sample in enumerate(molecules.samples, 1):
            relax(sample.atoms, calculator, options)
            print(f"{done} molecules: {resident_mb()} MB", flush=True)
        print(f"{args.optimizer}: {len(molecules.samples)} molecules in {time.perf_counter() - started:.0f} s, "
              f"{resident_mb()} MB at the end")


if __name__ == "__main__":
    main()
