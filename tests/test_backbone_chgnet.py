"""hacknip-chgnet on the real pretrained CHGNet 0.3.0 weights from the chgnet wheel (no downloads)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from hacknip.backbone import file_sha256, identity_key
from hacknip.registry import backbone_specs, load_backbone
from hacknip.testing import BackboneConformance, reference_structures
from hacknip_chgnet.backbone import load, pretrained_checkpoint


@pytest.fixture(scope="module")
def chgnet():
    return load()


class TestCHGNetConformance(BackboneConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls, chgnet):
        return chgnet


def test_the_shipped_model(chgnet):
    assert chgnet.name == "chgnet"
    assert chgnet.cutoff == 6.0 and chgnet.bond_graph_cutoff == 3.0
    assert chgnet.layer_widths == (64, 64, 64, 64, 64)
    assert chgnet.supported_elements == frozenset(range(1, 95))
    identity = chgnet.identity()
    assert identity["model"] == "0.3.0" and identity["dtype"] == "float32"
    assert identity["checkpoint_sha256"] == file_sha256(pretrained_checkpoint("0.3.0"))


def test_registered_spec_matches_the_loaded_model(chgnet):
    spec = backbone_specs()["chgnet"]
    assert spec.package == "hacknip-chgnet" and spec.library == "chgnet"
    assert (spec.cutoff, spec.layer_widths, spec.needs_supercell) == (
        chgnet.cutoff, chgnet.layer_widths, chgnet.needs_supercell)


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


def test_unsupported_element_is_reported(chgnet):
    assert 95 not in chgnet.supported_elements
    americium = Atoms("Am", cell=[3.5, 3.5, 3.5], pbc=True)
    with pytest.raises(ValueError, match=r"\[95\].*structure 1"):
        chgnet.per_atom_features([bulk("Cu", "fcc", a=3.61), americium], [0])


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
