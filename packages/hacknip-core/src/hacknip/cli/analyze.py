"""``hacknip analyze``: why a depth is informative — UMAPs of stored embeddings (``umap``) and the per-atom
Jensen–Shannon divergence across depth of one structure (``jsd``)."""

from __future__ import annotations

import click

from hacknip.cli.jsd_command import jsd
from hacknip.cli.umap_command import umap_command


@click.group()
def analyze():
    """Look inside the embeddings: UMAP per layer, per-atom divergence across depth."""


analyze.add_command(umap_command)
analyze.add_command(jsd)
