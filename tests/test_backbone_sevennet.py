"""hacknip-sevennet on the real pretrained SevenNet weights shipped in the sevenn wheel (no downloads)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import sevenn.util
import torch
from ase import Atoms
from ase.build import bulk, molecule
from conftest import RunsCode

from hacknip.errors import BadStructureError, UntrustedFileError
from hacknip.plugins.backbone import file_sha256, identity_key
from hacknip.plugins.capture import scalar_channels
from hacknip.plugins.registry import backbone_specs, load_backbone
from hacknip.plugins.testing import BackboneConformance, ForcesConformance, TrainableConformance, reference_structures
from hacknip_sevennet.backbone import SafeCheckpoint, SevenNetBackbone, load, pretrained_checkpoint, read_checkpoint
from hacknip_sevennet.plugin import SHIPPED_MODELS


@pytest.fixture(scope="module")
def sevennet():
    return load()


class TestSevenNetConformance(BackboneConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls, sevennet):
        return sevennet


class TestSevenNetForces(ForcesConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls, sevennet):
        return sevennet


class TestSevenNetTrainable(TrainableConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls):
        return load()  # its own copy: the suite changes requires_grad


def test_the_shipped_model(sevennet):
    assert sevennet.name == "sevennet"
    assert sevennet.cutoff == 5.0
    assert sevennet.layer_widths == (128,) * 6
    assert sevennet.supported_elements == frozenset(range(1, 84)) | frozenset(range(89, 95))
    identity = sevennet.identity()
    assert identity["model"] == "7net-0" and identity["modal"] is None and identity["dtype"] == "float32"
    assert identity["checkpoint_sha256"] == file_sha256(pretrained_checkpoint("7net-0"))


def test_scalar_channels_come_from_the_irreps():
    assert scalar_channels("128x0e+64x1e+32x2e") == slice(0, 128)
    assert scalar_channels("128x0e") == slice(0, 128)
    assert scalar_channels("8x1o+4x0e+2x0o+3x0e").tolist() == [24, 25, 26, 27, 30, 31, 32]
    with pytest.raises(ValueError, match="no scalar"):
        scalar_channels("4x1e")


def test_registered_specs_match_the_loaded_models(sevennet):
    """The light plugin hard-codes cutoff and widths; here every shipped model is loaded to check them."""
    specs = backbone_specs()
    assert set(SHIPPED_MODELS) <= set(specs)
    for name, shipped in SHIPPED_MODELS.items():
        spec = specs[name]
        assert spec.package == "hacknip-sevennet" and spec.library == "sevenn"
        loaded = sevennet if name == "sevennet" else spec.load()
        assert loaded.name == name
        assert (spec.cutoff, spec.layer_widths, spec.needs_supercell) == (
            loaded.cutoff, loaded.layer_widths, loaded.needs_supercell), name
        assert (shipped.cutoff, shipped.layer_widths) == (loaded.cutoff, loaded.layer_widths), name
        if name == "sevennet:7net-mf-0":
            check_multi_fidelity(loaded)


def check_multi_fidelity(mf0: SevenNetBackbone):
    """7net-mf-0 runs with its default modal (PBE); the modal changes the interaction blocks, not the embedding."""
    assert mf0.modal == "PBE" and mf0.identity()["modal"] == "PBE"
    r2scan = SevenNetBackbone(mf0.network, name=mf0.name, model=mf0.model, checkpoint=mf0.checkpoint, modal="r2scan")
    assert r2scan.modal == "R2SCAN" and identity_key(r2scan.identity()) != identity_key(mf0.identity())
    with pytest.raises(ValueError, match="unknown modal 'HSE'"):
        SevenNetBackbone(mf0.network, name=mf0.name, model=mf0.model, checkpoint=mf0.checkpoint, modal="HSE")
    silicon = [bulk("Si", "diamond", a=5.43)]
    (pbe,), (scan,) = mf0.per_atom_features(silicon, [0, 2]), r2scan.per_atom_features(silicon, [0, 2])
    np.testing.assert_array_equal(pbe[0], scan[0])
    assert np.abs(pbe[2] - scan[2]).max() > 1e-4


def test_modal_for_a_single_fidelity_model_is_reported(sevennet):
    with pytest.raises(ValueError, match="single fidelity"):
        SevenNetBackbone(sevennet.network, name="x", model=None, checkpoint=sevennet.checkpoint, modal="PBE")


def test_missing_checkpoint_is_reported():
    with pytest.raises(ValueError, match="neither a SevenNet checkpoint file nor a pretrained"):
        load_backbone("sevennet:/no/such/checkpoint.pth")


def test_local_checkpoint_through_the_registry(sevennet, tmp_path):
    path = tmp_path / "my-sevennet.pth"
    torch.save(sevenn.util.load_checkpoint(str(sevennet.checkpoint)).get_checkpoint_dict(), path)
    local = load_backbone(f"sevennet:{path}")
    assert local.name == f"sevennet:{path}"
    identity = local.identity()
    assert identity["checkpoint_sha256"] == file_sha256(path) and identity["model"] is None
    assert identity_key(identity) != identity_key(sevennet.identity())
    structures = reference_structures()
    layers = list(range(len(sevennet.layer_widths)))
    for ours, theirs in zip(local.per_atom_features(structures, layers),
                            sevennet.per_atom_features(structures, layers)):
        for layer in layers:
            np.testing.assert_array_equal(ours[layer], theirs[layer])


def test_unsupported_element_is_a_bad_structure(sevennet):
    assert 84 not in sevennet.supported_elements  # polonium: not in 7net-0's type map
    polonium = Atoms("Po", cell=[3.35, 3.35, 3.35], pbc=True)
    with pytest.raises(BadStructureError, match=r"\[84\].*structure 1.*1-83, 89-94"):
        sevennet.per_atom_features([bulk("Cu", "fcc", a=3.61), polonium], [0])


def test_isolated_atom_gets_finite_features(sevennet):
    """An atom with no neighbour within 5 Å (a lone ion, a salt's Li far from its anion) is featurised as SevenNet
    does it: from its embedding, with no messages."""
    layers = list(range(len(sevennet.layer_widths)))
    alone = Atoms("Li", positions=[[10.0, 10.0, 10.0]], cell=[20.0, 20.0, 20.0], pbc=True)
    salt = molecule("H2O") + Atoms("Li", positions=[[9.0, 0.0, 0.0]])  # no cell: open boundaries
    crystal, single, stray = sevennet.per_atom_features([bulk("Li", "bcc", a=3.51), alone, salt], layers)
    for layer in layers:
        assert single[layer].shape == (1, 128) and np.isfinite(single[layer]).all(), layer
        assert stray[layer].shape == (4, 128) and np.isfinite(stray[layer]).all(), layer
    np.testing.assert_array_equal(single[0][0], crystal[0][0])  # layer 0: the element's embedding, whatever its place
    np.testing.assert_array_equal(stray[0][3], crystal[0][0])
    (again,) = sevennet.per_atom_features([alone], layers)  # its batch mates do not reach it
    for layer in layers:
        # float32 sums in another order differ by a few 1e-6 (seen: 2.4e-6 on 0.10, in CI under load); one H atom
        # 3 Å away moves Li's features by 0.011 (layer 1) to 4.2 (layer 5) at most
        np.testing.assert_allclose(again[layer], single[layer], rtol=1e-4, atol=1e-5)


def test_safe_loading_gives_the_features_of_sevenns_own_loader(sevennet, tmp_path):
    """hacknip reads checkpoints with torch.load(weights_only=True) (numpy arrays allowed) and builds the network as
    sevenn does: the same config and the same features as sevenn's own load_checkpoint (which unpickles)."""
    theirs = sevenn.util.load_checkpoint(str(sevennet.checkpoint))
    ours = SafeCheckpoint(sevennet.checkpoint)
    assert ours.config.keys() == theirs.config.keys()
    for key, value in theirs.config.items():
        assert repr(ours.config[key]) == repr(value), key
    reference = SevenNetBackbone(theirs.build_model(), name="sevennet", model=None, checkpoint=sevennet.checkpoint)
    structures = [*reference_structures(), molecule("CH3CH2OH"), bulk("Fe", "bcc", a=2.87).repeat((2, 1, 1))]
    layers = list(range(len(sevennet.layer_widths)))
    for mine, expected in zip(sevennet.per_atom_features(structures, layers),
                              reference.per_atom_features(structures, layers)):
        for layer in layers:
            np.testing.assert_array_equal(mine[layer], expected[layer], err_msg=f"layer {layer}")


def test_every_shipped_checkpoint_reads_without_unpickling():
    for model in ("7net-0", "7net-0_22may2024", "7net-l3i5", "7net-mf-0"):
        saved = read_checkpoint(pretrained_checkpoint(model))
        assert {"config", "model_state_dict"} <= set(saved), model


def test_a_checkpoint_that_would_run_code_is_refused(sevennet, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # as importing mace sets it: explicit weights_only wins
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    saved = SafeCheckpoint(sevennet.checkpoint).get_checkpoint_dict()
    torch.save({**saved, "time": RunsCode(marker)}, path)
    with pytest.raises(UntrustedFileError, match=r"evil\.pth: not a plain SevenNet checkpoint.*os\.makedirs"):
        load_backbone(f"sevennet:{path}")
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: unpickling the file runs it
    assert marker.exists()
    assert all(spec.safe_checkpoints for name, spec in backbone_specs().items() if name in SHIPPED_MODELS)


def test_small_batches_give_the_same_features(sevennet, monkeypatch):
    structures = reference_structures()
    whole = sevennet.per_atom_features(structures, [0, 2])
    monkeypatch.setattr(sevennet, "batch_size", 3)
    for big, small in zip(whole, sevennet.per_atom_features(structures, [0, 2])):
        for layer in (0, 2):
            np.testing.assert_allclose(small[layer], big[layer], rtol=1e-4, atol=1e-5)


def test_molecule_without_a_cell_equals_the_molecule_in_a_periodic_box(sevennet):
    water = molecule("H2O")
    boxed = water.copy()
    boxed.center(vacuum=sevennet.cutoff)
    boxed.pbc = True
    (free,), (periodic,) = (sevennet.per_atom_features([atoms], [2]) for atoms in (water, boxed))
    np.testing.assert_allclose(free[2], periodic[2], rtol=1e-4, atol=1e-5)


def test_calculator_is_the_same_model(sevennet):
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.calc = sevennet.calculator()
    assert np.isfinite(atoms.get_potential_energy())
    assert np.isfinite(atoms.get_forces()).all()
    # The calculator works on a copy of the network, so ours stays in batched mode.
    assert atoms.calc.model is not sevennet.network and sevennet.network.is_batch_data


def test_plugin_module_does_not_import_torch_or_sevenn():
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import hacknip_sevennet.plugin"],
                            capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    heavy = sorted(name for name in imported if name.split(".")[0] in {"torch", "sevenn", "e3nn", "numpy"})
    assert not heavy, f"hacknip_sevennet.plugin imports {heavy}"
