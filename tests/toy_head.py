"""A small, real head for testing tuning: k-nearest neighbours with a declared Optuna search space.

It does not subclass hacknip's BaseHead: it is what a minimal third-party head looks like, a scikit-learn estimator
whose ``task`` decides its estimator type and whether ``predict_proba`` exists (scikit-learn's ``available_if``), and
it runs the HeadConformance suite (test_head_conformance.py). It has no ``get_state``, so it cannot be saved.

``fit_delay`` (seconds slept per fit) lets a test make trials slow enough for two workers to overlap.
"""

from __future__ import annotations

import time

from sklearn.base import BaseEstimator
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.utils.metaestimators import available_if

from hacknip import hookimpl
from hacknip.plugins.head import CLASSIFICATION, REGRESSION, HeadSpec


class KNNHead(BaseEstimator):
    task_kinds = frozenset({REGRESSION, CLASSIFICATION})

    def __init__(self, task=REGRESSION, n_neighbors=5, weights="uniform", fit_delay=0.0):
        self.task, self.n_neighbors, self.weights, self.fit_delay = task, n_neighbors, weights, fit_delay

    @classmethod
    def search_space(cls, trial):
        return {"n_neighbors": trial.suggest_int("n_neighbors", 1, 15),
                "weights": trial.suggest_categorical("weights", ["uniform", "distance"])}

    def fit(self, X, y):
        time.sleep(self.fit_delay)
        model = KNeighborsClassifier if self.task == CLASSIFICATION else KNeighborsRegressor
        self.model_ = model(n_neighbors=min(self.n_neighbors, len(X)), weights=self.weights).fit(X, y)
        return self

    def predict(self, X):
        return self.model_.predict(X)

    @available_if(lambda head: head.task == CLASSIFICATION)
    def predict_proba(self, X):
        return self.model_.predict_proba(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier" if self.task == CLASSIFICATION else "regressor"
        return tags


class ToyHeadPlugin:
    @hookimpl
    def register_heads(self, register):
        register(HeadSpec(name="knn", factory="toy_head:KNNHead", task_kinds=KNNHead.task_kinds,
                          description="k-nearest neighbours (tests only)"))


def register_everything():
    """For worker subprocesses: register the toy backbone and this head, as installed plugins would be."""
    from toy_backbone import ToyPlugin

    from hacknip.plugins.manager import pm

    pm.register(ToyPlugin(), name="toy-test-plugin")
    pm.register(ToyHeadPlugin(), name="toy-head-plugin")
