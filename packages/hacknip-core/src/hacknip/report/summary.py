"""The summary a command prints at the end of a run."""

from __future__ import annotations

from typing import Any

from hacknip.report.figures import METRIC_LABELS, is_classification, layers_text, run_layers_text, sweep_folds


def score_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    if is_classification(results):
        return [("ROC-AUC", f"{results['roc_auc_mean']:.3f} ± {results['roc_auc_std']:.3f}"),
                ("accuracy", f"{results['accuracy_mean']:.3f} ± {results['accuracy_std']:.3f}"),
                ("dummy ROC-AUC / accuracy", f"{results['dummy_roc_auc_mean']:.3f} / {results['dummy_accuracy_mean']:.3f}")]
    return [("MAE", f"{results['mae_mean']:.4g} ± {results['mae_std']:.3g}"),
            ("RMSE / R²", f"{results['rmse_mean']:.4g} / {results['r2_mean']:.3f}"),
            ("dummy MAE", f"{results['dummy_mae_mean']:.4g}"),
            ("relative MAE", f"{results['relative_mae']:.3f}")]


def print_summary(results: dict[str, Any], console) -> None:
    from rich.table import Table

    if results["per_layer"]:
        table = Table(title=f"Layer sweep ({results['head']}, {results['pooling']} pooling, {sweep_folds(results)} folds)")
        metric = results["metric"]
        for column in ("backbone", "layer", METRIC_LABELS.get(metric, metric), "± std"):
            table.add_column(column, justify="right" if column != "backbone" else "left")
        best = results["best_layer"]
        for entry in results["per_layer"]:
            is_best = entry["layer"] == best if not isinstance(best, dict) else [entry["layer"]] == best.get(entry["backbone"])
            style = "bold green" if is_best else None
            table.add_row(entry["backbone"], str(entry["layer"]), f"{entry[f'{metric}_mean']:.4g}",
                          f"{entry[f'{metric}_std']:.3g}", style=style)
        console.print(table)
    summary = Table(title=f"{results['backbone']} → {results['head']} on {results['task'] or results['data']}",
                    show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("samples", f"{results['n_samples']} ({len(results['skipped'])} skipped)")
    summary.add_row("folds", results["folds_source"])
    if "finetune" in results:
        recipe = results["finetune"]["recipe"]
        summary.add_row("fine-tuned", f"up to {layers_text(results['best_layer'])}, "
                                      f"{results['finetune']['trained_parameters']:,} backbone parameters trained, "
                                      f"MLP {'x'.join(map(str, recipe['hidden']))}, {recipe['epochs']} epochs"
                                      + (f" (patience {recipe['patience']})" if recipe["patience"] else ""))
    else:
        summary.add_row("best layer", run_layers_text(results))
    for row in score_rows(results):
        summary.add_row(*row)
    if results.get("leaderboard"):
        board = results["leaderboard"]
        ahead = ", ".join(f"{e['algorithm']} {e['mae_mean']:.4g}" for e in board["ahead"][:3])
        summary.add_row("leaderboard", f"rank {board['rank']} of {board['out_of']}" + (f" (best: {ahead})" if ahead else ""))
    elif results.get("leaderboard_note"):
        summary.add_row("leaderboard", f"not ranked: {results['leaderboard_note']}")
    for entry in results.get("undefined_values", []):
        if entry["values"]:
            summary.add_row("undefined", f"{entry['descriptor']}: {entry['values']} values in {entry['structures']} "
                                         f"structures, filled with each training fold's mean (results.json lists them)")
    several_heads = len(results.get("tuning", {}).get("heads", [])) > 1
    for winner in results.get("tuning", {}).get("per_fold", []):
        head = f" → {winner['head']}" if several_heads else ""
        summary.add_row(f"tuned {winner['scope']}", f"{winner.get('features', winner['layers'])}{head}, validation "
                                                     f"{winner['validation_score']:.4g}")
    summary.add_row("time", f"{results['timings_s']['total']:.1f} s")
    console.print(summary)
    print_rows(console, "skipped", results["skipped"])
    print_rows(console, "flagged", results.get("flagged", []))


ROWS_PRINTED = 10
"""Skipped or flagged rows the summary names one by one (3DSC flags 1 420); results.json and report.html list all."""


def print_rows(console, kind: str, entries: list[dict[str, Any]]) -> None:
    for entry in entries[:ROWS_PRINTED]:
        console.print(f"[yellow]{kind}[/] {entry['row']} ({entry['id']}): {entry['reason']}")
    if len(entries) > ROWS_PRINTED:
        console.print(f"[yellow]{kind}[/] {len(entries) - ROWS_PRINTED} more rows, {len(entries)} in all: "
                      f"results.json ('{kind}') and report.html list every one")


