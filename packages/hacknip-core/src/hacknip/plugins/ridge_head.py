"""The ``ridge`` head, shipped with hacknip-core (so that hacknip alone can run a job): ridge regression or
L2-penalised logistic regression, strength chosen by cross-validation. Registered by
:mod:`hacknip.plugins.default_heads`."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, RidgeCV
from sklearn.model_selection import StratifiedKFold

from hacknip.errors import InputError
from hacknip.plugins.head import CLASSIFICATION, REGRESSION
from hacknip.plugins.head_base import BaseHead

DEFAULT_ALPHAS = np.logspace(-3, 3, 13)


class RidgeHead(BaseHead):
    """Regression: :class:`~sklearn.linear_model.RidgeCV` choosing ``alpha`` by efficient leave-one-out.
    Classification: :class:`~sklearn.linear_model.LogisticRegressionCV` over ``C = 1 / alpha`` with stratified
    ``cv``-fold cross-validation scored by log-loss. ``alphas=None`` means ``np.logspace(-3, 3, 13)``.

    ``max_iter`` bounds the logistic solver; classification keeps the iterations it ran in ``n_iter_`` (per fold and
    ``C``, as ``LogisticRegressionCV`` reports them). Regression is a closed-form solve: no iterations, no ``n_iter_``."""

    def __init__(
        self,
        *,
        task: str = REGRESSION,
        alphas=None,
        fit_intercept: bool = True,
        cv: int = 5,
        max_iter: int = 1000,
        n_jobs: int | None = None,
        random_state: int | None = 0,
    ):
        self.task = task
        self.alphas = alphas
        self.fit_intercept = fit_intercept
        self.cv = cv
        self.max_iter = max_iter
        self.n_jobs = n_jobs
        self.random_state = random_state

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        """Nothing to tune: the regularisation strength is already chosen by internal cross-validation."""
        return {}

    def _fit(self, X, y) -> None:
        alphas = DEFAULT_ALPHAS if self.alphas is None else np.asarray(self.alphas, dtype=np.float64)
        if hasattr(self, "n_iter_"):  # a regression refit must not keep the previous classification's count
            del self.n_iter_
        if self.task == CLASSIFICATION:
            self.model_ = self._logistic_model(alphas, y).fit(X, y)
            self.n_iter_ = self.model_.n_iter_
        else:
            self.model_ = RidgeCV(alphas=alphas, fit_intercept=self.fit_intercept).fit(X, y)

    def _logistic_model(self, alphas: np.ndarray, y: np.ndarray) -> LogisticRegressionCV:
        smallest_class = int(np.bincount(y).min())
        if smallest_class < 2:
            raise InputError("RidgeHead classification cross-validates, so it needs at least 2 samples of each "
                             f"class; the rarer class has only {smallest_class}")
        folds = StratifiedKFold(n_splits=min(self.cv, smallest_class), shuffle=True,
                                random_state=self.random_state)
        return LogisticRegressionCV(
            Cs=1.0 / alphas,
            l1_ratios=(0.0,),
            cv=folds,
            scoring="neg_log_loss",
            fit_intercept=self.fit_intercept,
            max_iter=self.max_iter,
            n_jobs=self.n_jobs,
            use_legacy_attributes=False,
        )

    def _state(self):
        return {}, {"coef": np.ravel(self.model_.coef_), "intercept": np.ravel(self.model_.intercept_)}

    def _restore(self, meta, arrays) -> None:
        if self.task == CLASSIFICATION:
            self.model_ = _logistic_from(arrays["coef"], arrays["intercept"])
        else:
            self.model_ = _LinearModel(arrays["coef"], float(arrays["intercept"][0]))


def _logistic_from(coef: np.ndarray, intercept: np.ndarray) -> LogisticRegression:
    """scikit-learn's own logistic model with the saved coefficients, so that a restored head computes its
    probabilities by the same code as the fitted one, to the last bit, whatever scikit-learn's version does."""
    model = LogisticRegression()
    model.coef_, model.intercept_ = np.reshape(coef, (1, -1)), np.reshape(intercept, (1,))
    model.classes_, model.n_features_in_ = np.array([0, 1]), model.coef_.shape[1]
    return model


class _LinearModel:
    """A fitted linear regression read back from its coefficients."""

    def __init__(self, coef: np.ndarray, intercept: float):
        self.coef, self.intercept = coef, intercept

    def predict(self, X):
        return X @ self.coef + self.intercept
