"""Registers the ORB models of orb-models with hacknip. Light on purpose: no torch, no orb_models
(``hacknip list`` imports this module).

Each backbone name is an orb-models pretrained model name (``orb_models.forcefield.pretrained.ORB_PRETRAINED_MODELS``)
plus ``orb-v2-paper``, a preset of orb-v2 with the graph of the HackNIP paper. ``NAME:/path/to/weights.ckpt`` loads a
local checkpoint (a state_dict of the same architecture, the format of orb-models' own checkpoints) instead of
downloading the pretrained weights.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import hacknip
from hacknip.plugins.backbone import LATTICE_LENGTHS, PERPENDICULAR_WIDTH, BackboneSpec

UNCAPPED = math.inf
"""``max_num_neighbors`` value meaning: every neighbour within the radius (no cap)."""


class OrbModel(NamedTuple):
    loader: str
    """Function of ``orb_models.forcefield.pretrained`` that builds the architecture and loads its weights."""
    n_message_passing: int
    """Number of ``gnn_stacks``; hacknip's layers are the encoder output plus one per stack."""
    latent_dim: int
    radius: float
    """Graph radius (Å) of the model's own ``SystemConfig``."""
    orb_max_num_neighbors: int
    """Neighbour cap of the model's own ``SystemConfig``."""
    max_num_neighbors: float
    """hacknip's default cap: orb's own, except for the "effectively unlimited" (120) models, which get no cap."""
    charge_spin: bool = False
    """Conditioned on total charge and spin (``atoms.info["charge"]``, ``atoms.info["spin"]``)."""
    description: str = ""
    weights_of: str = ""
    """For a preset: the orb-models model whose architecture and weights it uses (default: the same name)."""
    supercell_rule: str = PERPENDICULAR_WIDTH
    """How far a capped graph's cells are repeated (``hacknip.features.supercell``); the paper preset replays the paper's."""

    @property
    def layer_widths(self) -> tuple[int, ...]:
        return (self.latent_dim,) * (self.n_message_passing + 1)

    @property
    def needs_supercell(self) -> bool:
        return needs_supercell(self.max_num_neighbors)


def needs_supercell(max_num_neighbors: float) -> bool:
    """A capped neighbour list is not invariant under supercell expansion (the cap cuts through degenerate shells
    differently), so capped graphs are featurised on cutoff-sized supercells, as in the paper. Uncapped ones are not."""
    return not math.isinf(max_num_neighbors)


def factory_name(name: str) -> str:
    """``"orb-v3-direct-20-omat"`` -> ``"load_orb_v3_direct_20_omat"`` (a function of ``hacknip_orb.backbone``)."""
    return "load_" + name.replace("-", "_")


_LAYERS = "layer 0 = encoder output, layer i = node features after gnn_stacks[i-1]"
_INF = ("orb-models caps it at 120 neighbours ('effectively unlimited'); hacknip takes every neighbour within 6 Å "
        "(same graph unless an atom has >120), so no supercells")

# Read from the architectures that orb-models 0.5.5's pretrained loaders build (tests/test_backbone_orb.py checks this
# table against them): orb-v2 style = 15 (sm: 10, xs: 5) attention message-passing steps, orb-v3 = 5; all 256 wide;
# graph radius 6 Å; cap 20 neighbours, or 120 for the "inf" and OMol models. Atom embedding: Z = 1..117 (orb one-hot
# encodes 118 classes, index = Z).
MODELS: dict[str, OrbModel] = {
    "orb-v2": OrbModel(
        "orb_v2", 15, 256, 6.0, 20, 20,
        description=f"ORB v2 (MPtraj + Alexandria, direct), 6 Å / 20 neighbours as in orb-models>=0.5: {_LAYERS}"),
    "orb-v2-paper": OrbModel(
        "orb_v2", 15, 256, 10.0, 20, 20,
        description="ORB v2 with the HackNIP paper's graph (orb-models<=0.4: 10 Å, 20 neighbours) and supercells "
                    f"(every lattice vector >= 10 Å); same weights as orb-v2: {_LAYERS}", weights_of="orb-v2",
        supercell_rule=LATTICE_LENGTHS),
    "orb-mptraj-only-v2": OrbModel(
        "orb_mptraj_only_v2", 15, 256, 6.0, 20, 20, description=f"ORB v2 trained on MPtraj only: {_LAYERS}"),
    "orb-d3-v2": OrbModel(
        "orb_d3_v2", 15, 256, 6.0, 20, 20, description=f"ORB v2 trained with D3 corrections: {_LAYERS}"),
    "orb-d3-sm-v2": OrbModel(
        "orb_d3_sm_v2", 10, 256, 6.0, 20, 20, description=f"ORB v2 small (10 steps), D3: {_LAYERS}"),
    "orb-d3-xs-v2": OrbModel(
        "orb_d3_xs_v2", 5, 256, 6.0, 20, 20, description=f"ORB v2 extra small (5 steps), D3: {_LAYERS}"),
}
for _kind in ("conservative", "direct"):
    for _data, _data_text in (("omat", "OMat24"), ("mpa", "MPtraj + Alexandria")):
        MODELS[f"orb-v3-{_kind}-20-{_data}"] = OrbModel(
            f"orb_v3_{_kind}_20_{_data}", 5, 256, 6.0, 20, 20,
            description=f"ORB v3 {_kind} ({_data_text}), 6 Å / 20 neighbours: {_LAYERS}")
        MODELS[f"orb-v3-{_kind}-inf-{_data}"] = OrbModel(
            f"orb_v3_{_kind}_inf_{_data}", 5, 256, 6.0, 120, UNCAPPED,
            description=f"ORB v3 {_kind} ({_data_text}), 6 Å, {_INF}: {_LAYERS}")
    MODELS[f"orb-v3-{_kind}-omol"] = OrbModel(
        f"orb_v3_{_kind}_omol", 5, 256, 6.0, 120, UNCAPPED, charge_spin=True,
        description=f"ORB v3 {_kind} (OMol25 molecules; needs atoms.info charge and spin), 6 Å, {_INF}: {_LAYERS}")

DEFAULT_MODEL = "orb-v2"


@hacknip.hookimpl
def register_backbones(register):
    for name, model in MODELS.items():
        register(BackboneSpec(
            name=name,
            factory=f"hacknip_orb.backbone:{factory_name(name)}",
            cutoff=model.radius,
            layer_widths=model.layer_widths,
            needs_supercell=model.needs_supercell,
            supercell_rule=model.supercell_rule,
            library="orb-models",
            description=model.description,
            safe_checkpoints=True,  # orb-models' load_model reads state_dicts with torch.load(weights_only=True)
            trainable=True,  # OrbBackbone.trainable(layer): orb's own modules, truncated after the layer
            # Only random weights in orb's own architectures were checked here (no network for the real ones).
            verified=False,
        ))
