"""``hacknip report RUN_DIR... --out page.html``: one page comparing runs."""

from __future__ import annotations

from pathlib import Path

import click

from hacknip.cli.common import friendly_errors


@click.command(name="report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("report.html"), show_default=True,
              help="The HTML page to write (self-contained: open it offline in any browser).")
@friendly_errors
def report(run_dirs, out):
    """Compare runs: a sortable table of the folders that hacknip run, tune, finetune or curve wrote, their layer
    curves overlaid, the depth curves across tasks and the best layer L* of each."""
    from hacknip.report.compare import write_compare_page

    click.echo(f"wrote {write_compare_page(run_dirs, out)} ({len(run_dirs)} folders)")
