"""A PyTorch multilayer perceptron as a hacknip head, with early stopping on a held-out split."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from hacknip.errors import InputError
from hacknip.plugins.head import CLASSIFICATION, REGRESSION
from hacknip.plugins.head_base import BaseHead
from hacknip_heads._feature_range import HIGH, LOW, check_clip_flag, clipped, range_arrays, restored_range, training_range
from hacknip_heads._torch_training import (
    EarlyStopping,
    evaluate_loss,
    float32_tensor,
    network_weights,
    predict_in_chunks,
    torch_seed,
    train_one_epoch,
)

Split = tuple[torch.Tensor, torch.Tensor]  # (features, targets)


class MLPHead(BaseHead):
    """Linear → SiLU → dropout blocks, trained with AdamW on minibatches. ``validation_fraction`` of the
    training rows (stratified for classification) is held out; training stops once the validation loss has
    not improved for ``patience`` epochs, and the best epoch's weights are restored. Set
    ``validation_fraction=0`` to train all ``max_epochs`` on every row. Regression targets are standardised
    internally; classification uses binary cross-entropy on logits. ``clip_features`` (default True) clips a new
    row's features to the range the training rows spanned (:mod:`hacknip_heads._feature_range`); False feeds them
    as they are."""

    def __init__(
        self,
        *,
        task: str = REGRESSION,
        hidden_layer_sizes: tuple[int, ...] = (256, 128),
        dropout: float = 0.1,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        max_epochs: int = 400,
        patience: int = 30,
        validation_fraction: float = 0.1,
        clip_features: bool = True,
        random_state: int | None = 0,
    ):
        self.task = task
        self.hidden_layer_sizes = hidden_layer_sizes
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.clip_features = clip_features
        self.random_state = random_state

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        width = trial.suggest_categorical("hidden_width", [64, 128, 256, 512])
        depth = trial.suggest_int("hidden_layers", 1, 3)
        return {
            # Optuna's categorical choices must be scalars, so the tapering shape is built from two of them.
            "hidden_layer_sizes": tuple(max(width // 2**layer, 16) for layer in range(depth)),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        }

    def _fit(self, X, y) -> None:
        self._check_hyperparameters()
        seed = torch_seed(self.random_state)
        train_rows, validation_rows = (torch.as_tensor(rows) for rows in self._split_rows(y, seed))
        self.feature_range_ = training_range(X, self.clip_features)
        features = float32_tensor(X)
        targets = float32_tensor(self._scaled_targets(y))
        # A forked RNG keeps weight initialisation, shuffling and dropout reproducible without touching the
        # caller's global torch random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.network_ = _build_network(X.shape[1], self.hidden_layer_sizes, self.dropout)
            self._train((features[train_rows], targets[train_rows]),
                        (features[validation_rows], targets[validation_rows]))

    def _check_hyperparameters(self) -> None:
        if not 0.0 <= self.validation_fraction < 1.0:
            raise InputError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        check_clip_flag(self.clip_features)

    def _split_rows(self, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(len(y))
        if self.validation_fraction == 0:
            return rows, rows[:0]
        if len(y) < 2:
            raise InputError("MLPHead got n_samples=1 but needs at least 2 to hold out a validation split "
                             "(or set validation_fraction=0)")
        n_validation = min(max(1, round(self.validation_fraction * len(y))), len(y) - 1)
        stratify = None
        if self.task == CLASSIFICATION and n_validation >= 2 and np.bincount(y).min() >= 2:
            stratify = y
        train_rows, validation_rows = train_test_split(rows, test_size=n_validation, random_state=seed,
                                                       stratify=stratify)
        return train_rows, validation_rows

    def _scaled_targets(self, y: np.ndarray) -> np.ndarray:
        if self.task == CLASSIFICATION:
            return y
        self.target_mean_ = float(y.mean())
        self.target_scale_ = float(y.std()) or 1.0
        return (y - self.target_mean_) / self.target_scale_

    def _train(self, train: Split, validation: Split) -> None:
        loss_function = nn.BCEWithLogitsLoss() if self.task == CLASSIFICATION else nn.MSELoss()
        optimizer = torch.optim.AdamW(self.network_.parameters(), lr=self.learning_rate,
                                      weight_decay=self.weight_decay)
        early_stopping = EarlyStopping(self.patience)
        self.initial_weights_ = network_weights(self.network_)
        for epoch in range(1, self.max_epochs + 1):
            train_one_epoch(self.network_, *train, loss_function, optimizer, self.batch_size)
            if len(validation[0]) == 0:
                continue
            validation_loss = evaluate_loss(self.network_, *validation, loss_function)
            if early_stopping.should_stop(self.network_, validation_loss, epoch):
                break
        if early_stopping.best_weights is not None:
            self.network_.load_state_dict(early_stopping.best_weights)
        self.network_.eval()
        self.trained_weights_ = network_weights(self.network_)
        self.n_epochs_ = epoch
        # Without a validation split (or if its loss was never finite) the last epoch's weights are kept.
        self.best_epoch_ = early_stopping.best_epoch or epoch
        self.best_validation_loss_ = early_stopping.best_loss

    def _state(self):
        meta = {"target_mean": getattr(self, "target_mean_", None), "target_scale": getattr(self, "target_scale_", None)}
        weights = {name: value.numpy() for name, value in self.network_.state_dict().items()}
        return meta, {**weights, **range_arrays(self.feature_range_)}

    def _restore(self, meta, arrays) -> None:
        self.network_ = _build_network(self.n_features_in_, self.hidden_layer_sizes, self.dropout)
        self.feature_range_ = restored_range(arrays, "MLP")
        self.clip_features = self.feature_range_ is not None  # what the saved head did
        self.network_.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in arrays.items()
                                       if name not in (LOW, HIGH)})
        self.network_.eval()
        if self.task != CLASSIFICATION:
            self.target_mean_, self.target_scale_ = meta["target_mean"], meta["target_scale"]

    def _network_output(self, X: np.ndarray) -> torch.Tensor:
        return predict_in_chunks(self.network_, clipped(X, self.feature_range_))

    def _predict_values(self, X: np.ndarray) -> np.ndarray:
        return self._network_output(X).double().numpy() * self.target_scale_ + self.target_mean_

    def _predict_positive_probability(self, X: np.ndarray) -> np.ndarray:
        return torch.sigmoid(self._network_output(X).double()).numpy()


def _build_network(n_features: int, hidden_layer_sizes: tuple[int, ...], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_features
    for hidden_width in hidden_layer_sizes:
        layers += [nn.Linear(width, hidden_width), nn.SiLU(), nn.Dropout(dropout)]
        width = hidden_width
    layers += [nn.Linear(width, 1), nn.Flatten(start_dim=0)]
    return nn.Sequential(*layers)

