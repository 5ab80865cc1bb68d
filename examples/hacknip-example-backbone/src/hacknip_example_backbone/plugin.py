"""What hacknip imports to list the plugin: the spec only. Keep this module light (no model library, no torch):
``hacknip list`` imports it, and the model is loaded only through ``factory`` when a command needs it."""

from __future__ import annotations

import hacknip
from hacknip.plugins.backbone import BackboneSpec

NAME = "example-radial"
CUTOFF = 5.0
WIDTH = 16
INTERACTIONS = 3


@hacknip.hookimpl
def register_backbones(register):
    register(BackboneSpec(
        name=NAME,
        factory="hacknip_example_backbone.backbone:load",
        cutoff=CUTOFF,
        layer_widths=(WIDTH,) * (INTERACTIONS + 1),
        needs_supercell=False,  # every neighbour within the cutoff, periodic images included: the conformance suite checks it
        library="numpy",
        safe_checkpoints=True,  # .npz read with np.load(allow_pickle=False): loading a checkpoint cannot run code
        description=f"Example plugin: element embedding (layer 0) then {INTERACTIONS} radial message-passing steps "
                    f"within {CUTOFF:g} Å, numpy only",
    ))
