"""What the commands share: error reporting, progress display, the option groups, and output folders."""

from __future__ import annotations

import functools
import json
import re
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import click

from hacknip.cli.command_log import active_log, terminal
from hacknip.errors import InputError
from hacknip.plugins.head import merge_head_params

_debug = False
"""--debug: show the traceback of every error, including those written for people."""


class StoreLocation(click.ParamType):
    """A feature store: a folder, or an fsspec URL (``s3://bucket/hacknip``) kept as it is."""

    name = "FOLDER|URL"

    def convert(self, value, param, ctx):
        if isinstance(value, Path) or "://" not in str(value):
            return Path(value)
        return str(value)


def store_option(*names: str):
    return click.option(*(names or ("--store",)), type=StoreLocation(), envvar="HACKNIP_STORE",
                        help="Feature store: a folder, or an fsspec URL such as s3://bucket/hacknip (pip install "
                             "'hacknip-core[remote]' s3fs)  [default: $HACKNIP_HOME/features; $HACKNIP_STORE]")


def set_debug(debug: bool) -> None:
    global _debug
    _debug = debug


def friendly_errors(command):
    """Problems a user can fix (:class:`HacknipError`, a file that cannot be read or written, a missing optional
    library) become one clear line and exit status 1; anything else is a bug and keeps its traceback. An interrupted
    featurisation or tuning says what it kept."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from hacknip.errors import HacknipError, Interrupted

        try:
            return command(*args, **kwargs)
        except Interrupted as interrupted:
            click.echo(f"\n{interrupted}", err=True)
            raise SystemExit(130) from None
        except (HacknipError, OSError, ImportError) as error:
            if _debug:
                raise
            raise click.ClickException(_one_line(error)) from error

    return wrapper


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror or error}"
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(str(text).split())


BACKBONE_HELP = "Backbone(s): 'chgnet', 'chgnet@4', 'chgnet@1-4', 'sevennet+chgnet', 'sevennet:/path/model.pth'."


def data_options(command=None, *, backbone_required: bool = True):
    """Options shared by every command that reads a dataset. ``@data_options(backbone_required=False)``: a command
    that can take its backbones from elsewhere (``run --params``) and checks them itself."""
    if command is None:
        return functools.partial(data_options, backbone_required=backbone_required)
    backbone_help = BACKBONE_HELP if backbone_required else f"{BACKBONE_HELP}  [default with --params: its backbones]"
    options = [
        click.option("--data", "data", required=True, type=click.Path(exists=True, path_type=Path),
                     help="matbench_*.json.gz, CSV/parquet with a CIF column, extxyz/ASE db, or a folder of CIF/POSCAR."),
        click.option("--backbone", "-b", required=backbone_required, help=backbone_help),
        click.option("--target", help="Target column / info key (default: the only numeric one, or Matbench's)."),
        click.option("--structure-column", default="cif", show_default=True, help="Column holding CIF text (tables)."),
        click.option("--id-column", help="Column holding sample ids (tables) or file names (folders)."),
        click.option("--targets", type=click.Path(exists=True, path_type=Path), help="Targets CSV for a folder input."),
        click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
                     help="On a bad row: stop with an error naming it, or skip it and list it in the results."),
        click.option("--disordered", type=click.Choice(["refuse", "approximant"]), default="refuse", show_default=True,
                     help="Structures with partially occupied sites: refuse the row, or featurise an ordered "
                          "approximant (smallest supercell of <= 128 atoms holding every element; hacknip.data.disorder)."),
        click.option("--limit", type=click.IntRange(min=1), help="Use only the first N structures (quick tries)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
                     help="The most structures per forward pass (a batch also closes at --batch-atoms); fine-tuning's "
                          "training batch."),
        click.option("--batch-atoms", type=click.IntRange(min=1),
                     help="Most atoms per featurisation pass, as the backbone sees them; a batch closes at this or "
                          "--batch-size, whichever comes first, and a bigger structure goes alone  [default: 1024 on "
                          "a CPU, 8192 on CUDA]"),
        click.option("--device", default="cpu", show_default=True, help="torch device for the backbone."),
        click.option("--backbone-option", "backbone_options", multiple=True,
                     help="Backbone loader option KEY=VALUE (repeatable), e.g. default_dtype=float64, modal=R2SCAN."),
        store_option(),
        click.option("--smiles-column", help="Molecules: the SMILES column of a table (default: a column called smiles)."),
        click.option("--relax/--no-relax", default=None,
                     help="Molecules: relax the conformers with the first backbone's forces (see --relax-optimizer) "
                          "before featurising [default: relax, as the paper did; run --preset all-layers: not, as measured]."),
        click.option("--conformer", type=click.Choice(["auto", "mmff94", "etkdg", "none"]), default="auto", show_default=True,
                     help="Molecules from SMILES: RDKit's ETKDG conformer optimised with the MMFF94 force field, or as "
                          "it is; none: no 3-D geometry, for descriptors that read the SMILES (rdkit:...; no backbone, "
                          "no molecule lost to a failed embedding); auto: mmff94 when relaxing (half the steps), else etkdg."),
        click.option("--relax-fmax", default=0.05, show_default=True, help="Molecules: relaxation force threshold, eV/Å."),
        click.option("--relax-steps", default=200, show_default=True, help="Molecules: most relaxation steps."),
        click.option("--relax-optimizer", default="BFGS", show_default=True,
                     help="Molecules: the optimiser that relaxes them: BFGS, LBFGS, FIRE or another class of "
                          "ase.optimize, or Sella (internal coordinates: far fewer steps to a tight --relax-fmax, one "
                          "molecule at a time; pip install 'hacknip-core[sella]')."),
        click.option("--relax-batch", type=click.IntRange(min=1),
                     help="Molecules: relax this many at once, every step's forces in one batched pass (a backbone "
                          "with batched forces, e.g. chgnet; pays on a GPU)  [default: 1 on a CPU, "
                          "50 on CUDA]"),
        click.option("--workers", type=click.IntRange(min=1), envvar="HACKNIP_WORKERS",
                     help="Processes, each loading the backbone once: molecules' embedding and relaxing, and the ray "
                          "executor's workers  [default: the available cores (ray: the cluster's); $HACKNIP_WORKERS]"),
        click.option("--executor", default="local", show_default=True,
                     help="Where featurisation's batches run: local (this process), ray (a Ray cluster; pip install "
                          "'hacknip-core[ray]'), or a plugin's executor."),
        click.option("--address", help="ray: the cluster to join (auto, ray://head:10001)  [default: start a local Ray "
                                       "instance for the run]"),
        click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="ray: GPUs each worker takes (1 for one GPU per worker; then pass --device cuda)."),
        click.option("--on-nonconverged", type=click.Choice(["keep", "skip"]), default="keep", show_default=True,
                     help="Molecules: keep (and flag) or skip relaxations that did not converge."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


PLAIN_PROGRESS_SECONDS = 5.0
"""How often progress is written as a plain line when stdout is not a terminal (CI, batch jobs, ``> run.log``)."""


@contextmanager
def progress_bars():
    """A rich progress display in a terminal, plain progress lines elsewhere (and in the command's log file, if it
    keeps one); yields ``start(description, total) -> advance(n)`` (``advance.restart(total)`` starts its count
    again)."""
    if not sys.stdout.isatty():
        yield PlainProgress(sys.stdout, PLAIN_PROGRESS_SECONDS).start  # copied to the log file with all the rest
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    log = active_log()
    in_log = PlainProgress(log, PLAIN_PROGRESS_SECONDS).start if log is not None else None
    with Progress(*columns, console=Console(file=terminal(sys.stdout)), transient=False) as progress:
        def start(description: str, total: int):
            task = progress.add_task(description, total=total)
            logged = in_log(description, total) if in_log else None

            def advance(n: int = 1) -> None:
                progress.advance(task, n)
                if logged:
                    logged(n)

            def restart(total: int) -> None:
                progress.reset(task, total=total)
                if logged:
                    logged.restart(total)

            advance.restart = restart  # type: ignore[attr-defined]
            return advance

        yield start


class PlainProgress:
    """Progress as lines (``description: done/total, elapsed, eta``): one when a task starts, then at most one every
    ``every`` seconds, and one when it completes, so that a log shows a long job moving.

    The eta counts the pace from the first advance on: featurising and relaxing first report what they found in the
    store, at once, and a resumed job that counted those would promise to end far too soon."""

    def __init__(self, stream, every: float) -> None:
        self.stream, self.every = stream, every

    def start(self, description: str, total: int | None):
        state = {"done": 0, "total": total, "started": time.monotonic(), "written": time.monotonic(), "first": None}

        def write() -> None:
            now = time.monotonic()
            done, planned = state["done"], state["total"]
            line = f"{description}: {done}" + (f"/{planned}" if planned else "") + f", {now - state['started']:.0f} s"
            if planned and done < planned and state["first"]:
                first_time, first_done = state["first"]
                if done > first_done and now > first_time:
                    line += f", eta {(now - first_time) / (done - first_done) * (planned - done):.0f} s"
            self.stream.write(line + "\n")  # one write: lines from scopes tuned in threads never interleave
            self.stream.flush()
            state["written"] = now

        def advance(n: int = 1) -> None:
            state["done"] += n
            if state["first"] is None:
                state["first"] = (time.monotonic(), state["done"])
            finished = state["total"] is not None and state["done"] >= state["total"]
            if finished or time.monotonic() - state["written"] >= self.every:
                write()

        def restart(total: int | None) -> None:
            state.update(done=0, total=total, started=time.monotonic(), first=None)

        advance.restart = restart  # type: ignore[attr-defined]
        write()
        return advance


def run_config(**options):
    from hacknip.data.molecules import available_cores
    from hacknip.workflow.run import RunConfig

    if "executor" in options:
        address, gpus = options.pop("address"), options.pop("gpus_per_worker")
        options["executor_options"] = {**({"address": address} if address else {}),
                                       **({"gpus_per_worker": gpus} if gpus else {})}
    if "workers" in options and options["workers"] is None and options.get("executor", "local") == "local":
        options["workers"] = available_cores()
    return RunConfig(**options)


def layers_option(context, parameter, text: str | None) -> list[int] | None:
    """A ``--layers`` option's value: ``"2,4"``, ``"1-3"`` or ``"0,2-4"`` -> layer numbers (None when not given)."""
    from hacknip.features.compose import BadLayerList, parse_layer_list

    if text is None:
        return None
    try:
        return list(parse_layer_list("".join(text.split())))
    except BadLayerList as problem:
        raise click.BadParameter(f"{problem}; write layers as numbers and ranges, e.g. 0-4 or 1,2,4", ctx=context,
                                 param=parameter) from None


def parse_key_values(values, option: str) -> dict:
    params = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{text!r}: write KEY=VALUE, e.g. n_estimators=500", param_hint=option)
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _split_option(context, parameter, value: str) -> str:
    from hacknip.workflow.run import check_split

    try:
        return check_split(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx=context, param=parameter) from None


def jobs_option(which: str):
    """``--jobs``: head fits in worker processes (``which`` says which fits); resolved by :func:`resolve_jobs`."""
    return click.option("--jobs", type=click.IntRange(min=1), envvar="HACKNIP_JOBS",
                        help=f"Head fits at once, each in its own process ({which}); the scores do not change  "
                             "[default: the available cores; $HACKNIP_JOBS]")


def resolve_jobs(jobs: int | None) -> int:
    from hacknip.data.molecules import available_cores

    return jobs if jobs is not None else available_cores()


def model_options(command):
    """Options shared by the commands that train heads on embeddings (run, tune)."""
    options = [
        click.option("--head", help="Shallow model (see hacknip list); tune: several joined by ',' (lightgbm,modnet) to "
                                    "choose among inside each training fold  [default: lightgbm]"),
        click.option("--head-param", "head_params", multiple=True, help="Head hyperparameter KEY=VALUE (repeatable)."),
        click.option("--pooling", help="mean, sum, max, std, or several joined by '+'  [default: mean; run: the "
                                       "preset's]"),
        click.option("--extra-features", help="Per-sample scalar columns (or extxyz info keys) appended to the "
                                               "embedding, comma-separated, e.g. temperature."),
        jobs_option("run: the layer sweep's and the final cross-validation's; tune: several outer folds' studies at once"),
        click.option("--umap", is_flag=True, help="Also draw UMAPs of the best layer and the last (umap.png, umap.csv, "
                                                  "and on report.html; needs hacknip-core[analysis])."),
    ]
    for option in reversed(options):
        command = option(command)
    return scoring_options(command)


def scoring_options(command):
    """Options shared by every command that cross-validates a model (run, tune, finetune, curve)."""
    options = [
        click.option("--task", type=click.Choice(["auto", "regression", "classification"]), default="auto",
                     show_default=True, help="auto: classification when every target is 0 or 1."),
        click.option("--target-transform", type=click.Choice(["none", "log10", "ln", "neglog10_1m"]), default="none",
                     show_default=True, help="Regression: train on a transformed target (neglog10_1m = -log10(1-y)); "
                                             "predictions are mapped back."),
        click.option("--score-scale", type=click.Choice(["original", "transformed"]), default="original",
                     show_default=True, help="Report metrics on the original or the transformed target scale."),
        click.option("--split", default="auto", show_default=True, callback=_split_option,
                     help="auto: official Matbench folds when they apply, else (Stratified)KFold; random: KFold; "
                          "scaffold: Bemis-Murcko scaffold folds (molecules); group:COLUMN: rows sharing that "
                          "column's value stay in one test fold (e.g. group:formula)."),
        click.option("--folds", "folds_file", type=click.Path(exists=True, path_type=Path),
                     help="Matbench validation file (default: matbench_v0.1_validation.json.gz beside --data)."),
        click.option("--leaderboard", "leaderboard_file", type=click.Path(exists=True, path_type=Path),
                     help="Matbench leaderboard summary CSV (default: leaderboard/ beside --data)."),
        click.option("--out", type=click.Path(path_type=Path),
                     help="Output folder, new or empty (default: runs/<data>-<backbone>-<head>-<time>)."),
        click.option("--overwrite", is_flag=True,
                     help="Replace the files an earlier run wrote in --out (and an earlier model in --save)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def model_config(options: dict, replay: dict | None = None):
    """A RunConfig from the command's options, with a replayed configuration (--params) filled in."""
    options = dict(options)
    options["backbone_options"] = parse_key_values(options["backbone_options"], "--backbone-option")
    options["head_params"] = parse_key_values(options["head_params"], "--head-param")
    if replay:
        options.update(_replayed(options, replay))
    elif not options["backbone"]:
        raise click.UsageError("Missing option '--backbone' / '-b' (or --params FILE, a tuned configuration that "
                               "names its backbones).")
    options["head"] = options["head"] or "lightgbm"
    options["target_transform"] = None if options["target_transform"] == "none" else options["target_transform"]
    options["extra_features"] = [c.strip() for c in (options["extra_features"] or "").split(",") if c.strip()]
    if "jobs" in options:
        options["jobs"] = resolve_jobs(options["jobs"])
    options.pop("umap", None)
    options.pop("out", None)
    options.pop("overwrite", None)
    return run_config(**options)


def _replayed(options: dict, replay: dict) -> dict:
    from hacknip.plugins.registry import check_backbones

    backbone = options["backbone"] or replay["backbone"]  # --params alone: the backbones it was tuned with
    wanted = [m.name for m in check_backbones(backbone, allow_missing=True)]
    given = [m.name for m in check_backbones(replay["backbone"], allow_missing=True)]
    if [name for name in wanted if name in given] != given:
        # a subset is allowed: tune --member-subsets may deploy some of the members the tune was given
        raise InputError(f"--params was tuned for --backbone {replay['backbone']!r}, not {backbone!r}")
    for name in ("head", "pooling"):
        if options[name] and options[name] != replay[name]:
            raise InputError(f"--params was tuned for --{name} {replay[name]}, not {options[name]}; leave --{name} out")
    head_params = _with_tuned_defaults(replay, merge_head_params(replay["head_params"], options["head_params"]))
    return {"backbone": replay["backbone"], "head": replay["head"], "pooling": replay["pooling"],
            "head_params": head_params}


def _with_tuned_defaults(replay: dict, head_params: dict) -> dict:
    """``head_params`` with the defaults the head was tuned with where today's differ and the user set none (a
    params.json written before ``head_defaults`` was recorded replays with today's)."""
    from hacknip.plugins.head import restore_defaults
    from hacknip.plugins.registry import get_head_spec

    recorded = replay.get("head_defaults") or {}
    if not isinstance(recorded, dict):
        raise InputError("--params: head_defaults is not a mapping; use the params.json that hacknip tune wrote")
    head_class = get_head_spec(replay["head"]).estimator_class()
    head_params, changed = restore_defaults(head_class, head_params, recorded)
    for key, (then, now) in changed.items():
        click.echo(f"--params: {replay['head']}'s default {key} was {then} when it was tuned and is {now} now; "
                   f"replaying with {then} (a --head-param overrides it)", err=True)
    return head_params


def read_params(path: Path | None) -> dict | None:
    """A tuned configuration: ``params.json`` from ``hacknip tune``, or the ``params`` of its results.json."""
    if path is None:
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error}); use the params.json that hacknip tune wrote") from None
    content = content.get("params", content) if isinstance(content, dict) else {}
    missing = {"backbone", "head", "head_params", "pooling"} - set(content)
    if missing:
        raise InputError(f"{path}: not a tuned configuration (no {', '.join(sorted(missing))}); use the params.json "
                         f"that hacknip tune wrote")
    return content


COMMAND_LOGS = ("run.log", "tune.log")
"""What ``hacknip run`` and ``tune`` write first; alone in a folder, they are all that is left of a run that stopped."""
RUN_OUTPUTS = ("results.json", "parity.png", "roc.png", "layers.png", "epochs.png", "report.html", "umap.png",
               "umap.csv", "params.json", "tuning.png", *COMMAND_LOGS, "finetune.log", "curve.json", "curve.png",
               "update_ratios.png", "curve.log")
MODEL_OUTPUTS = ("model.json", "arrays.npz", "weights.safetensors")


def check_output_folder(folder: Path, option: str, ours: tuple[str, ...], overwrite: bool) -> None:
    """Before any work: ``folder`` must be new, empty, or (with --overwrite) hold only what hacknip writes there, which
    is then removed, so that old and new results never mix. A folder holding only a command's log (of a run that
    stopped before its results) is used again without --overwrite."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{option} {folder} is a file; name a folder")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{option} {folder}: {parent} is a file, so the folder cannot be made")
            break
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if set(present) <= set(COMMAND_LOGS) & set(ours):
        for name in present:
            (folder / name).unlink()
        return
    others = [name for name in present if name not in ours]
    if not overwrite or others:
        what = ", ".join(present[:4]) + (", ..." if len(present) > 4 else "")
        hint = "choose a new folder or pass --overwrite to replace hacknip's files there" if not others else \
            "choose a new or empty folder (--overwrite replaces only hacknip's own files)"
        raise InputError(f"{option} {folder} already holds {what}: {hint}")
    for name in present:
        (folder / name).unlink()


def check_output_file(path: Path, option: str = "--out", what: str = "a CSV file") -> None:
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; name {what}")
    if not path.parent.is_dir():
        raise InputError(f"{option} {path}: the folder {path.parent} does not exist")


def check_outputs(out: Path | None, save_to: Path | None, store, overwrite: bool) -> None:
    from hacknip.store import FeatureStore

    check_output_folder(out or Path("runs") / "new", "--out", RUN_OUTPUTS, overwrite)
    if save_to is not None:
        check_output_folder(save_to, "--save", MODEL_OUTPUTS, overwrite)
    FeatureStore(store).check_usable()


def write_and_print(results: dict, out: Path | None, data: Path, extra_files: dict | None = None,
                    umap_of=None, log: Path | None = None) -> None:
    """Write the run's files and page (with ``umap_of``, the RunConfig of a run whose features are stored, also its
    UMAPs), print the summary and what was written (``log`` too: the command's log file, still being written)."""
    from rich.console import Console

    from hacknip.report import print_summary, strict_json
    from hacknip.report.files import write_run_files, write_run_page

    out = out or Path("runs") / run_name(data, results["backbone"], results["head"])
    results.setdefault("provenance", {})["command"] = command_line()
    written, figures = write_run_files(results, out)
    for name, content in (extra_files or {}).items():
        (out / name).write_text(strict_json(content))
        written.append(out / name)
    if umap_of is not None:
        figures.append(umap_page_figure(out, umap_of, written))
    written.append(write_run_page(out, figures))
    written += [log] if log is not None else []
    console = Console()
    print_summary(results, console)
    console.print("wrote " + ", ".join(str(path) for path in written))


def umap_page_figure(out: Path, config, written: list[Path]):
    """UMAPs of the run in ``out`` (its best layer and its last), written as umap.png and umap.csv, for its page."""
    from hacknip.analysis.projection import project_run
    from hacknip.report.html import PageFigure, png_bytes
    from hacknip.report.umap_figure import umap_figure

    read_as = {"structure_column": config.structure_column, "id_column": config.id_column, "targets": config.targets,
               "smiles_column": config.smiles_column}
    with progress_bars() as start:
        projection = project_run(out, store=config.store, progress=start, **read_as)
    png = png_bytes(umap_figure(projection))
    (out / "umap.png").write_bytes(png)
    projection.table().to_csv(out / "umap.csv", index=False)
    written += [out / "umap.png", out / "umap.csv"]
    layers = ", ".join(f"layer {layer}" for layer in projection.coordinates)
    return PageFigure(png, f"UMAP of the stored embeddings ({layers}) coloured by {projection.target_name}", "umap.png")


def finetune_options(command):
    """The fine-tuning recipe (defaults: the paper's, section 5.7)."""
    options = [
        click.option("--epochs", type=click.IntRange(min=1), default=200, show_default=True, help="Training epochs."),
        click.option("--lr-backbone", type=click.FloatRange(min=0), default=1e-5, show_default=True,
                     help="AdamW learning rate of the unfrozen backbone parameters."),
        click.option("--lr-head", type=click.FloatRange(min=0), default=1e-3, show_default=True,
                     help="AdamW learning rate of the MLP head."),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4, show_default=True),
        click.option("--hidden", default="128,128", show_default=True, help="MLP head hidden layer sizes (SiLU)."),
        click.option("--validation-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
                     show_default=True, help="Carved from each training fold to keep the best epoch."),
        click.option("--patience", type=click.IntRange(min=1),
                     help="Stop after this many epochs without a better validation score  [default: train every epoch]"),
        click.option("--freeze", default="embedding,past_layer", show_default=True,
                     help="Parameter groups kept as pretrained (see the backbone's groups); 'past_layer' is never "
                          "reached anyway."),
        click.option("--loss", type=click.Choice(["mae", "mse"]), default="mae", show_default=True,
                     help="Regression training loss (on the standardised target)."),
        click.option("--seed", default=0, show_default=True, help="Head initialisation, validation carve, batch order."),
        click.option("--mixed-precision", is_flag=True, help="bfloat16 autocast on a GPU, where the backbone allows."),
        click.option("--checkpoints", type=click.Path(file_okay=False, path_type=Path),
                     help="Epoch checkpoints, so that a killed run resumes  [default: $HACKNIP_HOME/finetune]"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def recipe_from_options(options: dict):
    """Pop the recipe's options into a FinetuneOptions."""
    from hacknip.finetuning.trainer import FinetuneOptions

    try:
        hidden = tuple(int(size) for size in options.pop("hidden").split(",") if size.strip())
    except ValueError:
        raise click.BadParameter("--hidden takes sizes such as 128,128") from None
    frozen = tuple(g.strip() for g in options.pop("freeze").split(",") if g.strip() and g.strip() != "none")
    return FinetuneOptions(hidden=hidden, epochs=options.pop("epochs"), lr_backbone=options.pop("lr_backbone"),
                           lr_head=options.pop("lr_head"), weight_decay=options.pop("weight_decay"),
                           batch_size=options["batch_size"], validation_fraction=options.pop("validation_fraction"),
                           patience=options.pop("patience"), frozen=frozen, loss=options.pop("loss"),
                           seed=options.pop("seed"), device=options["device"],
                           mixed_precision=options.pop("mixed_precision")).check()


def scoring_config(options: dict):
    options = dict(options)
    options["backbone_options"] = parse_key_values(options["backbone_options"], "--backbone-option")
    options["target_transform"] = None if options["target_transform"] == "none" else options["target_transform"]
    for name in ("out", "overwrite"):
        options.pop(name, None)
    return run_config(**options)


def epoch_logger(start, log_file: Path):
    """``on_epoch(fold, epoch, planned)`` drawing one bar per fold and writing each epoch to the terminal and to
    ``log_file``."""
    bars: dict[int, object] = {}
    last_epoch: dict[int, int] = {}

    def on_epoch(fold: int, entry, planned: int) -> None:
        if fold not in bars:
            bars[fold] = start(f"  {'final fit' if fold < 0 else f'fold {fold + 1}'} epochs", planned)
        elif entry.epoch <= last_epoch[fold]:  # a new fit of that fold (hacknip curve: the next subset)
            bars[fold].restart(planned)
        last_epoch[fold] = entry.epoch
        bars[fold](1)
        line = (f"{'final' if fold < 0 else f'fold {fold + 1}'} epoch {entry.epoch + 1}/{planned}: train loss "
                f"{entry.train_loss:.4g}, validation {entry.validation:.4g} ({entry.seconds:.1f} s)")
        with open(log_file, "a", encoding="utf-8") as log:
            log.write(line + "\n")

    return on_epoch


class RecordingGroup(click.Group):
    """A command group that keeps the arguments it was given, so that a command can record how it was called."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["hacknip.argv"] = list(args)
        return super().parse_args(ctx, args)


def command_line() -> str | None:
    """The command as typed (``hacknip run --data ...``), for the provenance of what it writes."""
    context = click.get_current_context(silent=True)
    argv = context.find_root().meta.get("hacknip.argv") if context else None
    from hacknip.workflow.provenance import without_passwords

    return without_passwords(shlex.join(["hacknip", *argv])) if argv is not None else None


def output_folder(out: Path | None, config) -> Path:
    """``--out``, or a new folder under ``runs/`` named after the data, the backbones, the head and the time."""
    return out or Path("runs") / run_name(config.data, config.backbone, config.head)


def run_name(data: Path, backbone: str, head: str) -> str:
    stem = data.name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9._@+-]+", "_", f"{stem}-{backbone}-{head}-{time.strftime('%Y%m%d-%H%M%S')}")


