"""The ``Head`` protocol: a shallow model trained on structure embeddings, scikit-learn style.

Heads receive standardised features (hacknip fits a scaler on each training fold) and must not keep state
between ``fit`` calls. ``predict_proba`` is required for heads serving classification. A head class may offer a
``search_space(trial)`` classmethod returning hyperparameters drawn from an Optuna trial (used by tuning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

REGRESSION = "regression"
CLASSIFICATION = "classification"


@runtime_checkable
class Head(Protocol):
    task_kinds: frozenset[str]

    def fit(self, X: np.ndarray, y: np.ndarray) -> Head: ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...

    def get_params(self, deep: bool = True) -> dict[str, Any]: ...

    def set_params(self, **params: Any) -> Head: ...


@dataclass(frozen=True)
class HeadSpec:
    """What a plugin registers for a head. ``factory`` is a ``"module:callable"`` path; the callable takes
    the head's hyperparameters as keyword arguments and returns an unfitted :class:`Head`."""

    name: str
    factory: str
    task_kinds: frozenset[str]
    description: str = ""
    package: str = field(default="", compare=False)
    package_version: str = field(default="", compare=False)

    def estimator_class(self) -> type:
        """The head's class (or factory), imported on first use."""
        from hacknip.plugins.manager import resolve_factory

        return resolve_factory("head", self)

    def create(self, **params: Any) -> Head:
        return self.estimator_class()(**params)
