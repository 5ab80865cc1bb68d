"""The whole job from Python: :func:`run`, :func:`tune` and :func:`load_model`, what ``hacknip run``, ``hacknip tune``
and ``hacknip predict`` do on the command line, without progress bars or printing. (Structures to embeddings, one
step only: :class:`hacknip.Featurizer`.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hacknip.errors import InputError
from hacknip.workflow.results import RunResult
from hacknip.workflow.run import RunConfig


def run(data: str | Path, backbone: str, head: str = "lightgbm", *, save_to: str | Path | None = None,
        **options: Any) -> RunResult:
    """Featurise ``data`` (through the feature store), sweep the layers of each backbone without ``@LAYERS``,
    cross-validate ``head`` at the best one and score the dummy model, as ``hacknip run`` does.

    ``options`` are the command line's, by their Python names: ``pooling="mean+max"``, ``target``, ``split="random"``
    or ``"group:formula"``, ``target_transform="log10"``, ``extra_features=["temperature"]``, ``head_params={...}``,
    ``limit``, ``store``, ``on_error="skip"``, ``disordered="approximant"``, ``task``, ``device``, ``batch_size``, ...
    (every field of :class:`hacknip.workflow.run.RunConfig`). With ``save_to``, the chosen configuration is also fitted
    on every row and saved there for :func:`load_model`.

    Example::

        result = hacknip.run("../shared/data/matbench/matbench_phonons.json.gz", "chgnet", head="ridge", limit=200)
        print(result.score, result.best_layer)
        result.save("runs/phonons-chgnet")
    """
    from hacknip.workflow.run import run as run_job

    config = run_config(data, backbone, head, options)
    return RunResult(run_job(config, save_to=Path(save_to) if save_to is not None else None))


def tune(data: str | Path, backbone: str, head: str = "modnet", *, trials: int = 50, patience: int = 10,
         protocol: str = "nested", layers: list[int] | None = None, inner_folds: int = 3, storage: str | None = None,
         seed: int | None = 0, **options: Any) -> RunResult:
    """Tune the head's hyperparameters and the layer with Optuna, as ``hacknip tune`` does: nested by default (each
    outer fold tuned on its own training rows), or ``protocol="paper"`` (optimistic, labelled so). The result's
    :attr:`~hacknip.workflow.results.RunResult.params` is the configuration to deploy (``hacknip run --params``).
    ``storage``: an SQLite path or any Optuna RDB URL (default ``$HACKNIP_HOME/studies.db``); ``options`` as for
    :func:`run`.

    Example::

        result = hacknip.tune("phonons.json.gz", "chgnet", head="modnet", trials=20)
        result.score, result.params
    """
    from hacknip.evaluation.tuning import TuneSettings, storage_url
    from hacknip.evaluation.tuning import tune as tune_job

    if trials < 1 or patience < 1:
        raise InputError(f"trials and patience must be at least 1, got trials={trials}, patience={patience}")
    settings = TuneSettings(n_trials=trials, patience=patience, protocol=protocol, inner_folds=inner_folds,
                            layers=layers, storage=storage_url(storage), seed=seed)
    return RunResult(tune_job(run_config(data, backbone, head, options), settings))


def load_model(folder: str | Path):
    """A model saved by ``hacknip run --save`` (or :func:`run` with ``save_to``), every field validated; predict with
    its ``predict_structures``. Nothing in the folder is unpickled (see docs/security.md).

    Example::

        model = hacknip.load_model("model/")
        table = model.predict_structures([atoms_1, atoms_2])   # a DataFrame: id, predicted (and probability)
    """
    from hacknip.workflow.saved_model import load_model as load

    return load(Path(folder))


_FIELDS = {field.name for field in dataclasses.fields(RunConfig)}


def run_config(data: str | Path, backbone: str, head: str, options: dict[str, Any]) -> RunConfig:
    """A :class:`RunConfig` from keyword options, with one clear error for a name it does not have."""
    unknown = sorted(set(options) - _FIELDS)
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)}; the options are {', '.join(sorted(_FIELDS - {'data'}))}")
    options = dict(options)
    if isinstance(options.get("extra_features"), str):
        options["extra_features"] = [c.strip() for c in options["extra_features"].split(",") if c.strip()]
    if options.get("target_transform") == "none":
        options["target_transform"] = None
    for name in ("targets", "store", "folds_file", "leaderboard_file"):
        if options.get(name) is not None:
            options[name] = Path(options[name])
    return RunConfig(data=Path(data), backbone=backbone, head=head, **options)
