"""The command line end to end: a throwaway plugin in process, and the real CHGNet backbone on real data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from hacknip.cli import cli


def _run(args):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result


def test_run_with_toy_backbone_on_a_phonons_slice(toy_plugin, phonons_path, tmp_path):
    out = tmp_path / "run"
    result = _run(["run", "--data", str(phonons_path), "--backbone", "toy", "--head", "ridge", "--limit", "80",
                   "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["n_samples"] == 80 and results["task"] == "matbench_phonons"
    assert results["folds_source"].startswith("official Matbench v0.1 folds")
    assert [e["layer"] for e in results["per_layer"]] == [0, 1, 2]
    assert results["best_layer"] == min(results["per_layer"], key=lambda e: e["mae_mean"])["layer"]
    assert len(results["folds"]) == 5 and {"fold", "mae", "rmse", "r2"} <= set(results["folds"][0])
    assert results["relative_mae"] == pytest.approx(results["mae_mean"] / results["dummy_mae_mean"])
    assert results["leaderboard"] is None  # 80 of 1265 rows: a rank would compare it with scores on the whole task
    assert results["leaderboard_note"] == ("the leaderboard ranks scores on all 1265 rows of matbench_phonons; this run "
                                           "scored 80 (--limit)")
    assert (out / "parity.png").stat().st_size > 10_000 and (out / "layers.png").exists()
    assert "relative MAE" in result.output and "not ranked: the leaderboard ranks scores on all 1265" in result.output

    again = _run(["run", "--data", str(phonons_path), "--backbone", "toy@1,2", "--head", "ridge", "--limit", "80",
                  "--pooling", "mean+std", "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    results = json.loads((tmp_path / "again" / "results.json").read_text())
    assert results["backbones"][0]["computed"] == 0 and results["backbones"][0]["reused_from_store"] == 80
    assert results["per_layer"] == [] and results["n_features"] == 2 * (6 + 6)


def test_bad_row_is_one_line_error_and_skip_lists_it(toy_plugin, tmp_path):
    import pandas as pd
    from pymatgen.core import Lattice, Structure

    cif = Structure(Lattice.cubic(4.0), ["Cu"], [[0, 0, 0]]).to(fmt="cif")
    table = tmp_path / "data.csv"
    pd.DataFrame({"cif": [cif] * 9 + ["garbage"], "y": list(range(10))}).to_csv(table, index=False)
    result = CliRunner().invoke(cli, ["run", "--data", str(table), "--backbone", "toy", "--head", "ridge"])
    assert result.exit_code == 1
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1 and "row 11 (id 9)" in error_lines[0]
    result = CliRunner().invoke(cli, ["run", "--data", str(table), "--backbone", "toy", "--head", "ridge",
                                      "--on-error", "skip", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    skipped = json.loads((tmp_path / "out" / "results.json").read_text())["skipped"]
    assert [(s["row"], s["id"]) for s in skipped] == [("row 11", "9")]
    assert "skipped row 11" in result.output


def test_many_skipped_rows_are_counted_not_all_printed(toy_plugin, tmp_path):
    import pandas as pd
    from pymatgen.core import Lattice, Structure

    from hacknip.report.summary import ROWS_PRINTED

    cif = Structure(Lattice.cubic(4.0), ["Cu"], [[0, 0, 0]]).to(fmt="cif")
    table = tmp_path / "data.csv"
    bad = ROWS_PRINTED + 3
    pd.DataFrame({"cif": [cif] * 10 + ["garbage"] * bad, "y": list(range(10 + bad))}).to_csv(table, index=False)
    result = CliRunner().invoke(cli, ["run", "--data", str(table), "--backbone", "toy", "--head", "ridge",
                                      "--on-error", "skip", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())["skipped"]) == bad
    named = [line for line in result.output.splitlines() if line.startswith("skipped row")]
    assert len(named) == ROWS_PRINTED
    assert f"skipped 3 more rows, {bad} in all: results.json ('skipped')" in " ".join(result.output.split())


def test_unknown_backbone_is_a_clear_error(phonons_path):
    result = CliRunner().invoke(cli, ["run", "--data", str(phonons_path), "--backbone", "nosuch"])
    assert result.exit_code == 1 and "no installed plugin provides the backbone 'nosuch'" in result.output


@pytest.mark.slow
def test_real_chgnet_end_to_end(phonons_path, tmp_path):
    """The README's main command on a slice: real CHGNet weights, official folds, a real head, in a subprocess."""
    command = [sys.executable, "-m", "hacknip", "run", "--data", str(phonons_path), "--backbone", "chgnet",
               "--head", "lightgbm", "--head-param", "n_estimators=200", "--limit", "120", "--out", str(tmp_path / "out")]
    env = {**os.environ, "HACKNIP_HOME": str(tmp_path / "home")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [e["layer"] for e in results["per_layer"]] == [0, 1, 2, 3, 4]
    assert results["backbones"][0]["identity"]["library"] == "chgnet"
    assert results["mae_mean"] < results["dummy_mae_mean"]


def test_run_combines_features_made_where_the_plugin_was_installed(toy_plugin, phonons_path, tmp_path):
    """featurize in one environment, run in another that lacks the backbone's plugin: stored features are used."""
    from hacknip.plugins.manager import pm

    assert _run(["featurize", "--data", str(phonons_path), "--backbone", "toy", "--limit", "60"]).exit_code == 0
    # a checkpoint variant: its identity is named "toy", but users find it again by the name they typed
    assert _run(["featurize", "--data", str(phonons_path), "--backbone", "toy:my.ckpt", "--limit", "60"]).exit_code == 0
    pm.unregister(name="toy-test-plugin")
    try:
        result = _run(["run", "--data", str(phonons_path), "--backbone", "toy", "--head", "ridge", "--limit", "60",
                       "--out", str(tmp_path / "out")])
        assert result.exit_code == 0, result.output
        results = json.loads((tmp_path / "out" / "results.json").read_text())
        assert results["backbones"][0]["computed"] == 0 and len(results["per_layer"]) == 3
        variant = _run(["run", "--data", str(phonons_path), "--backbone", "toy:my.ckpt@2", "--head", "ridge",
                        "--limit", "60", "--out", str(tmp_path / "variant")])
        assert variant.exit_code == 0, variant.output
        identity = json.loads((tmp_path / "variant" / "results.json").read_text())["backbones"][0]["identity"]
        assert identity["checkpoint"] == "my.ckpt"
        missing = CliRunner().invoke(cli, ["run", "--data", str(phonons_path), "--backbone", "toy", "--limit", "70"])
        assert missing.exit_code == 1 and "miss some of these structures" in missing.output
    finally:
        pm.register(toy_plugin, name="toy-test-plugin")


def test_run_with_a_grouped_split_never_splits_a_formula(toy_plugin, tmp_path):
    """Several structures of one formula share its measured value: they stay in one test fold."""
    import pandas as pd
    from pymatgen.core import Lattice, Structure

    rows = []
    for formula in range(12):
        for variant in range(3):
            cif = Structure(Lattice.cubic(3.5 + 0.05 * formula + 0.01 * variant), ["Cu"], [[0, 0, 0]]).to(fmt="cif")
            rows.append({"cif": cif, "formula": f"Cu-{formula}", "y": float(formula)})
    table = tmp_path / "data.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    result = CliRunner().invoke(cli, ["run", "--data", str(table), "--backbone", "toy@1", "--head", "ridge",
                                      "--target", "y", "--split", "group:formula", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["folds_source"].startswith("'formula'-grouped folds")
    fold_of_formula = {}
    for row, fold in enumerate(results["predictions"]["fold"]):
        assert fold_of_formula.setdefault(rows[row]["formula"], fold) == fold

    bad = CliRunner().invoke(cli, ["run", "--data", str(table), "--backbone", "toy", "--split", "group:nope"])
    assert bad.exit_code == 1 and "no column 'nope' for --split group:nope" in bad.output
    typo = CliRunner().invoke(cli, ["run", "--data", str(table), "--backbone", "toy", "--split", "grouped"])
    assert typo.exit_code == 2 and "group:COLUMN" in typo.output


@pytest.mark.parametrize("columns", ["80", "160"])
def test_list_never_cuts_a_name(columns):
    listed = json.loads(CliRunner().invoke(cli, ["list", "--json"]).output)
    result = CliRunner().invoke(cli, ["list"], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    cells = {cell.strip() for line in result.output.splitlines() for cell in line.split("│")}
    for entry in listed["backbones"] + listed["heads"]:
        assert entry["name"] in cells, f"{entry['name']} is cut at {columns} columns"
    assert ("hacknip-chgnet" in result.output) == (columns == "160")  # narrow: the package column goes first


def test_progress_is_written_as_lines_when_stdout_is_not_a_terminal(monkeypatch):
    import io

    from hacknip.cli import common as cli_module

    now = [0.0]
    monkeypatch.setattr(cli_module.time, "monotonic", lambda: now[0])
    stream = io.StringIO()
    advance = cli_module.PlainProgress(stream, every=5.0).start("featurising with chgnet", 4)
    for when in (1.0, 6.5, 7.0, 8.0):
        now[0] = when
        advance(1)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "featurising with chgnet: 0/4, 0 s"
    assert lines[1].startswith("featurising with chgnet: 2/4, 6 s, eta ")  # 5 s after the last line
    assert lines[-1] == "featurising with chgnet: 4/4, 8 s" and len(lines) == 3


def test_a_resumed_jobs_eta_leaves_out_what_was_found_in_the_store(monkeypatch):
    import io

    from hacknip.cli import common as cli_module

    now = [0.0]
    monkeypatch.setattr(cli_module.time, "monotonic", lambda: now[0])
    stream = io.StringIO()
    advance = cli_module.PlainProgress(stream, every=5.0).start("relaxing", 1000)
    advance(900)  # found in the store, at once
    for step in range(1, 11):  # then one molecule every 10 s
        now[0] = 10.0 * step
        advance(1)
    last = stream.getvalue().splitlines()[-1]
    assert last == "relaxing: 910/1000, 100 s, eta 900 s", last  # 90 left at 10 s each, not 90 x 0.11 s


def test_run_with_fits_in_worker_processes_scores_as_one_at_a_time(toy_plugin, phonons_path, tmp_path):
    results = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        result = _run(["run", "--data", str(phonons_path), "--backbone", "toy", "--head", "lightgbm", "--limit", "60",
                       "--head-param", "n_estimators=20", "--jobs", jobs, "--out", str(out)])
        assert result.exit_code == 0, result.output
        results[jobs] = json.loads((out / "results.json").read_text())
    for part in ("per_layer", "folds", "predictions", "best_layer"):
        assert results["1"][part] == results["2"][part]


def test_the_all_layers_preset_concatenates_layers_unless_told_otherwise(toy_plugin, phonons_path, tmp_path):
    from toy_backbone import WIDTHS

    def run(*extra):
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        result = _run(["run", "--data", str(phonons_path), "--backbone", *extra, "--head", "ridge", "--limit", "60",
                       "--out", str(out)])
        assert result.exit_code == 0, result.output
        return json.loads((out / "results.json").read_text())

    paper = run("toy")
    assert paper["preset"]["name"] == "paper" and paper["pooling"] == "mean" and len(paper["per_layer"]) == len(WIDTHS)
    every = run("toy", "--preset", "all-layers")
    assert every["preset"]["name"] == "all-layers" and every["pooling"] == "mean+max+std"
    assert every["per_layer"] == [] and every["n_features"] == 3 * sum(WIDTHS)
    told = run("toy@1", "--preset", "all-layers", "--pooling", "mean")
    assert told["per_layer"] == [] and told["n_features"] == WIDTHS[1] and told["pooling"] == "mean"
