"""hacknip-chgnet on the real pretrained CHGNet 0.3.0 weights from the chgnet wheel (no downloads)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from chgnet.graph.graph import Graph
from chgnet.model import CHGNet
from conftest import RunsCode

from hacknip.data.structures import Dataset, Sample
from hacknip.errors import BadStructureError, UntrustedFileError
from hacknip.features.featurize import featurize
from hacknip.plugins.backbone import STRUCTURE_LABEL_KEY, file_sha256, identity_key
from hacknip.plugins.registry import backbone_specs, load_backbone
from hacknip.plugins.testing import BackboneConformance, ForcesConformance, TrainableConformance, reference_structures
from hacknip.store import FeatureStore
from hacknip_chgnet.backbone import CHGNetBackbone, IsolatedAtomsWarning, load, pretrained_checkpoint


@pytest.fixture(scope="module")
def chgnet():
    return load()


class TestCHGNetConformance(BackboneConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls, chgnet):
        return chgnet


class TestCHGNetForces(ForcesConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls, chgnet):
        return chgnet


class TestCHGNetTrainable(TrainableConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls):
        return load()  # its own copy: the suite changes requires_grad


def test_the_shipped_model(chgnet):
    assert chgnet.name == "chgnet"
    assert chgnet.cutoff == 6.0 and chgnet.bond_graph_cutoff == 3.0
    assert chgnet.layer_widths == (64, 64, 64, 64, 64)
    assert chgnet.supported_elements == frozenset(range(1, 95))
    identity = chgnet.identity()
    assert identity["model"] == "0.3.0" and identity["dtype"] == "float32"
    assert identity["checkpoint_sha256"] == file_sha256(pretrained_checkpoint("0.3.0"))


def test_registered_spec_names_its_package(chgnet):
    spec = backbone_specs()["chgnet"]  # cutoff, widths and supercells: the conformance suite's spec check
    assert spec.package == "hacknip-chgnet" and spec.library == "chgnet"


def test_local_checkpoint_through_the_registry(chgnet, tmp_path):
    path = tmp_path / "my-chgnet.pth.tar"
    torch.save({"model": chgnet.network.as_dict()}, path)  # CHGNet's own checkpoint format, as its trainer saves
    local = load_backbone(f"chgnet:{path}")
    assert local.name == f"chgnet:{path}"
    identity = local.identity()
    assert identity["checkpoint_sha256"] == file_sha256(path) and identity["model"] is None
    assert identity_key(identity) != identity_key(chgnet.identity())
    structures = reference_structures()
    layers = list(range(len(chgnet.layer_widths)))
    for ours, theirs in zip(local.per_atom_features(structures, layers), chgnet.per_atom_features(structures, layers)):
        for layer in layers:
            np.testing.assert_array_equal(ours[layer], theirs[layer])


def test_missing_checkpoint_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(checkpoint=tmp_path / "nothing-here.pth.tar")


def test_unsupported_element_is_a_bad_structure(chgnet):
    assert 95 not in chgnet.supported_elements
    americium = Atoms("Am", cell=[3.5, 3.5, 3.5], pbc=True)
    with pytest.raises(BadStructureError, match=r"\[95\].*structure 1"):
        chgnet.per_atom_features([bulk("Cu", "fcc", a=3.61), americium], [0])


def test_its_calculator_leaves_the_backbones_isolated_atom_policy_alone(capfd):
    """CHGNetCalculator sets its own isolated-atom response on the network it is given, which the backbone shares."""
    lone = Atoms("Li", positions=[[10.0, 10.0, 10.0]], cell=[20.0, 20.0, 20.0], pbc=True)
    warning = load()
    warning.calculator()
    with pytest.warns(IsolatedAtomsWarning):
        warning.per_atom_features([lone], [0])
    assert capfd.readouterr().err == ""  # not chgnet's own print besides ours
    refusing = load(on_isolated_atoms="error")
    refusing.calculator()
    with pytest.raises(BadStructureError, match="no neighbour within the 6 Å cutoff"):
        refusing.per_atom_features([lone], [0])


def test_isolated_atom_gets_finite_features(chgnet, capfd):
    """An atom with no neighbour within 6 Å (a lone ion, a salt's Li far from its anion) is featurised as chgnet does
    it: its embedding passed through convolutions with nothing to convolve, with a warning by default that counts
    them (and not chgnet's own, printed to stderr, which names the structure by its place in the batch)."""
    layers = list(range(len(chgnet.layer_widths)))
    alone = Atoms("Li", positions=[[10.0, 10.0, 10.0]], cell=[20.0, 20.0, 20.0], pbc=True)
    salt = molecule("H2O") + Atoms("Li", positions=[[9.0, 0.0, 0.0]])  # no cell: open boundaries
    with pytest.warns(IsolatedAtomsWarning) as caught:
        crystal, single, stray = chgnet.per_atom_features([bulk("Li", "bcc", a=3.51), alone, salt], layers)
    assert [str(w.message).split(";")[0] for w in caught] == [
        "chgnet: structure 1, Li: 1 atom(s) with no neighbour within the 6 Å cutoff",
        "chgnet: structure 2, H2LiO: 1 atom(s) with no neighbour within the 6 Å cutoff"]
    assert capfd.readouterr().err == ""
    for layer in layers:
        assert single[layer].shape == (1, 64) and np.isfinite(single[layer]).all(), layer
        assert stray[layer].shape == (4, 64) and np.isfinite(stray[layer]).all(), layer
    np.testing.assert_array_equal(single[0][0], crystal[0][0])  # layer 0: the element's embedding, whatever its place
    np.testing.assert_array_equal(stray[0][3], crystal[0][0])


def test_on_isolated_atoms(chgnet, capfd):
    """on_isolated_atoms="ignore" featurises isolated atoms without a warning; "error" refuses them."""
    alone = Atoms("Li", positions=[[10.0, 10.0, 10.0]], cell=[20.0, 20.0, 20.0], pbc=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (quiet,) = load(on_isolated_atoms="ignore").per_atom_features([alone], [0, 4])
    assert capfd.readouterr().err == ""
    with pytest.warns(IsolatedAtomsWarning):
        (default,) = chgnet.per_atom_features([alone], [0, 4])
    for layer in (0, 4):
        np.testing.assert_array_equal(quiet[layer], default[layer])
    strict = load(on_isolated_atoms="error")
    with pytest.raises(BadStructureError, match=r"^chgnet: structure 1 \(Li\) has an atom with no neighbour within "
                                                r"the 6 Å cutoff"):
        strict.per_atom_features([bulk("Si", "diamond", a=5.43), alone], [0])
    with pytest.raises(ValueError, match="on_isolated_atoms"):
        load(on_isolated_atoms="skip")


def test_the_isolated_atoms_warning_names_the_row_of_the_dataset(chgnet, tmp_path):
    """Featurising a dataset, the warning names the row and id, not the structure's place in its batch."""
    crystal = Sample("mp-1", "row 1", bulk("Li", "bcc", a=3.51), 0.0)
    alone = Sample("lone-li", "row 2", Atoms("Li", positions=[[10.0, 10.0, 10.0]], cell=[20.0, 20.0, 20.0], pbc=True), 1.0)
    with pytest.warns(IsolatedAtomsWarning) as caught:
        featurize(Dataset([crystal, alone], "y", "ions.extxyz"), chgnet, FeatureStore(tmp_path), layers=[0])
    assert [str(w.message).split(";")[0] for w in caught] == [
        "chgnet: row 2 (id lone-li), Li: 1 atom(s) with no neighbour within the 6 Å cutoff"]
    assert STRUCTURE_LABEL_KEY not in alone.atoms.info  # the dataset's own atoms are left as they were


def test_a_bond_graph_chgnet_cannot_build_is_a_bad_structure(chgnet, monkeypatch, tmp_path):
    """chgnet's converter raises RuntimeError('Failed creating bond graph ...') when its bond graph comes out
    inconsistent for a structure (and writes bond_graph_error.cif into the working directory)."""
    def inconsistent(self, cutoff):
        raise ValueError("Did not find 2 Directed_edges !!!")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Graph, "line_graph_adjacency_list", inconsistent)
    with pytest.raises(BadStructureError, match=r"could not build the bond graph of structure 0 \(Si2\): Did not"):
        chgnet.per_atom_features([bulk("Si", "diamond", a=5.43)], [0])


def test_safe_loading_gives_the_features_of_chgnets_own_loader(chgnet, tmp_path):
    """hacknip reads checkpoints with torch.load(weights_only=True) and builds the network from the dict: the same
    features as chgnet's own CHGNet.load / CHGNet.from_file (which unpickle), for the pretrained 0.3.0 weights and a
    local checkpoint."""
    path = tmp_path / "chgnet-0.3.0-copy.pth.tar"
    path.write_bytes(pretrained_checkpoint("0.3.0").read_bytes())
    structures = [*reference_structures(), molecule("CH3CH2OH"), bulk("Fe", "bcc", a=2.87).repeat((2, 1, 1))]
    layers = list(range(len(chgnet.layer_widths)))
    theirs = {
        "pretrained": CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False),
        "local": CHGNet.from_file(str(path)),
    }
    ours = {"pretrained": chgnet, "local": load(checkpoint=path)}
    for kind, network in theirs.items():
        reference = CHGNetBackbone(network, name="chgnet", model=None, checkpoint_sha256="")
        assert ours[kind].network.model_args == network.model_args
        for mine, expected in zip(ours[kind].per_atom_features(structures, layers),
                                  reference.per_atom_features(structures, layers)):
            for layer in layers:
                np.testing.assert_array_equal(mine[layer], expected[layer], err_msg=f"{kind}, layer {layer}")


def test_a_checkpoint_that_would_run_code_is_refused(chgnet, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # as importing mace sets it: explicit weights_only wins
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth.tar"
    torch.save({"model": chgnet.network.as_dict(), "trainer_args": RunsCode(marker)}, path)
    with pytest.raises(UntrustedFileError, match=r"evil\.pth\.tar: not a plain CHGNet checkpoint.*os\.makedirs"):
        load_backbone(f"chgnet:{path}")
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: unpickling the file runs it
    assert marker.exists()
    assert backbone_specs()["chgnet"].safe_checkpoints


def test_a_file_without_a_chgnet_checkpoint_is_reported(tmp_path):
    path = tmp_path / "weights.pth.tar"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a CHGNet checkpoint"):
        load(checkpoint=path)


def test_small_batches_give_the_same_features(chgnet, monkeypatch):
    structures = reference_structures()
    whole = chgnet.per_atom_features(structures, [0, 4])
    monkeypatch.setattr(chgnet, "batch_size", 3)
    for big, small in zip(whole, chgnet.per_atom_features(structures, [0, 4])):
        for layer in (0, 4):
            np.testing.assert_allclose(small[layer], big[layer], rtol=1e-4, atol=1e-5)


def test_molecule_without_a_cell_equals_the_molecule_in_a_periodic_box(chgnet):
    water = molecule("H2O")
    boxed = water.copy()
    boxed.center(vacuum=chgnet.cutoff)
    boxed.pbc = True
    (free,), (periodic,) = (chgnet.per_atom_features([atoms], [4]) for atoms in (water, boxed))
    np.testing.assert_allclose(free[4], periodic[4], rtol=1e-4, atol=1e-5)


def test_calculator_uses_the_same_network(chgnet):
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.calc = chgnet.calculator()
    assert atoms.calc.model is chgnet.network
    assert np.isfinite(atoms.get_potential_energy())


def test_plugin_module_does_not_import_torch_or_chgnet():
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import hacknip_chgnet.plugin"],
                            capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    heavy = sorted(name for name in imported if name.split(".")[0] in {"torch", "chgnet", "pymatgen", "numpy"})
    assert not heavy, f"hacknip_chgnet.plugin imports {heavy}"


def test_loading_prints_nothing_and_leaves_stdout_alone(capsys):
    stdout = sys.stdout
    backbone = load_backbone("chgnet")
    backbone.calculator()
    assert sys.stdout is stdout and capsys.readouterr().out == ""  # chgnet prints on construction: silenced
