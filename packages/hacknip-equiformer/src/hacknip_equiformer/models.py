"""What the plugin registers, and which fairchem-core is installed. Light: no torch, no fairchem import.

Architecture numbers of the pretrained fairchem models. None of these checkpoints could be downloaded on the
machines this release was built on, so every number below comes from a written source, not from loading the real
weights; the specs are registered with ``verified=False`` for that reason. A loaded backbone always reports what its
checkpoint says (and warns when that differs from this table), so features are never built on these numbers.

Sources (facebookresearch/fairchem), and a consistency check: the parameter count of fairchem's own backbone class
built with these settings (random weights, here) against the published size of each model.
- UMA-S 1.1: ``configs/uma/training_release/backbone/K4L2.yaml`` (num_layers 4, sphere_channels 128, lmax 2,
  32 experts) with ``uma_sm_conserve_finetune.yaml`` (cutoff_radius 6, max_neighbors 300). Built: 146.5M parameters,
  6.4M active per structure; published: 150M / 6.6M.
- UMA-S 1.2: ``backbone/K4L2_1p2.yaml`` (4 layers, 128 channels, charge-balanced channels 0-2) with
  ``uma_sm_full_conserve_1p2.yaml`` (cutoff 6, max_neighbors 300, 64 experts). 1.2.1 and its fine-tunes: assumed same.
- UMA-M 1.1: ``uma_md_direct_pretrain.yaml`` / ``uma_md_conserve_finetune.yaml`` (cutoff 6, max_neighbors 300) use
  backbone ``K10L4``, whose file is not public; read by analogy with K4L2 as 10 layers, lmax 4, 128 channels.
  Built: 1397M parameters, 51M active; published: 1.4B / ~50M.
- eSEN-sm OMol25: 4 layers x 128, lmax 2, cutoff 6 Å (a third-party inspection of ``esen_sm_conserving_all.pt``;
  built: 6.3M parameters). eSEN-md OMol25: 10 x 128, lmax 4 by analogy (built: 50.6M; published: ~50M).
- EquiformerV2 "eqV2 M" (the HackNIP paper's model, fairchem-core 1.x): 6 Å graph, features of width 128, layers
  0..9 used in the paper; read here as the embedding plus 10 transformer blocks (unconfirmed).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from hacknip.plugins.registry import UnknownNameError

README = "packages/hacknip-equiformer/README.md (https://pypi.org/project/hacknip-equiformer/)"
UMA_TASKS = ("omat", "omol", "oc20", "odac", "omc", "oc25")


@dataclass(frozen=True)
class PretrainedModel:
    name: str
    """fairchem's own name (``fairchem.core.calculate.pretrained_mlip.available_models``)."""
    cutoff: float
    blocks: int
    width: int
    description: str
    needs_supercell: bool = False

    @property
    def layer_widths(self) -> tuple[int, ...]:
        return (self.width,) * (self.blocks + 1)



_UMA_S = "UMA-S: 4 eSCN-MD blocks x 128 (lmax 2), mixture of linear experts, 6 Å / 300 neighbours"
_UMA_S_12 = ("UMA-S 1.2: its composition embedding breaks size-extensivity (fairchem's include_self bug), so "
             "features change with the cell size: supercells needed")

FAIRCHEM2_MODELS: dict[str, PretrainedModel] = {
    model.name: model
    for model in (
        PretrainedModel("uma-s-1p1", 6.0, 4, 128, _UMA_S + " (UMA 1.1, fairchem's default before 1.2)"),
        PretrainedModel("uma-s-1p2", 6.0, 4, 128, _UMA_S_12, needs_supercell=True),
        PretrainedModel("uma-s-1p2p1", 6.0, 4, 128, _UMA_S + " (UMA 1.2.1)"),
        PretrainedModel("uma-s-1p2p1-ft-d4rev", 6.0, 4, 128, _UMA_S + " (1.2.1 fine-tuned, D4)"),
        PretrainedModel("uma-s-1p2p1-ft-r2scan", 6.0, 4, 128, _UMA_S + " (1.2.1 fine-tuned, r2SCAN)"),
        PretrainedModel("uma-m-1p1", 6.0, 10, 128, "UMA-M 1.1: 10 eSCN-MD blocks x 128 (lmax 4), mixture of linear "
                        "experts, 6 Å / 300 neighbours (architecture inferred from its parameter count)"),
        PretrainedModel("esen-sm-conserving-all-omol", 6.0, 4, 128, "eSEN-sm conserving, OMol25 (molecules): 4 x 128"),
        PretrainedModel("esen-sm-direct-all-omol", 6.0, 4, 128, "eSEN-sm direct, OMol25 (molecules): 4 x 128"),
        PretrainedModel("esen-md-direct-all-omol", 6.0, 10, 128,
                        "eSEN-md direct, OMol25 (molecules): 10 x 128 (inferred from its parameter count)"),
    )
}
DEFAULT_MODEL = "uma-s-1p1"

EQV2_SPEC_NAME = "equiformer-v2"
EQV2_DEFAULT_MODEL = "EquiformerV2-86M-OMAT24-MP-sAlex"
"""fairchem-core 1.x registry name of eqV2 M (86M, OMat24 + MPtrj + sAlex), file ``eqV2_86M_omat_mp_salex.pt``."""
EQV2_CUTOFF = 6.0
EQV2_LAYER_WIDTHS = (128,) * 11


class BackboneUnavailableError(UnknownNameError):
    """This backbone cannot run in this Python environment (it needs another fairchem-core).

    A subclass of :class:`hacknip.plugins.registry.UnknownNameError` on purpose: ``hacknip run`` then reads the backbone's
    features from the feature store, where another environment (the one that can run it) wrote them.
    """


def installed_fairchem_version() -> str | None:
    """The version of the installed fairchem-core distribution, without importing it (None if absent)."""
    try:
        return metadata.version("fairchem-core")
    except metadata.PackageNotFoundError:
        return None


def fairchem_major() -> int | None:
    version = installed_fairchem_version()
    if version is None:
        return None
    try:
        return int(version.split(".")[0])
    except ValueError:
        return None


def require_fairchem2(backbone: str | None = None) -> None:
    """Raise :class:`BackboneUnavailableError` unless fairchem-core 2.x or later is installed."""
    version = installed_fairchem_version()
    major = fairchem_major()
    if major is not None and major >= 2:
        return
    what = "the UMA/eSEN backbones need" if backbone is None else f"backbone {backbone!r} (UMA/eSEN) needs"
    if version is None:
        raise BackboneUnavailableError(
            f"{what} fairchem-core>=2, which is not installed: pip install 'hacknip-equiformer[fairchem2]'")
    raise BackboneUnavailableError(
        f"{what} fairchem-core>=2, but this environment has fairchem-core "
        f"{version} (the EquiformerV2 environment, see {README}). Featurise with it in your fairchem-core 2 "
        f"environment; `hacknip run` here reads those stored features.")


def require_fairchem1(backbone: str) -> None:
    """Raise :class:`BackboneUnavailableError` unless fairchem-core 1.x is installed."""
    version = installed_fairchem_version()
    if fairchem_major() == 1:
        return
    found = "no fairchem-core is installed" if version is None else f"this environment has fairchem-core {version}"
    raise BackboneUnavailableError(
        f"backbone {backbone!r} is EquiformerV2, which exists only in fairchem-core 1.x (removed in 2.0); {found}. "
        f"fairchem-core 1.x needs torch~=2.4, numpy<2, torch_scatter and torch_sparse, so it cannot share an environment with "
        f"fairchem-core 2 / torch 2.13: make a separate environment with fairchem-core==1.10.0 and run "
        f"`hacknip featurize --backbone {backbone}` there; `hacknip run --backbone {backbone}` here then reads the "
        f"stored features. Recipe: {README}")
