"""Registers the SevenNet models shipped in the sevenn wheel. Light on purpose: no torch, no sevenn.

``sevennet:/path/to/checkpoint.pth`` (any SevenNet checkpoint file) goes through the ``sevennet`` spec.
"""

from typing import NamedTuple

import hacknip
from hacknip.plugins.backbone import BackboneSpec


class ShippedModel(NamedTuple):
    model: str
    cutoff: float
    layer_widths: tuple[int, ...]
    description: str


_LAYERS = "layer 0 = node embedding, 1-5 = scalar (0e) part of each interaction block's gate output"

# Read from the checkpoints in the sevenn 0.13 wheel (a test checks them against the loaded models): each has a
# 5 Å cutoff, a 128x0e node embedding and 5 interaction blocks whose gates output 128 scalar (0e) channels.
SHIPPED_MODELS = {
    "sevennet": ShippedModel(
        "7net-0", 5.0, (128,) * 6,
        f"SevenNet-0 (7net-0, 11Jul2024; MPtrj; lmax 2): {_LAYERS}"),
    "sevennet:7net-l3i5": ShippedModel(
        "7net-l3i5", 5.0, (128,) * 6,
        f"SevenNet-l3i5 (MPtrj; lmax 3): {_LAYERS}"),
    "sevennet:7net-mf-0": ShippedModel(
        "7net-mf-0", 5.0, (128,) * 6,
        f"SevenNet-MF-0 (multi-fidelity, modal= PBE (default) or R2SCAN): {_LAYERS}"),
}


@hacknip.hookimpl
def register_backbones(register):
    for name, model in SHIPPED_MODELS.items():
        register(BackboneSpec(
            name=name,
            factory="hacknip_sevennet.backbone:load",
            options={"model": model.model},
            cutoff=model.cutoff,
            layer_widths=model.layer_widths,
            needs_supercell=False,
            library="sevenn",
            trainable=True,  # SevenNetBackbone.trainable: fine-tuning up to a layer
            batched_forces=True,  # SevenNetBackbone.energies_and_forces
            safe_checkpoints=True,  # read with torch.load(weights_only=True) (plus numpy arrays), see read_checkpoint
            description=model.description,
        ))
