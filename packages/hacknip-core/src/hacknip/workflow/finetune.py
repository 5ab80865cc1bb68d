"""``hacknip finetune`` as a function: read → build each structure's graph once → fine-tune and score on the same
folds as ``hacknip run`` → the same ``results.json`` schema, so the two compare like for like."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hacknip.data.structures import Dataset
from hacknip.errors import InputError
from hacknip.evaluation.crossval import CVResult, check_task, cross_validate_per_fold, get_target_transform, infer_task
from hacknip.features.compose import parse_backbones
from hacknip.finetuning.inputs import build_inputs, fingerprint
from hacknip.finetuning.trainer import Epoch, FinetuneOptions, FineTuner, PreparedNetwork
from hacknip.plugins.registry import load_backbone
from hacknip.plugins.trainable import trainable_network
from hacknip.store import hacknip_home
from hacknip.workflow.run import (
    Progress,
    RunConfig,
    check_target_transform,
    check_targets,
    load_data,
    make_folds,
    no_progress,
    saved_geometries,
    score_transform,
    scored_results,
    split_groups,
)

HEAD_NAME = "finetune"
"""What ``results.json`` says in ``head`` for a fine-tuned model (its MLP head and recipe are under ``finetune``)."""
OnEpoch = Callable[[int, Epoch, int], None]
"""``on_epoch(fold, epoch record, epochs planned)``; fold is -1 for the final fit on every row (``--save``)."""


@dataclass
class Finetuning:
    """A dataset with every structure's network input built, its task, folds, and the network to train."""

    config: RunConfig
    options: FinetuneOptions
    dataset: Dataset
    backbone: Any
    prepared: PreparedNetwork
    task: str
    folds: list
    folds_source: str
    read_seconds: float
    inputs_seconds: float

    @property
    def y(self) -> np.ndarray:
        return self.dataset.targets

    @property
    def layer(self) -> int:
        return self.prepared.layer

    def tuner(self, checkpoints: Path | None = None, on_epoch: Callable[[Epoch, int], None] | None = None) -> FineTuner:
        return FineTuner(self.prepared, self.options, self.task, checkpoints, on_epoch,
                         get_target_transform(self.config.target_transform))

    def cross_validate(self, rows: np.ndarray, folds: list, checkpoints: Path | None = None,
                       on_epoch: OnEpoch | None = None, on_fold=None) -> tuple[CVResult, list[FineTuner]]:
        """Fine-tune on each training fold of ``rows`` (rows of the whole dataset; ``folds`` are positions within
        them) and score its test fold, as ``hacknip run`` scores a head; also the tuners, fold by fold."""
        tuners: list[FineTuner] = []

        def new_tuner(fold: int) -> Callable[[], FineTuner]:
            def make() -> FineTuner:
                report = (lambda entry, planned: on_epoch(fold, entry, planned)) if on_epoch else None
                tuners.append(self.tuner(checkpoints, report))
                return tuners[-1]
            return make

        X = rows[:, None]  # a tuner reads its rows of the dataset's inputs
        result = cross_validate_per_fold([(X, new_tuner(fold)) for fold in range(len(folds))], self.y[rows], folds,
                                         on_fold=on_fold, task=self.task, score_transform=score_transform(self.config))
        return result, tuners


def chosen_layer(expression: str, n_layers: int) -> tuple[str, int]:
    """The backbone name and the layer to fine-tune up to: ``name@L``, or the last layer."""
    members = parse_backbones(expression)
    if len(members) != 1:
        raise InputError(f"fine-tuning takes one backbone, got {expression!r} ({len(members)}); fine-tune each "
                         "separately")
    member = members[0]
    fixed = member.resolve(n_layers)
    if fixed is not None and len(fixed) != 1:
        raise InputError(f"fine-tuning truncates the network after one layer; {expression!r} names {len(fixed)}: "
                         f"use {member.name}@L")
    return member.name, (fixed[0] if fixed is not None else n_layers - 1)


def prepare_finetuning(config: RunConfig, options: FinetuneOptions, progress: Progress = no_progress,
                       dataset: Dataset | None = None) -> Finetuning:
    """Read the data (unless ``dataset`` is the data already read), load the backbone and build its network input
    for every structure (rows it cannot take are rejected as featurising rejects them), decide the task and the outer
    folds."""
    started = time.perf_counter()
    options.check()
    name = parse_backbones(config.backbone)[0].name
    backbone = load_backbone(name, device=config.device, **config.backbone_options)
    name, layer = chosen_layer(config.backbone, len(backbone.layer_widths))
    network = trainable_network(backbone, layer)
    if dataset is None:
        dataset = load_data(config, progress)
        check_targets(dataset)
    read_seconds = time.perf_counter() - started

    inputs_started = time.perf_counter()
    dataset, inputs = build_inputs(dataset, backbone, network, config.on_error, progress)
    task = infer_task(dataset.targets) if config.task == "auto" else config.task
    check_task(task, dataset.targets)
    check_target_transform(config, dataset, task)
    folds, folds_source = make_folds(dataset, config, task, split_groups(dataset, config))
    prepared = PreparedNetwork(network, inputs, options.frozen, options.device, fingerprint(backbone, dataset))
    return Finetuning(config, options, dataset, backbone, prepared, task, folds, folds_source, read_seconds,
                      time.perf_counter() - inputs_started)


def default_checkpoints() -> Path:
    """Where fine-tuning keeps its epoch checkpoints unless told otherwise: ``$HACKNIP_HOME/finetune``."""
    return hacknip_home() / "finetune"


def finetune(config: RunConfig, options: FinetuneOptions, progress: Progress = no_progress,
             checkpoints: Path | None = None, on_epoch: OnEpoch | None = None,
             save_to: Path | None = None) -> dict[str, Any]:
    """Fine-tune on each outer training fold, score each test fold, and return the results dictionary (the schema of
    :func:`hacknip.workflow.run.results_dict`, with ``head = "finetune"`` and a ``finetune`` section: the recipe,
    each fold's epochs and best epoch). ``checkpoints`` keeps epoch checkpoints so that a killed run resumes. With
    ``save_to``, also fine-tune on every row and save that model (:mod:`hacknip.workflow.saved_finetuned`)."""
    started = time.perf_counter()
    run = prepare_finetuning(config, options, progress)
    try:
        results = cross_validated(run, progress, checkpoints, on_epoch)
        if save_to is not None:
            from hacknip.workflow.saved_finetuned import save_finetuned

            results["saved_model"] = str(save_finetuned(save_to, run, checkpoints, on_epoch,
                                                        results["finetune"]["cross_validation"],
                                                        saved_geometries(run.config)))
    finally:
        run.prepared.restore_pretrained()
    results["timings_s"] = {"read": round(run.read_seconds, 3), "graphs": round(run.inputs_seconds, 3),
                            "finetune": round(sum(f["seconds"] for f in results["finetune"]["folds"]), 3),
                            "total": round(time.perf_counter() - started, 3)}
    return results


def cross_validated(run: Finetuning, progress: Progress = no_progress, checkpoints: Path | None = None,
                    on_epoch: OnEpoch | None = None) -> dict[str, Any]:
    advance = progress(f"fine-tuning {run.backbone.name}@{run.layer} ({len(run.folds)} folds)", len(run.folds))
    final, tuners = run.cross_validate(np.arange(len(run.y)), run.folds, checkpoints, on_epoch, on_fold=advance)
    results = scored_results(run.config, run.dataset, final, run.folds, run.folds_source)
    results.update({
        "backbones": [{"name": run.backbone.name, "identity": run.backbone.identity(), "layers": [run.layer],
                       "computed": len(run.y), "reused_from_store": 0}],
        "head": HEAD_NAME,
        "head_package": "hacknip-core",
        "head_params": run.options.as_dict(),
        "pooling": "mean",
        "extra_features": [],
        "n_features": run.prepared.network.width,
        "per_layer": [],
        "best_layer": run.layer,
        "finetune": {"recipe": run.options.as_dict(), "layer": run.layer,
                     "groups": {group: len(names) for group, names in run.prepared.groups.items()},
                     "trained_parameters": trained_parameter_count(run.prepared),
                     "folds": [tuner.record.as_dict() for tuner in tuners],
                     "cross_validation": final.summary()},
    })
    return results


def trained_parameter_count(prepared: PreparedNetwork) -> int:
    return sum(parameter.numel() for parameter in prepared.network.parameters() if parameter.requires_grad)

