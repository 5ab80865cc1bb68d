"""Target transforms: trained on log10 / ln / -log10(1-y), predicted and scored on the scale asked for."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from hacknip.cli import cli
from hacknip.evaluation import TARGET_TRANSFORMS, TransformedTargetHead


@pytest.mark.parametrize("name, values", [("log10", [0.01, 1.0, 250.0]), ("ln", [0.5, 3.0, 1e4]),
                                          ("neglog10_1m", [0.5, 0.99, 0.9999])])
def test_inverse_undoes_forward(name, values):
    transform = TARGET_TRANSFORMS[name]
    np.testing.assert_allclose(transform.inverse(transform.forward(np.array(values))), values, rtol=1e-12)


def test_transformed_head_learns_the_transformed_target_and_predicts_the_original():
    from sklearn.linear_model import LinearRegression

    X = np.linspace(0, 2, 50)[:, None]
    y = 10.0 ** (3 * X[:, 0])  # exactly linear in log10
    head = TransformedTargetHead(LinearRegression(), TARGET_TRANSFORMS["log10"]).fit(X, y)
    np.testing.assert_allclose(head.predict(X), y, rtol=1e-9)


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


def test_a_target_outside_the_domain_names_its_row(toy_plugin, tmp_path):
    from pymatgen.core import Lattice, Structure

    cif = Structure(Lattice.cubic(4.0), ["Cu"], [[0, 0, 0]]).to(fmt="cif")
    table = tmp_path / "data.csv"
    pd.DataFrame({"cif": [cif] * 10, "y": [1.0, 2.0, 0.0] + [3.0] * 7}).to_csv(table, index=False)
    result = CliRunner().invoke(cli, ["run", "--data", str(table), "--backbone", "toy", "--head", "ridge",
                                      "--target-transform", "log10"])
    assert result.exit_code == 1
    assert "row 4 (id 2): target 0.0 is outside the domain of log10 (y > 0)" in result.output
