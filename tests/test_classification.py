"""Binary classification: task inference, stratified folds, metrics, the dummy, and `hacknip run` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hacknip.cli import cli
from hacknip.evaluation.crossval import (
    PRIMARY_METRIC,
    best_layer,
    check_task,
    classification_metrics,
    cross_validate,
    dummy_cv,
    infer_task,
    stratified_folds,
)
from hacknip.plugins.head import CLASSIFICATION, REGRESSION


def test_task_is_inferred_from_the_targets():
    assert infer_task(np.array([0.0, 1.0, 1.0, 0.0])) == CLASSIFICATION
    assert infer_task(np.array([0.0, 1.0, 2.0])) == REGRESSION
    assert infer_task(np.array([1.0, 1.0, 1.0])) == REGRESSION  # one class: nothing to classify
    with pytest.raises(ValueError, match="0/1 targets"):
        check_task(CLASSIFICATION, np.array([0.0, 0.5, 1.0]))


def test_stratified_folds_keep_the_class_balance_and_cover_every_sample():
    y = np.array([1] * 20 + [0] * 80)
    folds = stratified_folds(y)
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(100))
    assert [int(y[test].sum()) for _, test in folds] == [4] * 5
    with pytest.raises(ValueError, match="rarer class has 3"):
        stratified_folds(np.array([1] * 3 + [0] * 50))


def test_classification_metrics():
    y = np.array([0, 0, 1, 1])
    perfect = classification_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert perfect["roc_auc"] == 1.0 and perfect["accuracy"] == 1.0
    inverted = classification_metrics(y, np.array([0.9, 0.8, 0.2, 0.1]))
    assert inverted["roc_auc"] == 0.0 and inverted["accuracy"] == 0.0
    assert np.isnan(classification_metrics(np.array([1, 1]), np.array([0.6, 0.7]))["roc_auc"])


def test_best_layer_maximises_roc_auc_and_minimises_mae():
    sweep = [{"layer": 0, "roc_auc_mean": 0.7, "mae_mean": 3.0}, {"layer": 1, "roc_auc_mean": 0.9, "mae_mean": 1.0},
             {"layer": 2, "roc_auc_mean": 0.8, "mae_mean": 2.0}]
    assert best_layer(sweep, PRIMARY_METRIC[CLASSIFICATION]) == 1
    sweep[1]["mae_mean"] = 5.0
    assert best_layer(sweep, PRIMARY_METRIC[REGRESSION]) == 2


def test_cross_validate_scores_probabilities_and_dummy_is_chance():
    from hacknip.plugins.registry import create_head

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(float)
    folds = stratified_folds(y)
    result = cross_validate(X, y, folds, lambda: create_head("ridge", task=CLASSIFICATION), task=CLASSIFICATION)
    assert result.mean() > 0.9 and result.mean("accuracy") > 0.8
    assert ((result.predictions >= 0) & (result.predictions <= 1)).all()
    dummy = dummy_cv(y, folds, CLASSIFICATION)
    assert dummy.mean() == pytest.approx(0.5)
    assert set(result.summary()) == {f"{m}_{k}" for m in ("roc_auc", "accuracy", "log_loss") for k in ("mean", "std")}


@pytest.fixture
def labelled_table(phonons_path, tmp_path):
    """120 real phonons structures as a CIF table, labelled 1 when the peak frequency is above the median."""
    import pandas as pd
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifWriter

    from hacknip.data.read import read_dataset

    dataset = read_dataset(phonons_path).head(120)
    y = dataset.targets
    table = tmp_path / "labelled.csv"
    pd.DataFrame({"cif": [str(CifWriter(AseAtomsAdaptor.get_structure(s.atoms))) for s in dataset.samples],
                  "high_frequency": (y > np.median(y)).astype(int)}).to_csv(table, index=False)
    return table


def test_run_classifies_with_stratified_folds_and_draws_roc_curves(toy_plugin, labelled_table, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--data", str(labelled_table), "--backbone", "toy", "--head", "ridge",
                                      "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["task_kind"] == CLASSIFICATION and results["metric"] == "roc_auc"
    assert results["folds_source"].startswith("StratifiedKFold")
    assert results["best_layer"] == max(results["per_layer"], key=lambda e: e["roc_auc_mean"])["layer"]
    # the toy descriptor carries real information about stiffness: well above chance, which is 0.5
    assert results["roc_auc_mean"] > 0.7 and results["dummy_roc_auc_mean"] == pytest.approx(0.5)
    assert set(results["predictions"]["predicted"]) <= {0, 1}
    assert all(0 <= p <= 1 for p in results["predictions"]["probability"])
    assert "relative_mae" not in results and results["leaderboard"] is None
    assert (out / "roc.png").stat().st_size > 10_000 and not (out / "parity.png").exists()
    assert "ROC-AUC" in result.output

    forced = CliRunner().invoke(cli, ["run", "--data", str(labelled_table), "--backbone", "toy@1", "--head", "ridge",
                                      "--task", "regression", "--out", str(tmp_path / "forced")])
    assert forced.exit_code == 0, forced.output
    assert json.loads((tmp_path / "forced" / "results.json").read_text())["metric"] == "mae"


def test_classification_of_continuous_targets_is_a_one_line_error(toy_plugin, phonons_path):
    result = CliRunner().invoke(cli, ["run", "--data", str(phonons_path), "--backbone", "toy", "--head", "ridge",
                                      "--limit", "40", "--task", "classification"])
    assert result.exit_code == 1 and "Error: classification needs 0/1 targets" in result.output
