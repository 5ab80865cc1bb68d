"""Input checks shared by every head, with error messages that say exactly what is wrong and where."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from hacknip.errors import InputError
from hacknip.plugins.head import CLASSIFICATION, REGRESSION

TASKS = (REGRESSION, CLASSIFICATION)
_MAX_LABELS_SHOWN = 10


def check_task(task: str) -> None:
    if task not in TASKS:
        raise InputError(f"task must be one of {TASKS}, got {task!r}")


def as_features(X, head_name: str, expected_width: int | None = None) -> np.ndarray:
    """``X`` as a finite 2-D float array; ``expected_width`` is the feature count seen in ``fit``."""
    if scipy.sparse.issparse(X):
        raise TypeError(f"{head_name} does not support sparse input; pass a dense array")
    X = np.asarray(X)
    if np.iscomplexobj(X):
        raise InputError(f"Complex data not supported by {head_name}")
    if X.dtype != np.float32:
        X = X.astype(np.float64, copy=False)
    if X.ndim != 2:
        raise InputError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}. Reshape your data, "
                         "e.g. with X.reshape(-1, 1) for a single feature")
    for axis, what in enumerate(("sample", "feature")):
        if X.shape[axis] == 0:
            raise InputError(f"X has 0 {what}(s) (shape={X.shape}) while a minimum of 1 is required")
    if expected_width is not None and X.shape[1] != expected_width:
        raise InputError(f"X has {X.shape[1]} features, but {head_name} is expecting {expected_width} features "
                         "as input (the number it was fitted with)")
    _check_finite(X, "X")
    return X


def as_targets(y, head_name: str, task: str, n_rows: int) -> np.ndarray:
    """``y`` as a finite 1-D array: float for regression, int 0/1 for classification."""
    if y is None:
        raise InputError(f"{head_name} requires y to be passed, but the target y is None")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"y must be 1-D (n_samples,), got shape {y.shape}")
    if len(y) != n_rows:
        raise InputError(f"X has {n_rows} rows but y has {len(y)}")
    if np.issubdtype(y.dtype, np.number) or y.dtype == bool:
        _check_finite(y.astype(np.float64), "y")
    if task == CLASSIFICATION:
        return _as_binary_labels(y)
    return y.astype(np.float64)


def _check_finite(values: np.ndarray, name: str) -> None:
    table = values.reshape(len(values), -1)  # 1-D targets become a single column
    bad = ~np.isfinite(table)
    bad_rows = np.flatnonzero(bad.any(axis=1))
    if len(bad_rows) == 0:
        return
    row = bad_rows[0]
    column = np.flatnonzero(bad[row])[0]
    where = f"row {row}, column {column}" if values.ndim == 2 else f"row {row}"
    kind = "NaN" if np.isnan(table[row, column]) else "infinity"
    raise InputError(f"{name} contains NaN or infinity in {len(bad_rows)} row(s); the first is {where} ({kind})")


def _as_binary_labels(y: np.ndarray) -> np.ndarray:
    labels = np.unique(y)
    if not set(labels.tolist()) <= {0, 1}:
        shown = ", ".join(repr(label) for label in labels[:_MAX_LABELS_SHOWN].tolist())
        more = f" and {len(labels) - _MAX_LABELS_SHOWN} more" if len(labels) > _MAX_LABELS_SHOWN else ""
        raise InputError(f"task='classification' needs binary 0/1 targets; found labels [{shown}]{more}")
    if len(labels) < 2:
        raise InputError(f"task='classification' needs both classes 0 and 1 in y; found only {labels.tolist()}")
    return y.astype(np.int64)
