"""Registers the fairchem backbones with hacknip. Light on purpose: no torch, no fairchem (``hacknip list`` imports
this), and the same list whichever fairchem-core is installed; loading checks the version and says what to do.

Every spec is ``verified=False``: no real fairchem weights could be downloaded where this release was built, so the
loading path was exercised with random-weight checkpoints in fairchem's own format only, and the architecture numbers
come from fairchem's published configs (see :mod:`hacknip_equiformer.models` for the sources).
"""

import hacknip
from hacknip.plugins.backbone import BackboneSpec
from hacknip_equiformer.models import (
    EQV2_CUTOFF,
    EQV2_DEFAULT_MODEL,
    EQV2_LAYER_WIDTHS,
    EQV2_SPEC_NAME,
    FAIRCHEM2_MODELS,
)


@hacknip.hookimpl
def register_backbones(register):
    for model in FAIRCHEM2_MODELS.values():
        register(BackboneSpec(
            name=model.name,
            factory="hacknip_equiformer.backbone:load",
            options={"model": model.name},
            cutoff=model.cutoff,
            layer_widths=model.layer_widths,
            needs_supercell=model.needs_supercell,
            library="fairchem-core>=2",
            verified=False,
            description=f"{model.description}; layer 0 = embedding, 1-{model.blocks} = blocks (l=0 part); "
                        f"':TASK' picks the UMA task (default omat), ':PATH' a local checkpoint",
        ))
    register(BackboneSpec(
        name=EQV2_SPEC_NAME,
        factory="hacknip_equiformer.equiformer_v2:load",
        cutoff=EQV2_CUTOFF,
        layer_widths=EQV2_LAYER_WIDTHS,
        needs_supercell=True,
        library="fairchem-core==1.10 (own environment)",
        verified=False,
        description=f"EquiformerV2 'eqV2 M' ({EQV2_DEFAULT_MODEL}) as in the HackNIP paper; runs only with "
                    f"fairchem-core 1.x in a separate environment (see the package README); capped, strictly "
                    f"enforced neighbour list, so supercells are needed",
    ))
