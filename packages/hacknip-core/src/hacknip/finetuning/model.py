"""The network fine-tuning trains: a truncated backbone, mean pooling over atoms, and an MLP head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

HEAD_PREFIX = "head."
NETWORK_PREFIX = "network."


def mlp_head(width: int, hidden: Sequence[int], seed: int) -> nn.Sequential:
    """``width -> hidden[0] -> ... -> 1`` with SiLU between layers; Xavier-uniform weights drawn from ``seed``, zero
    biases (the paper's head: 2 x 128 SiLU)."""
    sizes = [width, *hidden, 1]
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(n_in, n_out)
        nn.init.xavier_uniform_(linear.weight, generator=generator)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if index < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class PropertyModel(nn.Module):
    """``head(mean over atoms(network(inputs)))``: one output per structure (a value, or a logit)."""

    def __init__(self, network: nn.Module, hidden: Sequence[int], seed: int) -> None:
        super().__init__()
        self.network = network
        self.head = mlp_head(network.width, hidden, seed)

    def forward(self, inputs: Sequence[Any]) -> torch.Tensor:
        per_atom = self.network(inputs)
        pooled = torch.stack([features.mean(dim=0) for features in per_atom])
        return self.head(pooled.float()).squeeze(-1)

    def trained_state(self) -> dict[str, torch.Tensor]:
        """Copies of the parameters that training changes (``requires_grad``), by name: what a checkpoint holds; the
        frozen rest comes from the backbone's own weights."""
        return {name: parameter.detach().to("cpu", copy=True)
                for name, parameter in self.named_parameters() if parameter.requires_grad}

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = {name for name, parameter in self.named_parameters() if parameter.requires_grad}
        if set(state) != expected:
            missing, unknown = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"state does not match the trained parameters: missing {missing[:5]}, unknown "
                             f"{unknown[:5]}")
        parameters = dict(self.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                parameters[name].copy_(value)
