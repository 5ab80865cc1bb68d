"""Registers the SevenNet models shipped in the sevenn wheel. Light on purpose: no torch, no sevenn.

``sevennet:/path/to/checkpoint.pth`` (any SevenNet checkpoint file) goes through the ``sevennet`` spec.
"""

import hacknip
from hacknip.backbone import BackboneSpec

# Read from the checkpoints in the sevenn 0.13 wheel (tests check them against the loaded models): every model has
# a 5 Å cutoff, a 128x0e node embedding and 5 interaction blocks whose gates output 128 scalar (0e) channels.
SEVENNET_CUTOFF = 5.0
SEVENNET_LAYER_WIDTHS = (128, 128, 128, 128, 128, 128)

_LAYERS = "layer 0 = node embedding, 1-5 = scalar (0e) part of each interaction block's gate output"
SHIPPED_MODELS = {
    # spec name: (factory, description)
    "sevennet": ("hacknip_sevennet.backbone:load",
                 f"SevenNet-0 (7net-0, 11Jul2024, MPtrj, lmax 2): {_LAYERS}"),
    "sevennet:7net-l3i5": ("hacknip_sevennet.backbone:load_7net_l3i5",
                           f"SevenNet-l3i5 (MPtrj, lmax 3): {_LAYERS}"),
    "sevennet:7net-mf-0": ("hacknip_sevennet.backbone:load_7net_mf_0",
                           f"SevenNet-MF-0 (multi-fidelity PBE/R2SCAN; modal= option, default PBE): {_LAYERS}"),
}


@hacknip.hookimpl
def register_backbones(register):
    for name, (factory, description) in SHIPPED_MODELS.items():
        register(BackboneSpec(
            name=name,
            factory=factory,
            cutoff=SEVENNET_CUTOFF,
            layer_widths=SEVENNET_LAYER_WIDTHS,
            needs_supercell=False,
            library="sevenn",
            description=description,
        ))
