"""RDKit's molecular descriptors as hacknip descriptors (hacknip.plugins.rdkit_descriptors): the protocol, the values
RDKit itself computes, the rows they cannot describe, and a run on molecules with descriptors only."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from click.testing import CliRunner

pytest.importorskip("rdkit")

from hacknip.cli import cli  # noqa: E402
from hacknip.data.molecules import canonical_smiles, embed, parse_smiles  # noqa: E402
from hacknip.plugins.registry import load_descriptor  # noqa: E402
from hacknip.plugins.testing import DescriptorConformance  # noqa: E402

SMILES = ("CC(=O)Oc1ccccc1C(=O)O", "c1ccncc1", "C[NH3+].[Cl-]", "O")
"""Aspirin, pyridine, a salt, and water (the conformance check reorders the fourth structure's three atoms)."""


def molecule(smiles: str):
    """A molecule as hacknip's reader makes it: a conformer carrying its canonical SMILES."""
    parsed = parse_smiles(smiles)
    atoms = embed(parsed)
    atoms.info["smiles"] = canonical_smiles(parsed)
    return atoms


class TestRDKitConformance(DescriptorConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def structures(cls):
        return [molecule(smiles) for smiles in SMILES]

    @pytest.fixture(scope="class", params=["rdkit:descriptors", "rdkit:morgan"])
    @classmethod
    def descriptor(cls, request):
        return load_descriptor(request.param)


def test_the_values_are_rdkits_own():
    from rdkit import Chem
    from rdkit.Chem import Descriptors, rdFingerprintGenerator

    aspirin = molecule(SMILES[0])
    expected = Descriptors.CalcMolDescriptors(Chem.MolFromSmiles(SMILES[0]))
    expected["log10(1+Ipc)"] = np.log10(1 + expected["Ipc"])
    described = load_descriptor("rdkit:descriptors")
    assert "Ipc" not in described.feature_names
    np.testing.assert_allclose(described.describe(aspirin), [expected[name] for name in described.feature_names])
    counts = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048).GetCountFingerprintAsNumPy(
        Chem.MolFromSmiles(SMILES[0]))
    morgan = load_descriptor("rdkit:morgan").describe(aspirin)
    np.testing.assert_array_equal(morgan, counts)
    assert morgan.sum() >= 13  # each of aspirin's 13 heavy atoms is at least its own environment (radius 0)


@pytest.mark.parametrize("smiles", ["O=[Zn]", "[Se]"])
def test_values_rdkit_cannot_compute_are_undefined(smiles):
    """Gasteiger charges of zinc, BCUT2D of a lone atom: RDKit gives no finite value (both occur in ClinTox and
    BBBP); they are NaN, filled by each training fold, not a reason to drop the molecule."""
    from rdkit import Chem
    from rdkit.Chem import Descriptors

    expected = Descriptors.CalcMolDescriptors(Chem.MolFromSmiles(smiles))
    described = load_descriptor("rdkit:descriptors")
    undefined = {name for name in described.feature_names if not np.isfinite(expected.get(name, 0.0))}
    assert undefined
    vector = described.describe(molecule(smiles))
    assert {name for name, value in zip(described.feature_names, vector) if np.isnan(value)} == undefined
    assert not np.isinf(vector).any()


def test_ipc_of_a_large_drug_fits_the_store():
    """Ipc grows exponentially with the molecule: given as log10(1 + Ipc), as the store's float32 cannot hold 6e39."""
    from rdkit import Chem
    from rdkit.Chem import Descriptors

    large = "C" * 30 + "C1CCCCC1" * 20  # Ipc beyond float32
    assert Descriptors.Ipc(Chem.MolFromSmiles(large)) > np.finfo(np.float32).max
    described = load_descriptor("rdkit:descriptors")
    vector = described.describe(molecule(large))
    assert np.all(np.abs(np.nan_to_num(vector)) < np.finfo(np.float32).max)
    assert vector[described.feature_names.index("log10(1+Ipc)")] > 38


@pytest.mark.parametrize("name", ["rdkit:descriptors", "rdkit:morgan"])
def test_a_structure_without_its_smiles_cannot_be_described(name):
    descriptor = load_descriptor(name)
    with pytest.raises(ValueError, match=f"{name} describes molecules read from SMILES.*Si2"):
        descriptor.describe(bulk("Si", "diamond", a=5.43))
    wrong = molecule("CCO")
    wrong.info["smiles"] = "CCN"
    with pytest.raises(ValueError, match="are not those of its SMILES 'CCN'"):
        descriptor.describe(wrong)


def test_molecules_with_descriptors_only_run_unrelaxed_and_refuse_relax(tmp_path):
    """No backbone, nothing to relax with: the paper preset (which relaxes) featurises the conformers as made, and an
    explicit --relax is a one-line error."""
    table = tmp_path / "small.csv"
    smiles = ["CCO", "CC(=O)O", "CCN", "OCCO", "c1ccccc1", "CC(C)O", "CCCC", "CC=O", "NCCO", "COC", "CCOCC", "CCCO"]
    table.write_text("smiles,y\n" + "".join(f"{s},{i % 2}\n" for i, s in enumerate(smiles)))
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--data", str(table), "--target", "y", "--task", "classification",
                                      "--backbone", "rdkit:descriptors+rdkit:morgan", "--head", "ridge", "--split",
                                      "random", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["geometries"]["relaxed"] is False and results["n_samples"] == len(smiles)
    refused = CliRunner().invoke(cli, ["run", "--data", str(table), "--target", "y", "--backbone", "rdkit:morgan",
                                       "--head", "ridge", "--relax", "--out", str(tmp_path / "refused")])
    assert refused.exit_code != 0
    assert "names only descriptors: add a backbone to --backbone, or pass --no-relax" in refused.output


ISOMERS = ("CCO", "COC", "C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O")
"""Ethanol and dimethyl ether (the same atoms), and alanine's two enantiomers (the same atoms and bonds)."""


def _table(tmp_path, smiles) -> str:
    table = tmp_path / "molecules.csv"
    table.write_text("smiles,y\n" + "".join(f"{s},{i % 2}\n" for i, s in enumerate(smiles)))
    return str(table)


def test_molecules_without_geometry_are_their_smiles_and_embed_nothing(tmp_path, monkeypatch):
    """--conformer none: no conformer is made (so none can fail), the atoms sit at the origin, and the store tells
    molecules apart by their canonical SMILES; the descriptors are those of the embedded molecule."""
    import hacknip.data.molecules as molecules
    from hacknip.data.molecules import EmbedOptions, molecules_to_dataset
    from hacknip.features.featurize import dataset_keys

    def no_embedding(*args, **kwargs):
        raise AssertionError("a molecule without geometry was embedded")

    monkeypatch.setattr(molecules, "embed", no_embedding)
    dataset = molecules_to_dataset(_table(tmp_path, [*ISOMERS, "CCO"]), embed_options=EmbedOptions(geometry=False))
    assert len(dataset.samples) == 5 and not dataset.skipped
    assert [len(sample.atoms) for sample in dataset.samples] == [9, 9, 13, 13, 9]  # hydrogens included
    assert all(not sample.atoms.positions.any() for sample in dataset.samples)
    keys = dataset_keys(dataset)
    assert len(set(keys[:4])) == 4, "isomers share their atoms, not their key"
    assert keys[4] == keys[0], "the same SMILES twice is one structure"
    monkeypatch.undo()
    described = load_descriptor("rdkit:descriptors")
    for sample, smiles in zip(dataset.samples, ISOMERS):
        np.testing.assert_array_equal(described.describe(sample.atoms), described.describe(molecule(smiles)))


def test_a_backbone_refuses_molecules_without_geometry(tmp_path):
    from toy_backbone import ToyBackbone

    from hacknip.data.molecules import EmbedOptions, RelaxOptions, molecules_to_dataset
    from hacknip.errors import InputError
    from hacknip.features.featurize import featurize
    from hacknip.store import FeatureStore

    table = _table(tmp_path, ISOMERS)
    dataset = molecules_to_dataset(table, embed_options=EmbedOptions(geometry=False))
    with pytest.raises(InputError, match=r"made without 3-D geometries \(--conformer none\), and toy needs atomic"):
        featurize(dataset, ToyBackbone(), FeatureStore(tmp_path / "store"))
    with pytest.raises(InputError, match="relaxing molecules needs a geometry to start from"):
        molecules_to_dataset(table, backbone=ToyBackbone(), relax_options=RelaxOptions(),
                             embed_options=EmbedOptions(geometry=False))
    with pytest.raises(InputError, match="optimises a conformer, and geometry=False makes none"):
        EmbedOptions(force_field="MMFF94", geometry=False)
    refused = CliRunner().invoke(cli, ["run", "--data", table, "--target", "y", "--backbone", "chgnet+rdkit:morgan",
                                       "--conformer", "none", "--no-relax", "--out", str(tmp_path / "refused")])
    assert refused.exit_code != 0
    assert "'chgnet+rdkit:morgan' names a backbone, which needs them: use --conformer etkdg or mmff94" in refused.output


def test_a_descriptor_run_without_geometry_is_saved_and_predicts_the_same_way(tmp_path):
    smiles = [*ISOMERS, "CC(=O)O", "CCN", "OCCO", "c1ccccc1", "CC(C)O", "CCCC", "CC=O", "NCCO"]
    table = _table(tmp_path, smiles)
    model = tmp_path / "model"
    result = CliRunner().invoke(cli, ["run", "--data", table, "--target", "y", "--task", "classification",
                                      "--backbone", "rdkit:descriptors", "--conformer", "none", "--head", "ridge",
                                      "--split", "random", "--out", str(tmp_path / "run"), "--save", str(model)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["geometries"] == {"conformer": "none", "relaxed": False} and results["n_samples"] == len(smiles)
    assert json.loads((model / "model.json").read_text())["geometries"]["conformer"] == "none"
    predicted = CliRunner().invoke(cli, ["predict", str(model), "--data", table, "--out", str(tmp_path / "p.csv")],
                                   catch_exceptions=False)
    assert predicted.exit_code == 0, predicted.output
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 1 + len(smiles), "every molecule predicted"
