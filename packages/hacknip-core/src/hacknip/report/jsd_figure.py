"""Figures of a per-atom JSD map (:class:`hacknip.analysis.jsd.JsdMap`), drawn without pyplot: a heat map of atoms
(grouped by element) × layer transitions, and the mean JSD of each element per transition."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hacknip.report.figures import save

if TYPE_CHECKING:
    from hacknip.analysis.jsd import JsdMap

ATOM_LABELS_UP_TO = 40
"""Structures with at most this many atoms get one heat-map label per atom; larger ones one per element block."""


def transition_labels(result: JsdMap) -> list[str]:
    return [f"{before}→{after}" for before, after in result.transitions]


def _title(result: JsdMap) -> str:
    return (f"{result.label}: {result.formula}, {len(result.symbols)} atoms — {result.backbone}, "
            f"JSD of each atom's view (T = {result.temperature:g})")


def draw_heatmap(axes, result: JsdMap):
    """Atoms (rows, grouped by element) × transitions (columns); returns the image for a colour bar."""
    from matplotlib.colors import PowerNorm

    order = result.atom_order()
    matrix = result.jsd[order]
    top = float(matrix.max()) if matrix.size and matrix.max() > 0 else 1.0
    # square-root colours: sqrt(JSD) is the Jensen-Shannon distance, and the last transitions often dwarf the others
    image = axes.imshow(matrix, aspect="auto", interpolation="nearest", cmap="viridis",
                        norm=PowerNorm(gamma=0.5, vmin=0.0, vmax=top))
    symbols = [result.symbols[i] for i in order]
    _element_blocks(axes, symbols, order)
    axes.set_xticks(range(len(result.transitions)), transition_labels(result))
    axes.set_xlabel("layer transition (0 = embedding)")
    return image


def _element_blocks(axes, symbols: list[str], order: np.ndarray) -> None:
    """Lines between elements; a label per atom (``C3``) for small structures, per block (``Li ×56``) otherwise."""
    starts = [0] + [row for row in range(1, len(symbols)) if symbols[row] != symbols[row - 1]]
    ends = starts[1:] + [len(symbols)]
    for start in starts[1:]:
        axes.axhline(start - 0.5, color="white", linewidth=1.2)
    if len(symbols) <= ATOM_LABELS_UP_TO:
        axes.set_yticks(range(len(symbols)), [f"{symbol}{index}" for symbol, index in zip(symbols, order)], fontsize=7)
        axes.set_ylabel("atom (element, index in the structure)")
    else:
        axes.set_yticks([(start + end - 1) / 2 for start, end in zip(starts, ends)],
                        [f"{symbols[start]} ×{end - start}" for start, end in zip(starts, ends)])
        axes.set_ylabel("atoms, grouped by element")


def draw_element_means(axes, result: JsdMap) -> None:
    """Mean JSD of each element's atoms per transition, and of all atoms (dashed)."""
    from hacknip.analysis.jsd import ALL_ATOMS

    steps = np.arange(len(result.transitions))
    for element, means in result.element_means().items():
        if element == ALL_ATOMS:
            axes.plot(steps, means, color="black", linestyle="--", linewidth=1, label="all atoms")
        else:
            axes.plot(steps, means, marker="o", markersize=4, label=f"{element} ({result.symbols.count(element)})")
    axes.set_xticks(steps, transition_labels(result))
    axes.set_xlabel("layer transition (0 = embedding)")
    axes.set_yscale("function", functions=(_sqrt, np.square))
    axes.set_ylim(bottom=0)
    axes.set_ylabel("mean JSD per element (bits, square-root scale)")
    axes.legend(fontsize=8)


def _sqrt(values):
    return np.sqrt(np.maximum(values, 0.0))


def jsd_figure(result: JsdMap):
    """The heat map and the per-element means side by side."""
    from matplotlib.figure import Figure

    height = 4.5 if len(result.symbols) > ATOM_LABELS_UP_TO else max(4.5, 0.17 * len(result.symbols) + 1.5)
    figure = Figure(figsize=(11, height), dpi=120)
    heat_axes, mean_axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    image = draw_heatmap(heat_axes, result)
    figure.colorbar(image, ax=heat_axes, label="JSD (bits, square-root scale)")
    draw_element_means(mean_axes, result)
    figure.suptitle(_title(result), fontsize=9)
    figure.tight_layout()
    return figure


def jsd_plot(result: JsdMap, path: Path) -> Path:
    """Write :func:`jsd_figure` to ``path`` (PNG by its suffix)."""
    return save(jsd_figure(result), Path(path))
