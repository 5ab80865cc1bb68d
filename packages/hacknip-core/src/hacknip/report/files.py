"""What a run leaves behind: ``results.json`` (strict JSON), its figures and ``report.html``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from hacknip.report.figures import curve_plot, is_classification, layer_plot, parity_plot, roc_plot, update_ratio_plot


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


def write_results(results: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json"]
    written[0].write_text(strict_json(results))
    if is_classification(results):
        written.append(roc_plot(results, out / "roc.png"))
    else:
        written.append(parity_plot(results, out / "parity.png"))
    if results["per_layer"]:
        written.append(layer_plot(results, out / "layers.png"))
    return written


def write_curve(curve: dict[str, Any], out: Path) -> list[Path]:
    """``curve.json``, ``curve.png`` and, when update ratios were measured, ``update_ratios.png``."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "curve.json"]
    written[0].write_text(strict_json(curve))
    written.append(curve_plot(curve, out / "curve.png"))
    ratios = (curve.get("update_ratios") or {}).get("ratios")
    if ratios:
        labels = {method: curve["methods"][method].get("label", method) for method in ratios}
        written.append(update_ratio_plot({labels[m]: r for m, r in ratios.items()}, out / "update_ratios.png",
                                         f"{100 * curve['update_ratios']['fraction']:g} %"))
    return written


