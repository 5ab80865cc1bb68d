"""What a run leaves behind: ``results.json`` (strict JSON), its figures and ``report.html``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from hacknip.report.figures import (
    METRIC_LABELS,
    curve_figure,
    is_classification,
    layer_figure,
    parity_figure,
    roc_figure,
    training_figure,
    tuning_candidates,
    tuning_figure,
    update_ratio_figure,
)
from hacknip.report.html import PageFigure, png_bytes
from hacknip.report.run_page import curve_page, run_page


def strict_json(value: Any) -> str:
    """JSON that strict parsers accept: NaN and infinities (an R² of a one-row fold, say) become null."""
    return json.dumps(_finite(value), indent=2, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def write_results(results: dict[str, Any], out: Path, extra_figures: Sequence[PageFigure] = ()) -> list[Path]:
    """``results.json``, the figures as PNG (parity or ROC, the layer sweep, fine-tuning's epochs) and ``report.html``,
    which shows the same figures and ``extra_figures`` (UMAPs, say)."""
    written, shown = write_run_files(results, out)
    return [*written, write_run_page(out, [*shown, *extra_figures])]


def write_run_files(results: dict[str, Any], out: Path) -> tuple[list[Path], list[PageFigure]]:
    """``results.json`` and the figures as PNG; returns the files and the figures for the page."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json"]
    written[0].write_text(strict_json(results))
    return written, _written_figures(run_figures(results), out, written)


def write_run_page(out: Path, figures: Sequence[PageFigure]) -> Path:
    """``report.html`` of the results.json in ``out``, showing ``figures``."""
    page = out / "report.html"
    page.write_text(run_page(json.loads((out / "results.json").read_text()), figures), encoding="utf-8")
    return page


def run_figures(results: dict[str, Any]) -> list[tuple[str, Figure, str]]:
    """(file name, figure, alt text) of each figure of a run."""
    model = f"{results['backbone']} + {results['head']}"
    if is_classification(results):
        figures = [("roc.png", roc_figure(results), f"ROC curve of each test fold of {model} for {results['target']}")]
    else:
        figures = [("parity.png", parity_figure(results),
                    f"Out-of-fold predicted against true {results['target']} for {model}")]
    if results["per_layer"]:
        figures.append(("layers.png", layer_figure(results),
                        f"Cross-validated {results['metric']} of each layer of {results['backbone']}"))
    if results.get("tuning") and len(tuning_candidates(results["tuning"])) > 1:
        figures.append(("tuning.png", tuning_figure(results),
                        f"Validation {METRIC_LABELS.get(results['metric'], results['metric'])} of each candidate "
                        f"the tune compared, in each fold"))
    if results.get("finetune", {}).get("folds"):
        figures.append(("epochs.png", training_figure(results), "Validation score per epoch of each fine-tuned fold"))
    return figures


def _written_figures(figures: list[tuple[str, Figure, str]], out: Path, written: list[Path]) -> list[PageFigure]:
    """Each figure drawn once: written as PNG to ``out`` and kept for the page."""
    shown = []
    for name, figure, alt in figures:
        png = png_bytes(figure)
        (out / name).write_bytes(png)
        written.append(out / name)
        shown.append(PageFigure(png, alt, name))
    return shown


def write_curve(curve: dict[str, Any], out: Path) -> list[Path]:
    """``curve.json``, ``curve.png``, when update ratios were measured ``update_ratios.png``, and ``report.html``."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "curve.json"]
    written[0].write_text(strict_json(curve))
    figures = [("curve.png", curve_figure(curve), f"{curve['metric']} of {curve['target']} against number of samples")]
    ratios = (curve.get("update_ratios") or {}).get("ratios")
    if ratios:
        labels = {method: curve["methods"][method].get("label", method) for method in ratios}
        figures.append(("update_ratios.png",
                        update_ratio_figure({labels[m]: r for m, r in ratios.items()},
                                            f"{100 * curve['update_ratios']['fraction']:g} %"),
                        "Distribution of per-neuron update ratios of each method"))
    shown = _written_figures(figures, out, written)
    written.append(out / "report.html")
    written[-1].write_text(curve_page(json.loads(written[0].read_text()), shown), encoding="utf-8")
    return written
