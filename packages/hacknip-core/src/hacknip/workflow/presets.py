"""Named configurations of ``hacknip run``: which layers and which pooling when the user names neither.

``paper`` is the paper's protocol: each backbone's layers swept one at a time, mean pooling. ``all-layers`` is what the
measurements support (docs/benchmarks.md, "What moves accuracy on Matbench phonons"): every layer of each backbone
concatenated, pooled by mean, max and std — CHGNet on Matbench phonons, untuned LightGBM, official folds: 45.6 cm⁻¹
against 71.9 for the paper's protocol. A backbone written with ``@LAYERS`` and an explicit ``--pooling`` always win.

Molecules: the paper relaxes each one with the backbone before featurising; ``all-layers`` featurises RDKit's
conformer as it is, since relaxing with CHGNet lowered ROC-AUC on ClinTox and costs hours (docs/benchmarks.md,
"Relaxed against unrelaxed"). ``--relax/--no-relax`` always wins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from hacknip.errors import InputError
from hacknip.features.compose import Member


@dataclass(frozen=True)
class Preset:
    name: str
    all_layers: bool
    """Backbones without ``@LAYERS`` use every layer at once (else their layers are swept)."""
    pooling: str
    relax_molecules: bool
    """Molecules are relaxed with the first backbone before featurising (else their conformers are used as made)."""
    summary: str


PRESETS = {preset.name: preset for preset in (
    Preset("paper", False, "mean", True, "each backbone's layers swept one at a time, mean pooling, molecules relaxed "
                                         "with the backbone (the paper's protocol)"),
    Preset("all-layers", True, "mean+max+std", False, "every layer of each backbone concatenated, mean+max+std "
                                                      "pooling, molecules' conformers unrelaxed"),
)}
DEFAULT_PRESET = "paper"


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_members(members: Sequence[Member], preset: Preset) -> list[Member]:
    """The members with the preset's layers where the expression left them open."""
    if not preset.all_layers:
        return list(members)
    return [dataclasses.replace(m, all_layers=True) if m.layers is None and not m.all_layers else m for m in members]
