"""The training loop: one fold's fit, resumable from its last epoch, keeping the best-validation state.

:class:`FineTuner` has the ``fit(X, y)`` / ``predict(X)`` / ``predict_proba(X)`` interface of a scikit-learn model,
where ``X`` is a column of row numbers into the inputs (graphs) it was given: the graphs are built once for the whole
dataset and every fold's model reads its rows from them, so :func:`hacknip.evaluation.crossval.cross_validate` scores
fine-tuning exactly as it scores a head on embeddings (same folds, same metrics)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hacknip.errors import InputError
from hacknip.finetuning.checkpoint import load_tensors, optimizer_tensors, restore_optimizer, save_tensors
from hacknip.finetuning.model import HEAD_PREFIX, PropertyModel
from hacknip.plugins.head import CLASSIFICATION, REGRESSION
from hacknip.plugins.trainable import FROZEN_BY_DEFAULT, freeze

LOSSES = ("mae", "mse")
LAST_CHECKPOINT = "last.safetensors"
BEST_STATE = "best.safetensors"
DONE = "done.json"


@dataclass
class FinetuneOptions:
    """The paper's recipe (section 5.7) as defaults; every field is a ``hacknip finetune`` option."""

    hidden: tuple[int, ...] = (128, 128)
    epochs: int = 200
    lr_backbone: float = 1e-5
    lr_head: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 16
    validation_fraction: float = 0.1
    """Carved from each training fold (never from its test fold) to pick the best epoch."""
    patience: int | None = None
    """Stop after this many epochs without a better validation score (None: train every epoch, as the paper)."""
    frozen: tuple[str, ...] = FROZEN_BY_DEFAULT
    loss: str = "mae"
    """Regression training loss on the standardised target: ``mae`` (L1) or ``mse``. Classification: cross-entropy."""
    seed: int = 0
    device: str = "cpu"
    mixed_precision: bool = False
    """bfloat16 autocast on a GPU, for backbones whose network supports it."""

    def check(self) -> FinetuneOptions:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch size must be at least 1, got {self.batch_size}")
        if not 0 < self.validation_fraction < 1:
            problems.append(f"validation fraction must be between 0 and 1, got {self.validation_fraction}")
        if self.patience is not None and self.patience < 1:
            problems.append(f"patience must be at least 1, got {self.patience}")
        if min(self.lr_backbone, self.lr_head) < 0 or self.weight_decay < 0:
            problems.append("learning rates and weight decay must not be negative")
        if any(size < 1 for size in self.hidden):
            problems.append(f"hidden layer sizes must be positive, got {list(self.hidden)}")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if problems:
            raise InputError("; ".join(problems))
        return self

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "hidden": list(self.hidden), "frozen": list(self.frozen)}


@dataclass
class Epoch:
    epoch: int
    train_loss: float
    validation: float
    """Validation MAE (regression, original units) or log loss (classification)."""
    seconds: float


@dataclass
class FitRecord:
    """What one fit did: its history, best epoch, and where its checkpoints are."""

    history: list[Epoch] = field(default_factory=list)
    best_epoch: int | None = None
    best_validation: float = math.inf
    resumed_from_epoch: int | None = None
    n_train: int = 0
    n_validation: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        best = self.best_validation if math.isfinite(self.best_validation) else None
        return {"best_epoch": self.best_epoch, "best_validation": best,
                "epochs_run": len(self.history), "resumed_from_epoch": self.resumed_from_epoch,
                "n_train": self.n_train, "n_validation": self.n_validation, "seconds": round(self.seconds, 3),
                "history": [dataclasses.asdict(epoch) for epoch in self.history]}


OnEpoch = Callable[[Epoch, int], None]
"""Called after each epoch with the epoch's record and the number of epochs planned."""


class PreparedNetwork:
    """A trainable network, its inputs (one per dataset row, built once), and a copy of its pretrained weights, shared
    by every fit of a run. The network's modules are the backbone's own, so one fit at a time holds them: ``owner``
    is the :class:`FineTuner` whose weights they carry now."""

    def __init__(self, network, inputs: Sequence[Any], frozen: Sequence[str] = FROZEN_BY_DEFAULT,
                 device: str = "cpu", fingerprint: str = "") -> None:
        self.fingerprint = fingerprint
        """What the inputs are made of (backbone identity, structures' content hashes): part of each fit's checkpoint
        folder name, so that checkpoints are never reused for other data or another backbone."""
        self.device = torch.device(device)
        self.network = network.to(self.device)
        self.inputs = inputs
        self.frozen = tuple(frozen)
        self.groups = freeze(network, self.frozen)
        self.pretrained = {name: value.detach().clone() for name, value in network.state_dict().items()}
        self.owner: FineTuner | None = None

    @property
    def layer(self) -> int:
        return self.network.layer

    def restore_pretrained(self) -> None:
        """Put the backbone's own weights back (and inference mode: the backbone's other users expect it)."""
        self.network.load_state_dict(self.pretrained)
        self.network.eval()
        self.owner = None


class FineTuner:
    """Fine-tunes a :class:`PreparedNetwork` with an MLP head on rows of its inputs. Every ``fit`` starts from the
    pretrained weights and from the head's seeded initial weights. With ``checkpoints``, each fit keeps its epoch
    checkpoints in a folder named by the hash of its rows, targets and options, so that a killed run resumes where
    it stopped and a finished fit is not repeated."""

    def __init__(self, prepared: PreparedNetwork, options: FinetuneOptions, task: str = REGRESSION,
                 checkpoints: Path | None = None, on_epoch: OnEpoch | None = None,
                 target_transform: Any | None = None) -> None:
        if tuple(options.frozen) != prepared.frozen:
            raise ValueError(f"options freeze {options.frozen}, the prepared network {prepared.frozen}")
        self.options = options.check()
        self.prepared = prepared
        self.inputs = prepared.inputs
        self.network = prepared.network
        self.device = prepared.device
        self.task = task
        self.checkpoints = checkpoints
        self.on_epoch = on_epoch
        self.transform = target_transform
        self.model: PropertyModel | None = None
        self.record: FitRecord | None = None
        self.initial_state_: dict[str, torch.Tensor] = {}
        self._state: dict[str, torch.Tensor] = {}

    # -- scikit-learn style interface over row numbers ----------------------------------------------------------------

    def fit(self, X: np.ndarray, y: np.ndarray) -> FineTuner:
        rows = _rows(X)
        y = np.asarray(y, dtype=float)
        if self.transform is not None:
            y = self.transform.forward(y)
        self.model = self._fresh_model()
        self.initial_state_ = self.model.trained_state()
        train, validation = self._split(rows, y)
        self.centre, self.scale = (float(y[train].mean()), float(y[train].std()) or 1.0) if self.task == REGRESSION \
            else (0.0, 1.0)
        folder = self._fit_folder(rows, y) if self.checkpoints else None
        self.record = self._train(rows[train], y[train], rows[validation], y[validation], folder)
        self._state = self.model.trained_state()
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        outputs = self._outputs(_rows(X))
        if self.task == CLASSIFICATION:
            return (outputs > 0).astype(int)
        values = outputs * self.scale + self.centre
        return self.transform.inverse(values) if self.transform is not None else values

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        positive = 1.0 / (1.0 + np.exp(-self._outputs(_rows(X))))
        return np.column_stack([1.0 - positive, positive])

    def restore(self, state: dict[str, torch.Tensor], centre: float, scale: float) -> FineTuner:
        """This tuner as fitted before: ``state`` from :meth:`trained_state`, the target's centre and scale."""
        self.model = self._fresh_model()
        self.model.load_trained_state(state)
        self.centre, self.scale = float(centre), float(scale)
        self._state = self.model.trained_state()
        return self

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The fitted model's trained parameters (unfrozen backbone parameters under ``network.``, the head under
        ``head.``)."""
        return self._model().trained_state()

    # -- training ---------------------------------------------------------------------------------------------------

    def _fresh_model(self) -> PropertyModel:
        self.prepared.restore_pretrained()
        self.prepared.owner = self
        return PropertyModel(self.network, self.options.hidden, self.options.seed).to(self.device)

    def _split(self, rows: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (within ``rows``) of the training and validation parts, drawn from the seed; stratified by class
        for classification so that both classes reach validation."""
        rng = np.random.default_rng(self.options.seed)
        if self.task == CLASSIFICATION:
            parts = [np.flatnonzero(y == label) for label in (0, 1)]
        else:
            parts = [np.arange(len(rows))]
        validation = np.concatenate([rng.permutation(part)[:max(1, round(self.options.validation_fraction * len(part)))]
                                     for part in parts])
        train = np.setdiff1d(np.arange(len(rows)), validation)
        if len(train) == 0:
            raise InputError(f"{len(rows)} training rows leave none to train on after carving "
                             f"{self.options.validation_fraction:g} for validation")
        return train, np.sort(validation)

    def _fit_folder(self, rows: np.ndarray, y: np.ndarray) -> Path:
        digest = hashlib.sha256(self.prepared.fingerprint.encode())
        digest.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
        digest.update(json.dumps({**self.options.as_dict(), "device": None, "task": self.task,
                                  "layer": self.network.layer}, sort_keys=True).encode())
        return self.checkpoints / f"fit-{digest.hexdigest()[:16]}"

    def _optimizer(self, model: PropertyModel) -> torch.optim.AdamW:
        backbone = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith(HEAD_PREFIX)]
        groups = [{"params": backbone, "lr": self.options.lr_backbone}] if backbone else []
        groups.append({"params": list(model.head.parameters()), "lr": self.options.lr_head})
        return torch.optim.AdamW(groups, weight_decay=self.options.weight_decay)

    def _train(self, train_rows, y_train, validation_rows, y_validation, folder: Path | None) -> FitRecord:
        started = time.perf_counter()
        model = self._model()
        optimizer = self._optimizer(model)
        record = FitRecord(n_train=len(train_rows), n_validation=len(validation_rows))
        if folder is not None and (folder / DONE).is_file():
            return self._finished(folder, record)
        start, best_state = 0, model.trained_state()
        if folder is not None and (folder / LAST_CHECKPOINT).is_file():
            start, best_state, record = self._resume(folder, optimizer, record)
        targets = torch.as_tensor((y_train - self.centre) / self.scale, dtype=torch.float32)
        waited = 0 if record.best_epoch is None else len(record.history) - 1 - _position(record)
        for epoch in range(start, self.options.epochs):
            tick = time.perf_counter()
            train_loss = self._one_epoch(model, optimizer, train_rows, targets, epoch)
            validation = self._validation_score(validation_rows, y_validation)
            entry = Epoch(epoch, train_loss, validation, time.perf_counter() - tick)
            record.history.append(entry)
            if validation < record.best_validation:
                record.best_validation, record.best_epoch, waited = validation, epoch, 0
                best_state = model.trained_state()
            else:
                waited += 1
            if folder is not None:
                self._save_epoch(folder, model, optimizer, best_state, record)
            if self.on_epoch:
                self.on_epoch(entry, self.options.epochs)
            if self.options.patience is not None and waited >= self.options.patience:
                break
        model.load_trained_state(best_state)
        record.seconds += time.perf_counter() - started
        if folder is not None:
            save_tensors(folder / BEST_STATE, best_state, {"record": record.as_dict(), "centre": self.centre,
                                                            "scale": self.scale})
            (folder / DONE).write_text(json.dumps({"best_epoch": record.best_epoch}))
        return record

    def _one_epoch(self, model: PropertyModel, optimizer, rows: np.ndarray, targets: torch.Tensor, epoch: int) -> float:
        """One pass in an order drawn from (seed, epoch) alone, so that a resumed run sees the same batches."""
        model.train()
        order = np.random.default_rng([self.options.seed, epoch]).permutation(len(rows))
        total = 0.0
        for start in range(0, len(order), self.options.batch_size):
            batch = order[start:start + self.options.batch_size]
            optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                outputs = model([self.inputs[row] for row in rows[batch]])
            loss = self._loss(outputs.float(), targets[batch].to(self.device))
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        return total / len(order)

    def _loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.task == CLASSIFICATION:
            return torch.nn.functional.binary_cross_entropy_with_logits(outputs, targets)
        if self.options.loss == "mse":
            return torch.nn.functional.mse_loss(outputs, targets)
        return torch.nn.functional.l1_loss(outputs, targets)

    def _validation_score(self, rows: np.ndarray, y: np.ndarray) -> float:
        outputs = self._outputs(rows)
        if self.task == CLASSIFICATION:
            positive = np.clip(1.0 / (1.0 + np.exp(-outputs)), 1e-7, 1 - 1e-7)
            return float(-np.mean(y * np.log(positive) + (1 - y) * np.log(1 - positive)))
        return float(np.mean(np.abs(outputs * self.scale + self.centre - y)))

    def _outputs(self, rows: np.ndarray) -> np.ndarray:
        model = self._model()
        model.eval()
        values = []
        with torch.no_grad():
            for start in range(0, len(rows), self.options.batch_size):
                with self._autocast():
                    batch = model([self.inputs[row] for row in rows[start:start + self.options.batch_size]])
                values.append(batch.float().cpu().numpy())
        return np.concatenate(values) if values else np.zeros(0)

    def _autocast(self):
        enabled = (self.options.mixed_precision and self.device.type == "cuda"
                   and getattr(self.network, "supports_mixed_precision", False))
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _model(self) -> PropertyModel:
        """The model, its network carrying this tuner's weights (another fit may have used the shared modules since)."""
        if self.model is None:
            raise RuntimeError("the fine-tuner is not fitted")
        if self.prepared.owner is not self:
            self.prepared.restore_pretrained()
            self.model.load_trained_state(self._state)
            self.prepared.owner = self
        return self.model

    # -- checkpoints ----------------------------------------------------------------------------------------------

    def _save_epoch(self, folder: Path, model, optimizer, best_state, record: FitRecord) -> None:
        tensors, optimizer_meta = optimizer_tensors(optimizer)
        tensors.update({f"model.{name}": value for name, value in model.trained_state().items()})
        tensors.update({f"best.{name}": value for name, value in best_state.items()})
        save_tensors(folder / LAST_CHECKPOINT, tensors, {"record": record.as_dict(), "optimizer": optimizer_meta})

    def _resume(self, folder: Path, optimizer, record: FitRecord):
        tensors, meta = load_tensors(folder / LAST_CHECKPOINT)
        model = self._model()
        model.load_trained_state(_prefixed(tensors, "model."))
        restore_optimizer(optimizer, tensors, meta["optimizer"])
        record = _record_from(meta["record"], record)
        record.resumed_from_epoch = record.history[-1].epoch if record.history else None
        return len(record.history), _prefixed(tensors, "best."), record

    def _finished(self, folder: Path, record: FitRecord) -> FitRecord:
        tensors, meta = load_tensors(folder / BEST_STATE)
        self._model().load_trained_state(tensors)
        return _record_from(meta["record"], record)


def _record_from(saved: dict[str, Any], record: FitRecord) -> FitRecord:
    record.history = [Epoch(**entry) for entry in saved["history"]]
    record.best_epoch = saved["best_epoch"]
    record.best_validation = math.inf if saved["best_validation"] is None else saved["best_validation"]
    record.seconds = saved["seconds"]
    return record


def _position(record: FitRecord) -> int:
    return next(index for index, entry in enumerate(record.history) if entry.epoch == record.best_epoch)


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)}


def _rows(X: np.ndarray) -> np.ndarray:
    rows = np.asarray(X)
    return (rows[:, 0] if rows.ndim == 2 else rows).astype(np.int64)
