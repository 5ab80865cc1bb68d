"""report.html of a run, the page comparing runs (hacknip report), and the depth curves across tasks."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hacknip.analysis.depth import DepthCurve, depth_curves
from hacknip.cli import cli


def _run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.fixture
def two_runs(toy_plugin, phonons_path, tmp_path):
    """Two real runs of the toy backbone on a phonons slice (different pooling), written by the CLI."""
    folders = []
    for pooling in ("mean", "mean+std"):
        out = tmp_path / f"run-{pooling}"
        result = _run(["run", "--data", str(phonons_path), "--backbone", "toy", "--head", "ridge", "--limit", "80",
                       "--pooling", pooling, "--out", str(out)])
        assert result.exit_code == 0, result.output
        folders.append(out)
    return folders


def _images(html: str) -> list[tuple[str, bytes]]:
    """(alt text, PNG bytes) of every inlined image."""
    import base64

    return [(alt, base64.b64decode(data)) for data, alt in
            re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">', html)]


def test_run_writes_a_self_contained_report(two_runs, phonons_path):
    folder = two_runs[0]
    html = (folder / "report.html").read_text()
    results = json.loads((folder / "results.json").read_text())
    assert not re.search(r'(src|href)="(https?:)?//', html), "the page must not fetch anything"
    images = _images(html)
    assert [alt.split(" ")[0] for alt, _ in images] == ["Out-of-fold", "Cross-validated"]
    assert images[0][1] == (folder / "parity.png").read_bytes() and images[1][1] == (folder / "layers.png").read_bytes()
    assert all(alt for alt, _ in images)
    fold_mae = f"{results['folds'][0]['mae']:.4g}"
    assert f">{fold_mae}</td>" in html
    assert "Not ranked on the Matbench leaderboard: the leaderboard ranks scores on all 1265 rows" in html
    assert results["provenance"]["command"] == (f"hacknip run --data {phonons_path} --backbone toy --head ridge --limit 80 "
                                                f"--pooling mean --out {folder}")
    assert f"<code>{results['provenance']['command']}</code>" in html
    assert hashlib.sha256(phonons_path.read_bytes()).hexdigest() == results["provenance"]["data_sha256"]
    assert results["provenance"]["data_sha256"] in html and "No row was skipped or flagged." in html
    assert results["provenance"]["versions"]["hacknip-core"] in html


def test_report_lists_skipped_rows_with_their_reason(toy_plugin, tmp_path):
    import pandas as pd
    from pymatgen.core import Lattice, Structure

    cif = Structure(Lattice.cubic(4.0), ["Cu"], [[0, 0, 0]]).to(fmt="cif")
    table = tmp_path / "data.csv"
    pd.DataFrame({"cif": [cif] * 9 + ["garbage"], "y": list(range(10))}).to_csv(table, index=False)
    result = _run(["run", "--data", str(table), "--backbone", "toy", "--head", "ridge", "--on-error", "skip",
                   "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "out" / "report.html").read_text()
    skipped = json.loads((tmp_path / "out" / "results.json").read_text())["skipped"][0]
    assert ">skipped</td>" in html and ">row 11</td>" in html
    from html import escape

    assert escape(skipped["reason"]) in html


def test_leaderboard_neighbours_surround_the_run():
    from hacknip.report.run_page import run_page

    results = {"backbone": "chgnet", "head": "lightgbm", "task": "matbench_phonons", "data": "x.json.gz",
               "target": "y", "n_samples": 1265, "folds_source": "official", "metric": "mae", "task_kind": "regression",
               "mae_mean": 50.0, "mae_std": 1.0, "rmse_mean": 60.0, "r2_mean": None, "dummy_mae_mean": 300.0,
               "relative_mae": 1 / 6, "best_layer": 2, "per_layer": [], "folds": [], "timings_s": {"total": 1.0},
               "leaderboard": {"rank": 5, "out_of": 9, "ahead": [{"algorithm": f"A{i}", "mae_mean": 40.0 + i}
                                                                 for i in range(4)],
                               "behind": [{"algorithm": f"B{i}", "mae_mean": 60.0 + i} for i in range(4)]}}
    html = run_page(results, [])
    rows = re.findall(r"<tr( class=\"highlight\")?><td class=\"number\" data-sort=\"(\d+)\">", html)
    assert [int(rank) for _, rank in rows] == [2, 3, 4, 5, 6, 7, 8]
    assert [bool(mark) for mark, _ in rows] == [False, False, False, True, False, False, False]
    assert "A0" not in html and "A1" in html and "B2" in html and "B3" not in html
    assert "n/a" in html  # R² missing from results.json (null) is shown as n/a, not a crash


def test_hacknip_report_compares_runs(two_runs, tmp_path):
    out = tmp_path / "page.html"
    result = _run(["report", *map(str, two_runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    for folder in two_runs:
        assert f'href="{folder.name}/report.html"' in html
    assert html.count('<table class="sortable">') == 2  # the runs, and L* per task
    assert len(_images(html)) == 2  # overlaid layer curves, depth curves
    for folder in two_runs:
        results = json.loads((folder / "results.json").read_text())
        assert f">{results['mae_mean']:.4g}</td>" in html
        assert f">{results['best_layer']}</td>" in html


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing", "not a folder"),
    (lambda d: d, "holds neither results.json nor curve.json"),
    (lambda d: (d / "results.json").write_text("{not json") and d, "results.json: not valid JSON"),
    (lambda d: (d / "results.json").write_text('{"data": "x"}') and d, "not a hacknip results file (no backbone, metric"),
])
def test_report_names_the_folder_it_cannot_read(make, message, tmp_path):
    base = tmp_path / "run"
    base.mkdir()
    folder = make(base)
    result = CliRunner().invoke(cli, ["report", str(folder), "--out", str(tmp_path / "page.html")])
    assert result.exit_code == 1
    assert message in result.output and str(folder) in result.output
    assert not (tmp_path / "page.html").exists()


def test_report_refuses_two_folders_of_one_name(two_runs, tmp_path):
    import shutil

    twin = tmp_path / "elsewhere" / two_runs[0].name
    shutil.copytree(two_runs[0], twin)
    result = CliRunner().invoke(cli, ["report", str(two_runs[0]), str(twin), "--out", str(tmp_path / "p.html")])
    assert result.exit_code == 1 and "have the same name" in result.output


def _curve(metric: str, scores: list[float]) -> DepthCurve:
    n = len(scores)
    return DepthCurve("r", "t", "b", metric, np.arange(n), np.array(scores), np.zeros(n))


def test_depth_curves_are_normalised_so_that_zero_is_the_best_layer():
    error = _curve("mae", [4.0, 2.0, 3.0, 6.0])
    assert error.normalised.tolist() == [0.5, 0.0, 0.25, 1.0]
    assert error.relative_depth.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    row = error.best_layer_row()
    assert (row["best_layer"], row["last_layer"]) == (1, 3)
    assert row["gain_over_last_percent"] == pytest.approx(100 * (6 - 2) / 6)
    auc = _curve("roc_auc", [0.7, 0.9, 0.8])
    assert auc.normalised.tolist() == pytest.approx([1.0, 0.0, 0.5]) and auc.best_index == 1
    assert auc.best_layer_row()["gain_over_last_percent"] == pytest.approx(100 * (0.9 - 0.8) / 0.8)
    assert _curve("mae", [1.0, 1.0]).normalised.tolist() == [0.0, 0.0]


def test_depth_curves_come_from_the_layer_sweep_of_results(two_runs):
    results = json.loads((two_runs[0] / "results.json").read_text())
    (curve,) = depth_curves(results, "run")
    assert curve.layers.tolist() == [e["layer"] for e in results["per_layer"]]
    assert curve.layers[curve.best_index] == results["best_layer"]
    assert depth_curves({**results, "per_layer": []}, "run") == []


def test_a_curve_study_has_its_report_and_its_place_on_the_comparison(tmp_path):
    from hacknip.report import write_curve

    points = [{"n_samples": n, "fraction": f, "repeat": 0, "mae": m, "mae_std": 1.0, "layers": None, "seconds": 2.0}
              for n, f, m in ((10, 0.1, 30.0), (100, 1.0, 12.0))]
    curve = {"data": "d.csv", "target": "y", "task_kind": "regression", "metric": "mae", "backbone": "toy",
             "head": "ridge", "n_total": 100, "fractions": [0.1, 1.0], "repeats": 1, "full_repeats": 1,
             "methods": {"hacknip": {"label": "HackNIP toy + ridge", "fit": None, "points": points}},
             "crossing": None, "update_ratios": None, "seconds": 4.0}
    written = write_curve(curve, tmp_path / "study")
    assert tmp_path / "study" / "report.html" in written
    html = (tmp_path / "study" / "report.html").read_text()
    assert "HackNIP toy + ridge at 1 of the data" in html and len(_images(html)) == 1
    page = tmp_path / "page.html"
    assert _run(["report", str(tmp_path / "study"), "--out", str(page)]).exit_code == 0
    assert "Data-efficiency studies" in page.read_text() and 'href="study/report.html"' in page.read_text()


def test_report_pages_render_in_a_real_browser(two_runs, tmp_path):
    """Debian's chromium (installed by .ci/run), driven by Playwright: no console error, every figure drawn, no
    sideways scrolling at phone width, sorting works; screenshots kept beside the pages."""
    import browser_check as browser

    compare = tmp_path / "page.html"
    assert _run(["report", *map(str, two_runs), "--out", str(compare)]).exit_code == 0
    with browser.chromium() as session:
        for path in (two_runs[0] / "report.html", compare):
            for width in (1280, 390):
                shown = session.open(path, width, tmp_path / f"{path.stem}-{width}.png")
                assert shown.errors == [], shown.errors
                assert shown.images and all(w > 0 and h > 0 for w, h in shown.images), shown.images
                assert shown.page_width <= width, f"{path} scrolls sideways at {width} px"
        order = session.sorted_column(compare, "score")
        assert order == sorted(order) and len(order) == 2
    assert (tmp_path / "page-1280.png").stat().st_size > 10_000


def test_report_html_is_listed_as_a_file_the_run_may_replace(two_runs, phonons_path):
    result = _run(["run", "--data", str(phonons_path), "--backbone", "toy", "--head", "ridge", "--limit", "80",
                   "--out", str(two_runs[0]), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert Path(two_runs[0] / "report.html").exists()


def test_run_with_umap_puts_the_umaps_on_its_page(toy_plugin, phonons_path, tmp_path):
    out = tmp_path / "run"
    result = _run(["run", "--data", str(phonons_path), "--backbone", "toy", "--head", "ridge", "--limit", "80",
                   "--umap", "--out", str(out)])
    assert result.exit_code == 0, result.output
    images = _images((out / "report.html").read_text())
    best = json.loads((out / "results.json").read_text())["best_layer"]
    assert images[-1][1] == (out / "umap.png").read_bytes()
    assert images[-1][0].startswith(f"UMAP of the stored embeddings (layer {best}")
    import pandas as pd

    table = pd.read_csv(out / "umap.csv")
    assert len(table) == 80 * table["layer"].nunique() and best in set(table["layer"])


def test_what_hacknip_writes_never_holds_a_database_password():
    from hacknip.workflow.provenance import without_passwords

    command = "hacknip tune --storage postgresql+psycopg://me:s3cr%40t@db:5432/hacknip --seed 1"
    assert without_passwords(command) == "hacknip tune --storage postgresql+psycopg://me:***@db:5432/hacknip --seed 1"
    for harmless in ("sqlite:////tmp/a.db", "postgresql://me@db/hacknip", "https://example.org/a:b"):
        assert without_passwords(harmless) == harmless
