"""``hacknip run`` and ``tune`` keep a log file in their output folder: what they printed, their progress (as lines,
also while a terminal shows bars) and how they ended."""

from __future__ import annotations

import io
import json
import sys

from click.testing import CliRunner

from hacknip.cli import cli
from hacknip.cli.command_log import TERMINAL_CODES, command_log, note


def _invoke(args):
    return CliRunner().invoke(cli, args)


def test_a_run_logs_its_command_progress_summary_and_end(toy_plugin, phonons_path, tmp_path):
    out = tmp_path / "run"
    result = _invoke(["run", "--data", str(phonons_path), "--backbone", "toy", "--head", "ridge", "--limit", "40",
                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    log = (out / "run.log").read_text()
    lines = log.splitlines()
    assert lines[0].endswith(f"hacknip run --data {phonons_path} --backbone toy --head ridge --limit 40 --out {out}")
    assert "featurising with toy: 40/40" in log  # the progress, as plain lines
    mae = json.loads((out / "results.json").read_text())["mae_mean"]
    assert f"│ {mae:.1f} ± " in log  # the summary
    unfolded = log.replace("\n", "")  # rich folds a long path where the terminal (80 columns here) ends
    assert "wrote " in unfolded and unfolded.endswith(f"{out / 'run.log'}finished in {lines[-1].split()[-2]} s")
    assert lines[-1].startswith("finished in ") and not TERMINAL_CODES.search(log)
    assert result.output.strip() in log.replace(lines[0] + "\n", "")  # everything printed, nothing else


def test_a_run_that_stops_says_why_in_its_log_and_its_folder_can_be_used_again(toy_plugin, tmp_path):
    import pandas as pd
    from pymatgen.core import Lattice, Structure

    cif = Structure(Lattice.cubic(4.0), ["Cu"], [[0, 0, 0]]).to(fmt="cif")
    table = tmp_path / "data.csv"
    pd.DataFrame({"cif": [cif] * 9 + ["garbage"], "y": list(range(10))}).to_csv(table, index=False)
    out = tmp_path / "out"
    args = ["run", "--data", str(table), "--backbone", "toy", "--head", "ridge", "--out", str(out)]
    failed = _invoke(args)
    assert failed.exit_code == 1
    last = (out / "run.log").read_text().splitlines()[-1]
    assert last.startswith("stopped after ") and "row 11 (id 9)" in last
    assert sorted(p.name for p in out.iterdir()) == ["run.log"]

    again = _invoke([*args, "--on-error", "skip"])  # only a stopped run's log there: no --overwrite needed
    assert again.exit_code == 0, again.output
    assert "finished in " in (out / "run.log").read_text() and "row 11" not in (out / "run.log").read_text()[:200]
    refused = _invoke([*args, "--on-error", "skip"])  # finished results are never replaced without --overwrite
    assert refused.exit_code != 0 and "already holds" in refused.output


def test_a_command_refused_before_it_printed_anything_leaves_no_folder(toy_plugin, phonons_path, tmp_path):
    result = _invoke(["run", "--data", str(phonons_path), "--backbone", "nosuch", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "nosuch" in result.output
    assert not (tmp_path / "run").exists()


def test_a_tune_logs_to_tune_log(toy_plugin, phonons_path, tmp_path):
    out = tmp_path / "tune"
    result = _invoke(["tune", "--data", str(phonons_path), "--backbone", "toy", "--head", "ridge", "--limit", "40",
                      "--trials", "0", "--storage", str(tmp_path / "studies.db"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    log = (out / "tune.log").read_text()
    unfolded = log.replace("\n", "")  # rich folds a long path where the terminal ends
    assert "tuning fold0" in log and str(out / "params.json") in unfolded and "nested: each outer fold" in unfolded
    assert log.splitlines()[-1].startswith("finished in ")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_terminal_the_bars_stay_there_and_the_log_gets_plain_lines(tmp_path, monkeypatch):
    from hacknip.cli.common import progress_bars

    screen = _Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    with command_log(tmp_path / "run.log", "hacknip run --data x"):
        with progress_bars() as start:
            advance = start("featurising with toy", 3)
            advance(3)
            note("warning: a warning while the bars draw")
        print("\x1b[1mMAE\x1b[0m 1.0")
    log = (tmp_path / "run.log").read_text().splitlines()
    assert log[1:4] == ["featurising with toy: 0/3, 0 s", "featurising with toy: 3/3, 0 s",
                        "warning: a warning while the bars draw"]
    assert log[4] == "MAE 1.0" and log[5].startswith("finished in ")
    assert "\x1b[1mMAE" in screen.getvalue()  # the terminal keeps its colours
    assert sys.stdout is screen


def test_a_warning_is_logged_once_outside_the_bars(tmp_path):
    with command_log(tmp_path / "run.log", None):
        print("warning: printed", file=sys.stderr)
        note("warning: printed")  # stderr is copied already: not twice
    assert (tmp_path / "run.log").read_text().count("warning: printed") == 1


def test_featurize_logs_where_log_says(toy_plugin, phonons_path, tmp_path):
    args = ["featurize", "--data", str(phonons_path), "--backbone", "toy", "--limit", "30", "--store",
            str(tmp_path / "store")]
    result = _invoke([*args, "--log", str(tmp_path / "featurize.log")])
    assert result.exit_code == 0, result.output
    log = (tmp_path / "featurize.log").read_text()
    assert "featurising with toy: 30/30" in log and "toy: 30 computed, 0 already stored" in log
    assert log.splitlines()[-1].startswith("finished in ")
    refused = _invoke([*args, "--log", str(tmp_path)])
    assert refused.exit_code == 2 and "--log" in refused.output  # a folder is not a log file
    assert _invoke(args).exit_code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["featurize.log", "store"]


def test_only_an_output_folder_forgets_a_stopped_runs_log(toy_plugin, phonons_path, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "run.log").write_text("mine")  # not what --save writes: kept, and the run refused
    result = _invoke(["run", "--data", str(phonons_path), "--backbone", "toy@1", "--head", "ridge", "--limit", "30",
                      "--out", str(tmp_path / "run"), "--save", str(model)])
    assert result.exit_code == 1 and "--save" in result.output and (model / "run.log").read_text() == "mine"


def test_a_database_password_never_reaches_the_log(tmp_path):
    with command_log(tmp_path / "tune.log", "hacknip tune --storage postgresql://me:***@db/h"):
        print("could not reach postgresql+psycopg://me:s3cr3t@db:5432/hacknip")
    log = (tmp_path / "tune.log").read_text()
    assert "s3cr3t" not in log and "postgresql+psycopg://me:***@db:5432/hacknip" in log


def test_a_stream_kept_from_the_command_writes_on_after_it(tmp_path, capsys):
    import logging

    with command_log(tmp_path / "run.log", None):
        handler = logging.StreamHandler()  # binds sys.stderr as it is now: the copy to the log
        print("during")
    logger = logging.getLogger("hacknip-test-kept-stream")
    logger.addHandler(handler)
    try:
        logger.warning("after the command")  # no "--- Logging error ---": the closed log is left alone
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "after the command" in err and "Logging error" not in err
    assert "after the command" not in (tmp_path / "run.log").read_text()
