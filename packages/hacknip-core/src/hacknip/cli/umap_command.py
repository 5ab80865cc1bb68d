"""``hacknip analyze umap``: UMAP per layer of stored embeddings, coloured by the target (umap.png and umap.csv)."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from hacknip.cli.common import friendly_errors, layers_option, progress_bars, store_option

FIGURE_NAME = "umap.png"
RECORDED_OPTIONS = ("target", "pooling", "task", "on_error", "disordered", "limit")
"""What a run folder's results.json says itself (its sample ids stand for --limit and skipped rows)."""


@click.command(name="umap")
@click.argument("run_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", type=click.Path(exists=True, path_type=Path),
              help="Without RUN_DIR: the dataset (any input hacknip run reads). With RUN_DIR: the run's data, moved.")
@click.option("--backbone", "-b", help="Without RUN_DIR: one backbone whose features are stored, e.g. chgnet or "
                                       "chgnet@2,4. With RUN_DIR: which member of a joined run (a+b) to project.")
@click.option("--layers", callback=layers_option, help="Layers to project, e.g. 2,4 or 1-3  [default: a run's best "
                                                      "layer L* and its last layer; without RUN_DIR every stored layer]")
@click.option("--seed", default=0, show_default=True, help="UMAP random_state: the same seed gives the same picture.")
@click.option("--n-neighbors", type=click.IntRange(min=2), default=15, show_default=True, help="UMAP n_neighbors.")
@click.option("--min-dist", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="UMAP min_dist.")
@click.option("--gamma", type=click.FloatRange(min=0, min_open=True),
              help="Colour-scale exponent, 1 = linear  [default: linear, or for a target with |skew| > 1 the power "
                   "that puts the median at mid-scale]")
@click.option("--pooling", default="mean", show_default=True, help="Without RUN_DIR: pooling (mean, max, std, sum "
                                                                    "joined by '+'); a run uses its own.")
@click.option("--target", help="Without RUN_DIR: target column / info key (default: the only numeric one).")
@click.option("--task", type=click.Choice(["auto", "regression", "classification"]), default="auto",
              show_default=True, help="Without RUN_DIR: auto = classification when every target is 0 or 1.")
@click.option("--structure-column", default="cif", show_default=True,
              help="Column holding CIF text (tables); with RUN_DIR, as the run had it.")
@click.option("--id-column", help="Column holding sample ids (tables) or file names (folders); with RUN_DIR, as the "
                                  "run had it.")
@click.option("--targets", type=click.Path(exists=True, path_type=Path),
              help="Targets CSV for a folder input; with RUN_DIR, as the run had it.")
@click.option("--smiles-column", help="Molecules: the SMILES column of a table; with RUN_DIR, as the run had it.")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="On a bad row: stop with an error naming it, or skip it.")
@click.option("--disordered", type=click.Choice(["refuse", "approximant"]), default="refuse", show_default=True,
              help="Structures with partially occupied sites (as given to hacknip featurize).")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N structures.")
@store_option()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help=f"Figure file; the table (id, target, layer, x, y) goes beside it as .csv  [default: RUN_DIR/"
                   f"{FIGURE_NAME}, else ./{FIGURE_NAME}]")
@click.pass_context
@friendly_errors
def umap_command(context, run_dir, data, backbone, layers, seed, n_neighbors, min_dist, gamma, store, out, **read_options):
    """UMAP of stored layer embeddings, one panel per layer, coloured by the target (the paper's Fig. 5): from a run
    folder (L* against the last layer) or from --data and --backbone. Reads the feature store only: no model runs."""
    from hacknip.analysis.projection import UmapSettings, project_data, project_run
    from hacknip.report.umap_figure import umap_plot

    settings = UmapSettings(seed=seed, n_neighbors=n_neighbors, min_dist=min_dist, gamma=gamma).check()
    figure_path = out or (run_dir or Path()) / FIGURE_NAME
    _check_output(figure_path)
    if run_dir is not None:
        _refuse_recorded_options(context, run_dir)
    else:
        _require(data, "--data")
        _require(backbone, "--backbone")
    with progress_bars() as start:
        if run_dir is not None:
            projection = project_run(run_dir, layers, settings, backbone=backbone, data=data, store=store,
                                     progress=start, **_unrecorded(read_options))
        else:
            projection = project_data(data, backbone, layers, settings, store=store, progress=start, **read_options)
    table_path = figure_path.with_suffix(".csv")
    projection.table().to_csv(table_path, index=False)
    umap_plot(projection, figure_path)
    click.echo(_summary(projection))
    click.echo(f"wrote {figure_path}, {table_path}")


def _check_output(path: Path) -> None:
    from hacknip.errors import InputError

    if not path.parent.is_dir():
        raise InputError(f"--out {path}: the folder {path.parent} does not exist")
    if path.suffix.lower() == ".csv":
        raise InputError(f"--out {path}: name the figure (e.g. umap.png); the CSV is written beside it")


def _refuse_recorded_options(context, run_dir: Path) -> None:
    """What a run's results.json records wins: options saying otherwise would be silently ignored."""
    given = [name for name in RECORDED_OPTIONS if context.get_parameter_source(name) in
             (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)]
    if given:
        option = "--" + given[0].replace("_", "-")
        raise click.UsageError(f"{option} comes from {run_dir / 'results.json'}; leave it out, or use --data and "
                               f"--backbone without RUN_DIR")


def _unrecorded(read_options: dict) -> dict:
    return {name: value for name, value in read_options.items() if name not in RECORDED_OPTIONS}


def _require(value, option: str) -> None:
    if value is None:
        raise click.UsageError(f"give a run folder (RUN_DIR), or --data and --backbone ({option} is missing)")


def _summary(projection) -> str:
    scale = projection.colour_scale
    colours = "two classes" if projection.task_kind == "classification" else (
        f"power colour scale, gamma {scale.gamma:.3g} ({scale.chosen}; skew {scale.skew:.2f})" if scale.is_power
        else f"linear colour scale (skew {scale.skew:.2f})")
    layers = ", ".join(f"{layer}" + (f" ({', '.join(projection.roles(layer))})" if projection.roles(layer) else "")
                       for layer in projection.coordinates)
    return (f"UMAP of {projection.backbone} layers {layers}: {len(projection.ids)} samples, {projection.pooling} "
            f"pooling, {projection.target_name} by {colours}, seed {projection.settings.seed}")
