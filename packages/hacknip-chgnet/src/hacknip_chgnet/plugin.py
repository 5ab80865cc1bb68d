"""Registers CHGNet with hacknip. Light on purpose: no torch, no chgnet (``hacknip list`` imports this)."""

import hacknip
from hacknip.plugins.backbone import BackboneSpec

# Read from the CHGNet 0.3.0 checkpoint shipped in the chgnet wheel (tests check them against the loaded model):
# atom_graph_cutoff = 6 Å (bond graph: 3 Å), atom_fea_dim = 64, n_conv = 4 -> embedding + 4 atom convolutions.
CHGNET_CUTOFF = 6.0
CHGNET_LAYER_WIDTHS = (64, 64, 64, 64, 64)


@hacknip.hookimpl
def register_backbones(register):
    register(BackboneSpec(
        name="chgnet",
        factory="hacknip_chgnet.backbone:load",
        cutoff=CHGNET_CUTOFF,
        layer_widths=CHGNET_LAYER_WIDTHS,
        needs_supercell=False,
        library="chgnet",
        trainable=True,
        batched_forces=True,  # CHGNetBackbone.energies_and_forces
        safe_checkpoints=True,  # read with torch.load(weights_only=True), the network built from the dict inside
        description="CHGNet 0.3.0 (MPtrj, 412k params): layer 0 = atom embedding, 1-4 = atom convolutions",
    ))
