"""``hacknip curve`` as a function: the paper's data-efficiency study (section 2.2, Fig. 3b-c).

For each fraction of the data, ``repeats`` seeded random subsets, each scored by 5-fold cross-validation (folds
drawn from the repeat's seed; the first repeat of all the data uses ``hacknip run``'s folds, official for Matbench)
with HackNIP (features from the store: featurised once, whatever the subsets) and, optionally, by fine-tuning the
same backbone. Each (method, fraction, repeat) point is stored as it finishes, under a folder named by everything
that decides it, so that a killed study resumes and a finished point is never redone. The fits (power law for
fine-tuning, log-linear for HackNIP, as the paper found), their crossing, and the per-neuron update ratios of the
fraction-trained against the full-data models (fold 0 of repeat 0 of each) come from
:mod:`hacknip.analysis.data_efficiency`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hacknip import __version__
from hacknip.errors import InputError
from hacknip.evaluation.crossval import N_FOLDS, fitted_pipeline, group_folds, random_folds, stratified_folds
from hacknip.finetuning.trainer import FinetuneOptions
from hacknip.plugins.head import CLASSIFICATION, REGRESSION
from hacknip.progress import Progress, no_progress
from hacknip.report import strict_json
from hacknip.workflow.provenance import provenance
from hacknip.workflow.run import Prepared, RunConfig, model_factory, prepare, sweep_layers

HACKNIP, FINETUNE = "hacknip", "finetune"
FIT_KINDS = {HACKNIP: "log_linear", FINETUNE: "power_law"}
"""How each method's error falls with data in the paper (section 2.2): log-linearly for HackNIP, as a power law for
fine-tuning."""
MIN_SUBSET = 2 * N_FOLDS


@dataclass
class CurveSettings:
    fractions: tuple[float, ...] = (0.1, 0.3, 1.0)
    repeats: int = 5
    full_repeats: int | None = None
    """Repeats of the full data (fraction 1), which differ only by their folds (None: ``repeats``); the paper
    fine-tuned once on all of it."""
    finetune: FinetuneOptions | None = None
    """Fine-tune too, with this recipe (None: HackNIP only)."""
    finetune_backbone: str | None = None
    """What to fine-tune (``name@L``); default: the first backbone of the expression, up to its last layer (HackNIP
    may use several layers or backbones, fine-tuning truncates one network after one layer)."""
    seed: int = 0
    n_boot: int = 1000
    update_ratios: bool = True

    def check(self) -> CurveSettings:
        bad = [f for f in self.fractions if not 0 < f <= 1]
        if not self.fractions or bad:
            raise InputError(f"fractions must lie in (0, 1], got {list(self.fractions) or 'none'}")
        if len(set(self.fractions)) != len(self.fractions):
            raise InputError(f"fractions repeat: {list(self.fractions)}")
        if self.repeats < 1 or (self.full_repeats is not None and self.full_repeats < 1):
            raise InputError(f"repeats must be at least 1, got {self.repeats} (full data: {self.full_repeats})")
        return self

    def repeats_of(self, fraction: float) -> int:
        return self.full_repeats if fraction == 1 and self.full_repeats is not None else self.repeats


@dataclass
class Point:
    method: str
    fraction: float
    repeat: int
    n_samples: int
    scores: dict[str, float]
    """``<metric>_mean`` / ``<metric>_std`` over the subset's folds."""
    layers: Any
    seconds: float
    folds: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "fraction": self.fraction, "repeat": self.repeat, "n_samples": self.n_samples,
                **self.scores, "layers": self.layers, "seconds": round(self.seconds, 3), "folds": self.folds}


OnPoint = Callable[[Point, bool], None]
"""Called with each point and whether it was read back from an earlier run."""


def subset_rows(n: int, fraction: float, repeat: int, seed: int) -> np.ndarray:
    """The rows of one repeat's subset: ``round(fraction * n)`` rows drawn without replacement from (seed, fraction,
    repeat); every row for ``fraction == 1``."""
    size = round(fraction * n)
    if size < MIN_SUBSET:
        raise InputError(f"fraction {fraction:g} of {n} rows is {size} rows; {N_FOLDS}-fold cross-validation of a subset "
                         f"needs at least {MIN_SUBSET}: use a larger fraction")
    if size == n:
        return np.arange(n)
    rng = np.random.default_rng([seed, round(fraction * 1_000_000), repeat])
    return np.sort(rng.choice(n, size=size, replace=False))


def subset_folds(y: np.ndarray, task: str, groups: Sequence[Any] | None, repeat: int, seed: int) -> list:
    """Folds of a subset (positions within it), shuffled with the repeat's own seed: a repeat of the full data differs
    from another by its folds, as the paper's "five five-fold experiments"."""
    fold_seed = seed * 1000 + repeat
    if groups is not None:
        return group_folds(groups, seed=fold_seed)
    if task == CLASSIFICATION:
        return stratified_folds(y, seed=fold_seed)
    return random_folds(len(y), seed=fold_seed)


class PointStore:
    """One JSON file per finished point (and an npz of fold 0's initial and trained weights), in a folder named by
    the hash of what decides the points."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, method: str, fraction: float, repeat: int, suffix: str) -> Path:
        return self.folder / f"{method}-f{fraction:g}-r{repeat}{suffix}"

    def get(self, method: str, fraction: float, repeat: int) -> Point | None:
        path = self._path(method, fraction, repeat, ".json")
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            return Point(saved["method"], saved["fraction"], saved["repeat"], saved["n_samples"],
                         {k: v for k, v in saved.items() if k.endswith(("_mean", "_std"))}, saved["layers"],
                         saved["seconds"], saved["folds"])
        except (OSError, ValueError, KeyError):
            return None  # a damaged record is computed again

    def put(self, point: Point, weights: tuple[dict, dict] | None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if weights is not None:
            initial, trained = weights
            arrays = {**{f"initial/{k}": np.asarray(v) for k, v in initial.items()},
                      **{f"trained/{k}": np.asarray(v) for k, v in trained.items()}}
            partial = self._path(point.method, point.fraction, point.repeat, ".partial.npz")
            np.savez(partial, **arrays)
            partial.replace(self._path(point.method, point.fraction, point.repeat, ".npz"))
        partial = self._path(point.method, point.fraction, point.repeat, ".json.partial")
        partial.write_text(strict_json(point.as_dict()))
        partial.replace(self._path(point.method, point.fraction, point.repeat, ".json"))

    def weights(self, method: str, fraction: float, repeat: int) -> tuple[dict, dict] | None:
        path = self._path(method, fraction, repeat, ".npz")
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as stored:
            initial = {k[len("initial/"):]: stored[k] for k in stored.files if k.startswith("initial/")}
            trained = {k[len("trained/"):]: stored[k] for k in stored.files if k.startswith("trained/")}
        return initial, trained


def curve(config: RunConfig, settings: CurveSettings, progress: Progress = no_progress, checkpoints: Path | None = None,
          on_point: OnPoint | None = None, on_epoch=None) -> dict[str, Any]:
    """Run (or resume) the study and return ``curve.json``'s content (see :mod:`hacknip.report` for its figures).
    Points are kept under ``checkpoints/curves`` and fine-tuning's epoch checkpoints under ``checkpoints`` (default
    ``$HACKNIP_HOME/finetune``)."""
    from hacknip.workflow.finetune import default_checkpoints

    settings.check()
    started = time.perf_counter()
    prepared = prepare(config, progress)
    finetuning = None
    if settings.finetune is not None:
        from hacknip.workflow.finetune import prepare_finetuning

        backbone = settings.finetune_backbone or prepared.members[0].member.name
        finetuning = prepare_finetuning(dataclasses.replace(config, backbone=backbone), settings.finetune, progress,
                                        prepared.dataset)  # read once
        _check_same_rows(prepared, finetuning)
    checkpoints = checkpoints or default_checkpoints()
    store = PointStore(checkpoints / "curves" / _study_key(prepared, settings))
    methods = [HACKNIP] + ([FINETUNE] if finetuning else [])
    points: dict[str, list[Point]] = {method: [] for method in methods}
    advance = progress(f"data-efficiency curve ({', '.join(methods)})",
                       len(methods) * sum(settings.repeats_of(f) for f in settings.fractions))
    try:
        for fraction in sorted(settings.fractions):
            for repeat in range(settings.repeats_of(fraction)):
                rows = subset_rows(len(prepared.y), fraction, repeat, settings.seed)
                for method in methods:
                    point, reused = _point(method, store, prepared, finetuning, rows, fraction, repeat, settings,
                                           on_epoch, checkpoints)
                    points[method].append(point)
                    if on_point:
                        on_point(point, reused)
                    advance(1)
    finally:
        if finetuning is not None:
            finetuning.prepared.restore_pretrained()
    finetuned = f"{finetuning.backbone.name}@{finetuning.layer}" if finetuning else None
    return _curve_results(prepared, settings, points, store, time.perf_counter() - started, finetuned)


def _point(method, store, prepared, finetuning, rows, fraction, repeat, settings, on_epoch,
           checkpoints) -> tuple[Point, bool]:
    stored = store.get(method, fraction, repeat)
    if stored is not None:
        return stored, True
    started = time.perf_counter()
    keep_weights = settings.update_ratios and repeat == 0
    y = prepared.y[rows]
    groups = None if prepared.groups is None else [prepared.groups[row] for row in rows]
    if len(rows) == len(prepared.y) and repeat == 0:
        folds = prepared.folds  # all the data: the run's own folds (the official ones for Matbench), as hacknip run
    else:
        folds = subset_folds(y, prepared.task, groups, repeat, settings.seed)
    if method == HACKNIP:
        result, layers, weights = _hacknip_scores(prepared.subset(rows, folds), keep_weights)
    else:
        result, layers, weights = _finetune_scores(finetuning, rows, folds, keep_weights, on_epoch, checkpoints)
    point = Point(method, fraction, repeat, len(rows), result.summary(), layers, time.perf_counter() - started,
                  result.folds)
    store.put(point, weights)
    return point, False


def _hacknip_scores(subset: Prepared, keep_weights: bool):
    """The layer sweep and cross-validation ``hacknip run`` would do on the subset; with ``keep_weights``, fold 0's
    head refitted to read its initial and trained weights (heads that expose them: the neural ones)."""
    new_model = model_factory(subset.config, subset.task)
    per_layer, chosen, results = sweep_layers(subset, new_model)
    X = subset.matrix(chosen)
    single = len(subset.members) == 1 and len(chosen[subset.members[0].member.name]) == 1
    name = subset.members[0].member.name
    result = results.get((name, chosen[name][0])) if single else None
    result = result or subset.cross_validate(X, new_model)
    weights = None
    if keep_weights:
        train = subset.folds[0][0]
        head = fitted_pipeline(new_model().fit(X[train], subset.y[train]))[-1]
        if hasattr(head, "initial_weights_") and hasattr(head, "trained_weights_"):
            weights = (head.initial_weights_, head.trained_weights_)
    layers = chosen[name][0] if single else chosen
    return result, layers, weights


def _finetune_scores(finetuning, rows: np.ndarray, folds: list, keep_weights: bool, on_epoch, checkpoints: Path):
    result, tuners = finetuning.cross_validate(rows, folds, checkpoints, on_epoch)
    weights = None
    if keep_weights:
        tuner = tuners[0]
        weights = ({k: v.numpy() for k, v in tuner.initial_state_.items()},
                   {k: v.numpy() for k, v in tuner.trained_state().items()})
    return result, finetuning.layer, weights


def _check_same_rows(prepared: Prepared, finetuning) -> None:
    """Both methods must see the same rows in the same order (a row one backbone path rejects is rejected for both)."""
    if prepared.dataset.ids != finetuning.dataset.ids:
        only = sorted(set(prepared.dataset.ids) ^ set(finetuning.dataset.ids))[:3]
        raise InputError(f"featurising and fine-tuning kept different rows (e.g. {only}); pass --on-error raise to see "
                         "why, or remove those rows")


def _study_key(prepared: Prepared, settings: CurveSettings) -> str:
    """A hash of everything that decides the points: the rows (content and targets), backbones, head, task, split,
    target transform, seeds and the fine-tuning recipe."""
    from hacknip.features.featurize import dataset_keys

    config = prepared.config
    digest = hashlib.sha256()
    for key in dataset_keys(prepared.dataset):
        digest.update(key.encode())
    digest.update(np.ascontiguousarray(prepared.y, dtype=np.float64).tobytes())
    decided_by = {
        "backbone": config.backbone, "identities": [m.features.identity for m in prepared.members],
        "head": config.head, "head_params": config.head_params, "pooling": config.pooling, "task": prepared.task,
        "split": config.split, "folds": prepared.folds_source, "target_transform": config.target_transform,
        "score_scale": config.score_scale,
        "extra_features": config.extra_features, "seed": settings.seed,
        "finetune": settings.finetune.as_dict() if settings.finetune else None,
        "finetune_backbone": settings.finetune_backbone,
    }
    digest.update(json.dumps(decided_by, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _curve_results(prepared: Prepared, settings: CurveSettings, points: dict[str, list[Point]], store: PointStore,
                   seconds: float, finetuned: str | None) -> dict[str, Any]:
    from hacknip.analysis.data_efficiency import crossing_estimate, fit

    metric = prepared.metric.name
    regression = prepared.task == REGRESSION
    methods: dict[str, Any] = {}
    for method, method_points in points.items():
        pairs = [(p.n_samples, p.scores[f"{metric}_mean"]) for p in method_points]
        enough = regression and len({n for n, _ in pairs}) >= 2
        methods[method] = {
            "label": _label(method, prepared, finetuned),
            "fit_kind": FIT_KINDS[method] if enough else None,
            "fit": fit(FIT_KINDS[method], *zip(*pairs)).as_dict() if enough else None,
            "points": [{"n_samples": p.n_samples, "fraction": p.fraction, "repeat": p.repeat,
                        metric: p.scores[f"{metric}_mean"], f"{metric}_std": p.scores[f"{metric}_std"],
                        "layers": p.layers, "seconds": round(p.seconds, 3)} for p in method_points],
        }
    crossing = None
    if len(points) == 2 and all(m["fit"] for m in methods.values()):
        crossing = crossing_estimate({m: [(p.n_samples, p.scores[f"{metric}_mean"]) for p in ps]
                                      for m, ps in points.items()}, FIT_KINDS, n_boot=settings.n_boot,
                                     seed=settings.seed)
    return {
        "hacknip_version": __version__,
        "data": str(prepared.config.data),
        "target": prepared.dataset.target_name,
        "task_kind": prepared.task,
        "metric": metric,
        "backbone": prepared.config.backbone,
        "head": prepared.config.head,
        "n_total": len(prepared.y),
        "fractions": sorted(settings.fractions),
        "repeats": settings.repeats,
        "full_repeats": settings.repeats_of(1.0),
        "seed": settings.seed,
        "finetune_recipe": settings.finetune.as_dict() if settings.finetune else None,
        "finetuned": finetuned,
        "methods": methods,
        "crossing": crossing,
        "update_ratios": update_ratio_summary(store, points, settings),
        "points_folder": str(store.folder),
        "seconds": round(seconds, 3),
        "provenance": {**provenance(prepared.config.data), "seeds": {"folds and subsets": settings.seed}},
    }


def update_ratio_summary(store: PointStore, points: dict[str, list[Point]], settings: CurveSettings) -> dict | None:
    """Per-neuron update ratios of repeat 0 of the smallest fraction against the full data (fold 0 of each), for each
    method whose models expose weights."""
    from hacknip.analysis.data_efficiency import ratio_summary, update_ratios

    fractions = sorted(settings.fractions)
    if not settings.update_ratios or fractions[-1] != 1.0 or len(fractions) < 2:
        return None
    smallest = fractions[0]
    result: dict[str, Any] = {"fraction": smallest, "against": 1.0, "methods": {}, "ratios": {}}
    for method in points:
        small, full = store.weights(method, smallest, 0), store.weights(method, 1.0, 0)
        if small is None or full is None:
            result["methods"][method] = None  # a head without neurons (trees), or weights not kept
            continue
        ratios = update_ratios(full[0], small[1], full[1])
        result["methods"][method] = ratio_summary(ratios)
        result["ratios"][method] = ratios.tolist()
    return result


def _label(method: str, prepared: Prepared, finetuned: str | None = None) -> str:
    if method == HACKNIP:
        return f"HackNIP ({prepared.config.backbone} + {prepared.config.head})"
    return f"fine-tuned {finetuned}"
