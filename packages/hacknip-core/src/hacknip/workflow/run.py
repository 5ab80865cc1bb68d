"""``hacknip run`` as a function: read → featurise (through the store) → layer sweep → final CV → results."""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hacknip import __version__
from hacknip.data.molecules import conformer_name, default_embed_options, embed_options_for
from hacknip.data.parsed_cache import PARSED_FILE
from hacknip.data.read import is_molecule_input, read_dataset
from hacknip.data.relaxation import DEFAULT_OPTIMIZER
from hacknip.data.structures import (
    BadInputError,
    Dataset,
    clear_duplicates_within_groups,
    read_extra_features,
    read_sample_columns,
)
from hacknip.errors import InputError
from hacknip.evaluation.crossval import (
    MATBENCH_SEED,
    N_FOLDS,
    PRIMARY_METRIC,
    SCORE_SCALES,
    CVResult,
    best_layer,
    check_task,
    cross_validate_each,
    dummy_cv,
    get_target_transform,
    group_folds,
    infer_task,
    make_model,
    matbench_folds,
    molecule_scaffolds,
    random_folds,
    stratified_folds,
)
from hacknip.evaluation.leaderboard import SUMMARY_FILE, find_matbench_file, leaderboard_rank, official_task_size
from hacknip.features.compose import Member, parse_backbones
from hacknip.features.featurize import dataset_keys, featurize, layer_matrix
from hacknip.features.pooling import parse_pooling
from hacknip.plugins.descriptor import is_descriptor_identity
from hacknip.plugins.executor import BackboneRef, Executor
from hacknip.plugins.head import CLASSIFICATION, REGRESSION, head_params_for, merge_head_params
from hacknip.plugins.registry import (
    UnknownNameError,
    check_backbones,
    create_executor,
    create_head,
    descriptor_spec,
    get_head_spec,
    load_backbone,
    load_descriptor,
)
from hacknip.progress import Progress, no_progress
from hacknip.store import BackboneFeatures, FeatureStore
from hacknip.workflow.presets import DEFAULT_PRESET, get_preset, preset_members
from hacknip.workflow.provenance import provenance

VALIDATION_FILE = "matbench_v0.1_validation.json.gz"

@dataclass
class RunConfig:
    data: Path
    backbone: str
    head: str = "lightgbm"
    head_params: dict[str, Any] = field(default_factory=dict)
    task: str = "auto"
    """``regression``, ``classification``, or ``auto`` (classification when every target is 0 or 1)."""
    pooling: str | None = None
    """Pooling statistics joined by '+'; None: the preset's."""
    target: str | None = None
    structure_column: str = "cif"
    id_column: str | None = None
    targets: Path | None = None
    on_error: str = "raise"
    disordered: str = "refuse"
    """Partially occupied sites: ``refuse`` the row, or featurise an ``approximant`` (hacknip.data.disorder)."""
    batch_size: int = 16
    batch_atoms: int | None = None
    """Atoms per featurisation batch (``batch_size`` also caps it); ``None``: the default for the device."""
    device: str = "cpu"
    backbone_options: dict[str, Any] = field(default_factory=dict)
    folds_file: Path | None = None
    leaderboard_file: Path | None = None
    limit: int | None = None
    store: Path | str | None = None  # a folder or an fsspec URL
    smiles_column: str | None = None
    relax: bool | None = None
    """Molecules: relax the conformer with the first backbone's forces before featurising (None: as the preset says)."""
    conformer: str = "auto"
    """Molecules made from SMILES: RDKit's ETKDG conformer optimised with MMFF94 (``mmff94``) or as it is (``etkdg``),
    or none for descriptors that read the SMILES (``none``: refused with a backbone);
    ``auto``: ``mmff94`` when relaxing (half the steps), else ``etkdg`` (:func:`hacknip.data.molecules.default_embed_options`)."""
    relax_fmax: float = 0.05
    relax_steps: int = 200
    relax_optimizer: str = DEFAULT_OPTIMIZER
    """Molecules: the optimiser that relaxes them (:attr:`hacknip.data.relaxation.RelaxOptions.optimizer`)."""
    relax_batch: int | None = None
    """Molecules relaxed at once, their forces in one batched pass a step (None: 1 on a CPU, more on CUDA:
    :func:`hacknip.data.molecules.molecules_to_dataset`)."""
    workers: int | None = 1
    """Processes for the parallel steps: molecules' geometries, and the ``ray`` executor's actors (None: as many as
    the machine's cores, or the Ray cluster's)."""
    executor: str = "local"
    """Where featurisation's batches run: ``local``, ``ray``, or a plugin's executor (:mod:`hacknip.plugins.executor`)."""
    executor_options: dict[str, Any] = field(default_factory=dict)
    """Options of the executor other than ``workers``, e.g. ``address``, ``gpus_per_worker`` for ``ray``."""
    on_nonconverged: str = "keep"
    target_transform: str | None = None
    """Regression: train on ``log10``, ``ln`` or ``neglog10_1m`` (-log10(1-y)) of the target, predict back."""
    score_scale: str = "original"
    """Score predictions on the ``original`` target scale or the ``transformed`` one."""
    extra_features: list[str] = field(default_factory=list)
    """Per-sample scalar columns (table columns, or extxyz info keys) appended to the embedding."""
    split: str = "auto"
    """``auto`` (official Matbench folds, else (Stratified)KFold), ``random``, or ``scaffold`` (molecules)."""
    jobs: int = 1
    """Head fits at once (the layer sweep's and the final cross-validation's), each in its own process."""
    preset: str = DEFAULT_PRESET
    """Layers and pooling where neither the expression nor ``pooling`` says (:mod:`hacknip.workflow.presets`)."""

    def __post_init__(self) -> None:
        if self.pooling is None:
            self.pooling = get_preset(self.preset).pooling
        if self.relax is None:  # a preset relaxes with a backbone; an expression of descriptors has none to relax with
            self.relax = get_preset(self.preset).relax_molecules and relaxing_backbone(self.backbone) is not None
        if self.conformer == "auto":
            self.conformer = conformer_name(default_embed_options(relaxing=self.relax))
        if not embed_options_for(self.conformer).geometry and relaxing_backbone(self.backbone) is not None:
            raise InputError(f"--conformer none makes molecules without 3-D geometries, and {self.backbone!r} names a "
                             "backbone, which needs them: use --conformer etkdg or mmff94, or only descriptors "
                             "(rdkit:descriptors, rdkit:morgan)")


@dataclass
class MemberFeatures:
    member: Member
    features: BackboneFeatures
    n_layers: int
    featurize_seconds: float
    computed: int
    reused: int
    feature_names: tuple[str, ...] = ()
    """A descriptor's (backbones' columns are named by layer and pooling, not here)."""


def load_data(config: RunConfig, progress: Progress = no_progress) -> Dataset:
    if is_molecule_input(config.data, config.structure_column, config.smiles_column):
        return _molecules(config, progress)
    dataset = read_dataset(config.data, target=config.target, structure_column=config.structure_column,
                           id_column=config.id_column, targets=config.targets, on_error=config.on_error,
                           disordered=config.disordered, parsed_cache=parsed_cache_file(config.store),
                           progress=progress)
    return dataset.head(config.limit) if config.limit else dataset


def parsed_cache_file(store: Path | str | None) -> Path:
    """Where parsed CIF rows are kept: beside the feature store's folders (for a store on object storage, in
    ``$HACKNIP_HOME/features``, as relaxed geometries)."""
    return FeatureStore(store).local_root / PARSED_FILE


def _molecules(config: RunConfig, progress: Progress) -> Dataset:
    """Molecules get 3D conformers, relaxed with the first backbone of the expression when asked (stored, reused)."""
    from hacknip.data.molecules import RelaxOptions, available_cores, molecules_with_progress

    relaxing = relaxing_backbone(config.backbone) if config.relax else None
    if config.relax and relaxing is None:
        raise InputError(f"--relax relaxes molecules with a backbone's forces, and {config.backbone!r} names only "
                         "descriptors: add a backbone to --backbone, or pass --no-relax")
    relax = (RelaxOptions(fmax=config.relax_fmax, steps=config.relax_steps, optimizer=config.relax_optimizer)
             if config.relax else None)
    return molecules_with_progress(config.data, conformer=config.conformer, relaxed_with=relaxing, relax_options=relax,
                                   workers=config.workers or available_cores(), progress=progress,
                                   smiles_column=config.smiles_column, target=config.target, id_column=config.id_column,
                                   backbone_options=config.backbone_options, store=FeatureStore(config.store),
                                   on_error=config.on_error, on_nonconverged=config.on_nonconverged, limit=config.limit,
                                   relax_batch=config.relax_batch)


def relaxing_backbone(expression: str) -> str | None:
    """The backbone that relaxes molecules: the expression's first member that is not a descriptor (None: none is)."""
    return next((member.name for member in parse_backbones(expression) if descriptor_spec(member.name) is None), None)


def checked_backbones(config: RunConfig) -> list[Member]:
    """The backbone expression, checked against the installed plugins before any work (names, layer numbers); a name
    no plugin provides passes if the store holds features made for it elsewhere."""
    store = FeatureStore(config.store)
    members = check_backbones(config.backbone, allow_missing=lambda name: bool(store.find(name)))
    return preset_members(members, get_preset(config.preset))


def featurize_members(dataset: Dataset, members: list[Member], config: RunConfig, store: FeatureStore,
                      progress: Progress) -> tuple[Dataset, list[MemberFeatures]]:
    """Featurise with every backbone; rows any backbone rejects are dropped for all (and listed)."""
    results = []
    for member in members:
        if descriptor_spec(member.name) is not None:
            dataset, described = _describe_member(dataset, member, config, store, progress)
            results.append(described)
            continue
        try:
            backbone = load_backbone(member.name, device=config.device, **config.backbone_options)
        except UnknownNameError as missing_plugin:
            results.append(_stored_only(member, dataset, store, missing_plugin))
            continue
        member.resolve(len(backbone.layer_widths))  # fixed layers exist (a checkpoint's model decides how many)
        advance = progress(f"featurising with {member.name}" + (f" on {config.executor}" if config.executor != "local"
                                                                else ""), len(dataset.samples))
        report = featurize(dataset, backbone, store, batch_size=config.batch_size, on_error=config.on_error,
                           on_progress=advance, name=member.name, batch_atoms=config.batch_atoms,
                           executor=make_executor(config),
                           backbone_ref=BackboneRef(member.name, {"device": config.device, **config.backbone_options}))
        dataset = dataset.drop(report.rejected)
        results.append(MemberFeatures(member, report.features, len(backbone.layer_widths),
                                      report.seconds, report.computed, report.reused))
    return dataset, results


def _describe_member(dataset: Dataset, member: Member, config: RunConfig, store: FeatureStore,
                     progress: Progress) -> tuple[Dataset, MemberFeatures]:
    from hacknip.data.molecules import available_cores
    from hacknip.features.describe import describe

    workers = config.workers or available_cores()
    advance = progress(f"describing with {member.name}" + (f" ({workers} workers)" if workers > 1 else ""),
                       len(dataset.samples))
    descriptor = load_descriptor(member.name)
    report = describe(dataset, descriptor, store, on_error=config.on_error, on_progress=advance, name=member.name,
                      workers=workers)
    return dataset.drop(report.rejected), MemberFeatures(member, report.features, 1, report.seconds, report.computed,
                                                         report.reused, tuple(descriptor.feature_names))


def make_executor(config: RunConfig) -> Executor | None:
    """The executor the configuration names; None for ``local``, which featurize makes with its own thread count."""
    if config.executor == "local" and not config.executor_options:
        return None
    options = dict(config.executor_options)
    if config.executor != "local" and config.workers is not None:
        options["workers"] = config.workers
    return create_executor(config.executor, **options)


def _stored_only(member: Member, dataset: Dataset, store: FeatureStore, missing_plugin: UnknownNameError) -> MemberFeatures:
    """Use features another environment made, when this one lacks the backbone's plugin."""
    keys = dataset_keys(dataset)
    candidates = [store.open(identity) for identity in store.find(member.name)]
    complete = [c for c in candidates if c.stored_layers() and not c.missing(keys, c.stored_layers())]
    if not candidates:
        raise missing_plugin
    if not complete:
        raise UnknownNameError(f"backbone {member.name!r}: no plugin installed here, and the {len(candidates)} stored "
                               f"feature set(s) for it miss some of these structures. Install its plugin, or run "
                               f"`hacknip featurize --backbone {member.name}` on this data where it is installed "
                               f"(with the same HACKNIP_HOME)")
    chosen = complete[-1]
    n_layers = max(chosen.stored_layers()) + 1
    member.resolve(n_layers)
    return MemberFeatures(member, chosen, n_layers, 0.0, 0, len(keys))


GROUP_SPLIT = "group:"


def group_column(split: str) -> str | None:
    """The column of a ``group:COLUMN`` split, else None."""
    return split[len(GROUP_SPLIT):].strip() if split.startswith(GROUP_SPLIT) else None


def check_split(split: str) -> str:
    if split in ("auto", "random", "scaffold") or group_column(split):
        return split
    raise InputError(f"unknown split {split!r}: use auto, random, scaffold or group:COLUMN (rows sharing that "
                     f"column's value stay in one test fold, e.g. group:formula)")


def split_groups(dataset: Dataset, config: RunConfig) -> list | None:
    """The group of each sample for grouped splits (its scaffold, or its value in the ``group:`` column), else None."""
    check_split(config.split)
    if config.split == "scaffold":
        smiles = [sample.atoms.info.get("smiles") for sample in dataset.samples]
        if None in smiles:
            raise InputError(f"--split scaffold needs molecules given as SMILES; {dataset.source} row "
                             f"{dataset.samples[smiles.index(None)].row} has none")
        return molecule_scaffolds(smiles)
    column = group_column(config.split)
    if column is None:
        return None
    values, source = read_sample_columns(dataset, config.data, [column], config.targets, purpose=f"--split {config.split}")
    for sample, (value,) in zip(dataset.samples, values):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            raise BadInputError(source, sample.row, sample.id, f"no {column!r} value to group it by")
    return [str(value) for (value,) in values]


def make_folds(dataset: Dataset, config: RunConfig, task: str = REGRESSION,
               groups: list | None = None) -> tuple[list, str]:
    """Grouped folds when ``groups`` are given (scaffolds, ``group:COLUMN``); official Matbench folds when the data
    carry Matbench ids and the folds file is found; else Matbench's seeded (Stratified)KFold."""
    if groups is not None:
        column = group_column(config.split)
        what, label = ("groups", f"{column!r}-grouped") if column else ("scaffolds", "Bemis-Murcko scaffold")
        return group_folds(groups, what=what), \
            f"{label} folds ({N_FOLDS}, seed {MATBENCH_SEED}; a group is never split between training and test)"
    if dataset.matbench_task and config.split == "auto":
        folds_file = config.folds_file or find_matbench_file(Path(config.data), VALIDATION_FILE)
        if folds_file:
            return matbench_folds(dataset.ids, dataset.matbench_task, folds_file), f"official Matbench v0.1 folds ({folds_file})"
    if task == CLASSIFICATION:
        return stratified_folds(dataset.targets), f"StratifiedKFold({N_FOLDS}, shuffle=True, random_state={MATBENCH_SEED})"
    return random_folds(len(dataset.samples)), f"KFold({N_FOLDS}, shuffle=True, random_state={MATBENCH_SEED})"


def choose_task(config: RunConfig, y: np.ndarray, head_spec) -> str:
    task = infer_task(y) if config.task == "auto" else config.task
    check_task(task, y)
    check_head_does(head_spec, task)
    return task


def check_head_does(head_spec, task: str) -> None:
    if task not in head_spec.task_kinds:
        raise InputError(f"head {head_spec.name!r} does not do {task} (it does {', '.join(sorted(head_spec.task_kinds))}); "
                         f"pick another with --head (see hacknip list)")


def model_factory(config: RunConfig, task: str, tuned: dict[str, Any] | None = None) -> Callable[[], Any]:
    """Makes the scaler-and-head model (:func:`hacknip.evaluation.crossval.make_model`) of the run's head. Heads that
    serve classification take ``task="classification"``; regression is every head's default. ``tuned``
    hyperparameters come first; the user's ``--head-param`` values override them (:func:`merge_head_params`)."""
    from sklearn.base import clone

    params = {**merge_head_params(tuned or {}, config.head_params), **({"task": task} if task == CLASSIFICATION else {})}
    transform = get_target_transform(config.target_transform)
    head = create_head(config.head, **params)  # made here, so that a worker process needs no plugin registry
    return lambda: make_model(clone(head), transform)


def score_transform(config: RunConfig) -> Callable[[np.ndarray], np.ndarray] | None:
    """What targets and predictions pass through before scoring: the target transform with ``--score-scale
    transformed``, else nothing."""
    transform = get_target_transform(config.target_transform)
    return transform.forward if transform and config.score_scale == "transformed" else None


def check_target_transform(config: RunConfig, dataset: Dataset, task: str) -> None:
    transform = get_target_transform(config.target_transform)
    if config.score_scale not in SCORE_SCALES:
        raise InputError(f"score scale {config.score_scale!r}: use one of {', '.join(SCORE_SCALES)}")
    if transform is None:
        return
    if task == CLASSIFICATION:
        raise InputError("--target-transform applies to regression targets, not 0/1 classes")
    with np.errstate(all="ignore"):
        bad = ~np.isfinite(transform.forward(dataset.targets))
    if bad.any():
        sample = dataset.samples[int(np.argmax(bad))]
        raise InputError(f"{dataset.source}: {sample.row} (id {sample.id}): target {sample.target} is outside the domain of "
                         f"{transform.name} ({transform.domain}); {int(bad.sum())} such rows")


@dataclass
class Prepared:
    """A dataset featurised by every backbone of the expression, with its task and outer folds."""

    config: RunConfig
    dataset: Dataset
    members: list[MemberFeatures]
    head_spec: Any
    task: str
    folds: list
    folds_source: str
    read_seconds: float
    keys: list[str]
    """Store key of each sample, in dataset order."""
    extras: np.ndarray
    """The ``--extra-features`` columns of each sample (no columns when none were asked for)."""
    groups: list | None = None
    """Each sample's group when the split is grouped (scaffolds, ``group:COLUMN``): inner folds keep them whole too."""

    @property
    def y(self) -> np.ndarray:
        return self.dataset.targets

    @property
    def metric(self):
        return PRIMARY_METRIC[self.task]

    @property
    def score_transform(self) -> Callable[[np.ndarray], np.ndarray] | None:
        return score_transform(self.config)

    def cross_validate(self, X: np.ndarray, new_model: Callable[[], Any], on_fold=None) -> CVResult:
        return self.cross_validate_each([(None, lambda: X, new_model)], on_fold)[None]

    def cross_validate_each(self, problems, on_fold=None) -> dict[Any, CVResult]:
        """Several ``(name, make_X, new_model)`` problems, their fits ``config.jobs`` at once."""
        return cross_validate_each(problems, self.y, self.folds, on_fold=on_fold, task=self.task,
                                   score_transform=self.score_transform, jobs=self.config.jobs)

    def subset(self, rows: np.ndarray, folds: list) -> Prepared:
        """The same preparation restricted to ``rows``, with ``folds`` (positions within those rows) as its folds."""
        return dataclasses.replace(self, dataset=self.dataset.subset(rows), folds=folds,
                                   keys=[self.keys[row] for row in rows], extras=self.extras[rows],
                                   groups=None if self.groups is None else [self.groups[row] for row in rows])

    def matrix(self, layers: dict[str, list[int]]) -> np.ndarray:
        """Pooled features of the given layers of each backbone, concatenated in expression order, then the extras.
        A member that ``layers`` leaves out is left out of the matrix (``hacknip tune --member-subsets``)."""
        pooling = parse_pooling(self.config.pooling)
        blocks = [layer_matrix(m.features, self.keys, layers[m.member.name], pooling) for m in self.members
                  if m.member.name in layers]
        return np.concatenate([*blocks, self.extras], axis=1)


def prepare(config: RunConfig, progress: Progress = no_progress) -> Prepared:
    """Read the data, featurise it through the store, decide the task and make the outer folds."""
    started = time.perf_counter()
    members = checked_backbones(config)
    parse_pooling(config.pooling)  # a typo should fail before featurising
    head_spec = get_head_spec(config.head)
    dataset = load_data(config, progress)
    check_targets(dataset)
    read_seconds = time.perf_counter() - started
    dataset, member_features = featurize_members(dataset, members, config, FeatureStore(config.store), progress)
    task = choose_task(config, dataset.targets, head_spec)
    check_target_transform(config, dataset, task)
    extras = read_extra_features(dataset, config.data, config.extra_features, config.targets)
    groups = split_groups(dataset, config)
    if groups is not None:
        clear_duplicates_within_groups(dataset.samples, groups)
    folds, folds_source = make_folds(dataset, config, task, groups)
    return Prepared(config, dataset, member_features, head_spec, task, folds, folds_source, read_seconds,
                    dataset_keys(dataset), extras, groups)


def check_targets(dataset: Dataset, n_folds: int = N_FOLDS) -> None:
    """Refuse, before any featurising, data a model cannot learn from or be scored on."""
    y = dataset.targets
    if len(y) < n_folds:
        raise InputError(f"{dataset.source}: {len(y)} labelled rows; {n_folds}-fold cross-validation needs at least "
                         f"{n_folds}")
    if np.all(y == y[0]):
        raise InputError(f"{dataset.source}: every target ({dataset.target_name}) is {y[0]:g}: there is nothing to learn; "
                         f"check --target")


def sweep_layers(prepared: Prepared, new_model: Callable[[], Any], progress: Progress = no_progress):
    """Cross-validate every layer of each backbone without fixed layers; keep the best (L*) for each.

    Returns ``(per_layer entries, chosen layers by backbone name, CVResult by (name, layer))``."""
    per_layer, chosen, results = [], {}, {}
    for item in prepared.members:
        fixed = item.member.resolve(item.n_layers)
        if fixed is not None:
            chosen[item.member.name] = list(fixed)
            continue
        advance = progress(f"layer sweep {item.member.name} ({prepared.config.head})", item.n_layers * len(prepared.folds))
        pooling = parse_pooling(prepared.config.pooling)
        problems = [(layer, functools.partial(layer_matrix, item.features, prepared.keys, [layer], pooling), new_model)
                    for layer in range(item.n_layers)]
        sweep = []
        for layer, result in prepared.cross_validate_each(problems, on_fold=advance).items():
            results[(item.member.name, layer)] = result
            sweep.append({"backbone": item.member.name, "layer": layer, **result.summary()})
        per_layer += sweep
        chosen[item.member.name] = [best_layer(sweep, prepared.metric)]
    return per_layer, chosen, results


def run(config: RunConfig, progress: Progress = no_progress, save_to: Path | None = None) -> dict[str, Any]:
    """Run the whole pipeline and return the results dictionary (see :mod:`hacknip.report` for the files).
    With ``save_to``, also fit the chosen configuration on every row and save it there (see
    :mod:`hacknip.workflow.saved_model`)."""
    started = time.perf_counter()
    config = dataclasses.replace(config, head_params=head_params_for(config.head, config.head_params, [config.head]))
    prepared = prepare(config, progress)
    new_model = model_factory(config, prepared.task)

    sweep_started = time.perf_counter()
    per_layer, chosen, sweep_results = sweep_layers(prepared, new_model, progress)
    sweep_seconds = time.perf_counter() - sweep_started

    final_started = time.perf_counter()
    X = prepared.matrix(chosen)
    final = _already_scored(prepared.members, chosen, sweep_results)
    if final is None:
        advance = progress(f"final cross-validation ({config.head})", len(prepared.folds))
        final = prepared.cross_validate(X, new_model, on_fold=advance)
    final_seconds = time.perf_counter() - final_started

    results = results_dict(prepared, per_layer, chosen, final, X.shape[1])
    if save_to is not None:
        from hacknip.workflow.saved_model import save_model

        results["saved_model"] = str(save_model(save_to, prepared, chosen, config.head_params, final.summary(),
                                                saved_geometries(config)))
    results["preset"] = {"name": config.preset, "summary": get_preset(config.preset).summary}
    results["timings_s"] = {
        "read": round(prepared.read_seconds, 3),
        "featurize": {i.member.name: round(i.featurize_seconds, 3) for i in prepared.members},
        "layer_sweep": round(sweep_seconds, 3),
        "final_cv": round(final_seconds, 3),
        "total": round(time.perf_counter() - started, 3),
    }
    return results


def _already_scored(member_features, chosen, sweep_results) -> CVResult | None:
    """A single swept backbone's final features are those its sweep already scored at L*: no need to fit again."""
    if len(member_features) == 1:
        name = member_features[0].member.name
        return sweep_results.get((name, chosen[name][0])) if len(chosen[name]) == 1 else None
    return None


def out_of_fold_predictions(dataset: Dataset, final: CVResult, folds) -> dict[str, list]:
    """Each sample's id, true value, test fold and prediction (for classification: P(y=1) and the 0/1 label)."""
    fold_of = np.full(len(dataset.samples), -1)
    for number, (_, test) in enumerate(folds):
        fold_of[test] = number
    predictions = {"id": dataset.ids, "true": dataset.targets.tolist(), "fold": fold_of.tolist()}
    if final.task == CLASSIFICATION:
        return {**predictions, "probability": final.predictions.tolist(),
                "predicted": (final.predictions > 0.5).astype(int).tolist()}
    return {**predictions, "predicted": final.predictions.tolist()}


def geometries_settings(config: RunConfig) -> dict[str, Any]:
    """How a molecule run made its geometries (``analyze umap`` makes them again from this)."""
    relaxation = ({"fmax": config.relax_fmax, "steps": config.relax_steps, "optimizer": config.relax_optimizer}
                  if config.relax else {})
    return {"conformer": config.conformer, "relaxed": config.relax, **relaxation}


def saved_geometries(config: RunConfig) -> dict[str, Any] | None:
    """What a model folder records of how its molecules' geometries were made, so that ``hacknip predict`` makes them
    the same way: :func:`geometries_settings`, and the backbone that relaxed them; None for other inputs."""
    if not is_molecule_input(config.data, config.structure_column, config.smiles_column):
        return None
    relaxed_with = {"relaxed_with": relaxing_backbone(config.backbone)} if config.relax else {}
    return {**geometries_settings(config), **relaxed_with}


def scored_results(config: RunConfig, dataset: Dataset, final: CVResult, folds: list, folds_source: str) -> dict[str, Any]:
    """The part of ``results.json`` every way of scoring a model shares (``run``, ``tune``, ``finetune``): the data, the
    folds, the scores and the dummy model's, the skipped and flagged rows, out-of-fold predictions, the leaderboard."""
    scale = score_transform(config) or (lambda values: values)
    dummy = dummy_cv(scale(dataset.targets), folds, final.task)
    results: dict[str, Any] = {
        "hacknip_version": __version__,
        "data": str(config.data),
        "task": dataset.matbench_task,
        "target": dataset.target_name,
        "backbone": config.backbone,
        "disordered": config.disordered,
        **({"limit": config.limit} if config.limit else {}),
        **({"geometries": geometries_settings(config)}
           if is_molecule_input(config.data, config.structure_column, config.smiles_column) else {}),
        "n_samples": len(dataset.samples),
        "folds_source": folds_source,
        "task_kind": final.task,
        "target_transform": config.target_transform,
        "scored_on": config.score_scale if config.target_transform else "original",
        "metric": final.metric.name,
        "folds": final.folds,
        **final.summary(),
        **{f"dummy_{name}": value for name, value in dummy.summary().items()},
        "skipped": [entry.as_dict() for entry in dataset.skipped],
        "flagged": [entry.as_dict() for entry in dataset.flagged],
        "predictions": out_of_fold_predictions(dataset, final, folds),
        "leaderboard": None,
        "provenance": provenance(config.data),
    }
    if final.task == REGRESSION:
        results["relative_mae"] = final.mae_mean / dummy.mae_mean
        _warn_unscorable(config, dataset, final)
    if dataset.matbench_task and final.task == REGRESSION:
        summary = config.leaderboard_file or find_matbench_file(Path(config.data), SUMMARY_FILE)
        unranked = summary and why_not_ranked(config, dataset, folds_source)
        if unranked:
            results["leaderboard_note"] = unranked
        elif summary:
            rank = leaderboard_rank(dataset.matbench_task, final.mae_mean, summary)
            results["leaderboard"] = rank.as_dict() if rank else None
    return results


def why_not_ranked(config: RunConfig, dataset: Dataset, folds_source: str) -> str | None:
    """Why a Matbench score cannot be ranked on the leaderboard, or None when it can: a rank compares scores on the
    same rows and the same folds, i.e. the whole task on its official folds."""
    task = dataset.matbench_task
    if not folds_source.startswith("official Matbench"):
        return f"the leaderboard ranks scores on the official folds of {task}; this run used {folds_source}"
    folds_file = config.folds_file or find_matbench_file(Path(config.data), VALIDATION_FILE)
    size = official_task_size(task, folds_file) if folds_file else None
    if size is not None and len(dataset.samples) != size:
        return (f"the leaderboard ranks scores on all {size} rows of {task}; this run scored {len(dataset.samples)} "
                f"({'--limit' if config.limit else 'rows skipped'})")
    return None


class UnscorablePredictionsWarning(UserWarning):
    """Out-of-fold predictions the score scale cannot take (ln of 0): their folds' scores are infinite or undefined."""


def _warn_unscorable(config: RunConfig, dataset: Dataset, final: CVResult) -> None:
    transform = score_transform(config)
    if transform is None:
        return
    with np.errstate(all="ignore"):
        bad = np.flatnonzero(~np.isfinite(transform(final.predictions)))
    if len(bad):
        examples = ", ".join(f"{dataset.samples[row].id} (predicted {final.predictions[row]:.3g})" for row in bad[:3])
        warnings.warn(f"{len(bad)} out-of-fold predictions have no value on the {config.target_transform} scale the "
                      f"scores use, e.g. {examples}, so their folds' MAE, RMSE and R² are infinite or undefined; a "
                      "network fed features far outside its training rows' range does this: leave the mlp or modnet "
                      "head's clip_features on (the default)", UnscorablePredictionsWarning, stacklevel=3)


def results_dict(prepared: Prepared, per_layer: list[dict], chosen: dict[str, list[int]], final: CVResult,
                 n_features: int) -> dict[str, Any]:
    """The ``results.json`` schema shared by ``hacknip run`` and ``hacknip tune``."""
    config, member_features = prepared.config, prepared.members
    single = len(member_features) == 1 and len(chosen[member_features[0].member.name]) == 1
    return {
        **scored_results(config, prepared.dataset, final, prepared.folds, prepared.folds_source),
        "backbones": [{"name": i.member.name, "identity": i.features.identity, "layers": chosen[i.member.name],
                       "computed": i.computed, "reused_from_store": i.reused} for i in member_features],
        "head": config.head,
        "head_package": prepared.head_spec.package,
        "head_params": config.head_params,
        "pooling": "+".join(parse_pooling(config.pooling)),
        "extra_features": list(config.extra_features),
        "n_features": n_features,
        "per_layer": per_layer,
        "best_layer": chosen[member_features[0].member.name][0] if single else chosen,
        "undefined_values": undefined_values(prepared),
    }


def undefined_values(prepared: Prepared) -> list[dict[str, Any]]:
    """Each descriptor's NaN count (a feature undefined for a structure, e.g. a site featuriser that failed on it),
    per feature: the scaler in front of the head fills them with the training fold's mean, so the user should see
    how many there were."""
    counts = []
    for item in prepared.members:
        if not is_descriptor_identity(item.features.identity):
            continue
        missing = np.isnan(layer_matrix(item.features, prepared.keys, [0], ()))
        per_feature = missing.sum(axis=0)
        counts.append({"descriptor": item.member.name, "values": int(missing.sum()),
                       "structures": int(missing.any(axis=1).sum()),
                       "features": {item.feature_names[i]: int(per_feature[i]) for i in np.flatnonzero(per_feature)}})
    return counts
