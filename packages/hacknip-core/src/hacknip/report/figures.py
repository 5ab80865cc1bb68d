"""The figures of a run and of a data-efficiency study, drawn without pyplot: no backend is chosen and no global
state is touched. Each ``*_figure`` returns a matplotlib Figure; each ``*_plot`` writes one to a path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hacknip.plugins.descriptor import is_descriptor_identity


def _figure(width: float, height: float):
    """A figure and its axes, drawn without pyplot: no backend is chosen and no global state is touched."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=120)
    return figure, figure.add_subplot()


def parity_values(results: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, str]:
    """True and out-of-fold predicted values on the scale the metrics were computed on, and that scale's label."""
    from hacknip.evaluation.crossval import get_target_transform

    true = np.array(results["predictions"]["true"], dtype=float)
    predicted = np.array(results["predictions"]["predicted"], dtype=float)
    transform = get_target_transform(results.get("target_transform"))
    if transform and results.get("scored_on") == "transformed":
        return transform.forward(true), transform.forward(predicted), transform.label.format(results["target"])
    return true, predicted, str(results["target"])


def parity_figure(results: dict[str, Any]):
    true, predicted, label = parity_values(results)
    low, high = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
    figure, axes = _figure(5, 5)
    axes.scatter(true, predicted, s=8, alpha=0.5, edgecolors="none")
    axes.plot([low, high], [low, high], color="black", linewidth=0.8)
    axes.set_xlabel(f"true {label}")
    axes.set_ylabel(f"predicted {label} (out of fold)")
    axes.set_title(f"{_expression(results)} + {results['head']}\n"
                   f"MAE {results['mae_mean']:.4g} ± {results['mae_std']:.2g}, R² {results['r2_mean']:.3f}", fontsize=9)
    axes.set_aspect("equal")
    figure.tight_layout()
    return figure


def roc_figure(results: dict[str, Any]):
    """One out-of-fold ROC curve per fold, and the diagonal of a model that guesses."""
    from sklearn.metrics import roc_curve

    true = np.array(results["predictions"]["true"])
    probability = np.array(results["predictions"]["probability"])
    figure, axes = _figure(5, 5)
    test_fold = np.array(results["predictions"]["fold"])
    for fold in results["folds"]:
        if np.isnan(fold["roc_auc"]):
            continue
        test = test_fold == fold["fold"]
        false_positive, true_positive, _ = roc_curve(true[test], probability[test])
        axes.plot(false_positive, true_positive, linewidth=1, label=f"fold {fold['fold']} (AUC {fold['roc_auc']:.3f})")
    axes.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle="--")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(f"{_expression(results)} + {results['head']}: {results['target']}\n"
                   f"ROC-AUC {results['roc_auc_mean']:.3f} ± {results['roc_auc_std']:.3f}, "
                   f"accuracy {results['accuracy_mean']:.3f}", fontsize=9)
    axes.legend(fontsize=7, loc="lower right")
    axes.set_aspect("equal")
    figure.tight_layout()
    return figure


def is_classification(results: dict[str, Any]) -> bool:
    return results.get("task_kind") == "classification"


METRIC_LABELS = {"mae": "MAE", "roc_auc": "ROC-AUC", "accuracy": "accuracy", "rmse": "RMSE"}


def layer_figure(results: dict[str, Any]):
    metric = results["metric"]
    figure, axes = _figure(6, 4)
    for name in dict.fromkeys(entry["backbone"] for entry in results["per_layer"]):
        entries = [e for e in results["per_layer"] if e["backbone"] == name]
        axes.errorbar([e["layer"] for e in entries], [e[f"{metric}_mean"] for e in entries],
                      yerr=[e[f"{metric}_std"] for e in entries], marker="o", capsize=3, label=name)
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("layer (0 = embedding)")
    label = METRIC_LABELS.get(metric, metric)
    axes.set_ylabel(f"{label} ({sweep_folds(results)}-fold mean ± std)")
    # the dummy is named, not drawn: its MAE is usually several times larger and would flatten the curves
    axes.set_title(f"layer sweep, {results['head']} head, {results['pooling']} pooling "
                   f"(dummy {label} {results[f'dummy_{metric}_mean']:.4g})", fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def layers_text(best: Any) -> str:
    if isinstance(best, dict):
        return ", ".join(f"{name} {','.join(map(str, layers))}" for name, layers in best.items())
    return f"layer {best}"


DESCRIPTORS_ONLY = "none (descriptors only)"


def run_layers_text(results: dict[str, Any]) -> str:
    """A run's layers as a reader wants them: descriptors have none, so they are left out."""
    descriptors = {entry["name"] for entry in results.get("backbones", [])
                   if is_descriptor_identity(entry.get("identity", {}))}
    best = results.get("best_layer")
    if not descriptors:
        return layers_text(best)
    kept = {name: layers for name, layers in best.items() if name not in descriptors} if isinstance(best, dict) else {}
    return layers_text(kept) if kept else DESCRIPTORS_ONLY


def _expression(results: dict[str, Any]) -> str:
    layers = run_layers_text(results)
    return results["backbone"] if layers == DESCRIPTORS_ONLY else f"{results['backbone']} @ {layers}"


def sweep_folds(results: dict[str, Any]) -> int:
    return results.get("sweep_folds", len(results["folds"]))


def curve_figure(curve: dict[str, Any]):
    """MAE against number of samples (the paper's Fig. 3b): each method's mean ± std over repeats, its fitted curve
    dashed, and the crossing with its bootstrap 16–84 % band."""
    figure, axes = _figure(6, 4.5)
    drawn = [method for method, entry in curve["methods"].items() if entry["points"]]
    if not drawn:
        from hacknip.errors import InputError

        raise InputError("the curve has no measured points to plot")
    for method in drawn:
        _draw_method_curve(axes, method, curve["methods"][method], curve.get("metric", "mae"))
    if curve.get("crossing") and curve["crossing"].get("n") is not None:
        _draw_crossing(axes, curve["crossing"])
    axes.set_xscale("log")
    label = METRIC_LABELS.get(curve.get("metric", "mae"), curve.get("metric", "mae"))
    axes.set_xlabel("number of samples")
    axes.set_ylabel(f"{label} of {curve['target']} (mean ± std over repeats)")
    axes.set_title(f"data efficiency: {curve['target']}", fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _draw_method_curve(axes, method: str, entry: dict[str, Any], metric: str = "mae") -> None:
    sizes = sorted({point["n_samples"] for point in entry["points"]})
    values = [[point[metric] for point in entry["points"] if point["n_samples"] == size] for size in sizes]
    method = entry.get("label", method)
    drawn = axes.errorbar(sizes, [np.mean(v) for v in values], yerr=[np.std(v) for v in values], marker="o",
                          capsize=3, linestyle="none", label=method)
    fitted = entry.get("fit")
    if fitted:
        from hacknip.analysis.data_efficiency import Fit

        curve = Fit(fitted["kind"], fitted["params"], tuple(fitted["n_range"]))
        n = np.geomspace(*curve.n_range, 200)
        axes.plot(n, curve.predict(n), linestyle="--", linewidth=1, color=drawn.lines[0].get_color(),
                  label=f"{method} fit: {fitted['formula']}")


def _draw_crossing(axes, estimate: dict[str, Any]) -> None:
    label = f"crossing N ≈ {estimate['n']:.3g}"
    if estimate.get("low") is not None and estimate.get("high") is not None:
        axes.axvspan(estimate["low"], estimate["high"], color="grey", alpha=0.2, linewidth=0,
                     label=f"crossing 16–84 % ({estimate['low']:.3g}–{estimate['high']:.3g})")
    axes.axvline(estimate["n"], color="black", linewidth=0.8, label=label)


def update_ratio_figure(ratios: dict[str, list[float] | np.ndarray], fraction_label: str):
    """The distribution of per-neuron update ratios of each method on a log axis, and each median (Fig. 3c).

    Densities are per decade of r (a histogram of log10 r), so areas on the log axis compare fairly; neurons
    that did not move at all (r = 0) have no place on a log axis and are counted in the legend instead."""
    arrays = {method: np.asarray(r, dtype=float).ravel() for method, r in ratios.items()}
    moved = np.concatenate([r[r > 0] for r in arrays.values()]) if arrays else np.empty(0)
    if not moved.size:
        from hacknip.errors import InputError

        raise InputError("no positive update ratio to plot")
    edges = _log_bin_edges(np.log10(moved))
    figure, axes = _figure(6, 4)
    for method, r in arrays.items():
        if np.any(r > 0):
            _draw_ratio_density(axes, method, r, edges)
    axes.axvline(0.1, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xscale("log")
    axes.set_xlabel(f"per-neuron update ratio r ({fraction_label} vs 100 % of the data)")
    axes.set_ylabel("probability density (per decade of r)")
    axes.set_title(f"how far neurons move on {fraction_label} of the data (dotted: r = 0.1)", fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _log_bin_edges(log_r: np.ndarray, bins: int = 40) -> np.ndarray:
    low, high = float(log_r.min()), float(log_r.max())
    if high - low < 1e-9:  # one value (or all equal): a one-decade window around it
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1)


def _draw_ratio_density(axes, method: str, r: np.ndarray, edges: np.ndarray) -> None:
    """One method's density and its median; the median counts the unmoved neurons too, as ratio_summary does."""
    moved = r[r > 0]
    density, _ = np.histogram(np.log10(moved), bins=edges, density=True)
    zero_note = f", {r.size - moved.size} at r = 0" if r.size > moved.size else ""
    drawn = axes.stairs(density, 10.0**edges, fill=True, alpha=0.35, label=f"{method} ({r.size} neurons{zero_note})")
    median = float(np.median(r))
    if median > 0:
        axes.axvline(median, color=drawn.get_facecolor()[:3], linewidth=1.2, linestyle="--",
                     label=f"{method} median {median:.2g}")


def tuning_candidates(tuning: dict[str, Any]) -> list[tuple[str, str]]:
    """The candidates a tune compared, in their order: the (head, features) of its studies (the features are a
    backbone expression: members and layers)."""
    return list(dict.fromkeys(_candidate(study) for winner in [*tuning["per_fold"], tuning["deploy"]]
                              for study in winner["studies"]))


def _candidate(study: dict[str, Any]) -> tuple[str, str]:
    return study.get("head", ""), study.get("features") or str(study["layers"])


def tuning_figure(results: dict[str, Any]):
    """A tune's choice, as a map: one row per scope (each outer fold, then all rows, which chose params.json), one
    column per candidate head and features, each cell its best validation score, the kept one framed; an outer
    fold's test score beside its name."""
    from hacknip.analysis.depth import HIGHER_IS_BETTER

    tuning = results["tuning"]
    candidates = tuning_candidates(tuning)
    scopes = [*tuning["per_fold"], tuning["deploy"]]
    scores = np.full((len(scopes), len(candidates)), np.nan)
    kept = []
    for row, winner in enumerate(scopes):
        for study in winner["studies"]:
            scores[row, candidates.index(_candidate(study))] = study["best_value"]
        kept.append(candidates.index(_candidate(winner)))
    greater = tuning["metric"] in HIGHER_IS_BETTER
    figure, axes = _figure(max(5.0, 1.0 + 1.1 * len(candidates)), 1.6 + 0.45 * len(scopes))
    image = axes.imshow(scores, cmap="viridis" if greater else "viridis_r", aspect="auto")
    for row, column in np.ndindex(scores.shape):
        if not np.isnan(scores[row, column]):
            red, green, blue, _ = image.cmap(image.norm(scores[row, column]))
            axes.text(column, row, f"{scores[row, column]:.4g}", ha="center", va="center", fontsize=7,
                      fontweight="bold" if column == kept[row] else "normal",
                      color="black" if 0.3 * red + 0.6 * green + 0.1 * blue > 0.5 else "white")
    for row, column in enumerate(kept):
        axes.add_patch(_frame(column, row))
    axes.set_xticks(range(len(candidates)), [_candidate_label(c, candidates) for c in candidates], fontsize=7)
    axes.set_yticks(range(len(scopes)), [_scope_label(w["scope"], results) for w in scopes], fontsize=8)
    label = METRIC_LABELS.get(tuning["metric"], tuning["metric"])
    where = "the outer test folds: optimistic" if tuning.get("optimistic") else f"{tuning['inner_folds']} inner folds"
    axes.set_title(f"validation {label} of each candidate in each scope\n({where}; framed: kept, "
                   f"{'higher' if greater else 'lower'} is better)", fontsize=9)
    figure.tight_layout()
    return figure


def _frame(column: int, row: int):
    from matplotlib.patches import Rectangle

    return Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2)


def _candidate_label(candidate: tuple[str, str], candidates: list) -> str:
    head, features = candidate
    parts = [head] if len({c[0] for c in candidates}) > 1 else []
    parts += [features.replace("+", "+\n")] if len({c[1] for c in candidates}) > 1 else []
    return "\n".join(parts) or head


def _scope_label(scope: str, results: dict[str, Any]) -> str:
    if not scope.startswith("fold"):
        return {"all": "all rows", "outer": "outer folds"}.get(scope, scope)
    fold = int(scope.removeprefix("fold"))
    test = next((f[results["metric"]] for f in results["folds"] if f["fold"] == fold), None)
    return f"fold {fold + 1}" + (f" (test {test:.4g})" if test is not None else "")


def save(figure, path: Path) -> Path:
    figure.savefig(path)
    return path


def parity_plot(results: dict[str, Any], path: Path) -> Path:
    return save(parity_figure(results), path)


def roc_plot(results: dict[str, Any], path: Path) -> Path:
    return save(roc_figure(results), path)


def layer_plot(results: dict[str, Any], path: Path) -> Path:
    return save(layer_figure(results), path)


def curve_plot(curve: dict[str, Any], path: Path) -> Path:
    return save(curve_figure(curve), path)


def update_ratio_plot(ratios: dict[str, list[float] | np.ndarray], path: Path, fraction_label: str) -> Path:
    return save(update_ratio_figure(ratios, fraction_label), path)


def training_figure(results: dict[str, Any]):
    """Fine-tuning: each fold's validation score against epoch, its kept (best) epoch marked."""
    figure, axes = _figure(6, 4)
    for index, fold in enumerate(results["finetune"]["folds"]):
        history = fold["history"]
        drawn = axes.plot([e["epoch"] + 1 for e in history], [e["validation"] for e in history], linewidth=1,
                          label=f"fold {index + 1}")
        if fold.get("best_epoch") is not None:
            axes.plot(fold["best_epoch"] + 1, fold["best_validation"], marker="o", color=drawn[0].get_color())
    axes.set_xlabel("epoch")
    what = "validation MAE" if results.get("task_kind") != "classification" else "validation log loss"
    axes.set_ylabel(f"{what} ({results['target']})" if what.endswith("MAE") else what)
    axes.set_title("fine-tuning: validation score per epoch (dot: the epoch kept)", fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def layer_curves_figure(curves: list) -> Any:
    """Several runs' layer sweeps overlaid (:class:`hacknip.analysis.depth.DepthCurve`): one panel per task and metric,
    one line per run and backbone, mean ± std over folds."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = list(dict.fromkeys((c.task, c.metric) for c in curves))
    columns = min(len(panels), 2)
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(6 * columns, 4 * rows), dpi=120)
    for index, (task, metric) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        for curve in (c for c in curves if (c.task, c.metric) == (task, metric)):
            axes.errorbar(curve.layers, curve.scores, yerr=curve.stds, marker="o", capsize=3,
                          label=f"{curve.run}: {curve.backbone}")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("layer (0 = embedding)")
        axes.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (fold mean ± std)")
        axes.set_title(task, fontsize=9)
        axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def depth_figure(curves: list) -> Any:
    """Min–max-normalised score against relative depth (the paper's Fig. 5a): 0 = the run's best layer, 1 = its
    worst; the best layer L* of each curve ringed."""
    figure, axes = _figure(7, 4.5)
    for curve in curves:
        normalised = curve.normalised
        drawn = axes.plot(curve.relative_depth, normalised, marker="o", markersize=4, linewidth=1.2,
                          label=f"{curve.run}: {curve.task} ({curve.backbone})")
        best = curve.best_index
        axes.plot(curve.relative_depth[best], normalised[best], marker="o", markersize=11, fillstyle="none",
                  color=drawn[0].get_color())
    axes.set_xlabel("relative depth (layer / last layer; 0 = embedding)")
    axes.set_ylabel("normalised error (0 = best layer, 1 = worst)")
    axes.set_title("which depth is most informative, per task (ring: L*)", fontsize=9)
    axes.set_ylim(-0.05, 1.05)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    return figure
