"""A fine-tuned model on disk (``hacknip finetune --save``) and prediction with it (``hacknip predict``).

The folder holds ``model.json`` (format, backbone name and identity, the layer, the recipe, the target's scaling)
and ``weights.safetensors``: the parameters fine-tuning changed (the unfrozen backbone parameters and the head),
as named tensors. The frozen rest comes from the backbone's own weights, which must be the ones it was trained from
(identity and checkpoint sha256 checked, as for ``hacknip run --save`` models). Nothing is unpickled.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hacknip import __version__
from hacknip.data.structures import Dataset
from hacknip.errors import InputError
from hacknip.evaluation.crossval import get_target_transform
from hacknip.plugins.head import CLASSIFICATION
from hacknip.plugins.registry import load_backbone
from hacknip.plugins.trainable import trainable_network
from hacknip.report import strict_json
from hacknip.workflow.saved_model import (
    MODEL_FILE,
    check_checkpoint,
    check_identity,
    check_prediction_fields,
    field_check,
    is_count,
)

FORMAT = "hacknip-finetuned/1"
WEIGHTS_FILE = "weights.safetensors"


def save_finetuned(folder: Path, run, checkpoints: Path | None, on_epoch, cv_summary: dict[str, float],
                   geometries: dict[str, Any] | None = None) -> Path:
    """Fine-tune on every row of ``run`` (a :class:`hacknip.workflow.finetune.Finetuning`; validation carved as in
    each fold) and write the model folder; ``geometries``: how molecules' geometries were made
    (:func:`hacknip.workflow.run.saved_geometries`), for ``hacknip predict`` to make them alike."""
    from hacknip.finetuning.checkpoint import save_tensors

    report = (lambda entry, planned: on_epoch(-1, entry, planned)) if on_epoch else None
    tuner = run.tuner(checkpoints, report).fit(np.arange(len(run.y))[:, None], run.y)
    state = tuner.trained_state()
    model = {
        "format": FORMAT,
        "hacknip_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "backbone": {"name": run.backbone.name, "identity": run.backbone.identity(), "layer": run.layer},
        "task": run.task,
        "target": run.dataset.target_name,
        "target_transform": run.config.target_transform,
        "disordered": run.config.disordered,
        **({"geometries": geometries} if geometries else {}),
        "recipe": run.options.as_dict(),
        "target_centre": tuner.centre,
        "target_scale": tuner.scale,
        "best_epoch": tuner.record.best_epoch,
        "trained_on": {"data": str(run.config.data), "n_samples": len(run.y), "cross_validation": cv_summary},
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(folder / WEIGHTS_FILE, state, {"format": FORMAT})
    (folder / MODEL_FILE).write_text(strict_json(model))
    return folder


@dataclass
class SavedFinetuned:
    folder: Path
    model: dict[str, Any]
    weights: dict[str, Any]

    @property
    def task(self) -> str:
        return self.model["task"]

    def predict_dataset(self, dataset: Dataset, batch_size: int = 16, device: str = "cpu", on_error: str = "raise",
                        progress=None, trust_checkpoints: bool = False) -> tuple[Dataset, dict[str, np.ndarray]]:
        """Predictions for every structure the backbone can take (others are rejected as featurising rejects them)."""
        from hacknip.finetuning.inputs import build_inputs
        from hacknip.finetuning.trainer import FinetuneOptions, FineTuner, PreparedNetwork
        from hacknip.progress import no_progress

        saved = self.model["backbone"]
        check_checkpoint(saved, self.folder, trust_checkpoints)
        backbone = load_backbone(saved["name"], device=device)
        check_identity(saved, backbone.identity(), self.folder)
        network = trainable_network(backbone, saved["layer"])
        recipe = self.model["recipe"]
        options = FinetuneOptions(hidden=tuple(recipe["hidden"]), seed=recipe["seed"], frozen=tuple(recipe["frozen"]),
                                  batch_size=batch_size, device=device)
        dataset, inputs = build_inputs(dataset, backbone, network, on_error, progress or no_progress)
        tuner = FineTuner(PreparedNetwork(network, inputs, options.frozen, device), options, self.task,
                          target_transform=get_target_transform(self.model.get("target_transform")))
        try:
            tuner.restore(self.weights, self.model["target_centre"], self.model["target_scale"])
        except ValueError as error:
            raise InputError(f"{self.folder / WEIGHTS_FILE}: {error}; the model folder is damaged or was edited") from None
        try:
            rows = np.arange(len(inputs))[:, None]
            if self.task == CLASSIFICATION:
                probability = tuner.predict_proba(rows)[:, 1]
                return dataset, {"probability": probability, "predicted": (probability > 0.5).astype(int)}
            return dataset, {"predicted": tuner.predict(rows)}
        finally:
            tuner.prepared.restore_pretrained()

    def predict_structures(self, structures: Any, batch_size: int = 16, device: str = "cpu",
                           trust_checkpoints: bool = False):
        """Predictions for structures given as :class:`hacknip.Featurizer` takes them (pymatgen, ASE, CIF text, paths),
        as a DataFrame of ``id`` (the position) and ``predicted`` (and ``probability`` for classification)."""
        import pandas as pd

        from hacknip.features.featurizer import structure_items, structures_dataset

        dataset = structures_dataset(structure_items(structures), self.model.get("disordered", "refuse"))
        dataset, predictions = self.predict_dataset(dataset, batch_size, device, trust_checkpoints=trust_checkpoints)
        return pd.DataFrame({"id": dataset.ids, **predictions})


def load_finetuned(folder: Path, model: dict[str, Any]) -> SavedFinetuned:
    """Validate a fine-tuned model's ``model.json`` (already parsed) and read its weights."""
    from hacknip.finetuning.checkpoint import load_tensors

    _validate(model, folder / MODEL_FILE)
    weights_file = folder / WEIGHTS_FILE
    if not weights_file.is_file():
        raise InputError(f"{folder}: no {WEIGHTS_FILE} beside {MODEL_FILE}; the model folder is incomplete: save it "
                         "again with hacknip finetune --save")
    weights, _ = load_tensors(weights_file)
    return SavedFinetuned(folder, model, weights)


def _validate(model: dict[str, Any], model_file: Path) -> None:
    field = field_check(model, model_file, "hacknip finetune --save")
    backbone = model.get("backbone")
    field("backbone", isinstance(backbone, dict) and isinstance(backbone.get("name"), str) and backbone["name"]
          and isinstance(backbone.get("identity"), dict) and is_count(backbone.get("layer"), 0),
          "an object with a name, an identity object and a layer number")
    check_prediction_fields(model, field)
    recipe = model.get("recipe")
    field("recipe", isinstance(recipe, dict) and isinstance(recipe.get("hidden"), list)
          and all(is_count(size, 1) for size in recipe["hidden"]) and is_count(recipe.get("seed"), 0)
          and isinstance(recipe.get("frozen"), list) and all(isinstance(g, str) for g in recipe["frozen"]),
          "an object with hidden sizes, a seed and the frozen groups")
    for name in ("target_centre", "target_scale"):
        value = model.get(name)
        field(name, isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
              "a finite number")


def load_saved(folder: Path):
    """A model folder of either kind: :class:`SavedFinetuned` (``hacknip finetune --save``) or
    :class:`hacknip.workflow.saved_model.SavedModel` (``hacknip run --save``)."""
    from hacknip.workflow.saved_model import load_model

    folder = Path(folder)
    try:
        model = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return load_model(folder)  # which names the problem
    if isinstance(model, dict) and model.get("format") == FORMAT:
        return load_finetuned(folder, model)
    return load_model(folder)
