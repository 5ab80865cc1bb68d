"""The whole job from Python: :func:`run`, :func:`tune`, :func:`finetune`, :func:`curve` and :func:`load_model`, what
``hacknip run``, ``tune``, ``finetune``, ``curve`` and ``predict`` do on the command line, without progress bars or
printing. (Structures to embeddings, one
step only: :class:`hacknip.Featurizer`.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hacknip.errors import InputError
from hacknip.workflow.results import RunResult
from hacknip.workflow.run import RunConfig

if TYPE_CHECKING:
    from hacknip.finetuning.trainer import FinetuneOptions


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
         seed: int | None = 0, member_subsets: bool = False, **options: Any) -> RunResult:
    """Tune the head's hyperparameters and the layer with Optuna, as ``hacknip tune`` does: nested by default (each
    outer fold tuned on its own training rows), or ``protocol="paper"`` (optimistic, labelled so). The result's
    :attr:`~hacknip.workflow.results.RunResult.params` is the configuration to deploy (``hacknip run --params``).
    ``head="lightgbm,modnet"`` chooses the head inside each training fold too. ``trials=0`` searches nothing: each
    candidate is scored with the head's defaults. ``storage``: an SQLite path or
    any Optuna RDB URL (default ``$HACKNIP_HOME/studies.db``); ``member_subsets``: also tune every non-empty subset
    of the expression's members (``--member-subsets``); ``options`` as for :func:`run`.

    Example::

        result = hacknip.tune("phonons.json.gz", "chgnet", head="modnet", trials=20)
        result.score, result.params
    """
    from hacknip.evaluation.tuning import TuneSettings, storage_url
    from hacknip.evaluation.tuning import tune as tune_job

    settings = TuneSettings(n_trials=trials, patience=patience, protocol=protocol, inner_folds=inner_folds,
                            layers=layers, storage=storage_url(storage), seed=seed, member_subsets=member_subsets)
    return RunResult(tune_job(run_config(data, backbone, head, options), settings))


def finetune(data: str | Path, backbone: str, *, recipe: FinetuneOptions | None = None,
             save_to: str | Path | None = None, checkpoints: str | Path | None = None, **options: Any) -> RunResult:
    """Fine-tune ``backbone`` (``name`` or ``name@L``: truncated after layer L, default the last) end to end with an
    MLP head on each outer training fold and score each test fold, as ``hacknip finetune`` does: the same folds,
    metrics and result fields as :func:`run` (``head`` is ``"finetune"``; ``result.to_dict()["finetune"]`` holds the
    recipe and each fold's epochs). ``recipe`` defaults to the paper's (:class:`hacknip.finetuning.trainer.FinetuneOptions`);
    epoch checkpoints go to ``checkpoints`` (default ``$HACKNIP_HOME/finetune``), so a rerun resumes. ``options`` as
    for :func:`run` (no head options).

    Example::

        from hacknip.finetuning.trainer import FinetuneOptions
        result = hacknip.finetune("phonons.json.gz", "chgnet", recipe=FinetuneOptions(epochs=50, patience=10))
    """
    from hacknip.finetuning.trainer import FinetuneOptions
    from hacknip.workflow.finetune import default_checkpoints
    from hacknip.workflow.finetune import finetune as finetune_job

    not_here = sorted({"head", "head_params", "pooling", "extra_features"} & set(options))
    if not_here:
        raise InputError(f"unknown option(s) for finetune: {', '.join(not_here)}; fine-tuning trains its own MLP head "
                         "on mean-pooled features: set its sizes with recipe=FinetuneOptions(hidden=...)")
    config = run_config(data, backbone, "lightgbm", options)
    recipe = _recipe_with(recipe or FinetuneOptions(), options)
    results = finetune_job(config, recipe, checkpoints=Path(checkpoints or default_checkpoints()),
                           save_to=Path(save_to) if save_to is not None else None)
    return RunResult(results)


def curve(data: str | Path, backbone: str, head: str = "lightgbm", *, fractions: tuple[float, ...] = (0.1, 0.3, 1.0),
          repeats: int = 5, full_repeats: int | None = None, recipe: FinetuneOptions | None = None,
          finetune_backbone: str | None = None, seed: int = 0, n_boot: int = 1000,
          checkpoints: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """The data-efficiency study, as ``hacknip curve`` does: HackNIP (``backbone`` + ``head``) and, when ``recipe``
    is given, fine-tuning, on ``repeats`` seeded subsets of each fraction; returns ``curve.json``'s content (points,
    fits, crossing, update ratios). Write the files with :func:`hacknip.report.write_curve`.

    Example::

        study = hacknip.curve("phonons.json.gz", "chgnet", fractions=(0.1, 1.0), repeats=3, recipe=FinetuneOptions())
        study["crossing"]
    """
    from hacknip.workflow.curve import CurveSettings
    from hacknip.workflow.curve import curve as curve_job

    recipe = _recipe_with(recipe, options) if recipe is not None else None
    settings = CurveSettings(fractions=tuple(fractions), repeats=repeats, full_repeats=full_repeats, finetune=recipe,
                             finetune_backbone=finetune_backbone, seed=seed, n_boot=n_boot)
    return curve_job(run_config(data, backbone, head, options), settings,
                     checkpoints=Path(checkpoints) if checkpoints is not None else None)


def load_model(folder: str | Path):
    """A model saved by ``hacknip run --save`` or ``hacknip finetune --save`` (or :func:`run` / :func:`finetune` with
    ``save_to``), every field validated; predict with its ``predict_structures``. Nothing in the folder is unpickled
    (see docs/security.md).

    Example::

        model = hacknip.load_model("model/")
        table = model.predict_structures([atoms_1, atoms_2])   # a DataFrame: id, predicted (and probability)
    """
    from hacknip.workflow.saved_finetuned import load_saved

    return load_saved(Path(folder))


_FIELDS = {field.name for field in dataclasses.fields(RunConfig)}


def _recipe_with(recipe: FinetuneOptions, options: dict[str, Any]) -> FinetuneOptions:
    """The recipe trains on ``device`` with ``batch_size`` when they are given as options, as on the command line."""
    given = {name: options[name] for name in ("device", "batch_size") if name in options}
    return dataclasses.replace(recipe, **given)


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
