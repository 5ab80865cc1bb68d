"""XGBoost gradient-boosted trees as a hacknip head."""

from __future__ import annotations

from typing import Any

import xgboost

from hacknip.plugins.head import CLASSIFICATION, REGRESSION
from hacknip.plugins.head_base import BaseHead
from hacknip_heads._histogram_bins import HISTOGRAM_BINS


class XGBoostHead(BaseHead):
    """XGBoost trees with the histogram tree method; defaults mirror :class:`LightGBMHead` (many shrunken
    steps, row and column subsampling, no early stopping, 31 histogram bins).

    ``max_bin`` defaults to 31, not XGBoost's 256, for the reason LightGBM's does: on Matbench phonons (CHGNet all
    layers mean+max+std, 960 features) a fit took 5.3x less time and the MAE went from 47.8 to 45.6 cm⁻¹
    (``bench/head_fit_cost.py --head xgboost``, docs/benchmarks.md); ``hacknip tune`` searches it
    (:data:`hacknip_heads._histogram_bins.HISTOGRAM_BINS`)."""

    def __init__(
        self,
        *,
        task: str = REGRESSION,
        n_estimators: int = 1000,
        learning_rate: float = 0.03,
        max_depth: int = 6,
        min_child_weight: float = 1.0,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_alpha: float = 0.0,
        reg_lambda: float = 1.0,
        tree_method: str = "hist",
        max_bin: int = 31,
        n_jobs: int | None = None,
        random_state: int | None = 0,
        verbosity: int = 0,
    ):
        self.task = task
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_alpha = reg_alpha
        self.reg_lambda = reg_lambda
        self.tree_method = tree_method
        self.max_bin = max_bin
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbosity = verbosity

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 200, 2000, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "max_depth": trial.suggest_int("max_depth", 3, 10),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.2, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
            "max_bin": trial.suggest_categorical("max_bin", HISTOGRAM_BINS),
        }

    def _fit(self, X, y) -> None:
        model_class = xgboost.XGBClassifier if self.task == CLASSIFICATION else xgboost.XGBRegressor
        self.model_ = model_class(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            min_child_weight=self.min_child_weight,
            subsample=self.subsample,
            colsample_bytree=self.colsample_bytree,
            reg_alpha=self.reg_alpha,
            reg_lambda=self.reg_lambda,
            tree_method=self.tree_method,
            max_bin=self.max_bin,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
            verbosity=self.verbosity,
        )
        self.model_.fit(X, y)

    def _state(self):
        return {"booster": bytes(self.model_.get_booster().save_raw("json")).decode()}, {}

    def _restore(self, meta, arrays) -> None:
        model_class = xgboost.XGBClassifier if self.task == CLASSIFICATION else xgboost.XGBRegressor
        self.model_ = model_class()
        self.model_.load_model(bytearray(meta["booster"].encode()))
