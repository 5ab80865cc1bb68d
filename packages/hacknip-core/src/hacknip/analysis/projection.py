"""UMAP of stored layer embeddings, coloured by the target (the paper's section 2.4 and Fig. 5b-i).

Each chosen layer of one backbone is read from the feature store (pooled as the run pooled it), standardised per
column (zero mean, unit variance, so that no wide-ranged feature dominates the distances) and projected to two
dimensions with UMAP. Nothing is featurised here: the features must already be in the store (``hacknip run`` or
``hacknip featurize`` put them there), so no backbone model is loaded.

Reproducibility: UMAP runs with ``random_state=seed``, which makes umap-learn run its optimisation on one thread
(``n_jobs=1``); the same seed, data and versions give identical coordinates. Up to :data:`EXACT_NEIGHBOURS_UP_TO`
samples the nearest neighbours are found exactly and handed to UMAP. The colour scale is linear, or a power scale
(matplotlib ``PowerNorm``) for a skewed target: see :func:`colour_scale`.

Example::

    from hacknip.analysis.projection import project_run

    projection = project_run("runs/matbench_phonons-chgnet-lightgbm-...")   # L* and the last layer
    projection.coordinates[projection.best_layer]                         # (n, 2) array
    projection.table().to_csv("umap.csv", index=False)                    # id, target, layer, x, y
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hacknip.errors import InputError
from hacknip.evaluation.crossval import check_task, infer_task
from hacknip.features.compose import Member, parse_backbones
from hacknip.features.featurize import dataset_keys, layer_matrix
from hacknip.features.pooling import parse_pooling
from hacknip.plugins.head import CLASSIFICATION
from hacknip.progress import Progress, no_progress
from hacknip.store import BackboneFeatures, FeatureStore
from hacknip.workflow.run import RunConfig, load_data

INSTALL_HINT = "pip install 'hacknip-core[analysis]'"
RESULTS_FILE = "results.json"
SKEW_THRESHOLD = 1.0
"""Above this absolute sample skewness a regression target gets a power colour scale; at or below it, a linear one."""
GAMMA_LIMITS = (0.1, 10.0)
MIN_SAMPLES = 5
"""UMAP's spectral initialisation needs a few points more than the two output dimensions."""
BEST, LAST = "L*", "last"
EXACT_NEIGHBOURS_UP_TO = 20_000
"""Up to this many samples the nearest neighbours are found exactly (scikit-learn, about 2 s for 10^4 x 256) and given
to UMAP: umap-learn's own search for more than 4096 samples (pynndescent) spends about 50 s compiling with numba in
every new process (bench/umap_cost.py). Exact search grows as n^2, so larger sets use pynndescent (seeded as well)."""


@dataclass(frozen=True)
class UmapSettings:
    seed: int = 0
    n_neighbors: int = 15
    """UMAP's default; fewer samples than this lower it to ``n - 1``."""
    min_dist: float = 0.1
    gamma: float | None = None
    """Colour-scale exponent: None picks it from the target (:func:`colour_scale`), 1 is linear."""

    def check(self) -> UmapSettings:
        if self.n_neighbors < 2:
            raise InputError(f"n_neighbors must be at least 2, got {self.n_neighbors}")
        if not 0 <= self.min_dist <= 1:
            raise InputError(f"min_dist must be between 0 and 1, got {self.min_dist}")
        if self.gamma is not None and not self.gamma > 0:
            raise InputError(f"gamma must be positive (1 = linear colour scale), got {self.gamma}")
        return self


@dataclass(frozen=True)
class ColourScale:
    """How target values map to colours: ``((value - min) / (max - min)) ** gamma``; ``gamma`` 1 is linear."""

    gamma: float
    skew: float
    chosen: str
    """Why this gamma: ``"linear"`` (|skew| <= 1), ``"median at mid-scale"`` (skewed target) or ``"given"``."""

    @property
    def is_power(self) -> bool:
        return self.gamma != 1.0


def sample_skewness(values: np.ndarray) -> float:
    """Fisher-Pearson skewness (0 for a constant)."""
    values = np.asarray(values, dtype=float)
    spread = values.std()
    return float(((values - values.mean()) ** 3).mean() / spread**3) if spread > 0 else 0.0


def colour_scale(targets: np.ndarray, gamma: float | None = None) -> ColourScale:
    """Linear for a roughly symmetric target; for a skewed one (|skew| > 1) the power whose scale puts the median at
    the middle colour, so that the crowded half of the values gets half the colours instead of a sliver of them
    (the paper power-normalises skewed targets without giving its gamma)."""
    skew = sample_skewness(targets)
    if gamma is not None:
        return ColourScale(float(gamma), skew, "given")
    if abs(skew) <= SKEW_THRESHOLD:
        return ColourScale(1.0, skew, "linear")
    return ColourScale(median_gamma(targets), skew, "median at mid-scale")


def median_gamma(targets: np.ndarray) -> float:
    """The gamma with ``((median - min) / (max - min)) ** gamma == 0.5``, kept within :data:`GAMMA_LIMITS`."""
    targets = np.asarray(targets, dtype=float)
    low, high = float(targets.min()), float(targets.max())
    position = (float(np.median(targets)) - low) / (high - low) if high > low else 0.5
    if not 0 < position < 1:
        return 1.0
    return float(np.clip(math.log(0.5) / math.log(position), *GAMMA_LIMITS))


@dataclass
class Projection:
    """2-D UMAP coordinates of each projected layer for the same samples, and what colours them."""

    ids: list[str]
    targets: np.ndarray
    target_name: str
    task_kind: str
    backbone: str
    identity: dict[str, Any]
    pooling: str
    n_layers: int
    coordinates: dict[int, np.ndarray]
    """Layer -> (n, 2) array, in the order the layers were asked for."""
    settings: UmapSettings
    colour_scale: ColourScale
    best_layer: int | None = None
    """L*, the layer a run's sweep chose, when known."""
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def last_layer(self) -> int:
        return self.n_layers - 1

    def roles(self, layer: int) -> list[str]:
        """``["L*"]``, ``["last"]``, both, or none."""
        return [role for role, is_it in ((BEST, layer == self.best_layer), (LAST, layer == self.last_layer)) if is_it]

    def table(self):
        """Long table: one row per sample and layer, columns id, target, layer, x, y."""
        import pandas as pd

        return pd.concat([pd.DataFrame({"id": self.ids, "target": self.targets, "layer": layer,
                                        "x": xy[:, 0], "y": xy[:, 1]})
                          for layer, xy in self.coordinates.items()], ignore_index=True)


def umap_coordinates(X: np.ndarray, settings: UmapSettings) -> np.ndarray:
    """Standardised ``X`` projected to (n, 2) with a seeded, single-threaded UMAP."""
    try:
        import umap
    except ImportError:
        raise ImportError(f"UMAP projections need umap-learn: {INSTALL_HINT}") from None
    from sklearn.preprocessing import StandardScaler

    if len(X) < MIN_SAMPLES:
        raise InputError(f"a UMAP needs at least {MIN_SAMPLES} samples, got {len(X)}")
    standardised = StandardScaler().fit_transform(X)
    n_neighbors = min(settings.n_neighbors, len(X) - 1)
    neighbours = exact_neighbours(standardised, n_neighbors) if len(X) <= EXACT_NEIGHBOURS_UP_TO else (None,) * 3
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=settings.min_dist,
                        random_state=settings.seed, n_jobs=1, precomputed_knn=neighbours)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")  # no search index: we never transform()
        return np.asarray(reducer.fit_transform(standardised), dtype=np.float64)


def exact_neighbours(X: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray, None]:
    """Each row's ``n_neighbors`` nearest rows (itself first), as umap's ``precomputed_knn``."""
    from sklearn.neighbors import NearestNeighbors

    distances, indices = NearestNeighbors(n_neighbors=n_neighbors).fit(X).kneighbors(X)
    return indices, distances.astype(np.float32), None


def project(dataset, features: BackboneFeatures, layers: Sequence[int], pooling: str, task_kind: str,
            settings: UmapSettings = UmapSettings(), *, n_layers: int, best_layer: int | None = None,
            progress: Progress = no_progress) -> Projection:
    """UMAP of each of ``layers`` of ``features`` for the samples of ``dataset`` (all stored: see
    :func:`check_stored`)."""
    settings.check()
    keys = dataset_keys(dataset)
    pooled = parse_pooling(pooling)
    targets = dataset.targets
    check_task(task_kind, targets)
    advance = progress(f"UMAP of {len(layers)} layer(s) of {features.identity.get('name')}", len(layers))
    coordinates = {}
    for layer in layers:
        coordinates[layer] = umap_coordinates(layer_matrix(features, keys, [layer], pooled), settings)
        advance(1)
    return Projection(ids=dataset.ids, targets=targets, target_name=dataset.target_name, task_kind=task_kind,
                      backbone=str(features.identity.get("name")), identity=features.identity,
                      pooling="+".join(pooled), n_layers=n_layers, coordinates=coordinates, settings=settings,
                      colour_scale=colour_scale(targets, settings.gamma), best_layer=best_layer, source=dataset.source)


def project_run(run_dir: str | Path, layers: Sequence[int] | None = None, settings: UmapSettings = UmapSettings(), *,
                backbone: str | None = None, data: str | Path | None = None, store: str | Path | None = None,
                progress: Progress = no_progress, **read_options: Any) -> Projection:
    """UMAP of a ``hacknip run`` (or ``tune``) folder's samples, from the features it stored: by default its best
    layer L* and the last layer. ``backbone`` picks one member of a composed run (``orb+mace``); ``data`` replaces
    the data path recorded in results.json (a moved file). ``read_options``: how the run read its data where
    results.json does not say (``structure_column``, ``id_column``, ``targets``, ``smiles_column``)."""
    results_file = Path(run_dir) / RESULTS_FILE
    results = read_results(results_file)
    entry = _run_member(results, backbone, results_file)
    data_path = Path(data) if data else _recorded_data(results, results_file)
    config = RunConfig(data=data_path, backbone=entry["name"], target=_field(results, "target", results_file),
                       on_error="skip", disordered=results.get("disordered", "refuse"),
                       limit=results.get("limit"), store=Path(store) if store else None, **_recorded_geometries(results),
                       **read_options)
    dataset = _rows_of_run(load_data(config, progress), _field(results, "predictions", results_file)["id"], results_file)
    features = _run_features(FeatureStore(config.store), entry, results_file, config)
    n_layers = stored_layer_count(features)
    chosen = [int(layer) for layer in entry.get("layers") or []]
    best = chosen[0] if _was_swept(results, entry["name"]) and chosen else None
    layers = check_layers(layers or list(dict.fromkeys([*chosen, n_layers - 1])), n_layers, "--layers")
    check_stored(features, dataset, layers, config)
    return project(dataset, features, layers, _field(results, "pooling", results_file),
                   _field(results, "task_kind", results_file), settings, n_layers=n_layers, best_layer=best,
                   progress=progress)


def project_data(data: str | Path, backbone: str, layers: Sequence[int] | None = None,
                 settings: UmapSettings = UmapSettings(), *, pooling: str = "mean", task: str = "auto",
                 store: str | Path | None = None, progress: Progress = no_progress, **read_options: Any) -> Projection:
    """UMAP of a dataset's stored features of one backbone, without a run folder. Layers: ``layers``, else those of
    ``backbone@LAYERS``, else every stored layer. ``read_options`` are :class:`~hacknip.workflow.run.RunConfig` fields
    that say how to read the data (``target``, ``structure_column``, ``id_column``, ``targets``, ``limit``, ...)."""
    member = _single_member(backbone)
    config = RunConfig(data=Path(data), backbone=member.name, store=Path(store) if store else None, **read_options)
    dataset = load_data(config, progress)
    features = _features_by_name(FeatureStore(config.store), member.name, dataset, config)
    n_layers = stored_layer_count(features)
    layers = check_layers(layers or member.resolve(n_layers) or range(n_layers), n_layers, "--layers")
    check_stored(features, dataset, layers, config)
    targets = dataset.targets
    task_kind = infer_task(targets) if task == "auto" else task
    return project(dataset, features, layers, pooling, task_kind, settings, n_layers=n_layers, progress=progress)


def read_results(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path}: no such file; give the folder hacknip run wrote (it holds {RESULTS_FILE}), or use "
                         f"--data and --backbone instead")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error}); use the {RESULTS_FILE} hacknip run wrote") from None
    if not isinstance(results, dict):
        raise InputError(f"{path}: not a hacknip {RESULTS_FILE} (expected a JSON object)")
    return results


def _field(results: dict[str, Any], name: str, results_file: Path) -> Any:
    if name not in results:
        raise InputError(f"{results_file}: no {name!r} field; use the folder of a hacknip run or tune, or use --data "
                         f"and --backbone instead")
    return results[name]


def _recorded_data(results: dict[str, Any], results_file: Path) -> Path:
    path = Path(_field(results, "data", results_file))
    if not path.exists():
        raise InputError(f"{results_file}: its data {path} is not there (moved, or a path relative to another folder); "
                         f"pass the data file with --data")
    return path


def _recorded_geometries(results: dict[str, Any]) -> dict[str, Any]:
    """How a molecule run made its geometries, as RunConfig fields (results.json before 2026-12-02 wrote ``start``
    for the conformer a relaxation began from, and unrelaxed runs used ETKDG's as it is)."""
    recorded = results.get("geometries")
    if not recorded:
        return {}
    fields = {"conformer": recorded.get("conformer") or recorded.get("start") or "etkdg",
              "relax": bool(recorded.get("relaxed"))}
    fields.update({f"relax_{name}": recorded[name] for name in ("fmax", "steps", "optimizer") if name in recorded})
    return fields


def _run_member(results: dict[str, Any], backbone: str | None, results_file: Path) -> dict[str, Any]:
    """The ``backbones`` entry of results.json to project: the only one, or the one named ``backbone``."""
    entries = _field(results, "backbones", results_file)
    names = [entry["name"] for entry in entries]
    if backbone is None:
        if len(entries) != 1:
            raise InputError(f"{results_file}: the run joins backbones {', '.join(names)}; pick the one to project with "
                             f"--backbone, e.g. --backbone {names[0]}")
        return entries[0]
    wanted = _single_member(backbone).name
    for entry in entries:
        if entry["name"].casefold() == wanted.casefold():
            return entry
    raise InputError(f"{results_file}: the run has no backbone {wanted!r} (it has {', '.join(names)})")


def _was_swept(results: dict[str, Any], name: str) -> bool:
    return any(entry.get("backbone") == name for entry in results.get("per_layer") or [])


def _rows_of_run(dataset, ids: Sequence[str], results_file: Path):
    """The run's samples, in its order (its ids are those it kept after --limit and skipped rows)."""
    positions: dict[str, deque[int]] = defaultdict(deque)
    for position, sample_id in enumerate(dataset.ids):
        positions[sample_id].append(position)
    rows, absent = [], []
    for sample_id in map(str, ids):
        (rows.append(positions[sample_id].popleft()) if positions[sample_id] else absent.append(sample_id))
    if absent:
        raise InputError(f"{results_file}: {len(absent)} of its {len(ids)} sample ids (first: {absent[0]}) are not in "
                         f"{dataset.source}; pass the data the run used with --data (and --id-column, "
                         f"--structure-column as the run had them)")
    return dataset.subset(rows)


def _single_member(backbone: str) -> Member:
    members = parse_backbones(backbone)
    if len(members) != 1:
        raise InputError(f"backbone {backbone!r}: a UMAP projects the layers of one backbone; name one, e.g. "
                         f"{members[0].label}")
    return members[0]


def _run_features(store: FeatureStore, entry: dict[str, Any], results_file: Path, config: RunConfig) -> BackboneFeatures:
    """The stored features of the exact backbone identity the run recorded."""
    identity = entry.get("identity")
    if identity is None:
        raise InputError(f"{results_file}: backbone {entry['name']!r} has no recorded identity; use --data and "
                         f"--backbone instead")
    if identity not in store.identities():
        raise InputError(f"{results_file}: the features of {entry['name']} this run used are not in the store "
                         f"{store.root}; store them with {_featurize_command(config, entry['name'])} (same HACKNIP_HOME), "
                         f"or point --store at the store the run used")
    return store.open(identity)


def _features_by_name(store: FeatureStore, name: str, dataset, config: RunConfig) -> BackboneFeatures:
    """The stored feature set known as ``name`` that holds every sample (the last such, as ``hacknip run`` picks when
    the backbone's plugin is not installed)."""
    candidates = [store.open(identity) for identity in store.find(name)]
    if not candidates:
        raise InputError(f"no features of backbone {name!r} in the store {store.root}; store them with "
                         f"{_featurize_command(config, name)} (same HACKNIP_HOME), or point --store at another store")
    keys = dataset_keys(dataset)
    complete = [c for c in candidates if c.stored_layers() and not c.missing(keys, [0])]
    return complete[-1] if complete else candidates[-1]


def stored_layer_count(features: BackboneFeatures) -> int:
    layers = features.stored_layers()
    if not layers:
        raise InputError(f"{features.path}: no stored layers; featurise again with hacknip featurize")
    return max(layers) + 1


def check_layers(layers: Sequence[int], n_layers: int, option: str) -> list[int]:
    layers = list(dict.fromkeys(int(layer) for layer in layers))
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise InputError(f"{option}: layer(s) {', '.join(map(str, bad))} do not exist; the stored backbone has layers "
                         f"0..{n_layers - 1}")
    return layers


def check_stored(features: BackboneFeatures, dataset, layers: Sequence[int], config: RunConfig) -> None:
    """Every sample must have every layer in the store: say which command stores them when not."""
    missing = features.missing(dataset_keys(dataset), layers)
    if missing:
        name = features.identity.get("name")
        raise InputError(f"{features.path}: {len(missing)} of {len(dataset.samples)} structures of {config.data} have no "
                         f"stored layer(s) {', '.join(map(str, layers))} of {name} (first: row "
                         f"{dataset.samples[missing[0]].row}); store them with {_featurize_command(config, name)} "
                         f"(same HACKNIP_HOME), then run this again")


def _featurize_command(config: RunConfig, name: str) -> str:
    limit = f" --limit {config.limit}" if config.limit else ""
    return f"`hacknip featurize --data {config.data} --backbone {name}{limit}`"


def is_classification(projection: Projection) -> bool:
    return projection.task_kind == CLASSIFICATION
