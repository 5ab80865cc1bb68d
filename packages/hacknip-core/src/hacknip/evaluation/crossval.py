"""Evaluation: the official Matbench folds (or seeded KFold), metrics, the dummy model and the layer sweep."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hacknip.errors import InputError
from hacknip.plugins.head import CLASSIFICATION, REGRESSION, Head

MATBENCH_SEED = 18012019
N_FOLDS = 5
Folds = list[tuple[np.ndarray, np.ndarray]]


def matbench_folds(ids: Sequence[str], task: str, validation_file: str | Path) -> Folds:
    """The official Matbench v0.1 test folds, restricted to ``ids`` (a slice of the task keeps its folds)."""
    opener = gzip.open if str(validation_file).endswith(".gz") else open
    with opener(validation_file, "rt") as handle:
        splits = json.load(handle)["splits"]
    if task not in splits:
        raise InputError(f"{validation_file} has no folds for {task}")
    position = {sample_id: i for i, sample_id in enumerate(ids)}
    unknown = set(ids) - {i for fold in splits[task].values() for i in fold["test"]}
    if unknown:
        raise InputError(f"{len(unknown)} ids are not in the official {task} folds (e.g. {sorted(unknown)[0]})")
    folds = []
    for name in sorted(splits[task]):
        test = np.array(sorted(position[i] for i in splits[task][name]["test"] if i in position), dtype=int)
        train = np.setdiff1d(np.arange(len(ids)), test)
        folds.append((train, test))
    return folds


def random_folds(n: int, n_splits: int = N_FOLDS, seed: int = MATBENCH_SEED) -> Folds:
    from sklearn.model_selection import KFold

    if n < n_splits:
        raise InputError(f"{n} samples are too few for {n_splits}-fold cross-validation")
    return [(train, test) for train, test in KFold(n_splits, shuffle=True, random_state=seed).split(np.arange(n))]


def stratified_folds(y: np.ndarray, n_splits: int = N_FOLDS, seed: int = MATBENCH_SEED) -> Folds:
    """Matbench's folds for classification tasks: StratifiedKFold(5, shuffle=True, random_state=MATBENCH_SEED)."""
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(np.asarray(y, dtype=int)).min())
    if smallest < n_splits:
        raise InputError(f"the rarer class has {smallest} samples: too few for {n_splits} stratified folds")
    splitter = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
    return [(train, test) for train, test in splitter.split(np.zeros(len(y)), y)]


def infer_task(y: np.ndarray) -> str:
    """Classification when every target is 0 or 1 (both present), regression otherwise."""
    values = set(np.unique(y).tolist())
    return CLASSIFICATION if values == {0.0, 1.0} else REGRESSION


def check_task(task: str, y: np.ndarray) -> None:
    if task == CLASSIFICATION and not set(np.unique(y).tolist()) <= {0.0, 1.0}:
        raise InputError(f"classification needs 0/1 targets; these have values such as {sorted(set(np.unique(y).tolist()))[:5]}")
    if task not in METRICS:
        raise InputError(f"unknown task {task!r}: use {REGRESSION!r} or {CLASSIFICATION!r}")


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    error = y_pred - y_true
    total = np.sum((y_true - y_true.mean()) ** 2)
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "r2": float(1 - np.sum(error**2) / total) if total > 0 else float("nan"),
    }


def classification_metrics(y_true: np.ndarray, p_positive: np.ndarray) -> dict[str, float]:
    """ROC-AUC (NaN when the fold holds one class only), accuracy at p > 0.5, and log loss."""
    from sklearn.metrics import log_loss, roc_auc_score

    labels = np.asarray(y_true, dtype=int)
    both_classes = len(np.unique(labels)) == 2
    return {
        "roc_auc": float(roc_auc_score(labels, p_positive)) if both_classes else float("nan"),
        "accuracy": float(np.mean((p_positive > 0.5) == labels)),
        "log_loss": float(log_loss(labels, np.clip(p_positive, 1e-7, 1 - 1e-7), labels=[0, 1])),
    }


@dataclass(frozen=True)
class Metric:
    name: str
    greater_is_better: bool

    def best(self, values: Sequence[float]) -> int:
        """Index of the best value."""
        return int(np.nanargmax(values) if self.greater_is_better else np.nanargmin(values))


PRIMARY_METRIC = {REGRESSION: Metric("mae", greater_is_better=False), CLASSIFICATION: Metric("roc_auc", greater_is_better=True)}
METRICS = {REGRESSION: regression_metrics, CLASSIFICATION: classification_metrics}


@dataclass
class CVResult:
    folds: list[dict[str, float]]
    """Per fold: ``fold`` and the task's metrics (``mae``, ``rmse``, ``r2`` or ``roc_auc``, ``accuracy``, ``log_loss``)."""
    predictions: np.ndarray
    """Out-of-fold prediction of every sample: the value (regression) or P(y=1) (classification)."""
    task: str = REGRESSION

    @property
    def metric(self) -> Metric:
        return PRIMARY_METRIC[self.task]

    def mean(self, name: str | None = None) -> float:
        return float(np.mean([f[name or self.metric.name] for f in self.folds]))

    def std(self, name: str | None = None) -> float:
        with np.errstate(invalid="ignore"):  # an infinite fold's (run.UnscorablePredictionsWarning says why) gives nan
            return float(np.std([f[name or self.metric.name] for f in self.folds]))

    @property
    def mae_mean(self) -> float:
        return self.mean("mae")

    @property
    def mae_std(self) -> float:
        return self.std("mae")

    def summary(self) -> dict[str, float]:
        """``<metric>_mean`` and ``<metric>_std`` for every metric of the task."""
        names = [key for key in self.folds[0] if key != "fold"]
        return {f"{name}_{kind}": getattr(self, kind)(name) for name in names for kind in ("mean", "std")}


@dataclass(frozen=True)
class TargetTransform:
    """A regression target transform: heads learn ``forward(y)``; their predictions are mapped back by ``inverse``."""

    name: str
    forward: Callable[[np.ndarray], np.ndarray]
    inverse: Callable[[np.ndarray], np.ndarray]
    domain: str
    label: str
    """How the transformed target reads, ``{}`` standing for the target's name."""


TARGET_TRANSFORMS = {
    "log10": TargetTransform("log10", np.log10, lambda v: 10.0**v, "y > 0", "log10({})"),
    "ln": TargetTransform("ln", np.log, np.exp, "y > 0", "ln({})"),
    "neglog10_1m": TargetTransform("neglog10_1m", lambda y: -np.log10(1.0 - y), lambda v: 1.0 - 10.0 ** (-v), "y < 1",
                                   "-log10(1 - {})"),
}
"""``neglog10_1m`` is -log10(1 - y), e.g. for a Coulombic efficiency close to 1."""
SCORE_SCALES = ("original", "transformed")


def get_target_transform(name: str | None) -> TargetTransform | None:
    if name is None or name == "none":
        return None
    if name not in TARGET_TRANSFORMS:
        raise InputError(f"unknown target transform {name!r}: use one of {', '.join(TARGET_TRANSFORMS)}")
    return TARGET_TRANSFORMS[name]


def make_model(head: Head, transform: TargetTransform | None = None):
    """What is trained on embeddings: a scikit-learn ``Pipeline`` of a standard scaler (fitted on the training rows
    only; undefined features put at their mean, :class:`~hacknip.evaluation.scaling.MeanImputingScaler`) and the head, inside a
    ``TransformedTargetRegressor`` when the head learns a transformed target (its predictions are mapped back to the
    original scale)."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.pipeline import make_pipeline

    from hacknip.evaluation.scaling import MeanImputingScaler

    model = make_pipeline(MeanImputingScaler(), head)
    if transform is None:
        return model
    return TransformedTargetRegressor(model, func=transform.forward, inverse_func=transform.inverse, check_inverse=False)


def fitted_pipeline(model):
    """The fitted scaler-and-head ``Pipeline`` of a model from :func:`make_model`."""
    return getattr(model, "regressor_", model)


def cross_validate(X: np.ndarray, y: np.ndarray, folds: Folds, make_model: Callable[[], Any],
                   on_fold: Callable[[], None] | None = None, task: str = REGRESSION,
                   score_transform: Callable[[np.ndarray], np.ndarray] | None = None) -> CVResult:
    """Fit a fresh model (:func:`make_model`: scaler and head) on each training fold and score its test fold.
    ``score_transform`` maps targets and predictions before scoring (metrics on a transformed scale)."""
    return cross_validate_per_fold([(X, make_model)] * len(folds), y, folds, on_fold, task, score_transform)


def cross_validate_per_fold(fold_models: Sequence[tuple[np.ndarray, Callable[[], Any]]], y: np.ndarray, folds: Folds,
                            on_fold: Callable[[], None] | None = None, task: str = REGRESSION,
                            score_transform: Callable[[np.ndarray], np.ndarray] | None = None) -> CVResult:
    """``cross_validate`` with each fold's own features and model, ``(X, make_model)`` per fold (e.g. the
    configuration each outer fold's tuning chose)."""
    predictions = np.full(len(y), np.nan)
    for (train, test), (X, make) in zip(folds, fold_models, strict=True):
        predictions[test] = _fit_and_predict(make, X, y, train, test, task)
        if on_fold:
            on_fold()
    return _scored(predictions, y, folds, task, score_transform)


def cross_validate_each(problems: Iterable[tuple[Any, Callable[[], np.ndarray], Callable[[], Any]]], y: np.ndarray,
                        folds: Folds, on_fold: Callable[[], None] | None = None, task: str = REGRESSION,
                        score_transform: Callable[[np.ndarray], np.ndarray] | None = None,
                        jobs: int = 1) -> dict[Any, CVResult]:
    """``cross_validate`` of several problems, ``(name, make_X, make_model)`` each (e.g. every layer of a sweep), with
    up to ``jobs`` fits at once, each in its own process (joblib's loky workers, whose BLAS and OpenMP threads joblib
    limits to their share of the cores). Every (problem, fold) fit is a task of one pool, so the cores stay busy
    across problems; ``make_X`` is called once per problem, as its fits are handed out. The results equal those of
    ``jobs=1``: each fit is the same fresh model on the same rows."""
    problems = list(problems)
    predictions = {name: np.full(len(y), np.nan) for name, _, _ in problems}

    def tasks():
        for name, make_X, make in problems:
            X = make_X()
            for number, (train, test) in enumerate(folds):
                yield name, number, make, X, train, test

    if jobs <= 1:
        finished = ((name, number, _fit_and_predict(make, X, y, train, test, task))
                    for name, number, make, X, train, test in tasks())
    else:
        from joblib import Parallel, delayed

        finished = Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered")(
            delayed(_numbered_fit)(name, number, make, X, y, train, test, task)
            for name, number, make, X, train, test in tasks())
    for name, number, predicted in finished:
        predictions[name][folds[number][1]] = predicted
        if on_fold:
            on_fold()
    return {name: _scored(predictions[name], y, folds, task, score_transform) for name, _, _ in problems}


def _fit_and_predict(make: Callable[[], Any], X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                     task: str) -> np.ndarray:
    return predict(make().fit(X[train], y[train]), X[test], task)


def _numbered_fit(name, number, make, X, y, train, test, task):
    return name, number, _fit_and_predict(make, X, y, train, test, task)


def _scored(predictions: np.ndarray, y: np.ndarray, folds: Folds, task: str,
            score_transform: Callable[[np.ndarray], np.ndarray] | None) -> CVResult:
    scale = score_transform or (lambda values: values)
    scores = [{"fold": number, **METRICS[task](scale(y[test]), scale(predictions[test]))}
              for number, (_, test) in enumerate(folds)]
    return CVResult(scores, predictions, task)


def predict(model: Any, X: np.ndarray, task: str) -> np.ndarray:
    """The value a model (or head) predicts for ``task``: its prediction, or P(y=1) for classification."""
    return model.predict_proba(X)[:, 1] if task == CLASSIFICATION else model.predict(X)


def dummy_cv(y: np.ndarray, folds: Folds, task: str = REGRESSION) -> CVResult:
    """The Matbench dummy model: predict the training-fold mean (for 0/1 targets, the positive fraction)."""
    predictions = np.full(len(y), np.nan)
    scores = []
    for number, (train, test) in enumerate(folds):
        predictions[test] = y[train].mean()
        scores.append({"fold": number, **METRICS[task](y[test], predictions[test])})
    return CVResult(scores, predictions, task)


def best_layer(per_layer: Sequence[dict], metric: Metric = PRIMARY_METRIC[REGRESSION]) -> int:
    """The layer whose ``<metric>_mean`` is best."""
    return per_layer[metric.best([entry[f"{metric.name}_mean"] for entry in per_layer])]["layer"]


# --- molecules: Bemis–Murcko scaffold splits ----------------------------------------------------------------

def murcko_scaffold(smiles: str) -> str:
    """The Bemis–Murcko scaffold (ring systems and the linkers between them) as canonical SMILES; ``""`` for a
    molecule without rings."""
    try:
        from rdkit import Chem, rdBase
        from rdkit.Chem.Scaffolds import MurckoScaffold
    except ImportError:
        raise ImportError("scaffold splits need RDKit: pip install hacknip-core[molecules]") from None
    with rdBase.BlockLogs():  # its notes (an isolated [H] it keeps, say) would flood the terminal, a line per molecule
        molecule = Chem.MolFromSmiles(smiles)
        if molecule is None:
            raise InputError(f"RDKit cannot read the SMILES {smiles!r}")
        return MurckoScaffold.MurckoScaffoldSmiles(mol=molecule, includeChirality=False)


def scaffold_folds(smiles: Sequence[str], n_splits: int = N_FOLDS, seed: int = MATBENCH_SEED) -> Folds:
    """K folds in which all molecules sharing a Bemis–Murcko scaffold land in the same test fold (``group_folds``
    of the scaffolds). Molecules without rings share the empty scaffold, hence one fold."""
    return group_folds(molecule_scaffolds(smiles), n_splits, seed, what="scaffolds")


def molecule_scaffolds(smiles: Sequence[str]) -> list[str]:
    scaffolds = []
    for index, text in enumerate(smiles):
        try:
            scaffolds.append(murcko_scaffold(text))
        except ValueError as error:
            raise InputError(f"molecule {index}: {error}; fix or remove it before splitting") from None
    return scaffolds


def group_folds(groups: Sequence[Any], n_splits: int = N_FOLDS, seed: int = MATBENCH_SEED,
                what: str = "groups") -> Folds:
    """K folds in which all samples of a group (a scaffold, a chemical formula, ...) land in the same test fold.

    Groups are dealt largest first (equal sizes in a seeded random order) to the fold holding the fewest samples so
    far, so folds come out balanced in size and the split is the same for the same seed.
    """
    members: dict[Any, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    if len(members) < n_splits:
        raise InputError(f"{len(members)} distinct {what} are too few for {n_splits} grouped folds")
    indices = list(members.values())
    order = np.random.default_rng(seed).permutation(len(indices))
    order = sorted(order, key=lambda g: -len(indices[g]))  # stable: the random order only breaks size ties
    tests: list[list[int]] = [[] for _ in range(n_splits)]
    for group in order:
        min(tests, key=len).extend(indices[group])
    everything = np.arange(len(groups))
    return [(np.setdiff1d(everything, test), np.array(sorted(test), dtype=int)) for test in tests]
