"""The UMAP figure of a :class:`~hacknip.analysis.projection.Projection`: one panel per layer, points coloured by the
target (one shared colour bar, linear or power-normalised) or, for classification, by class with a legend. Drawn
without pyplot, like :mod:`hacknip.report.figures`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hacknip.analysis.projection import Projection, is_classification
from hacknip.report.figures import save

MAX_COLUMNS = 3
CLASS_COLOURS = ("#4c72b0", "#dd5a2b")
"""Class 0 and class 1."""
COLOUR_MAP = "viridis"


def panel_title(projection: Projection, layer: int) -> str:
    """``layer 3 (L*)``, ``layer 4 (last)``, ``layer 4 (L*, last)`` or ``layer 2``."""
    roles = projection.roles(layer)
    return f"layer {layer}" + (f" ({', '.join(roles)})" if roles else "")


def point_size(n: int) -> float:
    return float(np.clip(6000 / max(n, 1), 2, 20))


def umap_figure(projection: Projection):
    from matplotlib.figure import Figure

    layers = list(projection.coordinates)
    columns = min(len(layers), MAX_COLUMNS)
    rows = -(-len(layers) // columns)
    figure = Figure(figsize=(4.2 * columns + 1.2, 4.0 * rows + 0.6), dpi=120, layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    panels = list(grid.ravel())
    for unused in panels[len(layers):]:
        unused.set_visible(False)
    panels = panels[:len(layers)]
    draw = _draw_classes if is_classification(projection) else _draw_values
    draw(figure, panels, projection, layers)
    for axes, layer in zip(panels, layers):
        axes.set_title(panel_title(projection, layer), fontsize=10)
        axes.set_xlabel("UMAP 1")
        axes.set_ylabel("UMAP 2")
        axes.tick_params(labelsize=7)
    figure.suptitle(_caption(projection), fontsize=9)
    return figure


def _caption(projection: Projection) -> str:
    settings = projection.settings
    source = Path(projection.source).name if projection.source else "the data"
    return (f"UMAP of {projection.backbone} layer embeddings ({projection.pooling} pooling, standardised), "
            f"{len(projection.ids)} samples of {source}\nseed {settings.seed}, n_neighbors {settings.n_neighbors}, "
            f"min_dist {settings.min_dist:g}")


def colour_norm(projection: Projection):
    from matplotlib.colors import Normalize, PowerNorm

    low, high = float(projection.targets.min()), float(projection.targets.max())
    if projection.colour_scale.is_power and high > low:
        return PowerNorm(projection.colour_scale.gamma, vmin=low, vmax=high)
    return Normalize(vmin=low, vmax=high)


def colour_bar_label(projection: Projection) -> str:
    scale = projection.colour_scale
    if scale.is_power:
        return f"{projection.target_name}\n(power scale, γ = {scale.gamma:.2f}; skew {scale.skew:.2f})"
    return f"{projection.target_name} (linear scale)"


def _draw_values(figure, panels, projection: Projection, layers) -> None:
    """Points furthest from the median are drawn last, so that outliers at either end are not hidden."""
    targets = projection.targets
    order = np.argsort(np.abs(targets - np.median(targets)), kind="stable")
    norm, size = colour_norm(projection), point_size(len(targets))
    drawn = None
    for axes, layer in zip(panels, layers):
        xy = projection.coordinates[layer][order]
        drawn = axes.scatter(xy[:, 0], xy[:, 1], c=targets[order], cmap=COLOUR_MAP, norm=norm, s=size,
                             edgecolors="none", alpha=0.85)
    bar = figure.colorbar(drawn, ax=panels, label=colour_bar_label(projection), shrink=0.9)
    if projection.colour_scale.is_power:
        bar.set_ticks(colour_bar_ticks(norm))


def colour_bar_ticks(norm, count: int = 6) -> list[float]:
    """Ticks evenly spaced along a power-scaled bar (matplotlib's default crowds them at one end), rounded to two
    significant figures."""
    rounded = [float(f"{value:.2g}") for value in np.atleast_1d(norm.inverse(np.linspace(0, 1, count)))]
    return sorted({value for value in rounded if norm.vmin <= value <= norm.vmax})


def _draw_classes(figure, panels, projection: Projection, layers) -> None:
    """The larger class first, so that the rarer one stays visible on top."""
    targets = projection.targets
    counts = {label: int(np.sum(targets == label)) for label in (0, 1)}
    size = point_size(len(targets))
    for axes, layer in zip(panels, layers):
        xy = projection.coordinates[layer]
        for label in sorted(counts, key=counts.get, reverse=True):
            chosen = targets == label
            axes.scatter(xy[chosen, 0], xy[chosen, 1], color=CLASS_COLOURS[label], s=size, edgecolors="none",
                         alpha=0.8, label=f"{projection.target_name} = {label} ({counts[label]})")
    handles, labels = panels[0].get_legend_handles_labels()
    order = np.argsort(labels)
    figure.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside lower center", ncols=2,
                  fontsize=8, markerscale=2)


def umap_plot(projection: Projection, path: Path) -> Path:
    return save(umap_figure(projection), path)
