"""Which depth is most informative, across tasks (the paper's Fig. 5a): each run's layer sweep as a depth curve,
min–max normalised so that runs on different targets and scales share one axis, and the best layer L* of each.

Normalisation, fixed: within one run and one backbone, ``0`` is the best layer and ``1`` the worst, i.e.
``(score - best) / (worst - best)`` for an error (MAE, RMSE) and ``(best - score) / (best - worst)`` for a score where
higher is better (ROC-AUC, accuracy). Relative depth is ``layer / last swept layer`` (0 = the embedding layer), so
backbones with different numbers of layers share the axis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hacknip.errors import InputError

HIGHER_IS_BETTER = frozenset({"roc_auc", "accuracy", "r2"})


@dataclass
class DepthCurve:
    """One backbone's layer sweep in one run."""

    run: str
    task: str
    backbone: str
    metric: str
    layers: np.ndarray
    scores: np.ndarray
    stds: np.ndarray

    @property
    def relative_depth(self) -> np.ndarray:
        last = self.layers.max()
        return self.layers / last if last > 0 else np.zeros_like(self.layers, dtype=float)

    @property
    def normalised(self) -> np.ndarray:
        """0 at the best layer, 1 at the worst (all 0 when every layer scores the same)."""
        best, worst = (self.scores.max(), self.scores.min()) if self.higher_is_better else \
            (self.scores.min(), self.scores.max())
        span = worst - best
        return np.zeros_like(self.scores) if span == 0 else (self.scores - best) / span

    @property
    def higher_is_better(self) -> bool:
        return self.metric in HIGHER_IS_BETTER

    @property
    def best_index(self) -> int:
        return int(np.argmax(self.scores) if self.higher_is_better else np.argmin(self.scores))

    def best_layer_row(self) -> dict[str, Any]:
        """L*, its relative depth, its score, and how much better it is than the last layer (in % of the last's)."""
        best, last = self.best_index, int(np.argmax(self.layers))
        gain = (self.scores[last] - self.scores[best]) * (-1 if self.higher_is_better else 1) + 0.0  # no "-0.0"
        return {"run": self.run, "task": self.task, "backbone": self.backbone, "metric": self.metric,
                "best_layer": int(self.layers[best]), "last_layer": int(self.layers[last]),
                "relative_depth": float(self.relative_depth[best]), "best_score": float(self.scores[best]),
                "last_score": float(self.scores[last]),
                "gain_over_last_percent": float(100 * gain / abs(self.scores[last])) if self.scores[last] else None}


def depth_curves(results: dict[str, Any], run: str) -> list[DepthCurve]:
    """The depth curve of each backbone swept in a run's ``results.json`` (none when the run swept no layers, e.g. it
    was given one layer or fine-tuned)."""
    metric = results.get("metric")
    sweep = results.get("per_layer") or []
    if sweep and not metric:
        raise InputError(f"{run}: results.json has a layer sweep but no 'metric'; write it again with hacknip run")
    curves = []
    for backbone in dict.fromkeys(entry["backbone"] for entry in sweep):
        entries = sorted((e for e in sweep if e["backbone"] == backbone), key=lambda e: e["layer"])
        if len(entries) < 2:
            continue
        scores = [e.get(f"{metric}_mean") for e in entries]
        if any(s is None for s in scores):
            raise InputError(f"{run}: a layer of {backbone} in results.json has no {metric}_mean")
        curves.append(DepthCurve(run, task_name(results), backbone, metric, np.array([e["layer"] for e in entries]),
                                 np.array(scores, dtype=float),
                                 np.array([e.get(f"{metric}_std") or 0.0 for e in entries], dtype=float)))
    return curves


def task_name(results: dict[str, Any]) -> str:
    """The Matbench task, or the data file's name and target."""
    if results.get("task"):
        return str(results["task"])
    data = str(results.get("data", "?")).replace("\\", "/").rsplit("/", 1)[-1]
    return f"{data}: {results.get('target', '?')}"
