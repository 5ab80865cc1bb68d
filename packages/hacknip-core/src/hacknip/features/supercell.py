"""Cutoff-sized supercells for backbones whose graph does not see every periodic image by itself.

Two rules decide how far a cell is repeated (a backbone names its rule in ``supercell_rule``):

- ``"perpendicular-width"`` (default): until the distance between opposite faces is at least the cutoff along each
  periodic axis, the smallest supercell in which every neighbour within the cutoff is a distinct atom.
- ``"lattice-lengths"``: until every lattice vector is at least as long as the cutoff, as the HackNIP paper built its
  supercells. For skewed cells this is smaller than the first rule; a capped neighbour graph is not supercell-invariant,
  so replaying the paper's features needs the paper's supercells.
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms

from hacknip.errors import InputError
from hacknip.plugins.backbone import LATTICE_LENGTHS, PERPENDICULAR_WIDTH, SUPERCELL_RULES


def perpendicular_widths(cell: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of the cell spanned by the rows of ``cell`` (not vector lengths)."""
    cell = np.asarray(cell, dtype=float)
    volume = abs(np.linalg.det(cell))
    crosses = [np.cross(cell[1], cell[2]), np.cross(cell[2], cell[0]), np.cross(cell[0], cell[1])]
    return np.array([volume / np.linalg.norm(cross) for cross in crosses])


def supercell_repeats(atoms: Atoms, cutoff: float, rule: str = PERPENDICULAR_WIDTH) -> tuple[int, int, int]:
    """Smallest repetition along each periodic axis that satisfies ``rule`` (see the module docstring)."""
    if rule == PERPENDICULAR_WIDTH:
        sizes, slack = perpendicular_widths(atoms.cell.array), 1e-9
    elif rule == LATTICE_LENGTHS:
        sizes, slack = atoms.cell.lengths(), 0.0  # the paper's own arithmetic: ceil(cutoff / length)
    else:
        raise InputError(f"unknown supercell rule {rule!r}; expected one of {', '.join(SUPERCELL_RULES)}")
    return tuple(
        max(1, math.ceil(cutoff / size - slack)) if periodic else 1
        for size, periodic in zip(sizes, atoms.pbc)
    )


def cutoff_supercell(atoms: Atoms, cutoff: float, rule: str = PERPENDICULAR_WIDTH) -> Atoms:
    """``atoms`` repeated along each periodic axis until ``rule`` holds for ``cutoff``. Non-periodic structures are
    returned unchanged."""
    if not atoms.pbc.any():
        return atoms
    repeats = supercell_repeats(atoms, cutoff, rule)
    return atoms if repeats == (1, 1, 1) else atoms.repeat(repeats)
