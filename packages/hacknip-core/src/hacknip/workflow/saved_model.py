"""A fitted pipeline on disk (``hacknip run --save``) and prediction with it (``hacknip predict``).

A model folder holds ``model.json`` (format, backbone identities and layers, pooling, task, head name, params and
JSON state) and ``arrays.npz`` (scaler and head arrays, written and read with ``allow_pickle=False``). Nothing is
unpickled: a head is saved only if it can describe itself as JSON plus arrays (``get_state()`` and the
``from_state(params, meta, arrays)`` classmethod; every head of hacknip-core and hacknip-heads can).

A model folder is someone else's file: :func:`load_model` validates every field against the format before use, and
a backbone checkpoint that ``model.json`` names is checked against the saved sha256 before anything reads it, and
loaded only if its plugin reads checkpoints without unpickling or the user says they trust it (``trust_checkpoints``,
``hacknip predict --trust-checkpoint``): loading a pickled checkpoint can run any code (docs/security.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hacknip import __version__
from hacknip.data.molecules import (
    CONFORMERS,
    RelaxOptions,
    available_cores,
    molecules_with_progress,
)
from hacknip.data.read import is_molecule_input, read_dataset
from hacknip.data.structures import DISORDERED_CHOICES, Dataset, read_extra_features
from hacknip.errors import InputError, UntrustedFileError
from hacknip.evaluation.crossval import TARGET_TRANSFORMS, fitted_pipeline, get_target_transform, make_model
from hacknip.evaluation.crossval import predict as head_prediction
from hacknip.features.describe import describe
from hacknip.features.featurize import dataset_keys, featurize, layer_matrix
from hacknip.features.pooling import parse_pooling
from hacknip.plugins.backbone import file_sha256
from hacknip.plugins.descriptor import is_descriptor_identity, store_identity
from hacknip.plugins.head import CLASSIFICATION, REGRESSION
from hacknip.plugins.registry import get_head_spec, load_backbone, load_descriptor, resolve_backbone
from hacknip.progress import Progress, no_progress
from hacknip.report import strict_json
from hacknip.store import FeatureStore

FORMAT = "hacknip-model/1"
MODEL_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"
HEAD_ARRAY_PREFIX = "head/"


def save_model(folder: Path, prepared, layers: dict[str, list[int]], head_params: dict[str, Any],
               cv_summary: dict[str, float], geometries: dict[str, Any] | None = None) -> Path:
    """Fit the model (:func:`~hacknip.evaluation.crossval.make_model`: scaler, head, target transform) on every row of
    ``prepared`` at ``layers`` and write each step to the model folder: the scaler's arrays, the head's JSON state
    and arrays, the transform's name; ``geometries``: how molecules' geometries were made
    (:func:`hacknip.workflow.run.saved_geometries`), for ``hacknip predict`` to make them alike."""
    config = prepared.config
    head_class = _head_class(config.head)
    if not hasattr(head_class, "from_state"):
        raise InputError(f"head {config.head!r} cannot be saved safely (it has no get_state/from_state); pick "
                         f"another head or save nothing")
    X = prepared.matrix(layers)
    task_param = {"task": CLASSIFICATION} if prepared.task == CLASSIFICATION else {}
    model = make_model(head_class(**head_params, **task_param), get_target_transform(config.target_transform))
    scaler, head = fitted_pipeline(model.fit(X, prepared.y))
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
        **({"geometries": geometries} if geometries else {}),
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
    (folder / MODEL_FILE).write_text(strict_json(model))
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
        try:
            return _head_class(self.model["head"]).from_state(self.model["head_params"], self.model["head_state"],
                                                              head_arrays)
        except Exception as error:  # restoring a file's content: whatever fails, the file is at fault
            raise InputError(f"{self.folder}: the {self.model['head']} head cannot be restored from head_params, "
                             f"head_state and {ARRAYS_FILE} ({type(error).__name__}: {error}); the model folder is "
                             f"damaged or was edited: save it again with hacknip run --save") from error

    def pipeline(self):
        """The saved scaler and head as a fitted scikit-learn ``Pipeline`` (predictions on the scale the head learnt)."""
        from sklearn.pipeline import make_pipeline

        from hacknip.evaluation.scaling import MeanImputingScaler

        scaler = MeanImputingScaler()
        scaler.mean_, scaler.scale_ = self.arrays["scaler_mean"], self.arrays["scaler_scale"]
        scaler.var_, scaler.n_features_in_ = scaler.scale_ ** 2, len(scaler.mean_)
        return make_pipeline(scaler, self.head())

    def features(self, dataset: Dataset, store: FeatureStore, batch_size: int = 16, device: str = "cpu",
                 on_error: str = "raise", progress=None, source: Path | None = None,
                 targets: Path | None = None, trust_checkpoints: bool = False) -> tuple[Dataset, np.ndarray]:
        """Featurise ``dataset`` with the saved backbones (refusing ones whose identity changed); the model's extra
        features are read from ``source`` (the data file; ``targets`` for a folder input). A checkpoint file the
        model names is loaded only as :func:`check_checkpoint` allows."""
        blocks, pooling = [], parse_pooling(self.model["pooling"])
        for saved in self.model["backbones"]:
            advance = progress(f"featurising with {saved['name']}", len(dataset.samples)) if progress else None
            if is_descriptor_identity(saved["identity"]):
                descriptor = load_descriptor(saved["name"])
                check_identity(saved, store_identity(descriptor), self.folder)
                report = describe(dataset, descriptor, store, on_error=on_error, on_progress=advance, name=saved["name"])
            else:
                check_checkpoint(saved, self.folder, trust_checkpoints)
                backbone = load_backbone(saved["name"], device=device)
                check_identity(saved, backbone.identity(), self.folder)
                report = featurize(dataset, backbone, store, batch_size=batch_size, on_error=on_error,
                                   on_progress=advance, name=saved["name"])
            dataset = dataset.drop(report.rejected)
            blocks.append((report.features, saved["layers"]))
        keys = dataset_keys(dataset)
        extras = read_extra_features(dataset, source, self.model.get("extra_features", []), targets)
        return dataset, np.concatenate([*(layer_matrix(features, keys, layers, pooling) for features, layers in blocks),
                                        extras], axis=1)

    def predict_structures(self, structures: Any, store: str | Path | None = None, batch_size: int = 16,
                           device: str = "cpu", trust_checkpoints: bool = False):
        """Predictions for structures given as :class:`hacknip.Featurizer` takes them (pymatgen, ASE, CIF text, paths),
        as a DataFrame of ``id`` (the position) and ``predicted`` (and ``probability`` for classification).
        A model with extra features needs them per sample: use the command line's ``hacknip predict`` on a table."""
        import pandas as pd

        from hacknip.features.featurizer import structure_items, structures_dataset

        if self.model.get("extra_features"):
            raise InputError(f"{self.folder}: this model also takes {', '.join(self.model['extra_features'])} per sample; "
                             f"predict with hacknip predict on a table that has those columns")
        dataset = structures_dataset(structure_items(structures), self.model.get("disordered", "refuse"))
        dataset, X = self.features(dataset, FeatureStore(store), batch_size, device, trust_checkpoints=trust_checkpoints)
        return pd.DataFrame({"id": dataset.ids, **self.predict(X)})

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        if X.shape[1] != self.model["n_features"]:
            raise InputError(f"{self.folder}: the model takes {self.model['n_features']} features, but its backbones, "
                             f"layers, pooling and extra features give {X.shape[1]}; the model folder was edited")
        value = head_prediction(self.pipeline(), X, self.task)
        transform = get_target_transform(self.model.get("target_transform"))
        value = transform.inverse(value) if transform else value
        if self.task == CLASSIFICATION:
            return {"probability": value, "predicted": (value > 0.5).astype(int)}
        return {"predicted": value}


def load_model(folder: Path) -> SavedModel:
    """Read and validate a model folder (every field of ``model.json`` and the arrays it needs)."""
    folder = Path(folder)
    model_file, arrays_file = folder / MODEL_FILE, folder / ARRAYS_FILE
    if not model_file.exists():
        raise InputError(f"{folder}: not a hacknip model folder (no {MODEL_FILE}); make one with hacknip run --save")
    try:
        model = json.loads(model_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{model_file}: not valid JSON ({error}); the model folder is damaged: save it again with "
                         f"hacknip run --save") from error
    if not isinstance(model, dict) or model.get("format") != FORMAT:
        found = model.get("format") if isinstance(model, dict) else type(model).__name__
        raise InputError(f"{model_file}: model format {found!r}, this hacknip reads {FORMAT!r}")
    _validate_model(model, model_file)
    try:
        with np.load(arrays_file, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except FileNotFoundError:
        raise InputError(f"{folder}: no {ARRAYS_FILE} beside {MODEL_FILE}; the model folder is incomplete: save it "
                         f"again with hacknip run --save") from None
    except (OSError, EOFError, ValueError, KeyError) as error:  # incl. zipfile.BadZipFile, a refused pickle
        raise InputError(f"{arrays_file}: unreadable ({type(error).__name__}: {error}); the model folder is damaged: "
                         f"save it again with hacknip run --save") from error
    _validate_arrays(arrays, model["n_features"], arrays_file)
    return SavedModel(folder, model, arrays)


def field_check(model: dict[str, Any], model_file: Path, command: str) -> Callable[[str, bool, str], None]:
    """``field(name, ok, expected)``: raises, unless ``ok``, a one-line error naming the field of ``model_file``, what
    it holds and what was expected, and that ``command`` saves the folder again."""
    def field(name: str, ok: bool, expected: str) -> None:
        if not ok:
            raise InputError(f"{model_file}: field {name!r} is {model.get(name, '<missing>')!r}, expected {expected}; "
                             f"the model folder is damaged or was edited: save it again with {command}")
    return field


def check_prediction_fields(model: dict[str, Any], field: Callable[[str, bool, str], None]) -> None:
    """The fields every model folder has: what it predicts and how structures are read for it."""
    field("task", model.get("task") in (REGRESSION, CLASSIFICATION), f"{REGRESSION!r} or {CLASSIFICATION!r}")
    field("target", isinstance(model.get("target"), str), "the target's name")
    field("target_transform", model.get("target_transform") in (None, "none", *TARGET_TRANSFORMS),
          f"null or one of {', '.join(TARGET_TRANSFORMS)}")
    field("disordered", model.get("disordered", "refuse") in DISORDERED_CHOICES, f"one of {', '.join(DISORDERED_CHOICES)}")
    geometries = model.get("geometries")
    field("geometries", geometries is None or _geometries_ok(geometries),
          "an object with a conformer (etkdg or mmff94) and relaxed (true or false); when relaxed, a positive fmax, "
          "a number of steps, an optimiser and the backbone it relaxed with (relaxed_with)")


def _geometries_ok(geometries: Any) -> bool:
    if not (isinstance(geometries, dict) and geometries.get("conformer") in CONFORMERS
            and isinstance(geometries.get("relaxed"), bool)):
        return False
    if not geometries["relaxed"]:
        return True
    fmax = geometries.get("fmax")
    return (isinstance(fmax, (int, float)) and not isinstance(fmax, bool) and fmax > 0
            and is_count(geometries.get("steps"), 0) and isinstance(geometries.get("optimizer"), str)
            and isinstance(geometries.get("relaxed_with"), str) and bool(geometries["relaxed_with"]))


def is_count(value: Any, minimum: int) -> bool:
    """An int (not a bool) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _validate_model(model: dict[str, Any], model_file: Path) -> None:
    """Each field of a ``hacknip-model/1`` file, so that a damaged or edited one fails here with the field's name."""
    field = field_check(model, model_file, "hacknip run --save")

    backbones = model.get("backbones")
    field("backbones", isinstance(backbones, list) and len(backbones) > 0, "a non-empty list")
    for index, saved in enumerate(backbones):
        entry_ok = (isinstance(saved, dict) and isinstance(saved.get("name"), str) and saved["name"]
                    and isinstance(saved.get("identity"), dict) and isinstance(saved.get("layers"), list)
                    and len(saved["layers"]) > 0
                    and all(is_count(layer, 0) for layer in saved["layers"]))
        field("backbones", entry_ok, f"entry {index} to hold a name, an identity object and a list of layer numbers")
    pooling = model.get("pooling")
    field("pooling", isinstance(pooling, str) and _parses(parse_pooling, pooling), "a pooling such as 'mean+max'")
    check_prediction_fields(model, field)
    extras = model.get("extra_features", [])
    field("extra_features", isinstance(extras, list) and all(isinstance(c, str) for c in extras), "a list of column names")
    field("head", isinstance(model.get("head"), str) and model["head"], "a head name")
    field("head_params", isinstance(model.get("head_params"), dict), "an object of hyperparameters")
    n_features = model.get("n_features")
    field("n_features", is_count(n_features, 1), "a positive integer")


def _parses(parse, text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def _validate_arrays(arrays: dict[str, np.ndarray], n_features: int, arrays_file: Path) -> None:
    for name in ("scaler_mean", "scaler_scale"):
        value = arrays.get(name)
        if value is None or value.shape != (n_features,) or not np.issubdtype(value.dtype, np.floating):
            found = "missing" if value is None else f"{value.dtype} of shape {value.shape}"
            raise InputError(f"{arrays_file}: array {name!r} is {found}, expected {n_features} floats (n_features in "
                             f"{MODEL_FILE}); the model folder is damaged or was edited: save it again")


def checkpoint_file(checkpoint: str | None) -> Path | None:
    """The local file the checkpoint part of a backbone name loads weights from (``/x/weights.pth`` of
    ``chgnet:/x/weights.pth``, ``/x/uma.pt`` of ``uma-s-1p1:/x/uma.pt:omol``), or None when the name loads its
    plugin's own weights (no checkpoint part, or a pretrained name such as ``7net-l3i5``)."""
    if checkpoint is None:
        return None
    parts = checkpoint.split(":")
    candidates = [":".join(parts[:end]) for end in range(len(parts), 0, -1)]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def read_prediction_data(saved, data: str | Path, *, store: FeatureStore, device: str = "cpu",
                         trust_checkpoints: bool = False, workers: int | None = None, progress: Progress = no_progress,
                         **read_options: Any) -> Dataset:
    """The structures of ``data`` to predict with ``saved`` (a model folder of either kind), read as
    :func:`hacknip.data.read.read_dataset` reads them (``read_options``: its keyword arguments), except molecules
    when the model records how its training molecules' geometries were made: those are made the same way (the same
    conformer, relaxed with the same backbone and settings; stored and reused as in training), so that their features
    mean what they meant when the head learnt them. ``workers``: processes for the geometries (default: the cores)."""
    geometries = saved.model.get("geometries")
    if geometries is None or not is_molecule_input(Path(data), read_options.get("structure_column", "cif")):
        return read_dataset(data, progress=progress, **read_options)
    relaxing = geometries["relaxed_with"] if geometries["relaxed"] else None
    if relaxing is not None:
        _check_relaxing_backbone(saved, relaxing, device, trust_checkpoints)
    relax = (RelaxOptions(fmax=geometries["fmax"], steps=geometries["steps"], optimizer=geometries["optimizer"])
             if relaxing else None)
    return molecules_with_progress(data, conformer=geometries["conformer"], relaxed_with=relaxing, relax_options=relax,
                                   workers=workers or available_cores(), progress=progress,
                                   smiles_column=read_options.get("smiles_column"), target=read_options.get("target"),
                                   id_column=read_options.get("id_column"), backbone_options={"device": device},
                                   relax_batch=None, store=store, on_error=read_options.get("on_error", "raise"))


def _check_relaxing_backbone(saved, name: str, device: str, trust_checkpoints: bool) -> None:
    """The backbone that relaxed the training molecules, checked as featurising checks it, before hours of relaxing."""
    entries = saved.model.get("backbones") or [saved.model["backbone"]]
    entry = next((entry for entry in entries if entry["name"] == name), None)
    if entry is None:
        raise InputError(f"{saved.folder}: its molecules were relaxed with {name!r}, which is not among its backbones; "
                         "the model folder was edited: save it again")
    check_checkpoint(entry, saved.folder, trust_checkpoints)
    check_identity(entry, load_backbone(name, device=device).identity(), saved.folder)


def check_checkpoint(saved: dict[str, Any], folder: Path, trust: bool) -> None:
    """Before a model folder's backbone loads a checkpoint file it names: the file must be the one the model was
    trained with (sha256), and, when its plugin unpickles checkpoints, the user must have said they trust it."""
    spec, checkpoint = resolve_backbone(saved["name"])
    path = checkpoint_file(checkpoint)
    if path is None:
        return
    expected, actual = saved["identity"].get("checkpoint_sha256"), file_sha256(path)
    if expected != actual:
        raise UntrustedFileError(f"{folder}: backbone {saved['name']!r} names the checkpoint {path}, whose sha256 "
                                 f"{actual[:16]}... is not the {str(expected)[:16]}... the model was trained with; "
                                 f"nothing was loaded. Put the original checkpoint there, or retrain")
    if not trust and not spec.safe_checkpoints:
        raise UntrustedFileError(f"{folder}: the model names the checkpoint file {path}, which {spec.library or spec.name} "
                                 f"loads by unpickling, and unpickling a file can run any code in it; hacknip does not "
                                 f"do that on a model folder's say-so. If you trust that file, pass --trust-checkpoint")


def check_identity(saved: dict[str, Any], installed: dict[str, Any], folder: Path) -> None:
    """A model is only as good as the features it was trained on: refuse a backbone that would make others."""
    if saved["identity"] == json.loads(json.dumps(installed)):
        return
    differing = sorted(key for key in set(saved["identity"]) | set(installed)
                       if saved["identity"].get(key) != installed.get(key))
    details = ", ".join(f"{key}: saved {saved['identity'].get(key)!r}, installed {installed.get(key)!r}" for key in differing[:3])
    raise InputError(f"{folder}: backbone {saved['name']!r} differs from the one this model was trained with ({details}). "
                     f"Install the same version and weights, or retrain with hacknip run --save")


def _head_class(name: str):
    return get_head_spec(name).estimator_class()
