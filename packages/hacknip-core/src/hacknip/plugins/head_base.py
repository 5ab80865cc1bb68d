"""What every head of this project shares: input checks, the regression/classification switch, scikit-learn tags, and
saving as JSON plus arrays. A third-party head may subclass :class:`BaseHead` too (see docs/plugins.md).

This module imports scikit-learn: plugin modules must not import it (they register specs only); the head classes
that subclass it are imported when a head is created.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils import ClassifierTags, RegressorTags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

from hacknip.errors import InputError
from hacknip.plugins.head import CLASSIFICATION, REGRESSION

TASKS = (REGRESSION, CLASSIFICATION)
_MAX_LABELS_SHOWN = 10


def _is_classifier(head: BaseHead) -> bool:
    """``available_if`` check: ``predict_proba`` exists only on a classifier, so that ``hasattr(regressor,
    "predict_proba")`` is False, as scikit-learn's scorers and meta-estimators (``Pipeline``) expect."""
    if head.task != CLASSIFICATION:
        raise AttributeError(f"predict_proba needs task='classification'; this {type(head).__name__} has "
                             f"task={head.task!r}")
    return True


class BaseHead(BaseEstimator):
    """A scikit-learn estimator that is a regressor or a binary classifier, as its ``task`` says.

    Classification takes any two labels (0/1, booleans, strings); they are encoded as 0/1 for the subclass, and
    ``predict`` returns the original labels (``classes_``, sorted). ``predict_proba`` is there for classifiers only.

    Every head defaults to ``random_state=0`` rather than scikit-learn's ``None``: hacknip's pipeline creates
    heads from user-given hyperparameters only, and its results should be reproducible unless asked otherwise.

    Subclasses implement ``_fit(X, y)`` (``y``: floats, or 0/1 ints for classification), and either keep a fitted
    scikit-learn style estimator in ``model_`` or override ``_predict_values`` and ``_predict_positive_probability``.
    To be saved by ``hacknip run --save`` they implement ``_state()`` and ``_restore(meta, arrays)``.
    """

    task_kinds = frozenset({REGRESSION, CLASSIFICATION})

    def fit(self, X, y) -> BaseHead:
        check_task(self.task)
        X = as_features(X, type(self).__name__)
        y = as_targets(y, type(self).__name__, self.task, n_rows=len(X))
        self.n_features_in_ = X.shape[1]
        if self.task == CLASSIFICATION:
            self.classes_, y = binary_labels(y)
        elif hasattr(self, "classes_"):  # refitted as a regressor: nothing of the classifier stays
            del self.classes_
        self._fit(X, y)
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted values (regression) or class labels, from ``classes_`` (classification)."""
        X = self._checked_features(X)
        if self.task == CLASSIFICATION:
            return self.classes_[(self._predict_positive_probability(X) > 0.5).astype(np.int64)]
        return np.asarray(self._predict_values(X), dtype=np.float64)

    @available_if(_is_classifier)
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_samples, 2): columns are P(classes_[0]) and P(classes_[1])."""
        positive = np.asarray(self._predict_positive_probability(self._checked_features(X)), dtype=np.float64)
        return np.column_stack([1.0 - positive, positive])

    def score(self, X, y) -> float:
        """R² for regression, accuracy for classification (as scikit-learn's mixins define ``score``)."""
        metric = accuracy_score if self.task == CLASSIFICATION else r2_score
        return float(metric(y, self.predict(X)))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        if self.task == CLASSIFICATION:
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags(multi_class=False)
        else:
            tags.estimator_type = "regressor"
            tags.regressor_tags = RegressorTags()
        return tags

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted head as JSON-able metadata plus named numeric arrays: what ``hacknip run --save`` writes (no
        pickle)."""
        check_is_fitted(self)
        meta, arrays = self._state()
        meta = {"n_features_in": int(self.n_features_in_), **meta}
        if self.task == CLASSIFICATION:
            meta["classes"] = self.classes_.tolist()
        return meta, arrays

    @classmethod
    def from_state(cls, params: dict[str, Any], meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> BaseHead:
        """A fitted head rebuilt from :meth:`get_state`'s output and the hyperparameters it was made with."""
        head = cls(**params)
        head.n_features_in_ = meta["n_features_in"]
        if head.task == CLASSIFICATION:
            head.classes_ = np.array(meta.get("classes", [0, 1]))  # models saved before labels were kept were 0/1
        head._restore(meta, arrays)
        return head

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be loaded")

    def _checked_features(self, X) -> np.ndarray:
        check_is_fitted(self)
        return as_features(X, type(self).__name__, expected_width=self.n_features_in_)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _predict_values(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(X)

    def _predict_positive_probability(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X)[:, 1]


# ---------------------------------------------------------------------------------------------------------------
# Input checks, with error messages that say exactly what is wrong and where
# ---------------------------------------------------------------------------------------------------------------

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
            raise InputError(f"X has 0 {what}(s) (shape={X.shape}) while a minimum of 1 is required.")
    if expected_width is not None and X.shape[1] != expected_width:
        raise InputError(f"X has {X.shape[1]} features, but {head_name} is expecting {expected_width} features "
                         "as input (the number it was fitted with)")
    _check_finite(X, "X")
    return X


def as_targets(y, head_name: str, task: str, n_rows: int) -> np.ndarray:
    """``y`` as a finite 1-D array: floats for regression, the labels as given for classification (see
    :func:`binary_labels`). A column vector is accepted with scikit-learn's ``DataConversionWarning``."""
    if y is None:
        raise InputError(f"{head_name} requires y to be passed, but the target y is None")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected. Please change the shape of y to "
                      "(n_samples, ), for example using ravel().", DataConversionWarning, stacklevel=3)
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"y must be 1-D (n_samples,), got shape {y.shape}")
    if len(y) != n_rows:
        raise InputError(f"X has {n_rows} rows but y has {len(y)}")
    if np.issubdtype(y.dtype, np.number) or y.dtype == bool:
        _check_finite(y.astype(np.float64), "y")
    if task == CLASSIFICATION:
        return y
    return y.astype(np.float64)


def binary_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, encoded)``: the two sorted labels of ``y`` and ``y`` as 0/1 ints (1 for ``classes[1]``)."""
    kind = type_of_target(y, input_name="y")
    if kind.startswith("continuous"):
        raise InputError("Unknown label type: continuous. task='classification' needs two classes, but y holds "
                         "continuous values; use task='regression' for them")
    if kind not in ("binary", "multiclass"):
        raise InputError(f"Unknown label type: {kind}. task='classification' needs y to hold two classes")
    classes, encoded = np.unique(y, return_inverse=True)
    if len(classes) > 2:
        shown = ", ".join(repr(label) for label in classes[:_MAX_LABELS_SHOWN].tolist())
        more = f" and {len(classes) - _MAX_LABELS_SHOWN} more" if len(classes) > _MAX_LABELS_SHOWN else ""
        raise InputError(f"Only binary classification is supported: task='classification' needs two classes; found "
                         f"labels [{shown}]{more}")
    if len(classes) < 2:
        raise InputError(f"task='classification' needs two classes in y; found 1 class: {classes.tolist()}")
    return classes, encoded.astype(np.int64)


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
