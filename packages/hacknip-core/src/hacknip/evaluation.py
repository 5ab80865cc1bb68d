"""Evaluation: the official Matbench folds (or seeded KFold), metrics, the dummy model and the layer sweep."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hacknip.head import Head

MATBENCH_SEED = 18012019
N_FOLDS = 5
Folds = list[tuple[np.ndarray, np.ndarray]]


def matbench_folds(ids: Sequence[str], task: str, validation_file: str | Path) -> Folds:
    """The official Matbench v0.1 test folds, restricted to ``ids`` (a slice of the task keeps its folds)."""
    opener = gzip.open if str(validation_file).endswith(".gz") else open
    with opener(validation_file, "rt") as handle:
        splits = json.load(handle)["splits"]
    if task not in splits:
        raise ValueError(f"{validation_file} has no folds for {task}")
    position = {sample_id: i for i, sample_id in enumerate(ids)}
    unknown = set(ids) - {i for fold in splits[task].values() for i in fold["test"]}
    if unknown:
        raise ValueError(f"{len(unknown)} ids are not in the official {task} folds (e.g. {sorted(unknown)[0]})")
    folds = []
    for name in sorted(splits[task]):
        test = np.array(sorted(position[i] for i in splits[task][name]["test"] if i in position), dtype=int)
        train = np.setdiff1d(np.arange(len(ids)), test)
        folds.append((train, test))
    return folds


def random_folds(n: int, n_splits: int = N_FOLDS, seed: int = MATBENCH_SEED) -> Folds:
    from sklearn.model_selection import KFold

    if n < n_splits:
        raise ValueError(f"{n} samples are too few for {n_splits}-fold cross-validation")
    return [(train, test) for train, test in KFold(n_splits, shuffle=True, random_state=seed).split(np.arange(n))]


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    error = y_pred - y_true
    total = np.sum((y_true - y_true.mean()) ** 2)
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "r2": float(1 - np.sum(error**2) / total) if total > 0 else float("nan"),
    }


@dataclass
class CVResult:
    folds: list[dict[str, float]]
    """Per fold: ``fold``, ``mae``, ``rmse``, ``r2``."""
    predictions: np.ndarray
    """Out-of-fold prediction of every sample."""

    @property
    def mae_mean(self) -> float:
        return float(np.mean([f["mae"] for f in self.folds]))

    @property
    def mae_std(self) -> float:
        return float(np.std([f["mae"] for f in self.folds]))


def cross_validate(X: np.ndarray, y: np.ndarray, folds: Folds, make_head: Callable[[], Head],
                   on_fold: Callable[[], None] | None = None) -> CVResult:
    """Fit a fresh head on each training fold (features standardised on that fold) and score its test fold."""
    from sklearn.preprocessing import StandardScaler

    predictions = np.full(len(y), np.nan)
    scores = []
    for number, (train, test) in enumerate(folds):
        scaler = StandardScaler().fit(X[train])
        head = make_head().fit(scaler.transform(X[train]), y[train])
        predictions[test] = head.predict(scaler.transform(X[test]))
        scores.append({"fold": number, **regression_metrics(y[test], predictions[test])})
        if on_fold:
            on_fold()
    return CVResult(scores, predictions)


def dummy_cv(y: np.ndarray, folds: Folds) -> CVResult:
    """The Matbench dummy model: predict the training-fold mean."""
    predictions = np.full(len(y), np.nan)
    scores = []
    for number, (train, test) in enumerate(folds):
        predictions[test] = y[train].mean()
        scores.append({"fold": number, **regression_metrics(y[test], predictions[test])})
    return CVResult(scores, predictions)


def best_layer(per_layer: Sequence[dict]) -> int:
    return min(per_layer, key=lambda entry: entry["mae_mean"])["layer"]
