"""Pooling per-atom features into one vector per structure.

The store keeps per-layer statistics (mean, std, max over atoms, and the atom count) so that every pooling
is available later without featurising again. ``sum`` is the mean times the number of atoms of the
structure as given (not of a supercell), so it stays extensive in the input cell.
"""

from __future__ import annotations

import numpy as np

from hacknip.errors import InputError

STATISTICS = ("mean", "std", "max")
POOLINGS = ("mean", "sum", "max", "std")


def atom_statistics(per_atom: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics over atoms (rows) of one structure's per-atom features at one layer."""
    per_atom = np.asarray(per_atom, dtype=np.float64)
    return {
        "mean": per_atom.mean(axis=0),
        "std": per_atom.std(axis=0),
        "max": per_atom.max(axis=0),
    }


def parse_pooling(text: str) -> tuple[str, ...]:
    """``"mean"``, ``"mean+std"``, ``"mean+max+std"`` ... -> tuple of pooling names."""
    parts = tuple(part.strip() for part in text.split("+") if part.strip())
    bad = [part for part in parts if part not in POOLINGS]
    if not parts or bad:
        raise InputError(f"unknown pooling {text!r}: use one or more of {', '.join(POOLINGS)} joined by '+'")
    return parts


def pool(stats: dict[str, np.ndarray], n_atoms: np.ndarray, pooling: tuple[str, ...]) -> np.ndarray:
    """Build the (n_structures, width * len(pooling)) matrix from stored statistics of one layer."""
    blocks = []
    for name in pooling:
        if name == "sum":
            blocks.append(stats["mean"] * np.asarray(n_atoms, dtype=np.float64)[:, None])
        else:
            blocks.append(stats[name])
    return np.concatenate(blocks, axis=1)
