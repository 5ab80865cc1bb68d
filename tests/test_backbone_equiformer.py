"""hacknip-equiformer on a random-weight UMA-like model written in fairchem's own checkpoint format.

No fairchem weights can be downloaded here, so a small eSCN-MD mixture-of-experts backbone (UMA's architecture, 3
blocks x 32 channels, lmax = mmax = 2, 4 experts, tasks omat and omol) is built with random weights, saved as the
``MLIPInferenceCheckpoint`` fairchem publishes, and loaded through the plugin's real path: hacknip's registry ->
``hacknip_equiformer.backbone.load`` -> fairchem's ``load_predict_unit``. Its neighbour cap (8) is tighter than the
first shells of the test crystals, to check that fairchem's cap keeps supercell invariance.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("fairchem.core.models.uma")

import torch  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from hacknip.errors import BadStructureError  # noqa: E402
from hacknip.plugins.backbone import file_sha256, identity_key  # noqa: E402
from hacknip.plugins.registry import UnknownNameError, backbone_specs, load_backbone  # noqa: E402
from hacknip.plugins.testing import BackboneConformance, reference_structures  # noqa: E402
from hacknip_equiformer import models  # noqa: E402
from hacknip_equiformer._common import InputOf, split_checkpoint  # noqa: E402

CUTOFF = 5.0
CHANNELS = 32
BLOCKS = 3
MAX_NEIGHBORS = 8


def write_uma_like_checkpoint(path, *, model_id=None, seed=0, max_neighbors=MAX_NEIGHBORS):
    """A random-weight UMA-like model saved as fairchem's inference checkpoint (what ``load_predict_unit`` reads)."""
    import hydra
    from fairchem.core.units.mlip_unit.api.inference import MLIPInferenceCheckpoint

    datasets = ["omat", "omol"]
    backbone = {
        "model": "fairchem.core.models.uma.escn_moe.eSCNMDMoeBackbone",
        "num_experts": 4, "moe_layer_type": "pytorch", "use_composition_embedding": True,
        "max_num_elements": 100, "sphere_channels": CHANNELS, "lmax": 2, "mmax": 2,
        "otf_graph": True, "max_neighbors": max_neighbors, "cutoff": CUTOFF, "edge_channels": CHANNELS,
        "distance_function": "gaussian", "num_distance_basis": 32,
        "regress_forces": True, "regress_stress": True, "direct_forces": False,
        "num_layers": BLOCKS, "hidden_channels": CHANNELS, "norm_type": "rms_norm_sh", "act_type": "gate",
        "ff_type": "spectral", "chg_spin_emb_type": "rand_emb", "cs_emb_grad": True,
        "dataset_mapping": {name: name for name in datasets},
        "model_version": 1.1,  # untagged UMA checkpoints must say which generation they are
    }
    heads = {"energyandforcehead": {
        "module": "fairchem.core.models.uma.escn_moe.DatasetSpecificSingleHeadWrapper",
        "head_cls": "fairchem.core.models.uma.escn_md.MLP_EFS_Head",
        "head_kwargs": {"wrap_property": False},
        "dataset_names": datasets,
    }}
    model_config = {"_target_": "fairchem.core.models.base.HydraModel", "backbone": backbone, "heads": heads,
                    "pass_through_head_outputs": True}
    if model_id is not None:
        model_config["model_id"] = model_id
    tasks = [
        {"_target_": "fairchem.core.units.mlip_unit.mlip_unit.Task", "name": f"{dataset}_{prop}", "level": level,
         "property": prop, "out_spec": {"dim": dim, "dtype": "float32"}, "datasets": [dataset],
         "normalizer": {"_target_": "fairchem.core.modules.normalization.normalizer.Normalizer",
                        "mean": 0.0, "rmsd": 1.0}}
        for dataset in datasets
        for prop, level, dim in (("energy", "system", [1]), ("forces", "atom", [3]), ("stress", "system", [1, 9]))
    ]
    torch.manual_seed(seed)
    model = hydra.utils.instantiate(model_config)
    ema = torch.optim.swa_utils.AveragedModel(model)  # fairchem loads the EMA weights for inference
    torch.save(MLIPInferenceCheckpoint(model_config=model_config, model_state_dict=model.state_dict(),
                                       ema_state_dict=ema.state_dict(), tasks_config=tasks), path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_uma_like_checkpoint(tmp_path_factory.mktemp("fairchem") / "tiny-uma.pt")


@pytest.fixture(scope="module")
def uma(checkpoint):
    return load_backbone(f"uma-s-1p1:{checkpoint}")


class TestUMALikeConformance(BackboneConformance):
    """The suite's structures differ in composition, so 'batch equals one by one' also checks unmerged experts."""

    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls, uma):
        return uma


def test_the_loaded_model(uma, checkpoint):
    assert uma.name == f"uma-s-1p1:{checkpoint}"
    assert uma.cutoff == CUTOFF and uma.max_neighbors == MAX_NEIGHBORS
    assert uma.layer_widths == (CHANNELS,) * (BLOCKS + 1)
    assert uma.supported_elements == frozenset(range(1, 100))
    assert uma.needs_supercell is False and uma.task_name == "omat"
    identity = uma.identity()
    assert identity["checkpoint_sha256"] == file_sha256(checkpoint) and identity["model"] is None
    assert identity["library"] == "fairchem-core" and identity["dtype"] == "float32"
    assert (identity["cutoff"], identity["max_neighbors"], identity["task_name"]) == (CUTOFF, MAX_NEIGHBORS, "omat")
    assert identity["enforce_max_neighbors_strictly"] is False and identity["model_id"] == "UMA-1.1"


def test_registered_specs():
    from fairchem.core.calculate.pretrained_mlip import available_models

    specs = {name: spec for name, spec in backbone_specs().items() if spec.package == "hacknip-equiformer"}
    assert set(specs) == set(models.FAIRCHEM2_MODELS) | {"equiformer-v2"}
    assert set(models.FAIRCHEM2_MODELS) <= set(available_models)  # fairchem's own names
    # No real fairchem weights could be loaded here: nothing is claimed as verified.
    assert all(spec.verified is False for spec in specs.values())
    assert specs["uma-s-1p1"].layer_widths == (128,) * 5 and specs["uma-s-1p1"].cutoff == 6.0
    assert specs["uma-s-1p1"].needs_supercell is False and specs["uma-s-1p2"].needs_supercell is True
    assert specs["equiformer-v2"].needs_supercell is True and specs["equiformer-v2"].layer_widths == (128,) * 11


def test_task_is_chosen_in_the_name_and_is_part_of_the_identity(uma, checkpoint):
    omol = load_backbone(f"uma-s-1p1:{checkpoint}:omol")
    assert omol.task_name == "omol" and omol.identity()["task_name"] == "omol"
    assert identity_key(omol.identity()) != identity_key(uma.identity())
    structures = reference_structures()[:2]
    a, b = uma.per_atom_features(structures, [1]), omol.per_atom_features(structures, [1])
    assert not np.allclose(a[0][1], b[0][1])  # the task embedding changes the features
    with pytest.raises(ValueError, match="not in this model"):
        load_backbone(f"uma-s-1p1:{checkpoint}:oc20")
    assert split_checkpoint("omol", models.UMA_TASKS) == (None, "omol")
    assert split_checkpoint("/m/uma.pt:omat", models.UMA_TASKS) == ("/m/uma.pt", "omat")
    assert split_checkpoint("/m/uma.pt", models.UMA_TASKS) == ("/m/uma.pt", None)


def test_uma_1p2_composition_embedding_needs_supercells(tmp_path):
    """UMA-S 1.2 averages the composition with an extra zero (fairchem's include_self bug, kept for that model_id):
    the features then depend on the number of atoms in the cell, so that backbone must declare supercells."""
    path = write_uma_like_checkpoint(tmp_path / "uma-1p2-like.pt", model_id="UMA-S-1.2")
    backbone = load_backbone(f"uma-s-1p2:{path}")
    assert backbone.needs_supercell is True
    cell = bulk("NaCl", "rocksalt", a=5.64)
    (small,), (big,) = (backbone.per_atom_features([atoms], [2]) for atoms in (cell, cell.repeat((2, 2, 2))))
    assert np.abs(small[2].mean(axis=0) - big[2].mean(axis=0)).max() > 1e-4


def test_molecule_without_a_cell_equals_the_molecule_in_a_large_box(uma):
    water = molecule("H2O")
    boxed = water.copy()
    boxed.center(vacuum=uma.cutoff + 1.0)
    boxed.pbc = True
    (free,), (periodic,) = (uma.per_atom_features([atoms], [0, 3]) for atoms in (water, boxed))
    for layer in (0, 3):
        np.testing.assert_allclose(free[layer], periodic[layer], rtol=1e-4, atol=1e-5)


def test_double_precision(checkpoint, uma):
    double = load_backbone(f"uma-s-1p1:{checkpoint}", dtype="float64")
    assert double.identity()["dtype"] == "float64"
    structures = reference_structures()
    for ours, theirs in zip(double.per_atom_features(structures, [3]), uma.per_atom_features(structures, [3])):
        np.testing.assert_allclose(ours[3], theirs[3], rtol=1e-3, atol=1e-4)


def test_calculator_uses_the_same_model(uma):
    atoms = bulk("Cu", "fcc", a=3.61)
    atoms.calc = uma.calculator()
    assert atoms.calc.predictor is uma.predict_unit
    assert np.isfinite(atoms.get_potential_energy())
    before = uma.per_atom_features([atoms], [3])[0][3]
    np.testing.assert_array_equal(before, uma.per_atom_features([atoms], [3])[0][3])


def test_missing_local_checkpoint_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone(f"uma-s-1p1:{tmp_path / 'nothing-here.pt'}")


def test_unsupported_element_is_a_bad_structure(uma):
    heavy = Atoms("Fm", cell=[4.0, 4.0, 4.0], pbc=True)  # Z = 100: beyond the embedding table
    with pytest.raises(BadStructureError, match=r"\[100\].*structure 1"):
        uma.per_atom_features([bulk("Cu", "fcc", a=3.61), heavy], [0])


def test_isolated_atom_gets_finite_features(uma):
    """An atom with no neighbour within the cutoff (a lone ion, a salt's Li far from its anion) is featurised as
    fairchem does it, from its embedding with no messages."""
    layers = list(range(len(uma.layer_widths)))
    alone = Atoms("Li", positions=[[10.0, 10.0, 10.0]], cell=[20.0, 20.0, 20.0], pbc=True)
    salt = molecule("H2O") + Atoms("Li", positions=[[9.0, 0.0, 0.0]])  # no cell: open boundaries
    _, single, stray = uma.per_atom_features([bulk("Si", "diamond", a=5.43), alone, salt], layers)
    for layer in layers:
        assert single[layer].shape == (1, CHANNELS) and np.isfinite(single[layer]).all(), layer
        assert stray[layer].shape == (4, CHANNELS) and np.isfinite(stray[layer]).all(), layer
    (again,) = uma.per_atom_features([alone], layers)  # its batch mates do not reach it
    for layer in layers:
        np.testing.assert_allclose(again[layer], single[layer], rtol=1e-4, atol=1e-5)


def test_charge_fairchem_rejects_is_a_bad_structure(uma):
    water = molecule("H2O")
    water.info["charge"] = 1.5  # fairchem wants an integer total charge
    with pytest.raises(BadStructureError, match=r"structure 1 \(H2O\): Invalid type for charge"):
        uma.per_atom_features([molecule("NH3"), water], [0])


def test_slab_without_a_vector_along_its_open_axis(uma):
    """fairchem needs a cell: a slab without a vector along its open axis gets a box there (still open), which gives
    the features of the same slab with a cell vector there."""
    slab = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((1, 1, 2))
    slab.pbc = [True, True, False]
    flat = slab.copy()
    flat.cell[2] = [0.0, 0.0, 0.0]
    (boxed,), (open_,) = (uma.per_atom_features([atoms], [3]) for atoms in (slab, flat))
    np.testing.assert_allclose(open_[3], boxed[3], rtol=1e-4, atol=1e-5)


def test_fairchem_checkpoints_are_not_declared_safe_to_load():
    """fairchem unpickles checkpoints and instantiates the classes their config names: no safe_checkpoints claim."""
    assert not any(spec.safe_checkpoints for spec in backbone_specs().values() if spec.package == "hacknip-equiformer")


def test_offline_load_by_name_asks_for_a_local_checkpoint(monkeypatch, tmp_path):
    import huggingface_hub.constants
    from fairchem.core.calculate import pretrained_mlip

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as here, minus the retries
    monkeypatch.setattr(pretrained_mlip, "CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(models.BackboneUnavailableError, match=r"uma-s-1p1:/path/to/uma-s-1p1\.pt") as caught:
        load_backbone("uma-s-1p1")
    assert isinstance(caught.value, LookupError) and "Hugging Face" in str(caught.value)


def test_equiformer_v2_in_a_fairchem2_environment_says_what_to_do(tmp_path):
    path = tmp_path / "eqV2_86M_omat_mp_salex.pt"
    path.write_bytes(b"not read")
    with pytest.raises(UnknownNameError) as caught:
        load_backbone(f"equiformer-v2:{path}")
    message = str(caught.value)
    assert isinstance(caught.value, models.BackboneUnavailableError)
    assert "fairchem-core 1.x" in message and "fairchem-core 2." in message and "README" in message
    assert f"hacknip featurize --backbone equiformer-v2:{path}" in message


def test_uma_in_a_fairchem1_environment_says_what_to_do(monkeypatch):
    monkeypatch.setattr(models, "installed_fairchem_version", lambda: "1.10.0")
    with pytest.raises(models.BackboneUnavailableError, match="needs fairchem-core>=2.*1.10.0"):
        models.require_fairchem2("uma-s-1p1")
    models.require_fairchem1("equiformer-v2")  # accepted there


def test_run_reads_equiformer_v2_features_stored_by_another_environment(uma, phonons_path, tmp_path):
    """The README's recipe, last step: features stored under 'equiformer-v2' (here made by a stand-in network, as the
    fairchem 1.x environment would make them) are used by `hacknip run` in this environment."""
    from hacknip.cli import cli
    from hacknip.data.read import read_dataset
    from hacknip.features.featurize import featurize
    from hacknip.store import FeatureStore

    class StandIn:  # what the fairchem-1 environment's backbone would be, identity and all
        name = "equiformer-v2"
        cutoff, layer_widths, needs_supercell = uma.cutoff, uma.layer_widths, False
        supported_elements = uma.supported_elements

        def identity(self):
            return {**uma.identity(), "name": self.name}

        def per_atom_features(self, structures, layers):
            return uma.per_atom_features(structures, layers)

    featurize(read_dataset(phonons_path).head(40), StandIn(), FeatureStore())
    result = CliRunner().invoke(cli, ["run", "--data", str(phonons_path), "--backbone", "equiformer-v2@3",
                                      "--head", "ridge", "--limit", "40", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["backbones"][0]["computed"] == 0


def test_input_of_captures_before_the_block_mutates_its_input():
    """Layer 0 is the input of the first block; EquiformerV2's blocks rewrite the object they receive."""
    from hacknip.plugins.capture import forward_capturing

    class Holder:
        def __init__(self, tensor):
            self.embedding = tensor

    class Rewrites(torch.nn.Module):
        def forward(self, x):
            x.embedding = x.embedding + 1.0  # like TransBlockV2: same object, new tensor
            return x

    blocks = torch.nn.ModuleList([Rewrites(), Rewrites()])

    def run():
        x = Holder(torch.zeros(2, 4, 3))
        for block in blocks:
            x = block(x)

    modules = {0: InputOf(blocks[0]), 1: blocks[0], 2: blocks[1]}
    captured = forward_capturing(run, modules, [0, 1, 2], extract=lambda layer, out: out.embedding[:, 0, :].clone())
    assert [float(captured[layer][0, 0]) for layer in (0, 1, 2)] == [0.0, 1.0, 2.0]
    only_zero = forward_capturing(run, modules, [0], extract=lambda layer, out: out.embedding[:, 0, :].clone())
    assert list(only_zero) == [0]


def test_plugin_module_does_not_import_torch_or_fairchem():
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import hacknip_equiformer.plugin"],
                            capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    heavy = sorted(name for name in imported if name.split(".")[0] in {"torch", "fairchem", "numpy", "e3nn"})
    assert not heavy, f"hacknip_equiformer.plugin imports {heavy}"
