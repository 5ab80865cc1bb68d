"""Cost of relaxing molecules with a backbone's own calculator: seconds per BFGS step, and what a whole dataset
would take at the default 100 steps.

    OMP_NUM_THREADS=1 python bench/relax_cost.py --backbone chgnet --n 3 --steps 20

Embeds the first ``--n`` molecules of ``--data`` (RDKit ETKDG, as hacknip does), runs ``--steps`` BFGS steps on each
(hacknip.data.molecules.relax, fmax 0.01 eV/Å) and prints atoms, seconds per step, and the projection for every row of
the table at 100 steps.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "moleculenet" / "bbbp.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="chgnet")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--smiles-column", default="smiles")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import pandas as pd

    from hacknip.data.molecules import RelaxOptions, embed, parse_smiles, relax
    from hacknip.plugins.registry import load_backbone

    table = pd.read_csv(args.data)
    column = next(c for c in table.columns if c.lower() == args.smiles_column.lower())
    calculator = load_backbone(args.backbone).calculator()
    per_step = []
    for smiles in table[column][: args.n]:
        atoms = embed(parse_smiles(smiles))
        started = time.perf_counter()
        result = relax(atoms, calculator, RelaxOptions(steps=args.steps))
        seconds = (time.perf_counter() - started) / max(result.steps, 1)
        per_step.append(seconds)
        print(f"{len(atoms):4d} atoms  {result.steps:3d} steps  {seconds:.3f} s/step  fmax {result.fmax:.3g} eV/Å")
    mean = sum(per_step) / len(per_step)
    print(f"mean {mean:.3f} s/step -> {len(table)} molecules x 100 steps ~ {mean * 100 * len(table) / 3600:.1f} h "
          f"(one process, this machine)")


if __name__ == "__main__":
    main()
