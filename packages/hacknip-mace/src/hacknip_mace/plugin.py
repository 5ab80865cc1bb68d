"""Registers MACE with hacknip. Light on purpose: no torch, no e3nn, no mace (``hacknip list`` imports this).

``mace:/path/to/model.model`` (any MACE ``.model`` file, pickled as MACE saves them) goes through the ``mace`` spec;
``mace:<key>`` with any model key mace-torch's ``mace_mp(model=...)`` accepts (``mace:mh-1``) loads that one.
"""

from typing import NamedTuple

import hacknip
from hacknip.plugins.backbone import BackboneSpec


class PretrainedModel(NamedTuple):
    mace_key: str
    """The name mace-torch's ``mace_mp(model=...)`` / ``download_mace_mp_checkpoint`` knows the weights by."""
    description: str


# MACE-MP models are ScaleShiftMACE networks with r_max = 6 Å, 2 interactions and 128 channels: hidden irreps 128x0e
# (small, L=0), 128x0e+128x1o (medium, L=1) or 128x0e+128x1o+128x2e (large, L=2). The node embedding is 128x0e,
# products[0] outputs the hidden irreps and the last product outputs scalars only (128x0e), so the invariant width is
# 128 at every layer whatever L is. Tests build the small, medium and large architectures and check these numbers; the
# real weights cannot be downloaded here, so the named models are registered with verified=False, and a loaded
# model always reports its own widths (with a warning if they differ from these).
MACE_MP_CUTOFF = 6.0
MACE_MP_LAYER_WIDTHS = (128, 128, 128)
DEFAULT_MODEL = "mace-mp-0a-medium"

_LAYERS = "layer 0 = node embedding, 1-2 = scalar (0e) part of each interaction's product-basis output"
_ASL = " Academic Software License (ASL), not MIT."

PRETRAINED_MODELS = {
    "mace-mp-0a-small": PretrainedModel("small", f"MACE-MP-0a small (MPtrj, L=0, 2023-12-10): {_LAYERS}"),
    "mace-mp-0a-medium": PretrainedModel(
        "medium", f"MACE-MP-0a medium (MPtrj, L=1, 2023-12-03; the HackNIP paper's MACE): {_LAYERS}"),
    "mace-mp-0a-large": PretrainedModel("large", f"MACE-MP-0a large (MPtrj, L=2, MACE_MPtrj_2022.9): {_LAYERS}"),
    "mace-mp-0b-small": PretrainedModel("small-0b", f"MACE-MP-0b small (MPtrj, L=0, ZBL pair repulsion): {_LAYERS}"),
    "mace-mp-0b-medium": PretrainedModel("medium-0b", f"MACE-MP-0b medium (MPtrj, L=1, ZBL pair repulsion): {_LAYERS}"),
    "mace-mp-0b2-small": PretrainedModel("small-0b2", f"MACE-MP-0b2 small (MPtrj, L=0): {_LAYERS}"),
    "mace-mp-0b2-medium": PretrainedModel("medium-0b2", f"MACE-MP-0b2 medium (MPtrj, L=1): {_LAYERS}"),
    "mace-mp-0b2-large": PretrainedModel("large-0b2", f"MACE-MP-0b2 large (MPtrj, L=2): {_LAYERS}"),
    "mace-mp-0b3-medium": PretrainedModel("medium-0b3", f"MACE-MP-0b3 medium (MPtrj, L=1): {_LAYERS}"),
    "mace-mpa-0-medium": PretrainedModel(
        "medium-mpa-0", f"MACE-MPA-0 medium (MPtrj + sAlex, L=1; mace-torch's default): {_LAYERS}"),
    "mace-omat-0-small": PretrainedModel("small-omat-0", f"MACE-OMAT-0 small (OMat24, L=0): {_LAYERS}.{_ASL}"),
    "mace-omat-0-medium": PretrainedModel("medium-omat-0", f"MACE-OMAT-0 medium (OMat24, L=1): {_LAYERS}.{_ASL}"),
}


def factory_name(model: str) -> str:
    """``"mace-mp-0a-medium"`` -> ``"load_mace_mp_0a_medium"`` (a function of hacknip_mace.backbone)."""
    return "load_" + model.replace("-", "_")


@hacknip.hookimpl
def register_backbones(register):
    for name, model in PRETRAINED_MODELS.items():
        register(BackboneSpec(
            name=name,
            factory=f"hacknip_mace.backbone:{factory_name(name)}",
            cutoff=MACE_MP_CUTOFF,
            layer_widths=MACE_MP_LAYER_WIDTHS,
            needs_supercell=False,
            library="mace-torch",
        trainable=True,  # MACEBackbone.trainable: fine-tuning up to a layer
            description=model.description,
            verified=False,  # no real MACE weights can be downloaded on the machines this release was tested on
        ))
    register(BackboneSpec(
        name="mace",
        factory="hacknip_mace.backbone:load",
        cutoff=MACE_MP_CUTOFF,
        layer_widths=MACE_MP_LAYER_WIDTHS,
        needs_supercell=False,
        library="mace-torch",
        trainable=True,  # MACEBackbone.trainable: fine-tuning up to a layer
        description=("any MACE model: mace:/path/to/file.model (or mace:<mace_mp key>); layers, widths and cutoff are "
                     f"read from the model (listed: {DEFAULT_MODEL}'s, the default). {_LAYERS}"),
        verified=False,
    ))
