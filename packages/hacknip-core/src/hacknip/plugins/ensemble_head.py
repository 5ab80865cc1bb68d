"""The ``ensemble`` head, shipped with hacknip-core: several registered heads fitted on the same rows, their
predictions averaged (regression) or their probabilities of the positive class averaged (classification).

``members`` names the heads, joined by ``+`` (``"lightgbm+xgboost+modnet"``); ``params`` gives each member its own
hyperparameters (``{"lightgbm": {"n_estimators": 500}}``); ``seeds`` fits each member that many times, with random
states ``random_state``, ``random_state + 1``, …, so ``members="modnet", seeds=5`` is the average of five MODNet
networks that differ only in their seed (a network's seed alone can move a score by a standard deviation). ``hacknip
tune --head ensemble`` searches every member's space at once (the names of one member's hyperparameters are prefixed
with ``MEMBER:`` in the study), so the ensemble of tuned heads is scored with the same nested cross-validation as a
single head. Saved as each member's own state, never pickled. Registered by :mod:`hacknip.plugins.default_heads`.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from hacknip.errors import InputError
from hacknip.plugins.head import REGRESSION, search_space_of, signature_defaults
from hacknip.plugins.head_base import BaseHead

DEFAULT_MEMBERS = "lightgbm+xgboost"
NAME = "ensemble"


def member_names(members: str) -> list[str]:
    """The member heads named in ``members``, checked: registered, not an ensemble, each named once."""
    from hacknip.plugins.registry import get_head_spec

    if not isinstance(members, str) or not members.strip():
        raise InputError(f"ensemble: members must name heads joined by '+', e.g. {DEFAULT_MEMBERS!r}; got {members!r}")
    names = [name.strip() for name in members.split("+")]
    for name in names:
        if name == NAME:
            raise InputError("ensemble: an ensemble cannot be one of its own members")
        get_head_spec(name)  # an unknown head is named, with the heads there are
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"ensemble: members name {', '.join(repeated)} more than once; give each head once")
    return names


class EnsembleHead(BaseHead):
    """The average of its members' predictions; each member is created with its own ``params`` entry plus this
    head's ``task`` and ``random_state`` (for members that take one), ``seeds`` times with successive random states."""

    def __init__(self, *, task: str = REGRESSION, members: str = DEFAULT_MEMBERS,
                 params: dict[str, dict[str, Any]] | None = None, seeds: int = 1, random_state: int | None = 0):
        self.task = task
        self.members = members
        self.params = params
        self.seeds = seeds
        self.random_state = random_state

    @classmethod
    def search_space(cls, trial, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every member's search space in one trial; ``fixed`` are the hyperparameters the user set (``members``)."""
        from hacknip.plugins.registry import get_head_spec

        spaces = {}
        for name in member_names((fixed or {}).get("members", DEFAULT_MEMBERS)):
            space = search_space_of(get_head_spec(name).estimator_class(), {})
            if space is None:
                raise InputError(f"ensemble: member {name!r} declares no search space, so the ensemble cannot be "
                                 "tuned; tune an ensemble of heads that can be")
            spaces[name] = space(_PrefixedTrial(trial, f"{name}:"))
        return {"params": spaces}

    @classmethod
    def defaults(cls, fixed: dict[str, Any]) -> dict[str, str]:
        """This head's defaults, and each member's (``"modnet:epochs"``) for what ``params`` leaves unset."""
        from hacknip.plugins.registry import get_head_spec

        defaults = signature_defaults(cls, fixed)
        params = fixed.get("params") if isinstance(fixed.get("params"), dict) else {}
        for name in member_names(fixed.get("members", DEFAULT_MEMBERS)):
            member = params.get(name) if isinstance(params.get(name), dict) else {}
            member_defaults = signature_defaults(get_head_spec(name).estimator_class(), member)
            defaults.update({f"{name}:{key}": value for key, value in member_defaults.items()})
        return defaults

    @classmethod
    def with_defaults(cls, fixed: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """``fixed`` with ``values`` set, keyed as :meth:`defaults` keys them: a member's under ``params``."""
        params = fixed.get("params") if isinstance(fixed.get("params"), dict) else {}
        placed = {**fixed, "params": {name: dict(member) for name, member in params.items()}}
        for key, value in values.items():
            member, _, name = key.rpartition(":")
            if member:
                placed["params"].setdefault(member, {})[name] = value
            else:
                placed[name] = value
        if not placed["params"]:
            del placed["params"]
        return placed

    def _member_params(self) -> dict[str, dict[str, Any]]:
        names = member_names(self.members)
        params = self.params or {}
        if not isinstance(params, dict) or not all(isinstance(value, dict) for value in params.values()):
            raise InputError("ensemble: params must map member names to their hyperparameters, e.g. "
                             "{\"lightgbm\": {\"n_estimators\": 500}}")
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise InputError(f"ensemble: params for {', '.join(unknown)}, which members ({self.members!r}) does not "
                             "name")
        return {name: self._with_shared(name, params.get(name, {})) for name in names}

    def _with_shared(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        from hacknip.plugins.registry import get_head_spec

        accepted = inspect.signature(get_head_spec(name).estimator_class()).parameters
        if self._seed_count() > 1 and "random_state" not in accepted:
            raise InputError(f"ensemble: member {name!r} takes no random_state, so seeds={self.seeds} would fit the "
                             "same head several times; leave seeds at 1 or drop that member")
        shared = {"task": self.task, "random_state": self.random_state}
        return {**{key: value for key, value in shared.items() if key in accepted}, **params}

    def _seed_count(self) -> int:
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, (int, np.integer)) or self.seeds < 1:
            raise InputError(f"ensemble: seeds must be a positive int (fits of each member), got {self.seeds!r}")
        return int(self.seeds)

    def _seeded_members(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, params) of every fit: each member ``seeds`` times, its random state counting up from its own."""
        fits = []
        for name, params in self._member_params().items():
            seed = params.get("random_state")
            for offset in range(self._seed_count()):
                fits.append((name, params if offset == 0 or seed is None else {**params, "random_state": seed + offset}))
        return fits

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        from hacknip.plugins.registry import create_head

        # the members see the 0/1 labels BaseHead encoded; this head keeps the user's labels in classes_
        self.members_ = [(name, create_head(name, **params).fit(X, y)) for name, params in self._seeded_members()]

    def _predict_values(self, X: np.ndarray) -> np.ndarray:
        return np.mean([head.predict(X) for _, head in self.members_], axis=0)

    def _predict_positive_probability(self, X: np.ndarray) -> np.ndarray:
        return np.mean([head.predict_proba(X)[:, 1] for _, head in self.members_], axis=0)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        metas, arrays = [], {}
        for index, (name, head) in enumerate(self.members_):
            if not hasattr(head, "get_state"):
                raise InputError(f"ensemble: member {name!r} cannot be saved safely (it has no get_state/from_state)")
            meta, member_arrays = head.get_state()
            metas.append({"name": name, "meta": meta})
            arrays.update({f"member{index}.{key}": value for key, value in member_arrays.items()})
        return {"members": metas}, arrays

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        from hacknip.plugins.registry import get_head_spec

        fits = self._seeded_members()
        if [name for name, _ in fits] != [saved["name"] for saved in meta["members"]]:
            raise InputError(f"ensemble: the saved members ({', '.join(saved['name'] for saved in meta['members'])}) "
                             f"are not those members={self.members!r}, seeds={self.seeds!r} name; the saved model is "
                             "damaged or its hyperparameters were edited")
        self.members_ = []
        for index, (saved, (name, params)) in enumerate(zip(meta["members"], fits)):
            prefix = f"member{index}."
            member_arrays = {key.removeprefix(prefix): value for key, value in arrays.items() if key.startswith(prefix)}
            head_class = get_head_spec(name).estimator_class()
            self.members_.append((name, head_class.from_state(params, saved["meta"], member_arrays)))


class _PrefixedTrial:
    """An Optuna trial whose parameter names carry a prefix, so that two members' ``learning_rate`` stay apart."""

    def __init__(self, trial, prefix: str):
        self._trial, self._prefix = trial, prefix

    def __getattr__(self, attribute: str):
        method = getattr(self._trial, attribute)
        if not attribute.startswith("suggest_"):
            return method
        return lambda name, *args, **kwargs: method(self._prefix + name, *args, **kwargs)
