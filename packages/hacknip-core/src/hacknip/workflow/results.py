"""What a run measured, as an object: :class:`RunResult`. ``results.json`` is :meth:`RunResult.to_dict` written as
strict JSON, and :meth:`RunResult.from_json` reads one back."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class RunResult:
    """The scores, chosen layers, per-fold and per-layer results and out-of-fold predictions of ``hacknip run`` or
    ``hacknip tune`` (then also :attr:`params`, the configuration to deploy).

    Example::

        result = hacknip.run("matbench_phonons.json.gz", backbone="chgnet", head="lightgbm")
        result.score, result.best_layer         # e.g. the cross-validated MAE and the layer that gave it
        result.per_layer                        # a DataFrame: every layer's scores
        result.save("runs/phonons")             # results.json and the plots
    """

    def __init__(self, results: dict[str, Any]):
        self._results = results

    @classmethod
    def from_json(cls, path: str | Path) -> RunResult:
        """A ``results.json`` written by ``hacknip run``/``tune`` (or :meth:`save`)."""
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_dict(self) -> dict[str, Any]:
        """Everything, as ``results.json`` holds it (a copy)."""
        return copy.deepcopy(self._results)

    def save(self, folder: str | Path) -> list[Path]:
        """Write ``results.json``, the parity (or ROC) plot, the layer plot and ``report.html`` into ``folder``; returns the
        files."""
        from hacknip.report import write_results

        return write_results(self._results, Path(folder))

    @property
    def task(self) -> str:
        """``"regression"`` or ``"classification"``."""
        return self._results["task_kind"]

    @property
    def metric(self) -> str:
        """The primary metric: ``"mae"`` (regression) or ``"roc_auc"`` (classification)."""
        return self._results["metric"]

    @property
    def score(self) -> float:
        """The primary metric's mean over the test folds (NaN where undefined)."""
        return self._number(f"{self.metric}_mean")

    @property
    def score_std(self) -> float:
        """The primary metric's standard deviation over the test folds."""
        return self._number(f"{self.metric}_std")

    @property
    def scores(self) -> dict[str, float]:
        """Mean and standard deviation over the folds of every metric (``mae_mean``, ``r2_std``, ...)."""
        return {key: self._number(key) for key in self._results
                if key.endswith(("_mean", "_std")) and not key.startswith("dummy_")}

    @property
    def dummy_scores(self) -> dict[str, float]:
        """The same for the dummy model (the training-fold mean, or the positive fraction)."""
        return {key[len("dummy_"):]: self._number(key) for key in self._results if key.startswith("dummy_")}

    @property
    def relative_mae(self) -> float | None:
        """MAE / the dummy's MAE (regression only)."""
        return self._results.get("relative_mae")

    @property
    def best_layer(self) -> int | dict[str, list[int]]:
        """The chosen layer, or ``{backbone: layers}`` for several backbones or layers."""
        return self._results["best_layer"]

    @property
    def per_layer(self) -> pd.DataFrame:
        """One row per swept layer and backbone, with its scores (empty when the layers were fixed)."""
        import pandas as pd

        return pd.DataFrame(self._results["per_layer"])

    @property
    def folds(self) -> pd.DataFrame:
        """One row per test fold of the chosen configuration, with every metric."""
        import pandas as pd

        return pd.DataFrame(self._results["folds"])

    @property
    def predictions(self) -> pd.DataFrame:
        """Each sample's id, true value, test fold and out-of-fold prediction (and P(y=1) for classification)."""
        import pandas as pd

        return pd.DataFrame(self._results["predictions"])

    @property
    def skipped(self) -> list[dict[str, str]]:
        """Rows left out (``on_error="skip"``), each with its row, id and reason."""
        return copy.deepcopy(self._results["skipped"])

    @property
    def flagged(self) -> list[dict[str, str]]:
        """Rows kept with a warning (the same structure under two ids, an unconverged relaxation, ...)."""
        return copy.deepcopy(self._results["flagged"])

    @property
    def leaderboard(self) -> dict[str, Any] | None:
        """The rank on the Matbench leaderboard, for a Matbench regression task."""
        return copy.deepcopy(self._results.get("leaderboard"))

    @property
    def params(self) -> dict[str, Any] | None:
        """``hacknip tune``'s configuration to deploy (``params.json``); None for a run."""
        return copy.deepcopy(self._results.get("params"))

    def _number(self, key: str) -> float:
        value = self._results.get(key)
        return float("nan") if value is None else float(value)

    def __repr__(self) -> str:
        layer = self.best_layer if isinstance(self.best_layer, int) else "fixed layers"
        return (f"RunResult({self._results['backbone']} -> {self._results['head']} on {self._results['n_samples']} "
                f"samples: {self.metric} {self.score:.4g} ± {self.score_std:.2g}, layer {layer})")
