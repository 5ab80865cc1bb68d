"""The ``Head`` protocol: a shallow model trained on structure embeddings, a scikit-learn estimator.

Heads receive standardised features (hacknip fits a scaler on each training fold) and must not keep state
between ``fit`` calls. hacknip creates a head with the user's hyperparameters, plus ``task="classification"`` for
classification (regression is every head's default). A head serving classification has ``predict_proba`` (columns
P(class 0), P(class 1)) only then: a regressor has none (scikit-learn's ``available_if`` idiom), which is how
scikit-learn's scorers and ``Pipeline`` tell them apart.

Optional, each used when present: ``get_state()`` with the ``from_state(params, meta, arrays)`` classmethod (a fitted
head as JSON plus numeric arrays, what ``hacknip run --save`` writes without pickle), and a ``search_space(trial)``
classmethod returning hyperparameters drawn from an Optuna trial (what ``hacknip tune`` searches); a
``search_space(trial, fixed)`` with a second parameter also gets the hyperparameters the user fixed (the ``ensemble``
head reads its ``members`` there).

:class:`hacknip.plugins.head_base.BaseHead` implements all of this for a model with ``_fit`` and a fitted ``model_``;
:class:`hacknip.plugins.testing.HeadConformance` checks it (see docs/plugins.md, "Writing a head plugin").
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from hacknip.errors import InputError

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


def search_space_of(head_class: type, fixed: dict[str, Any]) -> Callable[[Any], dict[str, Any]] | None:
    """The head's ``search_space`` as a function of an Optuna trial (given ``fixed`` when it takes them), or None
    when the head declares none."""
    space = getattr(head_class, "search_space", None)
    if space is None:
        return None
    if len(inspect.signature(space).parameters) >= 2:
        return lambda trial: space(trial, fixed)
    return space


def defaults_of(head_class: type, fixed: dict[str, Any]) -> dict[str, str]:
    """The default of each hyperparameter of ``head_class`` that ``fixed`` leaves unset, as ``repr`` text: what a
    head with these fixed hyperparameters will use. A head made of other heads adds theirs through its own
    ``defaults(fixed)`` classmethod (the ensemble does)."""
    own = getattr(head_class, "defaults", None)
    if callable(own):
        return own(fixed)
    return signature_defaults(head_class, fixed)


def signature_defaults(head_class: type, fixed: dict[str, Any]) -> dict[str, str]:
    return {name: repr(parameter.default) for name, parameter in inspect.signature(head_class).parameters.items()
            if name not in fixed and parameter.default is not inspect.Parameter.empty}


def restore_defaults(head_class: type, fixed: dict[str, Any], recorded: dict[str, str]) -> tuple[dict[str, Any], dict]:
    """``fixed`` with every default that differs today from ``recorded`` (:func:`defaults_of` text written when a
    configuration was tuned) set to its recorded value, so that the configuration replays as it was fitted; and
    ``{key: (then, now)}`` for each one set. A head made of other heads places its members' (``"modnet:KEY"``)
    through its own ``with_defaults(fixed, values)`` classmethod."""
    now = defaults_of(head_class, fixed)
    changed = {key: (then, now[key]) for key, then in recorded.items() if key in now and now[key] != then}
    if not changed:
        return fixed, {}
    values = {key: _literal(key, then) for key, (then, _) in changed.items()}
    place = getattr(head_class, "with_defaults", None)
    return (place(fixed, values) if callable(place) else {**fixed, **values}), changed


def _literal(key: str, text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise InputError(f"the head's default {key}={text} when it was tuned cannot be restored (not a Python "
                         f"literal); set {key} with --head-param") from None


def head_params_for(head: str, head_params: dict[str, Any], heads: list[str]) -> dict[str, Any]:
    """The hyperparameters ``--head-param`` gives ``head``, one of the ``heads`` a command names: every plain
    ``KEY=VALUE``, and every ``HEAD:KEY=VALUE`` whose prefix is ``head`` (it wins over a plain one), so that
    ``hacknip tune --head ensemble,lightgbm --head-param ensemble:seeds=3`` gives only the ensemble its seeds."""
    plain, own = {}, {}
    for key, value in head_params.items():
        prefix, _, name = key.rpartition(":")
        if not prefix:
            plain[key] = value
        elif prefix not in heads:
            raise InputError(f"--head-param {key}=…: {prefix!r} is not a head this command uses ({', '.join(heads)}); "
                             f"prefix a hyperparameter with one of those, or leave the prefix out to give it to every "
                             f"head")
        elif prefix == head:
            own[name] = value
    return {**plain, **own}


def merge_head_params(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` hyperparameters (tuned, or read from params.json) with ``override`` (the user's) on top, merged key by
    key where both are mappings: an ensemble's ``params={"xgboost": {"n_jobs": 1}}`` fixes one member's thread count
    and keeps every other tuned hyperparameter of both members."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_head_params(merged[key], value)
        else:
            merged[key] = value
    return merged
