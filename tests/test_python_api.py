"""The whole job from Python: hacknip.run / tune / load_model give what the command line gives, as typed objects."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import write_cif_table

import hacknip
from hacknip.cli import cli
from hacknip.errors import InputError


@pytest.fixture
def table(phonons_path, tmp_path):
    return write_cif_table(phonons_path, tmp_path / "structures.csv", 40, "peak")


def test_run_returns_what_the_command_line_writes(toy_plugin, table, tmp_path):
    result = hacknip.run(table, "toy", head="ridge", id_column="name")
    assert isinstance(result, hacknip.RunResult) and result.task == "regression" and result.metric == "mae"
    assert list(result.per_layer["layer"]) == [0, 1, 2] and len(result.folds) == 5
    assert result.best_layer == int(result.per_layer.loc[result.per_layer["mae_mean"].idxmin(), "layer"])
    assert result.score == pytest.approx(result.folds["mae"].mean())
    assert result.relative_mae == pytest.approx(result.score / result.dummy_scores["mae_mean"])
    assert list(result.predictions.columns) == ["id", "true", "fold", "predicted"] and len(result.predictions) == 40
    assert "toy -> ridge on 40 samples: mae" in repr(result)

    assert CliRunner().invoke(cli, ["run", "--data", str(table), "--id-column", "name", "--backbone", "toy",
                                    "--head", "ridge", "--out", str(tmp_path / "cli")]).exit_code == 0
    written = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert written["mae_mean"] == pytest.approx(result.score) and written["best_layer"] == result.best_layer

    files = result.save(tmp_path / "saved")
    assert sorted(p.name for p in files) == ["layers.png", "parity.png", "report.html", "results.json"]
    again = hacknip.RunResult.from_json(tmp_path / "saved" / "results.json")
    assert again.score == result.score and again.to_dict()["predictions"] == result.to_dict()["predictions"]


def test_unknown_options_are_one_line_naming_them(toy_plugin, table):
    with pytest.raises(InputError, match=r"unknown option\(s\) poolling; the options are .*pooling"):
        hacknip.run(table, "toy", poolling="max")


def test_a_saved_model_predicts_structures_as_the_command_line_does(toy_plugin, table, tmp_path):
    hacknip.run(table, "toy@1", head="ridge", id_column="name", save_to=tmp_path / "model")
    model = hacknip.load_model(tmp_path / "model")
    structures = [sample.atoms for sample in hacknip.read_dataset(table, id_column="name").samples][:10]
    table_from_python = model.predict_structures(structures)
    assert list(table_from_python.columns) == ["id", "predicted"] and len(table_from_python) == 10

    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "model"), "--data", str(table), "--id-column", "name",
                                      "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(table_from_python["predicted"], pd.read_csv(tmp_path / "p.csv")["predicted"][:10])


def test_tune_returns_the_configuration_to_deploy(toy_plugin, table, tmp_path):
    result = hacknip.tune(table, "toy", head="ridge", id_column="name", trials=2, patience=2, protocol="paper",
                          layers=[1, 2], storage=str(tmp_path / "studies.db"))
    assert result.params["backbone"] in ("toy@1", "toy@2") and result.params["head"] == "ridge"
    assert result.to_dict()["tuning"]["optimistic"] is True


def test_tune_chooses_among_member_subsets_when_asked(toy_plugin, table, tmp_path):
    result = hacknip.tune(table, "toy@1+matminer:composition", head="ridge", id_column="name", trials=2, patience=2,
                          protocol="paper", member_subsets=True, storage=str(tmp_path / "studies.db"), workers=1)
    studies = result.to_dict()["tuning"]["deploy"]["studies"]
    assert [list(study["layers"]) for study in studies] == [["toy"], ["matminer:composition"],
                                                            ["toy", "matminer:composition"]]
