"""LightGBM gradient-boosted trees as a hacknip head."""

from __future__ import annotations

from typing import Any

import lightgbm
import numpy as np

from hacknip.plugins.head import CLASSIFICATION, REGRESSION
from hacknip.plugins.head_base import BaseHead
from hacknip_heads._histogram_bins import HISTOGRAM_BINS


class LightGBMHead(BaseHead):
    """LightGBM trees. The defaults favour many small, shrunken steps with row and column subsampling, which
    suits 10²–10⁴ samples of correlated embedding features; there is no early stopping, so ``n_estimators``
    is the number of trees fitted.

    ``n_jobs`` defaults to 1: on the embedding matrices hacknip trains on (10³ rows × 10²–10³ columns), LightGBM's
    OpenMP threads cost more than they give — measured on 2 shared cores, one fit of 1000 trees on 1012 × 64 took
    6 s with one thread and 24–109 s with two.

    ``max_bin`` defaults to 31, not LightGBM's 255: each split search scans every feature's bins, so on a thousand rows
    of a thousand features the bins, not the rows, set the cost. On Matbench phonons (CHGNet all layers mean+max+std,
    960 features; and with MODNet's descriptors, 1 497) a fit took 5.3× less time and the MAE did not get worse (49.2
    → 45.6 and 34.4 → 33.8 cm⁻¹; ``bench/head_fit_cost.py``, docs/benchmarks.md). On long, narrow tables 255 bins can do
    better, so ``hacknip tune`` searches ``max_bin`` too (:data:`hacknip_heads._histogram_bins.HISTOGRAM_BINS`)."""

    def __init__(
        self,
        *,
        task: str = REGRESSION,
        n_estimators: int = 1000,
        learning_rate: float = 0.03,
        num_leaves: int = 31,
        max_depth: int = -1,
        min_child_samples: int = 10,
        subsample: float = 0.8,
        subsample_freq: int = 1,
        colsample_bytree: float = 0.8,
        reg_alpha: float = 0.0,
        reg_lambda: float = 0.0,
        max_bin: int = 31,
        n_jobs: int | None = 1,
        random_state: int | None = 0,
        verbosity: int = -1,
    ):
        self.task = task
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.subsample_freq = subsample_freq
        self.colsample_bytree = colsample_bytree
        self.reg_alpha = reg_alpha
        self.reg_lambda = reg_lambda
        self.max_bin = max_bin
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbosity = verbosity

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 200, 2000, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 7, 127, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, 50, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.2, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
            "max_bin": trial.suggest_categorical("max_bin", HISTOGRAM_BINS),
        }

    def _fit(self, X, y) -> None:
        model_class = lightgbm.LGBMClassifier if self.task == CLASSIFICATION else lightgbm.LGBMRegressor
        self.model_ = model_class(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            max_depth=self.max_depth,
            min_child_samples=self.min_child_samples,
            subsample=self.subsample,
            # LightGBM ignores subsample unless bagging is switched on with a positive frequency.
            subsample_freq=self.subsample_freq,
            colsample_bytree=self.colsample_bytree,
            reg_alpha=self.reg_alpha,
            reg_lambda=self.reg_lambda,
            max_bin=self.max_bin,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
            verbosity=self.verbosity,
            # Same inputs and parameters give the same trees, whatever the thread count.
            deterministic=True,
            force_col_wise=True,
        )
        self.model_.fit(X, y)

    def _state(self):
        return {"booster": self.model_.booster_.model_to_string()}, {}

    def _restore(self, meta, arrays) -> None:
        self.model_ = _LoadedBooster(lightgbm.Booster(model_str=meta["booster"]))


class _LoadedBooster:
    """A booster read back from its text form; for a binary objective LightGBM predicts P(y=1)."""

    def __init__(self, booster):
        self.booster = booster

    def predict(self, X):
        return self.booster.predict(X)

    def predict_proba(self, X):
        positive = self.booster.predict(X)
        return np.column_stack([1.0 - positive, positive])
