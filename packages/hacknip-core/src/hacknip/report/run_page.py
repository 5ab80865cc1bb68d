"""``report.html`` of one run (``hacknip run``, ``tune``, ``finetune``) and of one data-efficiency study
(``hacknip curve``): what a person reads first (scores, dummy, leaderboard), the figures, the tables, and where the
numbers came from."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from hacknip.report.figures import METRIC_LABELS, is_classification, run_layers_text, sweep_folds
from hacknip.report.html import (
    Cell,
    PageFigure,
    cards,
    definitions,
    figure_block,
    note,
    page,
    section,
    table,
)


def run_kind(results: dict[str, Any]) -> str:
    if "finetune" in results:
        return "finetune"
    if "tuning" in results:
        return "tune"
    return "run"


def run_title(results: dict[str, Any]) -> str:
    where = results.get("task") or Path(str(results["data"])).name
    model = "fine-tuned end to end" if run_kind(results) == "finetune" else results["head"]
    return f"{results['backbone']} → {model} on {where}"


def run_page(results: dict[str, Any], figures: Sequence[PageFigure]) -> str:
    sections = [
        section("Summary", cards(headline(results)), _leaderboard_html(results), _tuning_note(results)),
        section("Figures", figure_block(figures)),
    ]
    if results.get("per_layer"):
        sections.append(section("Layer sweep", _per_layer_table(results)))
    sections.append(section("Folds", _fold_table(results)))
    if results.get("tuning"):
        sections.append(section("Tuning", _tuning_table(results["tuning"])))
    sections.append(section("Skipped and flagged rows", _rows_table(results)))
    sections.append(section("Provenance", provenance_html(results)))
    lead = (f"{results['n_samples']} samples, target {results['target']}, folds: {results['folds_source']}. "
            f"hacknip {results.get('hacknip_version', '?')} {run_kind(results)}.")
    return page(run_title(results), lead, sections, "Written by hacknip; every number on this page is read from "
                                                    "results.json beside it.")


def headline(results: dict[str, Any]) -> list[tuple[str, str]]:
    """The numbers a reader wants first: the score, the dummy's, the relative score, the rank, the layer."""
    if is_classification(results):
        items = [("ROC-AUC", f"{number(results['roc_auc_mean'], '.3f')} ± {number(results['roc_auc_std'], '.3f')}"),
                 ("accuracy", f"{number(results['accuracy_mean'], '.3f')} ± {number(results['accuracy_std'], '.3f')}"),
                 ("dummy ROC-AUC", number(results["dummy_roc_auc_mean"], ".3f"))]
    else:
        items = [("MAE", f"{number(results['mae_mean'])} ± {number(results['mae_std'], '.2g')}"),
                 ("dummy MAE", number(results["dummy_mae_mean"])),
                 ("relative MAE (model / dummy)", number(results.get("relative_mae"), ".3f")),
                 ("RMSE / R²", f"{number(results['rmse_mean'])} / {number(results['r2_mean'], '.3f')}")]
    board = results.get("leaderboard")
    if board:
        items.append(("Matbench leaderboard", f"rank {board['rank']} of {board['out_of']}"))
    items.append(("layer" if run_kind(results) != "finetune" else "fine-tuned up to", run_layers_text(results)))
    items.append(("time", f"{number(results['timings_s']['total'], '.1f')} s"))
    return items


def number(value: Any, spec: str = ".4g") -> str:
    """A number as text; "n/a" where there is none (results.json keeps an undefined score, e.g. R² of one row, as
    null)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return format(value, spec)


def _leaderboard_html(results: dict[str, Any]) -> str:
    board = results.get("leaderboard")
    if not board:
        note_text = results.get("leaderboard_note")
        return note(f"Not ranked on the Matbench leaderboard: {note_text}") if note_text else ""
    ahead, behind = board["ahead"][-3:], board.get("behind", [])[:3]
    rows = [[board["rank"] - len(ahead) + i, e["algorithm"], e["mae_mean"]] for i, e in enumerate(ahead)]
    rows.append([board["rank"], f"this run: {results['backbone']} + {results['head']}", results["mae_mean"]])
    rows += [[board["rank"] + 1 + i, e["algorithm"], e["mae_mean"]] for i, e in enumerate(behind)]
    return ("<p>Neighbours on the Matbench v0.1 leaderboard (mean MAE over the official folds):</p>"
            + table(["rank", "algorithm", "MAE"], rows, highlight=[r[1].startswith("this run") for r in rows]))


def _tuning_note(results: dict[str, Any]) -> str:
    tuning = results.get("tuning")
    return note(tuning["note"]) if tuning else ""


def _per_layer_table(results: dict[str, Any]) -> str:
    metric = results["metric"]
    label = METRIC_LABELS.get(metric, metric)
    best = results["best_layer"]
    rows, marked = [], []
    for entry in results["per_layer"]:
        rows.append([entry["backbone"], entry["layer"], entry[f"{metric}_mean"], entry[f"{metric}_std"]])
        marked.append(entry["layer"] == best if not isinstance(best, dict) else [entry["layer"]] == best.get(entry["backbone"]))
    return (f"<p>{label} of each layer alone ({sweep_folds(results)}-fold mean ± std); the chosen layer is "
            f"highlighted.</p>" + table(["backbone", "layer", label, "± std"], rows, sortable=True, highlight=marked))


def _fold_table(results: dict[str, Any]) -> str:
    folds = results["folds"]
    if not folds:
        return "<p>none</p>"
    columns = [key for key in folds[0] if key != "fold"]
    rows = [[fold["fold"] + 1, *(fold[key] for key in columns)] for fold in folds]
    return table(["fold", *(METRIC_LABELS.get(c, c) for c in columns)], rows, sortable=True)


def _tuning_table(tuning: dict[str, Any]) -> str:
    """Every study of every scope (the outer folds, then the one that chose params.json), the one each scope kept
    highlighted: which layers or members won, and by how much."""
    rows, kept = [], []
    for winner in [*tuning["per_fold"], tuning["deploy"]]:
        for study in winner["studies"]:
            rows.append([winner["scope"], study.get("head", ""), study.get("features", str(study["layers"])),
                         study["trials"], study["best_trial"], study["best_value"]])
            kept.append(study["layers"] == winner["layers"] and study.get("head") == winner.get("head"))
    metric = METRIC_LABELS.get(tuning["metric"], tuning["metric"])
    return table(["scope", "head", "features", "trials", "best trial", f"validation {metric}"], rows, highlight=kept,
                 caption="one Optuna study per candidate head and features; highlighted: the one each scope kept (the "
                         "last scope chose params.json)")


def _rows_table(results: dict[str, Any]) -> str:
    rows = [["skipped", e["row"], e["id"], e["reason"]] for e in results.get("skipped", [])]
    rows += [["flagged (kept)", e["row"], e["id"], e["reason"]] for e in results.get("flagged", [])]
    if not rows:
        return "<p>No row was skipped or flagged.</p>"
    return table(["what", "row", "id", "why"], rows, sortable=True)


def provenance_html(results: dict[str, Any]) -> str:
    origin = results.get("provenance", {})
    identities = {b["name"]: ", ".join(f"{k}={v}" for k, v in b["identity"].items())
                  for b in results.get("backbones", []) if b.get("identity")}
    recipe = (results.get("finetune") or {}).get("recipe") or results.get("finetune_recipe")
    tuning = results.get("tuning")
    return definitions([
        ("command", origin.get("command")),
        ("data", results["data"]),
        ("data sha256", origin.get("data_sha256")),
        ("backbone identities", identities),
        ("head parameters", results.get("head_params")),
        ("pooling", results.get("pooling")),
        ("fine-tuning recipe", recipe),
        ("tuning", {k: tuning[k] for k in ("protocol", "n_trials", "patience", "inner_folds", "seed") if k in tuning}
         if tuning else None),
        ("seeds", origin.get("seeds")),
        ("timings (s)", results.get("timings_s") or ({"total": results["seconds"]} if "seconds" in results else None)),
        ("Python", f"{origin['python']} on {origin['platform']}" if "python" in origin else None),
        ("versions", ", ".join(f"{name} {version}" for name, version in origin.get("versions", {}).items())),
    ])


def curve_page(curve: dict[str, Any], figures: Sequence[PageFigure]) -> str:
    metric = curve["metric"]
    label = METRIC_LABELS.get(metric, metric)
    sections = [
        section("Summary", cards(_curve_headline(curve)), _crossing_html(curve)),
        section("Figures", figure_block(figures)),
        section(f"{label} against data size", _curve_table(curve)),
        section("Provenance", provenance_html(curve)),
    ]
    lead = (f"{curve['n_total']} samples in all, target {curve['target']}, fractions "
            f"{', '.join(f'{f:g}' for f in curve['fractions'])}, {curve['repeats']} repeats each "
            f"({curve['full_repeats']} of the full data), each point a 5-fold cross-validation.")
    return page(f"Data efficiency: {curve['backbone']} on {Path(str(curve['data'])).name}", lead, sections,
                "Written by hacknip curve; every number on this page is read from curve.json beside it.")


def _curve_headline(curve: dict[str, Any]) -> list[tuple[str, str]]:
    metric = curve["metric"]
    items = []
    for entry in curve["methods"].values():
        full = [p[metric] for p in entry["points"] if p["fraction"] == max(curve["fractions"])]
        if full:
            items.append((f"{entry['label']} at {max(curve['fractions']):g} of the data",
                          f"{number(float(np.mean(full)))} ± {number(float(np.std(full)), '.2g')}"))
    return items


def _crossing_html(curve: dict[str, Any]) -> str:
    crossing = curve.get("crossing")
    if not crossing:
        return ""
    if crossing.get("n") is None:
        return "<p>The fitted curves do not cross within the measured sizes.</p>"
    band = (f" (bootstrap 16–84 %: {crossing['low']:.3g}–{crossing['high']:.3g})"
            if crossing.get("low") is not None else "")
    return f"<p>The fitted curves cross at N ≈ {crossing['n']:.3g} samples{band}.</p>"


def _curve_table(curve: dict[str, Any]) -> str:
    metric = curve["metric"]
    rows = []
    for entry in curve["methods"].values():
        for fraction in curve["fractions"]:
            points = [p for p in entry["points"] if p["fraction"] == fraction]
            if not points:
                continue
            values = [p[metric] for p in points]
            sizes = sorted({p["n_samples"] for p in points})
            rows.append([entry["label"], fraction, Cell(", ".join(map(str, sizes)), sizes[0], True), len(points),
                         Cell(f"{np.mean(values):.4g} ± {np.std(values):.2g}", float(np.mean(values)), True),
                         float(sum(p["seconds"] for p in points))])
    fits = [f"{e['label']}: {e['fit']['formula']}" for e in curve["methods"].values() if e.get("fit")]
    return (table(["method", "fraction", "samples", "repeats", f"{METRIC_LABELS.get(metric, metric)} mean ± std",
                   "seconds"], rows, sortable=True)
            + ("<p>Fits: " + escape("; ".join(fits)) + "</p>" if fits else ""))
