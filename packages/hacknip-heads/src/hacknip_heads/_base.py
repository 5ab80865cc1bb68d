"""What every head shares: input checks, the regression/classification switch, and scikit-learn tags."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils import ClassifierTags, RegressorTags
from sklearn.utils.validation import check_is_fitted

from hacknip.plugins.head import CLASSIFICATION, REGRESSION
from hacknip_heads._validation import as_features, as_targets, check_task


class BaseHead(BaseEstimator):
    """A scikit-learn estimator that is a regressor or a binary (0/1) classifier, as its ``task`` says.

    Every head defaults to ``random_state=0`` rather than scikit-learn's ``None``: hacknip's pipeline creates
    heads from user-given hyperparameters only, and its results should be reproducible unless asked otherwise.

    Subclasses implement ``_fit``, and either keep a fitted scikit-learn style estimator in ``model_`` or
    override ``_predict_values`` and ``_predict_positive_probability``.
    """

    task_kinds = frozenset({REGRESSION, CLASSIFICATION})

    def fit(self, X, y) -> BaseHead:
        check_task(self.task)
        X = as_features(X, type(self).__name__)
        y = as_targets(y, type(self).__name__, self.task, n_rows=len(X))
        self.n_features_in_ = X.shape[1]
        if self.task == CLASSIFICATION:
            self.classes_ = np.array([0, 1])
        self._fit(X, y)
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted values (regression) or class labels 0/1 (classification)."""
        X = self._checked_features(X)
        if self.task == CLASSIFICATION:
            return (self._predict_positive_probability(X) > 0.5).astype(np.int64)
        return np.asarray(self._predict_values(X), dtype=np.float64)

    # A property rather than a method so that hasattr(head, "predict_proba") is False for regression heads,
    # which is how scikit-learn's scorers and meta-estimators decide whether probabilities exist.
    @property
    def predict_proba(self):
        if self.task != CLASSIFICATION:
            raise AttributeError(f"predict_proba needs task='classification'; this {type(self).__name__} has "
                                 f"task={self.task!r}")
        return self._predict_proba

    def _predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_samples, 2): columns are P(y=0) and P(y=1)."""
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
        """The fitted head as JSON-able metadata plus named arrays: what ``hacknip run --save`` writes (no pickle)."""
        check_is_fitted(self)
        meta, arrays = self._state()
        return {"n_features_in": int(self.n_features_in_), **meta}, arrays

    @classmethod
    def from_state(cls, params: dict[str, Any], meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> BaseHead:
        """A fitted head rebuilt from :meth:`get_state`'s output and the hyperparameters it was made with."""
        head = cls(**params)
        head.n_features_in_ = meta["n_features_in"]
        if head.task == CLASSIFICATION:
            head.classes_ = np.array([0, 1])
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
