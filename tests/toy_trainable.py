"""A tiny real message-passing network (torch) with the fine-tuning extension, for testing fine-tuning fast.

Layer 0 is an element embedding; layer ``l`` mixes each atom's features with a distance-weighted sum of its
neighbours' (every periodic image within the cutoff, via ASE's neighbour list). Weights come from a seed. Groups:
``embedding`` (the element table), ``interactions`` (blocks 1..layer), ``past_layer`` (later blocks and a readout).
"""

from __future__ import annotations

import numpy as np
import torch
from ase.neighborlist import neighbor_list
from torch import nn

from hacknip import hookimpl
from hacknip.plugins.backbone import BackboneSpec, check_elements, check_layers
from hacknip.plugins.trainable import groups_by_module

WIDTH = 8
N_BLOCKS = 3
CUTOFF = 4.0


class ToyNetwork(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)  # tests only: the toy's weights are a function of the seed
        self.embedding = nn.Embedding(95, WIDTH)
        self.blocks = nn.ModuleList(nn.Linear(2 * WIDTH, WIDTH) for _ in range(N_BLOCKS))
        self.readout = nn.Linear(WIDTH, 1)

    def layers(self, graph, deepest: int) -> list[torch.Tensor]:
        numbers, senders, receivers, weights = graph
        h = self.embedding(numbers)
        out = [h]
        for block in self.blocks[:deepest]:
            messages = torch.zeros_like(h).index_add_(0, receivers, h[senders] * weights[:, None])
            h = torch.tanh(block(torch.cat([h, messages], dim=1)))
            out.append(h)
        return out


def toy_graph(atoms):
    i, j, d = neighbor_list("ijd", atoms, CUTOFF)
    return (torch.as_tensor(atoms.numbers, dtype=torch.long), torch.as_tensor(j, dtype=torch.long),
            torch.as_tensor(i, dtype=torch.long), torch.as_tensor(np.exp(-d), dtype=torch.float32))


class ToyTrainableBackbone:
    name = "toy-trainable"
    cutoff = CUTOFF
    layer_widths = (WIDTH,) * (N_BLOCKS + 1)
    needs_supercell = False
    supported_elements = frozenset(range(1, 95))

    def __init__(self, checkpoint=None, seed: int = 0, device: str = "cpu") -> None:
        self.network = ToyNetwork(seed)
        self.seed = seed

    def identity(self):
        return {"name": self.name, "library": "toy", "library_version": "1", "seed": self.seed}

    def per_atom_features(self, structures, layers):
        layers = check_layers(self, layers)
        check_elements(structures, self.supported_elements, self.name)
        with torch.no_grad():
            per_structure = [self.network.layers(toy_graph(atoms), max(layers)) for atoms in structures]
        return [{layer: out[layer].numpy() for layer in layers} for out in per_structure]

    def trainable(self, layer: int) -> ToyTrainable:
        return ToyTrainable(self.network, layer)


class ToyTrainable(nn.Module):
    supports_mixed_precision = False

    def __init__(self, network: ToyNetwork, layer: int) -> None:
        super().__init__()
        self.network = network
        self.layer = layer
        self.width = WIDTH

    def inputs(self, structures):
        return [toy_graph(atoms) for atoms in structures]

    def forward(self, inputs):
        return [self.network.layers(graph, self.layer)[self.layer] for graph in inputs]

    def parameter_groups(self):
        return groups_by_module([name for name, _ in self.named_parameters()], ["embedding"],
                                [f"blocks.{index}" for index in range(self.layer)])


def load(checkpoint=None, **options):
    return ToyTrainableBackbone(checkpoint=checkpoint, **options)


class ToyTrainablePlugin:
    @hookimpl
    def register_backbones(self, register):
        register(BackboneSpec(name="toy-trainable", factory="toy_trainable:load", cutoff=CUTOFF,
                              layer_widths=(WIDTH,) * (N_BLOCKS + 1), needs_supercell=False, trainable=True,
                              safe_checkpoints=True, library="toy", description="tiny message passing (tests only)"))
