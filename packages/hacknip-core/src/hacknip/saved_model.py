"""A fitted pipeline on disk (``hacknip run --save``) and prediction with it (``hacknip predict``).

A model folder holds ``model.json`` (format, backbone identities and layers, pooling, task, head name, params and
JSON state) and ``arrays.npz`` (scaler and head arrays, written and read with ``allow_pickle=False``). Nothing is
unpickled: a head is saved only if it can describe itself as JSON plus arrays (``get_state()`` and the
``from_state(params, meta, arrays)`` classmethod; every head in hacknip-heads can).
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hacknip import __version__
from hacknip.evaluation import get_target_transform
from hacknip.evaluation import predict as head_prediction
from hacknip.featurize import featurize, layer_matrix
from hacknip.head import CLASSIFICATION
from hacknip.pooling import parse_pooling
from hacknip.registry import get_head_spec, load_backbone
from hacknip.store import FeatureStore
from hacknip.structures import Dataset, read_extra_features

FORMAT = "hacknip-model/1"
MODEL_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"
HEAD_ARRAY_PREFIX = "head/"


def save_model(folder: Path, prepared, layers: dict[str, list[int]], head_params: dict[str, Any],
               cv_summary: dict[str, float]) -> Path:
    """Fit scaler and head on every row of ``prepared`` at ``layers`` and write the model folder."""
    from sklearn.preprocessing import StandardScaler

    config = prepared.config
    head_class = _head_class(config.head)
    if not hasattr(head_class, "from_state"):
        raise ValueError(f"head {config.head!r} cannot be saved safely (it has no get_state/from_state); pick "
                         f"another head or save nothing")
    X = prepared.matrix(layers)
    scaler = StandardScaler().fit(X)
    task_param = {"task": CLASSIFICATION} if prepared.task == CLASSIFICATION else {}
    transform = get_target_transform(config.target_transform)
    y = transform.forward(prepared.y) if transform else prepared.y
    head = head_class(**head_params, **task_param).fit(scaler.transform(X), y)
    meta, head_arrays = head.get_state()
    model = {
        "format": FORMAT,
        "hacknip_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "backbones": [{"name": m.member.name, "identity": m.features.identity, "layers": layers[m.member.name]}
                      for m in prepared.members],
        "pooling": config.pooling,
        "task": prepared.task,
        "target": prepared.dataset.target_name,
        "target_transform": config.target_transform,
        "extra_features": list(config.extra_features),
        "disordered": config.disordered,
        "head": config.head,
        "head_params": {**head_params, **task_param},
        "head_state": meta,
        "n_features": X.shape[1],
        "trained_on": {"data": str(config.data), "n_samples": len(prepared.y), "cross_validation": cv_summary},
    }
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"scaler_mean": scaler.mean_, "scaler_scale": scaler.scale_,
              **{HEAD_ARRAY_PREFIX + name: np.asarray(value) for name, value in head_arrays.items()}}
    np.savez(folder / ARRAYS_FILE, **arrays)
    (folder / MODEL_FILE).write_text(json.dumps(model, indent=2))
    return folder


@dataclass
class SavedModel:
    folder: Path
    model: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def task(self) -> str:
        return self.model["task"]

    def head(self):
        head_arrays = {name[len(HEAD_ARRAY_PREFIX):]: value for name, value in self.arrays.items()
                       if name.startswith(HEAD_ARRAY_PREFIX)}
        return _head_class(self.model["head"]).from_state(self.model["head_params"], self.model["head_state"], head_arrays)

    def features(self, dataset: Dataset, store: FeatureStore, batch_size: int = 16, device: str = "cpu",
                 on_error: str = "raise", progress=None, source: Path | None = None,
                 targets: Path | None = None) -> tuple[Dataset, np.ndarray]:
        """Featurise ``dataset`` with the saved backbones (refusing ones whose identity changed); the model's extra
        features are read from ``source`` (the data file; ``targets`` for a folder input)."""
        blocks, pooling = [], parse_pooling(self.model["pooling"])
        for saved in self.model["backbones"]:
            backbone = load_backbone(saved["name"], device=device)
            check_identity(saved, backbone.identity(), self.folder)
            advance = progress(f"featurising with {saved['name']}", len(dataset.samples)) if progress else None
            report = featurize(dataset, backbone, store, batch_size=batch_size, on_error=on_error, on_progress=advance,
                               name=saved["name"])
            dataset = dataset.drop(report.rejected)
            blocks.append((report.features, saved["layers"]))
        from hacknip.pipeline import dataset_keys

        keys = dataset_keys(dataset)
        extras = read_extra_features(dataset, source, self.model.get("extra_features", []), targets)
        return dataset, np.concatenate([*(layer_matrix(features, keys, layers, pooling) for features, layers in blocks),
                                        extras], axis=1)

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        if X.shape[1] != self.model["n_features"]:
            raise ValueError(f"{self.folder}: the model takes {self.model['n_features']} features, these have {X.shape[1]}")
        scaled = (X - self.arrays["scaler_mean"]) / self.arrays["scaler_scale"]
        value = head_prediction(self.head(), scaled, self.task)
        transform = get_target_transform(self.model.get("target_transform"))
        value = transform.inverse(value) if transform else value
        if self.task == CLASSIFICATION:
            return {"probability": value, "predicted": (value > 0.5).astype(int)}
        return {"predicted": value}


def load_model(folder: Path) -> SavedModel:
    model_file = Path(folder) / MODEL_FILE
    if not model_file.exists():
        raise FileNotFoundError(f"{folder}: not a hacknip model folder (no {MODEL_FILE}); make one with hacknip run --save")
    model = json.loads(model_file.read_text())
    if model.get("format") != FORMAT:
        raise ValueError(f"{folder}: model format {model.get('format')!r}, this hacknip reads {FORMAT!r}")
    with np.load(Path(folder) / ARRAYS_FILE, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    return SavedModel(Path(folder), model, arrays)


def check_identity(saved: dict[str, Any], installed: dict[str, Any], folder: Path) -> None:
    """A model is only as good as the features it was trained on: refuse a backbone that would make others."""
    if saved["identity"] == json.loads(json.dumps(installed)):
        return
    differing = sorted(key for key in set(saved["identity"]) | set(installed)
                       if saved["identity"].get(key) != installed.get(key))
    details = ", ".join(f"{key}: saved {saved['identity'].get(key)!r}, installed {installed.get(key)!r}" for key in differing[:3])
    raise ValueError(f"{folder}: backbone {saved['name']!r} differs from the one this model was trained with ({details}). "
                     f"Install the same version and weights, or retrain with hacknip run --save")


def _head_class(name: str):
    module_name, _, attr = get_head_spec(name).factory.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def saved_backbone_expression(model: dict[str, Any]) -> str:
    return "+".join(f"{b['name']}@{','.join(map(str, b['layers']))}" for b in model["backbones"])

