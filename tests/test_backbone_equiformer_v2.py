"""hacknip-equiformer's EquiformerV2 adapter, in an environment with fairchem-core 1.x (skipped elsewhere).

fairchem-core 1.x cannot share hacknip's main environment (torch~=2.4, numpy<2), so this file runs only where it is
installed, e.g. the environment of the package README's recipe::

    ~/venvs/hacknip-eqv2/bin/python -m pytest tests/test_backbone_equiformer_v2.py -q

No eqV2 weights can be downloaded here, so a small EquiformerV2 (3 blocks x 32 channels, lmax 4, mmax 2) is built
with random weights and saved in fairchem 1.x's trainer-checkpoint format (``state_dict`` + ``config``), which
fairchem's own ``OCPCalculator(checkpoint_path=...)`` loads, as the adapter does for eqV2 M.
"""

from __future__ import annotations

import copy
from importlib import metadata

import numpy as np
import pytest

try:
    FAIRCHEM_VERSION = metadata.version("fairchem-core")
except metadata.PackageNotFoundError:
    FAIRCHEM_VERSION = None
if FAIRCHEM_VERSION is None or not FAIRCHEM_VERSION.startswith("1."):
    pytest.skip(f"needs fairchem-core 1.x (found {FAIRCHEM_VERSION}); see packages/hacknip-equiformer/README.md",
                allow_module_level=True)

import torch  # noqa: E402

from hacknip.plugins.backbone import file_sha256  # noqa: E402
from hacknip.plugins.registry import load_backbone  # noqa: E402
from hacknip.plugins.testing import BackboneConformance, reference_structures  # noqa: E402

CUTOFF = 5.0
CHANNELS = 32
BLOCKS = 3


def write_equiformer_v2_checkpoint(path, max_neighbors=20):
    from fairchem.core.common.registry import registry
    from fairchem.core.common.utils import setup_imports

    setup_imports()
    backbone = {
        "model": "equiformer_v2_backbone", "use_pbc": True, "use_pbc_single": True, "otf_graph": True,
        "max_neighbors": max_neighbors, "max_radius": CUTOFF, "max_num_elements": 96,
        "num_layers": BLOCKS, "sphere_channels": CHANNELS, "attn_hidden_channels": 32, "num_heads": 2,
        "attn_alpha_channels": 8, "attn_value_channels": 8, "ffn_hidden_channels": 32, "norm_type": "layer_norm_sh",
        "lmax_list": [4], "mmax_list": [2], "grid_resolution": 18, "num_sphere_samples": 128, "edge_channels": 32,
        "use_atom_edge_embedding": True, "share_atom_edge_embedding": False, "use_m_share_rad": False,
        "distance_function": "gaussian", "num_distance_basis": 64, "attn_activation": "silu",
        "use_s2_act_attn": False, "use_attn_renorm": True, "ffn_activation": "silu", "use_gate_act": False,
        "use_grid_mlp": True, "use_sep_s2_act": True, "alpha_drop": 0.1, "drop_path_rate": 0.1, "proj_drop": 0.0,
        "weight_init": "uniform",
    }
    config = {
        "trainer": "ocp",
        "model": {"name": "hydra", "backbone": backbone, "otf_graph": True,
                  "heads": {"energy": {"module": "equiformerV2_scalar_head"},
                            "forces": {"module": "equiformerV2_vector_head"}}},
        "dataset": {"src": "unused", "format": "ase_db"},
        "outputs": {"energy": {"shape": 1, "level": "system"},
                    "forces": {"irrep_dim": 1, "level": "atom", "train_on_free_atoms": True,
                               "eval_on_free_atoms": True}},
        "loss_functions": [{"energy": {"fn": "mae", "coefficient": 1}}, {"forces": {"fn": "l2mae", "coefficient": 1}}],
        "evaluation_metrics": {"metrics": {"energy": ["mae"], "forces": ["mae"]}, "primary_metric": "forces_mae"},
        "optim": {"batch_size": 1, "eval_batch_size": 1, "num_workers": 0, "max_epochs": 1, "optimizer": "AdamW",
                  "optimizer_params": {}, "lr_initial": 1e-4},
        "task": {},
        "cmd": {"seed": 0},
    }
    arguments = copy.deepcopy(config)
    dataset = arguments["dataset"]
    del dataset["src"]
    trainer = registry.get_trainer_class("ocp")(
        task=arguments["task"], model=arguments["model"], dataset=[dataset], outputs=arguments["outputs"],
        loss_functions=arguments["loss_functions"], evaluation_metrics=arguments["evaluation_metrics"],
        optimizer=arguments["optim"], identifier="", local_rank=0, is_debug=True, cpu=True, inference_only=True,
        seed=0)
    torch.save({"state_dict": trainer.model.state_dict(), "normalizers": {}, "elementrefs": {}, "config": config,
                "amp": None}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_equiformer_v2_checkpoint(tmp_path_factory.mktemp("eqv2") / "tiny-eqv2.pt")


@pytest.fixture(scope="module")
def eqv2(checkpoint):
    return load_backbone(f"equiformer-v2:{checkpoint}")


class TestEquiformerV2Conformance(BackboneConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls, eqv2):
        return eqv2


def test_the_loaded_model(eqv2, checkpoint):
    assert eqv2.name == f"equiformer-v2:{checkpoint}"
    assert eqv2.cutoff == CUTOFF and eqv2.layer_widths == (CHANNELS,) * (BLOCKS + 1)
    assert eqv2.max_neighbors == 20 and eqv2.enforce_max_neighbors_strictly is True
    assert eqv2.needs_supercell is True and eqv2.supported_elements == frozenset(range(1, 96))
    identity = eqv2.identity()
    assert identity["library_version"].startswith("1.") and identity["architecture"] == "EquiformerV2Backbone"
    assert identity["checkpoint_sha256"] == file_sha256(checkpoint) and identity["name"] == eqv2.name


def test_a_strictly_capped_graph_is_not_supercell_invariant(eqv2):
    """Why equiformer-v2 declares needs_supercell: with 20 neighbours enforced strictly, the cut falls inside
    degenerate shells and a 2x2x2 supercell changes the mean embedding (measured: 1e-3 to 2e-2 here)."""
    structures = reference_structures()
    cells = eqv2.per_atom_features(structures, [3])
    supercells = eqv2.per_atom_features([atoms.repeat((2, 2, 2)) for atoms in structures], [3])
    worst = max(float(np.abs(a[3].mean(axis=0) - b[3].mean(axis=0)).max()) for a, b in zip(cells, supercells))
    assert worst > 1e-4


def test_molecule_is_boxed(eqv2):
    from ase.build import molecule

    (features,) = eqv2.per_atom_features([molecule("H2O")], [0, 3])
    assert features[3].shape == (3, CHANNELS) and np.isfinite(features[3]).all()


def test_uma_is_refused_here():
    from hacknip_equiformer.models import BackboneUnavailableError

    with pytest.raises(BackboneUnavailableError, match="need fairchem-core>=2"):
        load_backbone("uma-s-1p1:/models/uma-s-1p1.pt")
