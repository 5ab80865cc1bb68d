"""Cutoff-sized supercells for backbones whose graph does not see every periodic image by itself."""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms


def perpendicular_widths(cell: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of the cell spanned by the rows of ``cell`` (not vector lengths)."""
    cell = np.asarray(cell, dtype=float)
    volume = abs(np.linalg.det(cell))
    crosses = [np.cross(cell[1], cell[2]), np.cross(cell[2], cell[0]), np.cross(cell[0], cell[1])]
    return np.array([volume / np.linalg.norm(cross) for cross in crosses])


def supercell_repeats(atoms: Atoms, cutoff: float) -> tuple[int, int, int]:
    """Smallest repetition along each periodic axis that makes every perpendicular width >= cutoff."""
    widths = perpendicular_widths(atoms.cell.array)
    return tuple(
        max(1, math.ceil(cutoff / width - 1e-9)) if periodic else 1
        for width, periodic in zip(widths, atoms.pbc)
    )


def cutoff_supercell(atoms: Atoms, cutoff: float) -> Atoms:
    """``atoms`` repeated until the distance between opposite faces is at least ``cutoff`` along each periodic
    axis. Non-periodic structures are returned unchanged."""
    if not atoms.pbc.any():
        return atoms
    repeats = supercell_repeats(atoms, cutoff)
    return atoms if repeats == (1, 1, 1) else atoms.repeat(repeats)
