"""hacknip run --save and hacknip predict: safe formats, identical predictions after a round trip, identity checks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import write_cif_table

from hacknip.cli import cli
from hacknip.plugins.head import REGRESSION


@pytest.fixture
def cif_table(phonons_path, tmp_path):
    return write_cif_table(phonons_path, tmp_path / "structures.csv", 60, "last phdos peak")


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_saved_model_predicts_new_structures_and_refuses_a_changed_backbone(toy_plugin, cif_table, tmp_path):
    model_dir = tmp_path / "model"
    result = _invoke("run", "--data", cif_table, "--id-column", "name", "--backbone", "toy@2", "--head", "ridge",
                     "--save", model_dir, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in model_dir.iterdir()) == ["arrays.npz", "model.json"]
    model = json.loads((model_dir / "model.json").read_text())
    assert model["backbones"][0]["layers"] == [2] and model["head"] == "ridge" and model["task"] == REGRESSION

    unlabelled = tmp_path / "new.csv"
    pd.read_csv(cif_table).drop(columns=["last phdos peak"]).head(25).to_csv(unlabelled, index=False)
    result = _invoke("predict", model_dir, "--data", unlabelled, "--id-column", "name", "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    predictions = pd.read_csv(tmp_path / "p.csv")
    assert list(predictions.columns) == ["id", "predicted"] and len(predictions) == 25

    result = _invoke("predict", model_dir, "--data", cif_table, "--id-column", "name", "--target", "last phdos peak",
                     "--out", tmp_path / "scored.csv")
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(tmp_path / "scored.csv")
    np.testing.assert_allclose(scored["predicted"].head(25), predictions["predicted"])
    cv_mae = json.loads((tmp_path / "run" / "results.json").read_text())["mae_mean"]
    assert np.mean(np.abs(scored["true"] - scored["predicted"])) < cv_mae  # it has seen these rows
    assert "mae" in result.output

    model["backbones"][0]["identity"]["library_version"] = "0"
    (model_dir / "model.json").write_text(json.dumps(model))
    result = CliRunner().invoke(cli, ["predict", str(model_dir), "--data", str(unlabelled), "--id-column", "name"])
    assert result.exit_code == 1
    assert "differs from the one this model was trained with (library_version: saved '0', installed '1')" in result.output


def test_a_saved_classifier_predicts_probabilities(toy_plugin, cif_table, tmp_path):
    table = pd.read_csv(cif_table)
    table["stiff"] = (table["last phdos peak"] > table["last phdos peak"].median()).astype(int)
    labelled = tmp_path / "labelled.csv"
    table.drop(columns=["last phdos peak"]).to_csv(labelled, index=False)
    result = _invoke("run", "--data", labelled, "--id-column", "name", "--backbone", "toy@1", "--head", "lightgbm",
                     "--head-param", "n_estimators=20", "--save", tmp_path / "model", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    result = _invoke("predict", tmp_path / "model", "--data", labelled, "--id-column", "name", "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    predictions = pd.read_csv(tmp_path / "p.csv")
    assert list(predictions.columns) == ["id", "probability", "predicted"]
    assert predictions["probability"].between(0, 1).all() and set(predictions["predicted"]) <= {0, 1}


def test_not_a_model_folder_is_a_clear_error(tmp_path, cif_table):
    result = CliRunner().invoke(cli, ["predict", str(tmp_path), "--data", str(cif_table)])
    assert result.exit_code == 1 and "not a hacknip model folder" in result.output


def test_predict_makes_molecules_as_the_model_was_trained_on_them(tmp_path):
    """A model trained on molecules relaxed with CHGNet from MMFF94 starts records so, and ``predict`` relaxes new
    SMILES the same way (the stored geometries of the training rows are reused), instead of featurising RDKit's
    unrelaxed ETKDG conformers that the head never saw; a folder that does not say is predicted as before, with a
    warning, and an edited record is refused with the field named."""
    pytest.importorskip("rdkit")
    pytest.importorskip("hacknip_chgnet")
    smiles = ["CCO", "CCCO", "CCCCO", "CC(C)O", "CCN", "CCCN", "CC(=O)O", "CCC(=O)O", "OCCO", "CCOC"]
    table = tmp_path / "molecules.csv"
    pd.DataFrame({"smiles": smiles, "y": np.arange(len(smiles), dtype=float)}).to_csv(table, index=False)
    store, model_dir = tmp_path / "store", tmp_path / "model"
    result = _invoke("run", "--data", table, "--backbone", "chgnet@1", "--head", "ridge", "--relax", "--relax-steps", 3,
                     "--split", "random", "--workers", 1, "--store", store, "--save", model_dir, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    model = json.loads((model_dir / "model.json").read_text())
    assert model["geometries"] == {"conformer": "mmff94", "relaxed": True, "fmax": 0.05, "steps": 3, "optimizer": "BFGS",
                                   "relaxed_with": "chgnet"}
    relaxed = sorted(store.glob("geometries/chgnet-*/*.json"))

    unlabelled = tmp_path / "new.csv"
    pd.DataFrame({"smiles": smiles}).to_csv(unlabelled, index=False)
    result = _invoke("predict", model_dir, "--data", unlabelled, "--store", store, "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    assert sorted(store.glob("geometries/chgnet-*/*.json")) == relaxed  # the training rows' relaxed geometries, reused
    predicted = pd.read_csv(tmp_path / "p.csv")["predicted"]

    del model["geometries"]  # as saved before hacknip recorded it
    (model_dir / "model.json").write_text(json.dumps(model))
    result = _invoke("predict", model_dir, "--data", unlabelled, "--store", store, "--out", tmp_path / "old.csv")
    assert result.exit_code == 0 and "does not record how its molecules' geometries were made" in result.output
    assert not np.allclose(pd.read_csv(tmp_path / "old.csv")["predicted"], predicted)  # other geometries, other features

    model["geometries"] = {"conformer": "uff", "relaxed": False}
    (model_dir / "model.json").write_text(json.dumps(model))
    result = CliRunner().invoke(cli, ["predict", str(model_dir), "--data", str(unlabelled), "--store", str(store)])
    assert result.exit_code == 1 and "field 'geometries'" in result.output and "save it again" in result.output


def test_only_molecule_inputs_record_their_geometries(tmp_path, cif_table):
    from hacknip.workflow.run import RunConfig, saved_geometries

    molecules = tmp_path / "molecules.csv"
    pd.DataFrame({"smiles": ["CCO"], "y": [1.0]}).to_csv(molecules, index=False)
    relaxed = RunConfig(data=molecules, backbone="rdkit:descriptors+chgnet@1", relax=True, relax_optimizer="Sella")
    assert saved_geometries(relaxed) == {"conformer": "mmff94", "relaxed": True, "fmax": 0.05, "steps": 200,
                                         "optimizer": "Sella", "relaxed_with": "chgnet"}  # the first backbone
    assert saved_geometries(RunConfig(data=molecules, backbone="chgnet", relax=False)) == {"conformer": "etkdg",
                                                                                          "relaxed": False}
    assert saved_geometries(RunConfig(data=cif_table, backbone="chgnet")) is None
