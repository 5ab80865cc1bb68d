"""hacknip curve (hacknip.workflow.curve): subsets, both methods' points, resuming, fits, crossing and update ratios,
on the tiny trainable toy network and real phonons structures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hacknip.cli import cli
from hacknip.errors import InputError
from hacknip.finetuning.trainer import FinetuneOptions
from hacknip.workflow.curve import CurveSettings, curve, subset_folds, subset_rows
from hacknip.workflow.run import RunConfig

RECIPE = FinetuneOptions(hidden=(8, 8), epochs=2, lr_backbone=1e-3, batch_size=8)


def test_subsets_are_seeded_nested_in_size_and_whole_at_one():
    first = subset_rows(100, 0.3, repeat=0, seed=0)
    assert len(first) == 30 and len(set(first)) == 30 and np.all(np.diff(first) > 0)
    np.testing.assert_array_equal(subset_rows(100, 0.3, 0, 0), first)
    assert not np.array_equal(subset_rows(100, 0.3, 1, 0), first)
    np.testing.assert_array_equal(subset_rows(100, 1.0, 3, 0), np.arange(100))
    with pytest.raises(InputError, match="at least 10"):
        subset_rows(100, 0.05, 0, 0)
    folds = subset_folds(np.arange(30.0), "regression", None, repeat=0, seed=0)
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(30))
    other = subset_folds(np.arange(30.0), "regression", None, repeat=1, seed=0)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


def test_settings_are_checked():
    with pytest.raises(InputError, match="fractions"):
        CurveSettings(fractions=(0.0, 1.0)).check()
    with pytest.raises(InputError, match="repeat"):
        CurveSettings(fractions=(0.5, 0.5)).check()
    assert CurveSettings(fractions=(0.5, 1.0), repeats=3, full_repeats=1).repeats_of(1.0) == 1


def test_curve_gives_both_methods_points_and_resumes(toy_trainable_plugin, phonons_path, tmp_path):
    config = RunConfig(data=phonons_path, backbone="toy-trainable@2", head="mlp", limit=60,
                       head_params={"max_epochs": 30})
    settings = CurveSettings(fractions=(0.5, 1.0), repeats=2, full_repeats=1, finetune=RECIPE, n_boot=50)
    seen = []
    results = curve(config, settings, checkpoints=tmp_path / "work", on_point=lambda p, reused: seen.append(reused))
    assert seen == [False] * 6
    for method in ("hacknip", "finetune"):
        points = results["methods"][method]["points"]
        assert [(p["fraction"], p["repeat"], p["n_samples"]) for p in points] == [(0.5, 0, 30), (0.5, 1, 30),
                                                                                   (1.0, 0, 60)]
        assert all(p["mae"] > 0 for p in points)
        assert results["methods"][method]["fit"]["kind"] == {"hacknip": "log_linear", "finetune": "power_law"}[method]
    assert results["crossing"] is not None and results["crossing"]["n_boot"] == 50
    ratios = results["update_ratios"]
    assert ratios["fraction"] == 0.5 and set(ratios["methods"]) == {"hacknip", "finetune"}
    assert ratios["methods"]["hacknip"]["n_neurons"] > 0 and ratios["methods"]["finetune"]["n_neurons"] > 0
    json.dumps(results, allow_nan=False)

    seen.clear()
    again = curve(config, settings, checkpoints=tmp_path / "work", on_point=lambda p, reused: seen.append(reused))
    assert seen == [True] * 6
    assert again["methods"] == results["methods"] and again["crossing"] == results["crossing"]


def test_a_head_without_neurons_has_no_update_ratio(toy_trainable_plugin, phonons_path, tmp_path):
    config = RunConfig(data=phonons_path, backbone="toy-trainable@1", head="ridge", limit=40)
    results = curve(config, CurveSettings(fractions=(0.5, 1.0), repeats=1), checkpoints=tmp_path)
    assert list(results["methods"]) == ["hacknip"] and results["crossing"] is None
    assert results["update_ratios"]["methods"] == {"hacknip": None}


def test_cli_curve_writes_json_and_figures(toy_trainable_plugin, phonons_path, tmp_path):
    out = tmp_path / "curve"
    result = CliRunner().invoke(cli, ["curve", "--data", str(phonons_path), "--backbone", "toy-trainable", "--head",
                                      "ridge", "--limit", "40", "--fractions", "0.5,1", "--repeats", "2", "--finetune",
                                      "--epochs", "1", "--hidden", "8", "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"curve.json", "curve.png", "curve.log", "report.html"}
    saved = json.loads((out / "curve.json").read_text())
    assert saved["finetuned"] == "toy-trainable@3" and len(saved["methods"]["finetune"]["points"]) == 4
    assert "against data size" in result.output


def test_cli_curve_fits_in_worker_processes_give_the_same_points(toy_trainable_plugin, phonons_path, tmp_path):
    points = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        result = CliRunner().invoke(cli, ["curve", "--data", str(phonons_path), "--backbone", "toy-trainable@2",
                                          "--head", "ridge", "--limit", "40", "--fractions", "0.5,1", "--repeats", "2",
                                          "--jobs", str(jobs), "--checkpoints", str(tmp_path / f"points{jobs}"),
                                          "--out", str(out)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert "stored earlier" not in (out / "curve.log").read_text()  # each run fits its own points
        saved = json.loads((out / "curve.json").read_text())["methods"]["hacknip"]["points"]
        points[jobs] = [{key: value for key, value in point.items() if key != "seconds"} for point in saved]
    assert points[1] == points[2] and len(points[1]) == 4
