"""Target transforms: trained on log10 / ln / -log10(1-y), predicted and scored on the scale asked for."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from hacknip.cli import cli
from hacknip.evaluation.crossval import TARGET_TRANSFORMS, fitted_pipeline, make_model


@pytest.mark.parametrize("name, values", [("log10", [0.01, 1.0, 250.0]), ("ln", [0.5, 3.0, 1e4]),
                                          ("neglog10_1m", [0.5, 0.99, 0.9999])])
def test_inverse_undoes_forward(name, values):
    transform = TARGET_TRANSFORMS[name]
    np.testing.assert_allclose(transform.inverse(transform.forward(np.array(values))), values, rtol=1e-12)


def test_a_model_learns_the_transformed_target_and_predicts_the_original():
    from sklearn.linear_model import LinearRegression

    X = np.linspace(0, 2, 50)[:, None]
    y = 10.0 ** (3 * X[:, 0])  # exactly linear in log10
    model = make_model(LinearRegression(), TARGET_TRANSFORMS["log10"]).fit(X, y)
    np.testing.assert_allclose(model.predict(X), y, rtol=1e-9)
    scaler, head = fitted_pipeline(model)  # the scaler saw X on the original scale, the head learnt log10(y)
    np.testing.assert_allclose(scaler.mean_, [1.0])
    np.testing.assert_allclose(head.predict(scaler.transform(X)), 3 * X[:, 0], atol=1e-9)


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_run_with_log10_scores_on_either_scale(toy_plugin, phonons_path, tmp_path):
    common = ["run", "--data", phonons_path, "--backbone", "toy@2", "--head", "ridge", "--limit", "80",
              "--target-transform", "log10"]
    original = _run(*common, "--out", tmp_path / "original")
    transformed = _run(*common, "--score-scale", "transformed", "--out", tmp_path / "transformed")
    assert original.exit_code == 0 and transformed.exit_code == 0, original.output + transformed.output
    on_original = json.loads((tmp_path / "original" / "results.json").read_text())
    on_log = json.loads((tmp_path / "transformed" / "results.json").read_text())
    assert on_original["target_transform"] == "log10" and on_original["scored_on"] == "original"
    assert on_log["scored_on"] == "transformed"
    # the same predictions, scored in cm^-1 (tens to hundreds) and in decades (well under one)
    assert on_original["predictions"]["predicted"] == on_log["predictions"]["predicted"]
    assert on_original["mae_mean"] > 10 and on_log["mae_mean"] < 0.5
    assert on_log["dummy_mae_mean"] < 1 and on_log["relative_mae"] < 1


def test_the_parity_plot_shows_the_scale_the_metrics_were_computed_on(toy_plugin, phonons_path, tmp_path):
    from hacknip.evaluation.crossval import regression_metrics
    from hacknip.report import parity_values

    result = _run("run", "--data", phonons_path, "--backbone", "toy@2", "--head", "ridge", "--limit", "80",
                  "--target-transform", "log10", "--score-scale", "transformed", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    true, predicted, label = parity_values(results)
    assert label == f"log10({results['target']})"
    assert np.allclose(true, np.log10(results["predictions"]["true"]))
    folds = [[row for row, fold in enumerate(results["predictions"]["fold"]) if fold == number] for number in range(5)]
    maes = [regression_metrics(true[rows], predicted[rows])["mae"] for rows in folds]
    assert np.isclose(np.mean(maes), results["mae_mean"])
    assert parity_values({**results, "scored_on": "original"})[2] == results["target"]


def test_a_target_outside_the_domain_names_its_row(toy_plugin, tmp_path):
    from pymatgen.core import Lattice, Structure

    cif = Structure(Lattice.cubic(4.0), ["Cu"], [[0, 0, 0]]).to(fmt="cif")
    table = tmp_path / "data.csv"
    pd.DataFrame({"cif": [cif] * 10, "y": [1.0, 2.0, 0.0] + [3.0] * 7}).to_csv(table, index=False)
    result = CliRunner().invoke(cli, ["run", "--data", str(table), "--backbone", "toy", "--head", "ridge",
                                      "--target-transform", "log10"])
    assert result.exit_code == 1
    assert "row 4 (id 2): target 0.0 is outside the domain of log10 (y > 0)" in result.output


def test_extra_features_are_appended_scaled_and_saved(toy_plugin, tmp_path):
    """A temperature column carries most of the signal: with it the error drops, and predict reads it again."""
    from pymatgen.core import Lattice, Structure

    rng = np.random.default_rng(0)
    n = 60
    cifs = [Structure(Lattice.cubic(3.6 + 0.01 * (i % 7)), ["Cu"], [[0, 0, 0]]).to(fmt="cif") for i in range(n)]
    temperature = rng.uniform(300, 1500, n)
    table = tmp_path / "data.csv"
    pd.DataFrame({"cif": cifs, "temperature": temperature, "y": 0.01 * temperature + rng.normal(0, 0.1, n)}).to_csv(
        table, index=False)
    base = ["run", "--data", table, "--backbone", "toy@1", "--head", "ridge", "--target", "y"]
    without = _run(*base, "--out", tmp_path / "without")
    with_extra = _run(*base, "--extra-features", "temperature", "--save", tmp_path / "model", "--out", tmp_path / "with")
    assert without.exit_code == 0 and with_extra.exit_code == 0, without.output + with_extra.output
    plain = json.loads((tmp_path / "without" / "results.json").read_text())
    extra = json.loads((tmp_path / "with" / "results.json").read_text())
    assert extra["n_features"] == plain["n_features"] + 1 and extra["extra_features"] == ["temperature"]
    assert extra["mae_mean"] < 0.3 * plain["mae_mean"]
    predicted = _run("predict", tmp_path / "model", "--data", table, "--out", tmp_path / "p.csv")
    assert predicted.exit_code == 0, predicted.output
    assert np.abs(pd.read_csv(tmp_path / "p.csv")["predicted"] - 0.01 * temperature).mean() < 0.2

    table_with_gap = tmp_path / "gap.csv"
    frame = pd.read_csv(table)
    frame.loc[4, "temperature"] = None
    frame.to_csv(table_with_gap, index=False)
    result = CliRunner().invoke(cli, ["run", "--data", str(table_with_gap), "--backbone", "toy@1", "--head", "ridge",
                                      "--target", "y", "--extra-features", "temperature"])
    assert result.exit_code == 1 and "row 6 (id 4): extra feature 'temperature' is nan, not a finite number" in result.output


def test_predictions_the_score_scale_cannot_take_are_named_with_what_to_do(tmp_path):
    """A network fed a feature far outside its training range once predicted ln Tc below -745, so Tc = exp(...) was 0
    and its fold's MAE on the ln scale infinite, with nothing but numpy's 'divide by zero in log' to say why."""
    from pymatgen.core import Lattice, Structure

    from hacknip.data.read import read_dataset
    from hacknip.evaluation.crossval import CVResult
    from hacknip.workflow.run import RunConfig, UnscorablePredictionsWarning, scored_results

    table = tmp_path / "data.csv"
    cifs = [Structure(Lattice.cubic(4.0 + 0.1 * i), ["Cu"], [[0, 0, 0]]).to(fmt="cif") for i in range(4)]
    pd.DataFrame({"name": ["a", "b", "fe", "d"], "cif": cifs, "tc": [1.0, 2.0, 3.0, 4.0]}).to_csv(table, index=False)
    dataset = read_dataset(table, id_column="name")
    folds = [(np.array([2, 3]), np.array([0, 1])), (np.array([0, 1]), np.array([2, 3]))]
    predictions = np.array([1.5, 2.5, 0.0, 3.5])
    final = CVResult([{"fold": 0, "mae": 0.5}, {"fold": 1, "mae": np.inf}], predictions)
    config = RunConfig(data=table, backbone="toy", target_transform="ln", score_scale="transformed")
    with pytest.warns(UnscorablePredictionsWarning, match=r"^1 out-of-fold predictions .* ln scale .* e\.g\. fe "
                                                          r"\(predicted 0\).* clip_features on \(the default\)$"):
        scored_results(config, dataset, final, folds, "two folds")
    scorable = CVResult([{"fold": 0, "mae": 0.5}, {"fold": 1, "mae": 0.6}], predictions)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scored on the original scale, or predictions above 0: nothing to say
        scored_results(RunConfig(data=table, backbone="toy", target_transform="ln"), dataset, scorable, folds, "two")
        scored_results(config, dataset, CVResult(scorable.folds, predictions + 1.0), folds, "two folds")
