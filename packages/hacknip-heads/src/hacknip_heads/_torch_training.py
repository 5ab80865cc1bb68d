"""Training-loop pieces shared by the PyTorch heads (``mlp``, ``modnet``)."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.utils import check_random_state
from torch import nn

PREDICT_CHUNK_ROWS = 8192


def torch_seed(random_state) -> int:
    """One int seed from a scikit-learn style ``random_state`` (None, int or RandomState)."""
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def float32_tensor(X: np.ndarray) -> torch.Tensor:
    """``X`` as a float32 tensor of its own: a copy, so that read-only inputs (memory-mapped arrays, as joblib passes
    large ones) are fine and the caller's array is never written through the tensor."""
    return torch.from_numpy(np.array(X, dtype=np.float32))


def network_weights(network: nn.Module) -> dict[str, np.ndarray]:
    """Copies of a network's parameters by name, as numpy arrays: what a head exposes as ``initial_weights_`` (before
    training) and ``trained_weights_`` (after), for per-neuron update ratios (``hacknip curve``)."""
    return {name: value.detach().cpu().numpy().copy() for name, value in network.named_parameters()}


def train_one_epoch(network: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_function, optimizer,
                    batch_size: int) -> float:
    """One pass over shuffled minibatches; returns the mean training loss over rows (as Keras reports it)."""
    network.train()
    total_loss = 0.0
    for batch in torch.randperm(len(X)).split(batch_size):
        optimizer.zero_grad()
        loss = loss_function(network(X[batch]), y[batch])
        loss.backward()
        optimizer.step()
        total_loss += float(loss.detach()) * len(batch)
    return total_loss / len(X)


def evaluate_loss(network: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_function) -> float:
    network.eval()
    with torch.no_grad():
        return float(loss_function(network(X), y))


def predict_in_chunks(network: nn.Module, X: np.ndarray) -> torch.Tensor:
    network.eval()
    with torch.no_grad():
        return torch.cat([network(float32_tensor(X[start:start + PREDICT_CHUNK_ROWS]))
                          for start in range(0, len(X), PREDICT_CHUNK_ROWS)])


class EarlyStopping:
    """Remembers the weights of the epoch with the lowest monitored loss, and says when to give up.

    An epoch counts as an improvement only when its loss is below the best so far by more than ``min_delta``
    (the rule of Keras' ``EarlyStopping``, which upstream MODNet uses with ``min_delta=0.001``)."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        self.patience = patience
        self.min_delta = min_delta
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.epochs_without_improvement = 0

    def should_stop(self, network: nn.Module, loss: float, epoch: int) -> bool:
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.epochs_without_improvement = loss, epoch, 0
            self.best_weights = {name: value.clone() for name, value in network.state_dict().items()}
            return False
        self.epochs_without_improvement += 1
        return self.epochs_without_improvement >= self.patience
