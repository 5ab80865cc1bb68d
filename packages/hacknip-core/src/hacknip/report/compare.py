"""The page comparing runs (``hacknip report RUN_DIR... --out page.html``): a sortable table of every run, their
layer sweeps overlaid, the depth curves across tasks with the table of L* (the paper's Fig. 5a), and the
data-efficiency studies among them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hacknip.analysis.depth import DepthCurve, depth_curves, task_name
from hacknip.errors import InputError
from hacknip.report.figures import METRIC_LABELS, depth_figure, layer_curves_figure, run_layers_text
from hacknip.report.html import Cell, PageFigure, figure_block, note, page, png_bytes, section, table
from hacknip.report.run_page import number, run_kind

RUN_FILES = ("results.json", "curve.json")


@dataclass
class RunFolder:
    folder: Path
    kind: str
    """``run``, ``tune``, ``finetune`` (a results.json) or ``curve`` (a curve.json)."""
    content: dict[str, Any]

    @property
    def name(self) -> str:
        return self.folder.resolve().name


def read_run_folder(folder: Path) -> RunFolder:
    """A folder written by hacknip run, tune, finetune or curve."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; name the folders that hacknip run, tune, finetune or curve wrote")
    for name in RUN_FILES:
        path = folder / name
        if path.is_file():
            content = _read_json(path)
            return RunFolder(folder, "curve" if name == "curve.json" else run_kind(content), content)
    raise InputError(f"{folder}: holds neither results.json nor curve.json; name a folder that hacknip run, tune, "
                     f"finetune or curve wrote")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error}); write it again with the command that made it") from None
    required = ("data", "backbone", "metric") if path.name == "curve.json" else ("data", "backbone", "metric", "folds")
    missing = [key for key in required if key not in content] if isinstance(content, dict) else list(required)
    if missing:
        raise InputError(f"{path}: not a hacknip {path.stem} file (no {', '.join(missing)})")
    return content


def compare_page(folders: Sequence[Path], out: Path) -> str:
    """The HTML of the comparison of ``folders``; links to each run's own report.html are relative to ``out``."""
    runs = [read_run_folder(folder) for folder in folders]
    _check_unique_names(runs)
    scored = [run for run in runs if run.kind != "curve"]
    curves = [curve for run in scored for curve in depth_curves(run.content, run.name)]
    sections = []
    if scored:
        sections.append(section("Runs", "<p>Click a column header to sort.</p>", _runs_table(scored, out)))
    if curves:
        sections.append(section("Layer curves", figure_block([_figure(layer_curves_figure(curves),
                                                                      "Layer sweeps of the runs overlaid, one panel per task")])))
        sections.append(section("Which depth is most informative", _depth_text(), figure_block([_figure(
            depth_figure(curves), "Min-max normalised score against relative depth for every run")]), _best_layer_table(curves)))
    elif scored:
        sections.append(note("No run swept several layers, so there are no depth curves (hacknip run with a backbone "
                             "such as chgnet, without @L, sweeps every layer)."))
    studies = [run for run in runs if run.kind == "curve"]
    if studies:
        sections.append(section("Data-efficiency studies", _curves_table(studies, out)))
    lead = f"{len(runs)} folders: " + ", ".join(str(run.folder) for run in runs)
    return page("hacknip: runs compared", lead, sections, "Written by hacknip report; every number on this page is read "
                                                          "from the results.json and curve.json of the folders named above.")


def write_compare_page(folders: Sequence[Path], out: Path) -> Path:
    out = Path(out)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; name an .html file")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: the folder {out.parent} does not exist")
    out.write_text(compare_page(folders, out), encoding="utf-8")
    return out


def _check_unique_names(runs: list[RunFolder]) -> None:
    seen: dict[str, Path] = {}
    for run in runs:
        if run.name in seen:
            raise InputError(f"{run.folder} and {seen[run.name]} have the same name, which would mix them on the page; "
                             f"rename one or name each folder once")
        seen[run.name] = run.folder


def _figure(figure, alt: str) -> PageFigure:
    return PageFigure(png_bytes(figure), alt)


def _link(run: RunFolder, out: Path, page_name: str = "report.html") -> Cell:
    target = run.folder / page_name
    if not target.is_file():
        return Cell(run.name)
    return Cell(run.name, href=os.path.relpath(target.resolve(), out.resolve().parent))


def _runs_table(runs: list[RunFolder], out: Path) -> str:
    rows = []
    for run in runs:
        r = run.content
        metric = r["metric"]
        relative = r.get("relative_mae")
        board = r.get("leaderboard")
        rows.append([_link(run, out), run.kind, task_name(r), r["backbone"], run_layers_text(r),
                     r.get("pooling", ""), r.get("head", ""), METRIC_LABELS.get(metric, metric),
                     Cell(number(r.get(f"{metric}_mean")), r.get(f"{metric}_mean"), True),
                     Cell(number(r.get(f"{metric}_std"), ".2g"), r.get(f"{metric}_std"), True),
                     Cell(number(relative, ".3f"), relative, True) if relative is not None else "",
                     Cell(f"{board['rank']} of {board['out_of']}", board["rank"], True) if board else "",
                     r.get("n_samples"), Cell(number((r.get("timings_s") or {}).get("total"), ".1f"),
                                              (r.get("timings_s") or {}).get("total"), True)])
    return table(["run", "kind", "task", "backbone", "layers", "pooling", "head", "metric", "score", "± std",
                  "relative MAE", "leaderboard", "samples", "time s"], rows, sortable=True)


def _depth_text() -> str:
    return ("<p>Each run's layer sweep, min–max normalised within the run (0 = its best layer, 1 = its worst; for "
            "ROC-AUC and accuracy, higher is better, so the scale is turned round), against relative depth (layer / "
            "last swept layer). L* is the best layer; the gain is how much better L* scores than the last layer.</p>")


def _best_layer_table(curves: list[DepthCurve]) -> str:
    rows = []
    for curve in curves:
        row = curve.best_layer_row()
        rows.append([row["task"], row["run"], row["backbone"], row["best_layer"], row["last_layer"],
                     row["relative_depth"], METRIC_LABELS.get(row["metric"], row["metric"]), row["best_score"],
                     row["last_score"], Cell(number(row["gain_over_last_percent"], ".1f"), row["gain_over_last_percent"],
                                             True)])
    return table(["task", "run", "backbone", "L*", "last layer", "L* / last", "metric", "score at L*",
                  "score at last", "gain over last %"], rows, sortable=True, caption="L* per task")


def _curves_table(studies: list[RunFolder], out: Path) -> str:
    rows = []
    for study in studies:
        c = study.content
        metric = c["metric"]
        for entry in c["methods"].values():
            for fraction in c["fractions"]:
                values = [p[metric] for p in entry["points"] if p["fraction"] == fraction]
                if values:
                    mean = sum(values) / len(values)
                    rows.append([_link(study, out), entry["label"], fraction,
                                 sorted({p["n_samples"] for p in entry["points"] if p["fraction"] == fraction})[0],
                                 len(values), Cell(number(mean), mean, True)])
    return table(["study", "method", "fraction", "samples", "repeats", "score (mean over repeats)"], rows, sortable=True)
