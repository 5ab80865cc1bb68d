"""How far each official Matbench test fold's features lie outside their training rows' range (what ``clip_features``
of the network heads acts on).

    python bench/feature_range.py chgnet@all matminer:modnet            # features as stored by earlier runs

For each feature expression (as ``hacknip.Featurizer`` takes it, pooled mean+max+std like the ``all-layers`` preset)
and fold: test rows with at least one feature outside the fold's training minimum–maximum, the share of such cells,
and the largest excess in units of that feature's training range (a row at 1.0 lies one whole range beyond the
edge). Columns with a non-finite value anywhere are left out. Featurises into the store what is missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matbench"


def excess_over_range(X_train: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    """Per test cell, how far it lies outside the training range, in units of that range (0 inside)."""
    low, high = X_train.min(axis=0), X_train.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return np.maximum(low - X_test, X_test - high).clip(min=0) / span


def main() -> None:
    import hacknip
    from hacknip.evaluation.crossval import matbench_folds

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features", nargs="+", help="feature expressions, e.g. chgnet@all matminer:modnet")
    parser.add_argument("--task", default="matbench_phonons")
    parser.add_argument("--data-dir", type=Path, default=DATA)
    args = parser.parse_args()

    data = hacknip.read_dataset(args.data_dir / f"{args.task}.json.gz")
    folds = matbench_folds([s.id for s in data.samples], args.task, args.data_dir / "matbench_v0.1_validation.json.gz")
    structures = [sample.atoms for sample in data.samples]
    for expression in args.features:
        X = hacknip.Featurizer(expression, pooling="mean+max+std").fit_transform(structures)
        X = X[:, np.isfinite(X).all(axis=0)]
        for number, (train, test) in enumerate(folds):
            excess = excess_over_range(X[train], X[test])
            outside = excess > 0
            print(f"{expression} fold {number}: {outside.any(axis=1).sum()}/{len(test)} test rows have a feature "
                  f"outside the training range; {outside.mean() * 100:.2f}% of cells; largest excess "
                  f"{excess.max():.1f} ranges")


if __name__ == "__main__":
    main()
