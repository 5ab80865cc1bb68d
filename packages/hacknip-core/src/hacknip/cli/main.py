"""The ``hacknip`` command group and its commands. Heavy libraries load inside commands, so ``hacknip list`` stays
fast."""

from __future__ import annotations

import json
import os
import signal
import warnings
from contextlib import nullcontext
from pathlib import Path

import click

from hacknip import __version__
from hacknip.cli.analyze import analyze
from hacknip.cli.command_log import command_log, note
from hacknip.cli.common import (
    RecordingGroup,
    check_output_file,
    check_outputs,
    command_line,
    data_options,
    epoch_logger,
    finetune_options,
    friendly_errors,
    jobs_option,
    model_config,
    model_options,
    output_folder,
    parse_key_values,
    progress_bars,
    read_params,
    recipe_from_options,
    resolve_jobs,
    run_config,
    run_name,
    scoring_config,
    scoring_options,
    set_debug,
    store_option,
    write_and_print,
)
from hacknip.cli.report_command import report


@click.group(cls=RecordingGroup)
@click.version_option(__version__, prog_name="hacknip")
@click.option("--debug", is_flag=True, help="Show the full traceback of every error.")
def cli(debug):
    """Structure embeddings from pretrained interatomic potentials, and shallow models on top."""
    set_debug(debug)


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(as_json):
    """Installed backbones, descriptors, heads and executors (without loading any model)."""
    from hacknip.plugins.registry import backbone_specs, descriptor_specs, executor_specs, head_specs

    backbones, heads, executors = backbone_specs(), head_specs(), executor_specs()
    descriptors = descriptor_specs()
    if as_json:
        click.echo(json.dumps({
            "backbones": [_backbone_row(spec) for spec in backbones.values()],
            "heads": [{"name": s.name, "package": s.package, "version": s.package_version,
                       "task_kinds": sorted(s.task_kinds), "description": s.description} for s in heads.values()],
            "executors": [{"name": s.name, "package": s.package, "version": s.package_version,
                           "description": s.description} for s in executors.values()],
            "descriptors": [{"name": s.name, "package": s.package, "version": s.package_version, "width": s.width,
                             "description": s.description} for s in descriptors.values()],
        }, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    wide = console.width >= 120  # narrower: the package and verified columns go (hacknip list --json has them)
    table = Table(title="Backbones")
    # a name is what the user types: never cut it (other columns wrap or go first)
    table.add_column("name", no_wrap=True, min_width=max((len(name) for name in backbones), default=4))
    columns = ("package", "cutoff Å", "layers", "widths", "supercells", "fine-tune", "relax batch", "verified") if wide \
        else ("cutoff Å", "layers", "widths", "supercells", "fine-tune")
    for column in columns:
        table.add_column(column)
    for spec in backbones.values():
        row = _backbone_row(spec)
        supercells = (f"needed ({spec.supercell_rule})" if wide else "needed") if spec.needs_supercell else "no"
        cells = [f"{spec.cutoff:g}", str(row["n_layers"]), _widths_text(spec.layer_widths), supercells,
                 "yes" if spec.trainable else "no"]
        if wide:
            cells = [f"{spec.package} {spec.package_version}", *cells, "yes" if spec.batched_forces else "no",
                     "yes" if spec.verified else "[yellow]no[/]"]
        table.add_row(spec.name, *cells)
    heads_table = Table(title="Heads")
    heads_table.add_column("name", no_wrap=True, min_width=max((len(name) for name in heads), default=4))
    for column in ("package", "tasks", "description"):
        heads_table.add_column(column)
    for spec in heads.values():
        heads_table.add_row(spec.name, f"{spec.package} {spec.package_version}", ", ".join(sorted(spec.task_kinds)),
                            escape(spec.description))
    executors_table = Table(title="Executors (--executor)")
    executors_table.add_column("name", no_wrap=True, min_width=max((len(name) for name in executors), default=4))
    for column in ("package", "description"):
        executors_table.add_column(column)
    for spec in executors.values():
        executors_table.add_row(spec.name, f"{spec.package} {spec.package_version}", escape(spec.description))
    descriptors_table = Table(title="Descriptors (hand-crafted, one vector per structure: chgnet@all+NAME)")
    descriptors_table.add_column("name", no_wrap=True, min_width=max((len(name) for name in descriptors), default=4))
    for column in ("package", "width", "description"):
        descriptors_table.add_column(column)
    for spec in descriptors.values():
        descriptors_table.add_row(spec.name, f"{spec.package} {spec.package_version}", str(spec.width),
                                  escape(spec.description))
    console.print(table)
    if descriptors:
        console.print(descriptors_table)
    console.print(heads_table)
    console.print(executors_table)
    if not backbones:
        console.print("No backbone plugins installed: pip install hacknip-chgnet (or hacknip-sevennet, ...)")


def _backbone_row(spec) -> dict:
    return {"name": spec.name, "package": spec.package, "version": spec.package_version, "library": spec.library,
            "cutoff": spec.cutoff, "n_layers": len(spec.layer_widths), "layer_widths": list(spec.layer_widths),
            "needs_supercell": spec.needs_supercell, "supercell_rule": spec.supercell_rule if spec.needs_supercell else None,
            "verified": spec.verified, "safe_checkpoints": spec.safe_checkpoints, "trainable": spec.trainable,
            "batched_forces": spec.batched_forces, "description": spec.description}


def _widths_text(widths) -> str:
    return f"{len(widths)} × {widths[0]}" if len(set(widths)) == 1 else " ".join(map(str, widths))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json):
    """Installed plugin packages and the hooks each implements."""
    from hacknip.plugins.manager import get_plugins, pm

    rows = []
    for info in get_plugins():
        plugin = pm.get_plugin(info.name)
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        rows.append({"name": info.name, "package": info.package, "version": info.version, "hooks": hooks})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            click.echo(f"{row['name']}  ({row['package']} {row['version']}): {', '.join(row['hooks'])}")


@cli.command()
@data_options
@click.option("--log", "log_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write what it prints, its progress as plain lines and how it ended to this file (replaced).")
@friendly_errors
def featurize(log_file, **options):
    """Featurise a dataset into the feature store (every layer, resumable, nothing computed twice)."""
    from rich.console import Console

    from hacknip.store import FeatureStore
    from hacknip.workflow.run import checked_backbones, featurize_members, load_data

    options["backbone_options"] = parse_key_values(options["backbone_options"], "--backbone-option")
    config = run_config(**options)
    FeatureStore(config.store).check_usable()
    backbones = checked_backbones(config)
    if log_file is not None:
        check_output_file(log_file, "--log", "a file")
    with command_log(log_file, command_line()) if log_file is not None else nullcontext():
        with progress_bars() as start:
            dataset = load_data(config, start)
            dataset, members = featurize_members(dataset, backbones, config, FeatureStore(config.store), start)
        console = Console()
        for item in members:
            console.print(f"{item.member.name}: {item.computed} computed, {item.reused} already stored "
                          f"({item.featurize_seconds:.1f} s) → {item.features.path}")
        for entry in dataset.skipped:
            console.print(f"[yellow]skipped[/] {entry.row} ({entry.id}): {entry.reason}")


@cli.group()
def store():
    """Look after the feature store."""


@store.command(name="check")
@store_option("--store", "store_path")
@friendly_errors
def store_check(store_path):
    """Read every record of every backbone and check it against its checksum; move damaged shards aside (their
    structures are computed again by the next run) and write each index again. Exit status 1 when any was damaged."""
    from hacknip.store import FeatureStore

    features_store = FeatureStore(store_path)
    if not features_store.exists():
        raise click.ClickException(f"{features_store.root}: no feature store there")
    damaged_total = 0
    for folder, identity in features_store.folders():
        if identity is None:
            click.echo(f"{folder}: no readable identity.json (it is written again by the next run of that backbone)")
            continue
        readable, damaged = features_store.open(identity).check()
        damaged_total += len(damaged)
        click.echo(f"{folder.name}: {readable} shards readable" + (f", {len(damaged)} damaged, moved to "
                                                                   f"{folder.where('damaged')}" if damaged else ""))
    if damaged_total:
        raise SystemExit(1)


@store.command(name="compact")
@store_option("--store", "store_path")
@friendly_errors
def store_compact(store_path):
    """Merge each backbone's small shards (under 64 MB) into shards of up to 1 GB and write its index again. Writers
    do this themselves once 16 small shards pile up; safe while others read or write the store."""
    from hacknip.store import FeatureStore

    features_store = FeatureStore(store_path)
    if not features_store.exists():
        raise click.ClickException(f"{features_store.root}: no feature store there")
    for folder, identity in features_store.folders():
        if identity is None:
            click.echo(f"{folder}: no readable identity.json (it is written again by the next run of that backbone)")
            continue
        features = features_store.open(identity)
        before = features.shard_count
        report = features.compact()
        features.reindex()
        click.echo(f"{folder.name}: {before} shards -> {features.shard_count} ({report.merged} merged into "
                   f"{report.written}, {len(features)} structures, {report.seconds:.1f} s)")


@cli.command()
@data_options(backbone_required=False)
@model_options
@click.option("--params", "params_file", type=click.Path(exists=True, path_type=Path),
              help="Replay a tuned configuration (params.json from hacknip tune): its backbones and layers, head, "
                   "pooling and params.")
@click.option("--save", "save_to", type=click.Path(path_type=Path),
              help="Also fit the chosen configuration on every row and save it to this folder (for hacknip predict).")
@click.option("--preset", type=click.Choice(["paper", "all-layers"]), default="paper", show_default=True,
              help="Layers, pooling and molecules' relaxation where --backbone, --pooling and --relax/--no-relax "
                   "leave them open. paper: sweep each backbone's layers, mean pooling, relax molecules (the paper's "
                   "protocol); all-layers: every layer concatenated, mean+max+std (CHGNet on phonons: 45.6 against "
                   "71.9 cm^-1), molecules unrelaxed (relaxing with CHGNet lowered ROC-AUC on ClinTox).")
@friendly_errors
def run(out, params_file, save_to, overwrite, **options):
    """Featurise, sweep the layers, cross-validate a head, and report (results.json, parity.png or roc.png, layers.png)."""
    from hacknip.workflow.run import run as run_pipeline

    config = model_config(options, read_params(params_file))
    out = output_folder(out, config)
    check_outputs(out, save_to, config.store, overwrite)
    with command_log(out / "run.log", command_line()):
        with progress_bars() as start:
            results = run_pipeline(config, start, save_to=save_to)
        write_and_print(results, out, config.data, umap_of=config if options["umap"] else None, log=out / "run.log")


@cli.command()
@data_options
@scoring_options
@finetune_options
@click.option("--save", "save_to", type=click.Path(path_type=Path),
              help="Also fine-tune on every row and save that model to this folder (for hacknip predict).")
@friendly_errors
def finetune(out, overwrite, save_to, checkpoints, **options):
    """Fine-tune a backbone end to end with an MLP head (the paper's recipe) on the same folds as hacknip run, and
    report the same way (results.json, parity.png or roc.png; epochs in finetune.log). Rerun to resume."""
    from hacknip.workflow.finetune import default_checkpoints
    from hacknip.workflow.finetune import finetune as finetune_pipeline

    recipe = recipe_from_options(options)
    config = scoring_config(options)
    out = out or Path("runs") / run_name(config.data, config.backbone, "finetune")
    check_outputs(out, save_to, config.store, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    with progress_bars() as start:
        results = finetune_pipeline(config, recipe, start, checkpoints or default_checkpoints(),
                                    epoch_logger(start, out / "finetune.log"), save_to)
    write_and_print(results, out, config.data)


@cli.command()
@data_options
@scoring_options
@finetune_options
@click.option("--head", default="lightgbm", show_default=True, help="HackNIP's shallow model (see hacknip list).")
@click.option("--head-param", "head_params", multiple=True, help="Head hyperparameter KEY=VALUE (repeatable).")
@click.option("--pooling", default="mean", show_default=True, help="HackNIP's pooling (mean, max, std, ... joined by '+').")
@click.option("--fractions", default="0.1,0.3,1", show_default=True, help="Fractions of the data, comma-separated.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Seeded random subsets per fraction, each scored by 5-fold cross-validation.")
@click.option("--full-repeats", type=click.IntRange(min=1),
              help="Repeats of the full data (fraction 1; they differ only by their folds)  [default: --repeats]")
@click.option("--finetune/--no-finetune", "with_finetune", default=False, show_default=True,
              help="Also fine-tune the backbone on every subset (the recipe options apply).")
@click.option("--finetune-backbone", help="What --finetune trains, NAME@L  [default: the first --backbone, up to its "
                                          "last layer]")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples for the crossing's uncertainty.")
@jobs_option("HackNIP's layer sweep and cross-validation on each subset; fine-tuning runs one at a time")
@friendly_errors
def curve(out, overwrite, checkpoints, head, head_params, pooling, fractions, repeats, full_repeats, with_finetune,
          finetune_backbone, n_boot, jobs, **options):
    """The data-efficiency study: HackNIP (and, with --finetune, fine-tuning) on growing random subsets; writes
    curve.json, curve.png (error against data size, fits, crossing) and update_ratios.png. Rerun to resume."""
    from rich.console import Console

    from hacknip.report import write_curve
    from hacknip.workflow.curve import CurveSettings
    from hacknip.workflow.curve import curve as curve_pipeline

    recipe = recipe_from_options(options)
    try:
        parsed = tuple(float(f) for f in fractions.split(",") if f.strip())
    except ValueError:
        raise click.BadParameter("--fractions takes numbers such as 0.01,0.1,1") from None
    settings = CurveSettings(fractions=parsed, repeats=repeats, full_repeats=full_repeats,
                             finetune=recipe if with_finetune else None, finetune_backbone=finetune_backbone,
                             seed=recipe.seed, n_boot=n_boot).check()
    config = scoring_config({**options, "head": head, "pooling": pooling})
    config.head_params = parse_key_values(head_params, "--head-param")
    config.jobs = resolve_jobs(jobs)
    out = out or Path("runs") / run_name(config.data, config.backbone, f"curve-{head}")
    check_outputs(out, None, config.store, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    console = Console()

    def on_point(point, reused: bool) -> None:
        line = (f"{point.method} fraction {point.fraction:g} repeat {point.repeat + 1}: {point.n_samples} samples, "
                + ", ".join(f"{k} {v:.4g}" for k, v in point.scores.items() if k.endswith("_mean"))
                + (" (stored earlier)" if reused else f" ({point.seconds:.0f} s)"))
        with open(out / "curve.log", "a", encoding="utf-8") as log:
            log.write(line + "\n")

    with progress_bars() as start:
        results = curve_pipeline(config, settings, start, checkpoints, on_point, epoch_logger(start, out / "curve.log"))
    results.setdefault("provenance", {})["command"] = command_line()
    written = write_curve(results, out)
    _print_curve(results, console)
    console.print("wrote " + ", ".join(str(path) for path in written))


def _print_curve(results: dict, console) -> None:
    import numpy as np
    from rich.table import Table

    metric = results["metric"]
    table = Table(title=f"{results['backbone']} on {Path(results['data']).name}: {metric} against data size")
    for column in ("method", "fraction", "samples", f"{metric} mean ± std over repeats"):
        table.add_column(column)
    for entry in results["methods"].values():
        for fraction in results["fractions"]:
            values = [p[metric] for p in entry["points"] if p["fraction"] == fraction]
            sizes = {p["n_samples"] for p in entry["points"] if p["fraction"] == fraction}
            table.add_row(entry["label"], f"{fraction:g}", ",".join(map(str, sorted(sizes))),
                          f"{np.mean(values):.4g} ± {np.std(values):.2g}")
    console.print(table)
    crossing = results.get("crossing")
    if crossing and crossing.get("n") is not None:
        band = f" (16-84 %: {crossing['low']:.3g}-{crossing['high']:.3g})" if crossing.get("low") is not None else ""
        console.print(f"the fitted curves cross at N ≈ {crossing['n']:.3g} samples{band}")
    elif crossing:
        console.print("the fitted curves do not cross within the measured sizes")


@cli.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="New structures: CSV/parquet with a CIF column, extxyz/ASE db, or a folder of CIF/POSCAR + CSV of ids.")
@click.option("--target", help="A column of known values: predictions are then also scored.")
@click.option("--structure-column", default="cif", show_default=True, help="Column holding CIF text (tables).")
@click.option("--id-column", help="Column holding sample ids (tables) or file names (folders).")
@click.option("--targets", type=click.Path(exists=True, path_type=Path), help="CSV of ids (and values) for a folder input.")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="On a bad row: stop with an error naming it, or skip it and list it.")
@click.option("--disordered", type=click.Choice(["refuse", "approximant"]),
              help="Partially occupied sites: refuse, or order an approximant  [default: as the model was trained]")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Structures per forward pass.")
@click.option("--device", default="cpu", show_default=True, help="torch device for the backbone.")
@store_option("--store", "store_path")
@click.option("--out", type=click.Path(path_type=Path), default=Path("predictions.csv"), show_default=True,
              help="CSV of id and prediction (and probability for classification).")
@click.option("--trust-checkpoint", is_flag=True,
              help="Load a checkpoint file the model names even where its plugin unpickles it (which can run code): "
                   "only for a model folder you trust. Its sha256 is checked either way.")
@friendly_errors
def predict(model_dir, data, target, structure_column, id_column, targets, on_error, disordered, batch_size, device,
            store_path, out, trust_checkpoint):
    """Predict with a model saved by hacknip run --save or hacknip finetune --save (refuses a backbone that differs
    from the saved one)."""
    import pandas as pd
    from rich.console import Console

    from hacknip.data.read import is_molecule_input
    from hacknip.data.structures import UNLABELLED
    from hacknip.evaluation.crossval import METRICS
    from hacknip.store import FeatureStore
    from hacknip.workflow.run import parsed_cache_file
    from hacknip.workflow.saved_finetuned import SavedFinetuned, load_saved
    from hacknip.workflow.saved_model import read_prediction_data

    model = load_saved(model_dir)
    check_output_file(out)
    features_store = FeatureStore(store_path)
    features_store.check_usable()
    if "geometries" not in model.model and is_molecule_input(data, structure_column):
        click.echo(f"warning: {model_dir} does not record how its molecules' geometries were made (saved before "
                   "hacknip recorded it): predicting on RDKit's ETKDG conformers, unrelaxed; if it was trained on "
                   "relaxed or MMFF94 geometries, save it again with this hacknip", err=True)
    with progress_bars() as start:
        dataset = read_prediction_data(model, data, store=features_store, device=device,
                                       trust_checkpoints=trust_checkpoint, progress=start, target=target or UNLABELLED,
                                       structure_column=structure_column, id_column=id_column, targets=targets,
                                       on_error=on_error, disordered=disordered or model.model.get("disordered", "refuse"),
                                       parsed_cache=parsed_cache_file(store_path))
        if isinstance(model, SavedFinetuned):
            dataset, predictions = model.predict_dataset(dataset, batch_size, device, on_error, start,
                                                         trust_checkpoints=trust_checkpoint)
        else:
            dataset, X = model.features(dataset, features_store, batch_size, device, on_error, start, data, targets,
                                        trust_checkpoints=trust_checkpoint)
            predictions = model.predict(X)
    table = pd.DataFrame({"id": dataset.ids, **({"true": dataset.targets} if target else {}), **predictions})
    table.to_csv(out, index=False)
    console = Console()
    console.print(f"{len(table)} predictions of {model.model['target']} → {out}")
    if target:
        scored = predictions.get("probability", predictions["predicted"])
        scores = METRICS[model.task](dataset.targets, scored)
        console.print(", ".join(f"{name} {value:.4g}" for name, value in scores.items()))
    for entry in dataset.skipped:
        console.print(f"[yellow]skipped[/] {entry.row} ({entry.id}): {entry.reason}")


@cli.command()
@data_options
@model_options
@click.option("--protocol", type=click.Choice(["nested", "paper"]), default="nested", show_default=True,
              help="nested: tune inside each outer training fold (honest). paper: score trials on the outer test folds "
                   "(optimistic, labelled so).")
@click.option("--trials", "n_trials", default=50, show_default=True,
              help="Trials per study (per layer, per fold); 0: no search, score each candidate layer and member subset "
                   "with the head's default hyperparameters and keep the best by validation score.")
@click.option("--patience", default=10, show_default=True, help="Stop a study after this many trials without improvement.")
@click.option("--layers", "layers_text", help="Candidate layers, e.g. 3,4,5 (default: L*-2..L*+2 around the swept best).")
@click.option("--inner-folds", default=3, show_default=True, help="Validation folds inside each training fold (nested).")
@click.option("--storage", help="Optuna storage: an SQLite file path or any RDB URL shared by workers "
                                "[default: $HACKNIP_HOME/studies.db]; rerun the same command to resume.")
@click.option("--seed", default=0, show_default=True, help="Sampler seed; give each worker sharing a storage its own.")
@click.option("--member-subsets", is_flag=True,
              help="Also tune each non-empty subset of --backbone's members (chgnet@all+matminer:modnet: CHGNet "
                   "alone, the descriptors alone, both) and keep, per fold, the one its validation scores best.")
@friendly_errors
def tune(out, overwrite, protocol, n_trials, patience, layers_text, inner_folds, storage, seed, member_subsets,
         **options):
    """Tune the head's hyperparameters and the layer with Optuna; report honest (nested) scores and params.json."""
    from rich.console import Console

    from hacknip.evaluation.tuning import TuneSettings, storage_url
    from hacknip.evaluation.tuning import tune as tune_pipeline

    config = model_config(options)
    out = output_folder(out, config)
    check_outputs(out, None, config.store, overwrite)
    settings = TuneSettings(n_trials=n_trials, patience=patience, protocol=protocol, inner_folds=inner_folds,
                            layers=_parse_layer_list(layers_text), storage=storage_url(storage), seed=seed,
                            member_subsets=member_subsets)
    _quiet_optuna()
    with command_log(out / "tune.log", command_line()):
        with progress_bars() as start:
            results = tune_pipeline(config, settings, start)
        write_and_print(results, out, config.data, {"params.json": results["params"]},
                        umap_of=config if options["umap"] else None, log=out / "tune.log")
        Console().print(("[bold red]" if results["tuning"]["optimistic"] else "[green]") + results["tuning"]["note"])


def _quiet_optuna() -> None:
    """Optuna logs every trial at INFO; the progress bars say as much."""
    try:
        import optuna
    except ImportError:
        return  # tune says how to install it
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _parse_layer_list(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: write layers as 3,4,5", param_hint="--layers") from None


cli.add_command(report)
cli.add_command(analyze)


def _terminate(signum, frame):
    raise KeyboardInterrupt  # so that featurisation stores its finished batches, as on Ctrl-C


def _show_warning(message, category, filename, lineno, file=None, line=None):
    text = f"warning: {' '.join(str(message).split())}"
    click.echo(text, err=True)
    note(text)


def main():
    # OpenMP threads that spin while waiting (the default) slow torch and LightGBM 15-20x as soon as another
    # process uses a core (measured on 2-core machines); passive waiting costs nothing when the cores are free.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    signal.signal(signal.SIGTERM, _terminate)
    warnings.showwarning = _show_warning
    cli()
