from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from hacknip.features.supercell import cutoff_supercell, perpendicular_widths, supercell_repeats

SKEWED = np.array([[4.0, 0.0, 0.0], [3.2, 1.1, 0.0], [2.1, 0.6, 2.4]])


def _plane_distance(cell, axis):
    """Distance between the two faces of the cell that are not spanned by axis ``axis``, from the normal vector."""
    others = [cell[i] for i in range(3) if i != axis]
    normal = np.cross(*others)
    return abs(cell[axis] @ normal) / np.linalg.norm(normal)


def test_perpendicular_widths_of_a_skewed_cell():
    widths = perpendicular_widths(SKEWED)
    expected = [_plane_distance(SKEWED, axis) for axis in range(3)]
    np.testing.assert_allclose(widths, expected)
    # the widths are much shorter than the lattice vectors: this cell needs more repeats than lengths suggest
    assert (widths < np.linalg.norm(SKEWED, axis=1) - 0.5).all()


def test_repeats_are_the_smallest_that_reach_the_cutoff():
    atoms = Atoms("Si", cell=SKEWED, pbc=True)
    cutoff = 6.0
    repeats = supercell_repeats(atoms, cutoff)
    widths = perpendicular_widths(SKEWED) * np.array(repeats)
    assert (widths >= cutoff).all()
    for axis in range(3):
        smaller = np.array(repeats)
        smaller[axis] -= 1
        if smaller[axis] >= 1:
            assert perpendicular_widths(SKEWED)[axis] * smaller[axis] < cutoff
    assert repeats == tuple(int(np.ceil(cutoff / w)) for w in perpendicular_widths(SKEWED))


def test_supercell_holds_every_atom_once_per_image():
    atoms = Atoms("SiO2", cell=SKEWED, scaled_positions=[[0, 0, 0], [0.3, 0.2, 0.1], [0.6, 0.7, 0.5]], pbc=True)
    supercell = cutoff_supercell(atoms, 7.0)
    repeats = supercell_repeats(atoms, 7.0)
    assert len(supercell) == len(atoms) * np.prod(repeats)
    assert supercell.get_chemical_formula() == atoms.repeat(repeats).get_chemical_formula()
    assert abs(supercell.cell.volume - atoms.cell.volume * np.prod(repeats)) < 1e-8


@pytest.mark.parametrize("pbc", [(True, True, False), (False, False, False)])
def test_non_periodic_axes_are_never_repeated(pbc):
    atoms = Atoms("Si", cell=SKEWED, pbc=pbc)
    repeats = supercell_repeats(atoms, 20.0)
    for periodic, repeat in zip(pbc, repeats):
        assert repeat == 1 or periodic


def test_molecule_is_returned_unchanged():
    water = molecule("H2O")
    assert cutoff_supercell(water, 10.0) is water


def test_large_cell_needs_no_supercell():
    atoms = Atoms("Si", cell=np.eye(3) * 12.0, pbc=True)
    assert cutoff_supercell(atoms, 10.0) is atoms
    assert all(r == 1 for r in itertools.chain(supercell_repeats(atoms, 12.0)))


def test_lattice_lengths_rule_is_the_papers_and_smaller_for_skewed_cells():
    atoms = Atoms("Si", cell=SKEWED, pbc=True)
    cutoff = 6.0
    lengths = np.linalg.norm(SKEWED, axis=1)
    repeats = supercell_repeats(atoms, cutoff, "lattice-lengths")
    assert repeats == tuple(int(np.ceil(cutoff / length)) for length in lengths) == (2, 2, 2)
    assert (lengths * repeats >= cutoff).all()
    # the same cell needs more repeats for its faces to be a cutoff apart
    assert np.prod(supercell_repeats(atoms, cutoff, "perpendicular-width")) > np.prod(repeats)
    assert len(cutoff_supercell(atoms, cutoff, "lattice-lengths")) == 8


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="perpendicular-width, lattice-lengths"):
        supercell_repeats(Atoms("Si", cell=SKEWED, pbc=True), 6.0, "volume")
