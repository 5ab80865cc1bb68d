"""``hacknip tune``: Optuna over a head's own search space and the layers around L*, nested by default.

A *scope* is a set of rows and validation folds over them. Tuning a scope means: find L* with the head's default
hyperparameters, run one Optuna study per candidate layer (L*-2..L*+2), and keep the best (layer, params).

- ``nested`` (default, honest): each outer fold is a scope made of its training rows and inner folds inside them;
  the winner is refitted on those rows and scored on the outer test fold, which tuning never saw. One more scope,
  all rows with inner folds, chooses the configuration to deploy (``params.json``).
- ``paper``: one scope, all rows with the outer folds as the validation folds, as the paper did. Its score is the
  best of many tries on the test folds, so it is optimistic, and labelled so.

With ``member_subsets``, each candidate layer choice is also tried on every non-empty subset of the expression's
members (``chgnet@all+matminer:modnet``: CHGNet alone, the descriptors alone, both), one study each, so which
features to use is chosen inside each training fold like the hyperparameters.

With several heads (``head="lightgbm,modnet"``) each scope tunes each head over the same candidates, in studies of its
own, and keeps the head whose best validation score wins, so which head to use is chosen inside each training fold
too.

With ``n_trials=0`` nothing is searched: each candidate is scored once with the head's default hyperparameters (and
the user's), so the layers and the members are chosen honestly among untuned candidates, at a fiftieth of the cost.

Studies live in an Optuna storage (an SQLite file by default): a killed run resumes, and several processes (or
machines) pointed at the same storage share the trials of each study.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hacknip.data.relaxation import DEFAULT_OPTIMIZER
from hacknip.errors import InputError, Interrupted
from hacknip.evaluation.crossval import (
    CVResult,
    Folds,
    cross_validate_each,
    cross_validate_per_fold,
    group_folds,
    random_folds,
    stratified_folds,
)
from hacknip.features.compose import format_backbones, parse_backbones
from hacknip.plugins.descriptor import is_descriptor_identity
from hacknip.plugins.head import CLASSIFICATION, HeadSpec, defaults_of, head_params_for, merge_head_params, search_space_of
from hacknip.plugins.registry import get_head_spec
from hacknip.workflow.provenance import without_passwords
from hacknip.workflow.run import (
    MemberFeatures,
    Prepared,
    Progress,
    RunConfig,
    check_head_does,
    model_factory,
    no_progress,
    prepare,
    results_dict,
    sweep_layers,
)

PROTOCOLS = ("nested", "paper")
INNER_SEED = 20191801
STARTUP_TRIALS = 10
"""Trials Optuna's TPE sampler draws at random before it models the space (its default, stated so that patience can
count from there)."""


@dataclass
class TuneSettings:
    n_trials: int = 50
    """Trials per study (one study per candidate layer and scope), as in the paper; 0: no search, one trial of the
    head's default hyperparameters per candidate."""
    patience: int = 10
    """Stop a study after this many completed trials without a better one, counted once the sampler's
    :data:`STARTUP_TRIALS` random trials are done (else a study whose best came early stopped before TPE chose a
    single trial)."""
    layer_window: int = 2
    layers: list[int] | None = None
    """Candidate layers of the (single, swept) backbone; default L*-window..L*+window."""
    protocol: str = "nested"
    inner_folds: int = 3
    storage: str = "sqlite:///hacknip-tune.db"
    seed: int | None = 0
    """Seeds Optuna's sampler; give each worker sharing a study a different seed (or None)."""
    member_subsets: bool = False
    """Also tune every non-empty subset of the expression's members, and keep the best by validation score."""


@dataclass
class Scope:
    name: str
    rows: np.ndarray
    folds: Folds
    """Validation folds, as positions within ``rows``."""


@dataclass
class ScopeWinner:
    scope: str
    head: str
    layers: dict[str, list[int]]
    head_params: dict[str, Any]
    validation_score: float
    candidates: list[dict] = field(default_factory=list)
    sweep: list[dict] = field(default_factory=list)


DRIVER_HINTS = {"postgresql": "pip install 'psycopg[binary]' and write postgresql+psycopg://USER@HOST/DATABASE",
                "mysql": "pip install pymysql and write mysql+pymysql://USER@HOST/DATABASE"}
TABLE_CREATION_ATTEMPTS = 3


def open_study(name: str, storage: str, direction: str, sampler):
    """Create or load an Optuna study. Workers started together on an empty database may collide creating Optuna's
    tables (optuna#1092): that is retried. A missing database driver is named, with how to install it."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(TABLE_CREATION_ATTEMPTS):
        try:
            return optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction=direction,
                                       sampler=sampler)
        except ImportError as error:
            dialect = storage.partition("://")[0].partition("+")[0]
            hint = DRIVER_HINTS.get(dialect, "install the SQLAlchemy driver for this database")
            raise ImportError(f"--storage {without_passwords(storage)}: no database driver for it ({error}); "
                              f"{hint}") from error
        except SQLAlchemyError as error:
            if attempt == TABLE_CREATION_ATTEMPTS - 1:
                first_line = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
                raise InputError(f"--storage {without_passwords(storage)}: the database refused ({first_line}); check "
                                 f"the URL, that the server runs and that this machine may connect") from error
            time.sleep(1.0 + attempt)


def storage_url(storage: str | None) -> str:
    """An Optuna storage URL: an RDB URL as given, a file path as SQLite, or ``$HACKNIP_HOME/studies.db``."""
    if storage and "://" in storage:
        return storage
    if storage:
        return f"sqlite:///{Path(storage).resolve()}"
    from hacknip.store import hacknip_home

    hacknip_home().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{hacknip_home() / 'studies.db'}"


class TuningInterrupted(Interrupted):
    """Tuning was interrupted; every finished trial is in the study storage, and the same call resumes from them."""

    def __init__(self, storage: str):
        self.storage = storage
        super().__init__(f"interrupted: the finished trials are stored in {storage}. Run the same command again to "
                         "resume the studies from them")


def tune(config: RunConfig, settings: TuneSettings, progress: Progress = no_progress) -> dict[str, Any]:
    """Tune, score honestly (or as the paper did), and return ``results.json``'s dictionary."""
    try:
        import optuna  # noqa: F401 - fail here, with the install hint, not deep inside a study
    except ImportError:
        raise ImportError("hacknip tune needs Optuna: pip install 'hacknip-core[tune]'") from None
    if settings.protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {settings.protocol!r}: use one of {', '.join(PROTOCOLS)}")
    if settings.n_trials < 0 or settings.patience < 1:
        raise InputError(f"--trials must be 0 (the head's defaults only) or more and --patience at least 1, not "
                         f"{settings.n_trials} and {settings.patience}")
    if settings.member_subsets and len(parse_backbones(config.backbone)) < 2:
        raise InputError(f"--member-subsets needs two or more members joined by '+' in --backbone (e.g. "
                         f"chgnet@all+matminer:modnet), not {config.backbone!r}")
    started = time.perf_counter()
    heads = candidate_heads(config.head)
    prepared = prepare(replace(config, head=heads[0], head_params=head_params_for(heads[0], config.head_params, heads)),
                       progress)
    candidates = [_for_head(prepared, head, head_params_for(head, config.head_params, heads)) for head in heads]
    try:
        return _tune_prepared(candidates, settings, progress, started)
    except KeyboardInterrupt as interrupt:
        raise TuningInterrupted(without_passwords(settings.storage)) from interrupt


def candidate_heads(head: str) -> list[str]:
    """The heads of ``--head``: one name, or several joined by ',' to choose among inside each training fold."""
    heads = [name.strip() for name in head.split(",")]
    if not all(heads) or len(set(heads)) != len(heads):
        raise InputError(f"--head {head!r}: name one head, or several different ones joined by ',' (e.g. "
                         f"lightgbm,modnet)")
    return heads


@dataclass
class HeadCandidate:
    """One head to tune: the prepared run with that head, and its search space."""
    prepared: Prepared
    search_space: Callable


def _for_head(prepared: Prepared, head: str, head_params: dict[str, Any]) -> HeadCandidate:
    spec = get_head_spec(head)
    check_head_does(spec, prepared.task)
    config = replace(prepared.config, head=head, head_params=head_params)
    return HeadCandidate(replace(prepared, config=config, head_spec=spec), head_search_space(spec, head_params))


def _tune_prepared(candidates: list[HeadCandidate], settings: TuneSettings, progress: Progress,
                   started: float) -> dict[str, Any]:
    prepared = candidates[0].prepared
    tuners = _Tuners(candidates, settings, progress)
    everything = Scope("all", np.arange(len(prepared.y)),
                       _inner_folds(prepared.y, prepared.task, settings.inner_folds, prepared.groups))
    if settings.protocol == "paper":
        deploy = tuners.tune_scope(Scope("outer", everything.rows, prepared.folds))
        final = tuners[deploy.head].cross_validate(deploy)
        per_fold = []
    else:
        outer = [_outer_scope(prepared, number, train, settings) for number, (train, _) in enumerate(prepared.folds)]
        *per_fold, deploy = _tune_scopes([*outer, everything], candidates, settings, progress)
        final = tuners.score_outer_folds(per_fold)
    chosen = tuners[deploy.head].prepared
    deployed = replace(chosen, members=[m for m in chosen.members if m.member.name in deploy.layers])
    results = results_dict(_with_head_params(deployed, deploy.head_params), deploy.sweep, deploy.layers, final,
                           prepared.matrix(deploy.layers).shape[1])
    results["tuning"] = _tuning_summary(settings, prepared, deploy, per_fold, [c.prepared.config.head for c in candidates])
    results["params"] = replay_params(chosen.config, deploy, prepared.members)
    results["sweep_folds"] = len(deploy_scope_folds(settings, prepared, everything))
    results["timings_s"] = {"read": round(prepared.read_seconds, 3),
                            "featurize": {m.member.name: round(m.featurize_seconds, 3) for m in prepared.members},
                            "total": round(time.perf_counter() - started, 3)}
    return results


def _tune_scopes(scopes: list[Scope], candidates: list[HeadCandidate], settings: TuneSettings,
                 progress: Progress) -> list[ScopeWinner]:
    """Tune independent scopes (the outer folds and the deploy scope), up to ``config.jobs`` at once in threads, each
    fitting its trials' inner folds with its share of the jobs. Every study is sequential and seeded, so the winners
    are those of tuning one scope at a time; the heads' fits (LightGBM, XGBoost, torch) run outside the GIL."""
    jobs = candidates[0].prepared.config.jobs
    at_once = min(jobs, len(scopes))
    done = progress(f"tuned scopes ({len(scopes) - 1} outer folds, then all rows)", len(scopes))  # the whole search

    def tune(tuners: _Tuners, scope: Scope) -> ScopeWinner:
        winner = tuners.tune_scope(scope)
        done(1)
        return winner

    if at_once <= 1:
        tuners = _Tuners(candidates, settings, progress)
        return [tune(tuners, scope) for scope in scopes]
    tuners = _Tuners(candidates, settings, progress, jobs=max(1, jobs // at_once))
    with ThreadPoolExecutor(at_once) as pool:
        futures = [pool.submit(tune, tuners, scope) for scope in scopes]
        try:
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            # Only this thread sees Ctrl-C: cancel the scopes not started, and have the others stop after the trial
            # each is running (kept in the storage), or leaving the pool would wait for every study to finish.
            tuners.interrupted.set()
            for future in futures:
                future.cancel()
            raise


def deploy_scope_folds(settings: TuneSettings, prepared: Prepared, everything: Scope) -> Folds:
    """The folds the reported layer sweep used: the outer folds (paper) or inner folds of all rows (nested)."""
    return prepared.folds if settings.protocol == "paper" else everything.folds


def head_search_space(spec: HeadSpec, fixed: dict[str, Any] | None = None) -> Callable:
    space = search_space_of(spec.estimator_class(), fixed or {})
    if space is None:
        raise InputError(f"head {spec.name!r} declares no search space (a search_space(trial) classmethod), so it "
                         f"cannot be tuned; heads that can: see the docs of each head plugin")
    return space


class _Tuners:
    """The tuner of each candidate head; a scope keeps the head whose best study scores best."""

    def __init__(self, candidates: list[HeadCandidate], settings: TuneSettings, progress: Progress,
                 jobs: int | None = None):
        self.interrupted = threading.Event()
        self.by_head = {}
        for candidate in candidates:
            prepared = candidate.prepared
            if jobs is not None:
                prepared = replace(prepared, config=replace(prepared.config, jobs=jobs))
            tuner = _Tuner(prepared, settings, candidate.search_space, progress, self.interrupted)
            self.by_head[prepared.config.head] = tuner
        self.prepared = candidates[0].prepared
        """The data, members and folds, which every head shares."""

    def __getitem__(self, head: str) -> _Tuner:
        return self.by_head[head]

    def tune_scope(self, scope: Scope) -> ScopeWinner:
        winners = [tuner.tune_scope(scope) for tuner in self.by_head.values()]
        best = winners[self.prepared.metric.best([winner.validation_score for winner in winners])]
        return replace(best, candidates=[study for winner in winners for study in winner.candidates])

    def score_outer_folds(self, winners: list[ScopeWinner]) -> CVResult:
        """Refit each fold's winner (its head, layers and hyperparameters) on its training rows and score it on the
        test fold it never saw."""
        shared = self.prepared
        fold_models = [(shared.matrix(winner.layers), self[winner.head].new_model(winner.head_params))
                       for winner in winners]
        return cross_validate_per_fold(fold_models, shared.y, shared.folds, task=shared.task,
                                       score_transform=shared.score_transform)


class _Tuner:
    def __init__(self, prepared: Prepared, settings: TuneSettings, search_space: Callable, progress: Progress,
                 interrupted: threading.Event):
        self.prepared, self.settings, self.search_space, self.progress = prepared, settings, search_space, progress
        self.y = prepared.y
        self.study_prefix = _study_prefix(prepared, settings, search_space)
        self.interrupted = interrupted

    def new_model(self, params: dict[str, Any]):
        return model_factory(self.prepared.config, self.prepared.task, tuned=params)

    def tune_scope(self, scope: Scope) -> ScopeWinner:
        sweep, candidates = self._candidate_layers(scope)
        if self.settings.member_subsets:
            subsets = [subset for layers in candidates for subset in member_subsets(layers)]
            # a subset without the swept backbone is the same for each of its candidate layers: tune it once
            candidates = [subset for index, subset in enumerate(subsets) if subset not in subsets[:index]]
        tried = [self._study(scope, layers) for layers in candidates]
        best = tried[self.prepared.metric.best([entry["best_value"] for entry in tried])]
        return ScopeWinner(scope.name, self.prepared.config.head, best["layers"], best["head_params"],
                           best["best_value"], tried, sweep)

    def _candidate_layers(self, scope: Scope) -> tuple[list[dict], list[dict[str, list[int]]]]:
        swept = [m for m in self.prepared.members if m.member.resolve(m.n_layers) is None]
        if self.settings.layers is not None and len(swept) != 1:
            raise InputError("--layers needs exactly one backbone without @LAYERS in --backbone")
        sweep, chosen = [], {}
        if self.settings.layers is None or len(swept) != 1:
            sweep, chosen, _ = sweep_layers(self.prepared.subset(scope.rows, scope.folds), self.new_model({}), self.progress)
        if len(swept) != 1:
            return sweep, [chosen]
        member = swept[0]
        if self.settings.layers is not None:
            layers = [layer for layer in self.settings.layers if 0 <= layer < member.n_layers]
            if len(layers) != len(self.settings.layers):
                raise InputError(f"{member.member.name} has layers 0..{member.n_layers - 1}; --layers asks for "
                                 f"{self.settings.layers}")
        else:
            centre, window = chosen[member.member.name][0], self.settings.layer_window
            layers = list(range(max(0, centre - window), min(member.n_layers, centre + window + 1)))
        fixed = {m.member.name: list(m.member.resolve(m.n_layers)) for m in self.prepared.members if m is not member}
        return sweep, [{**fixed, member.member.name: [layer]} for layer in layers]

    def _study(self, scope: Scope, layers: dict[str, list[int]]) -> dict[str, Any]:
        if self.interrupted.is_set():
            raise KeyboardInterrupt
        X = self.prepared.matrix(layers)[scope.rows]
        y = self.y[scope.rows]
        metric = self.prepared.metric
        # a descriptor keeps its "@0" here (not in what is printed), so that studies stored before still resume
        name = f"{self.study_prefix}/{scope.name}/{format_backbones(layers)}" + ("" if self.settings.n_trials else
                                                                                 "/defaults")
        search_space = self.search_space if self.settings.n_trials else _head_defaults
        study = open_study(name, self.settings.storage, "maximize" if metric.greater_is_better else "minimize",
                           _sampler(self.settings.seed, 0))
        study.sampler = _sampler(self.settings.seed, len(study.trials))

        def objective(trial) -> float:
            params = search_space(trial)
            trial.set_user_attr("head_params", _jsonable(params))
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            problem = [(None, lambda: X, self.new_model(params))]
            return cross_validate_each(problem, y, scope.folds, task=self.prepared.task, jobs=self.prepared.config.jobs,
                                       score_transform=self.prepared.score_transform)[None].mean()

        head = self.prepared.config.head
        advance = self.progress(f"tuning {scope.name}, {features_expression(layers, self.prepared.members)} ({head})",
                                _trials_per_study(self.settings))
        advance(len(_complete(study)))
        if not _study_finished(study, self.settings):
            stop = _StopRule(self.settings, advance, self.interrupted)
            study.optimize(objective, callbacks=[stop])
        best = study.best_trial
        return {"study": name, "head": head, "layers": layers, "features": features_expression(layers, self.prepared.members),
                "best_value": float(best.value), "head_params": best.user_attrs["head_params"],
                "trials": len(_complete(study)), "best_trial": best.number}

    def cross_validate(self, winner: ScopeWinner) -> CVResult:
        return self.prepared.cross_validate(self.prepared.matrix(winner.layers), self.new_model(winner.head_params))


def member_subsets(layers: dict[str, list[int]]) -> list[dict[str, list[int]]]:
    """Every non-empty subset of the members, each in the expression's order, one member alone first."""
    names = list(layers)
    return [{name: layers[name] for name in chosen}
            for size in range(1, len(names) + 1) for chosen in itertools.combinations(names, size)]


def _sampler(seed: int, trials_before: int):
    """TPE, seeded with ``seed`` for a new study. A resumed study gets a seed of its own: the same seed would draw the
    random start-up trials it already ran over again (Optuna's sampler keeps no state in the storage)."""
    import optuna

    if trials_before:
        seed = int(np.random.SeedSequence([seed, trials_before]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS)


def _outer_scope(prepared: Prepared, number: int, train: np.ndarray, settings: TuneSettings) -> Scope:
    groups = None if prepared.groups is None else [prepared.groups[row] for row in train]
    return Scope(f"fold{number}", train, _inner_folds(prepared.y[train], prepared.task, settings.inner_folds, groups))


def _inner_folds(y: np.ndarray, task: str, n_splits: int, groups: list | None = None) -> Folds:
    """Inner folds keep the outer split's groups (scaffolds, formulas) whole, so validation does not leak either."""
    if groups is not None:
        return group_folds(groups, n_splits, INNER_SEED)
    if task == CLASSIFICATION:
        return stratified_folds(y, n_splits, INNER_SEED)
    return random_folds(len(y), n_splits, INNER_SEED)


class _StopRule:
    """Optuna callback: stop at ``n_trials`` completed trials, after ``patience`` trials without improvement past
    the random start-up, or once the tune is interrupted. Counting the study's stored trials (not this process's)
    makes it right for resumed and shared studies."""

    def __init__(self, settings: TuneSettings, advance: Callable[[int], None], interrupted: threading.Event):
        self.settings, self.advance, self.interrupted = settings, advance, interrupted

    def __call__(self, study, trial) -> None:
        self.advance(1)
        if _study_finished(study, self.settings) or self.interrupted.is_set():
            study.stop()


def _head_defaults(trial) -> dict[str, Any]:
    """The search space of ``--trials 0``: nothing drawn, the head as it comes."""
    return {}


def _trials_per_study(settings: TuneSettings) -> int:
    return settings.n_trials or 1


def _complete(study) -> list:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def _study_finished(study, settings: TuneSettings) -> bool:
    complete = _complete(study)
    if len(complete) >= _trials_per_study(settings):
        return True
    if not complete:
        return False
    counted_after = max(study.best_trial.number, STARTUP_TRIALS - 1)
    since_best = sum(1 for trial in complete if trial.number > counted_after)
    return since_best >= settings.patience


def _study_prefix(prepared: Prepared, settings: TuneSettings, search_space: Callable) -> str:
    """Same command, same studies: what makes trials comparable goes into the name (hashed for length): the rows'
    target values (so another target column of the same file is another study), for molecules how their geometries
    were made, the head's search space (a head version that searches more starts afresh instead of resuming
    studies that never drew the new hyperparameter) and the defaults of what the command leaves unset (a head
    version whose defaults changed, as the networks' clip_features did, does not resume trials fitted the old way)."""
    config = prepared.config
    space = search_space_key(search_space)
    defaults = defaults_of(prepared.head_spec.estimator_class(), config.head_params)  # those searched do not count
    targets = hashlib.sha256(np.ascontiguousarray(prepared.y, dtype=np.float64).tobytes()).hexdigest()
    geometries = [config.conformer, config.relax, config.relax_fmax, config.relax_steps]
    if config.relax_optimizer != DEFAULT_OPTIMIZER:  # named only when not: studies made before it was a choice resume
        geometries.append(config.relax_optimizer)
    key = json.dumps({"data": str(Path(config.data).resolve()), "n": len(prepared.y), "backbone": config.backbone,
                      "targets": targets, "geometries": geometries,
                      "head": config.head, "fixed": config.head_params, "pooling": config.pooling, "task": prepared.task,
                      "protocol": settings.protocol, "inner_folds": settings.inner_folds,
                      "outer": prepared.folds_source, "target_transform": config.target_transform,
                      "score_scale": config.score_scale, "extras": config.extra_features,
                      "space": space, "defaults": {name: value for name, value in defaults.items() if name not in space}},
                     sort_keys=True)
    return f"{config.head}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def search_space_key(search_space: Callable) -> dict[str, str]:
    """The distributions a search space draws from (one seeded draw, so a conditional space is read the same way each
    time): the name and range of every hyperparameter."""
    import optuna

    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    search_space(trial)
    return {name: repr(distribution) for name, distribution in sorted(trial.distributions.items())}


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, default=list))


def _with_head_params(prepared: Prepared, head_params: dict[str, Any]) -> Prepared:
    merged = merge_head_params(head_params, prepared.config.head_params)
    return replace(prepared, config=replace(prepared.config, head_params=merged))


def features_expression(layers: dict[str, list[int]], members: list[MemberFeatures]) -> str:
    """The backbone expression of ``layers``: its members in the expression's order (the columns' order), descriptors
    without ``@`` (they have no layers)."""
    return "+".join(m.member.name if is_descriptor_identity(m.features.identity)
                    else format_backbones({m.member.name: layers[m.member.name]}) for m in members
                    if m.member.name in layers)


def replay_params(config: RunConfig, deploy: ScopeWinner, members: list[MemberFeatures]) -> dict[str, Any]:
    """What ``hacknip run --params FILE`` needs to replay the tuned configuration; ``head_defaults`` are the
    defaults of the hyperparameters it leaves unset, so that a later version with other defaults replays it as it
    was fitted."""
    expression = features_expression(deploy.layers, members)
    head_params = merge_head_params(deploy.head_params, config.head_params)
    return {"backbone": expression, "head": deploy.head, "head_params": head_params, "pooling": config.pooling,
            "head_defaults": defaults_of(get_head_spec(deploy.head).estimator_class(), head_params)}


def _tuning_summary(settings: TuneSettings, prepared: Prepared, deploy: ScopeWinner, per_fold: list[ScopeWinner],
                    heads: list[str]) -> dict[str, Any]:
    optimistic = settings.protocol == "paper"
    return {
        **asdict(settings),
        "heads": heads,
        "storage": without_passwords(settings.storage),
        "optimistic": optimistic,
        "note": ("OPTIMISTIC: hyperparameters and layer were chosen by their score on the same outer test folds that "
                 "are reported (the paper's protocol)") if optimistic else
                ("nested: each outer fold was tuned on inner folds of its own training rows; its test rows were "
                 "scored once, after tuning"),
        "metric": prepared.metric.name,
        "per_fold": [_winner_row(winner) for winner in per_fold],
        "deploy": _winner_row(deploy),
    }


def _winner_row(winner: ScopeWinner) -> dict[str, Any]:
    features = next(study["features"] for study in winner.candidates
                    if study["layers"] == winner.layers and study["head"] == winner.head)
    return {"scope": winner.scope, "head": winner.head, "layers": winner.layers, "features": features,
            "head_params": winner.head_params, "validation_score": winner.validation_score, "studies": winner.candidates}
