"""An ordered cell of cubic garnet Li7La3Zr2O12 (LLZO), built from its published structure without any download.

Cubic LLZO (space group Ia-3d, origin choice 2, a = 12.97 Å) has a fixed framework, La on 24c (1/8, 0, 1/4), Zr on 16a
(0, 0, 0) and O on 96h (-0.0326, 0.0553, 0.1497), and 56 Li per conventional cell spread over the tetrahedral 24d
sites (3/8, 0, 1/4) and the octahedral cages between them (the 48g centre, split into two 96h positions), each partly
occupied. A NIP needs one atom per site, and dealing Li at random over those sites (hacknip.data.disorder) puts Li on
both halves of a 96h pair, or on a tetrahedron and the octahedral position facing it (the 96-atom approximant of the
primitive cell, with 96h taken 0.4 Å off the cage centre, has two Li 0.79 Å apart). So the Li are ordered here as the
tetragonal phase orders them: the 8 tetrahedra on the planes y = 0 and y = 1/2 are filled (no two of them border the
same octahedral cage), and each of the 48 cages holds one Li, moved 0.4 Å off the cage centre away from its filled
neighbouring tetrahedron (towards a 96h position), or at the centre when it has none. The cell has the tetragonal
phase's space group, I4_1/acd (4-fold axis along a), in the cubic metric: Li56 La24 Zr16 O96, shortest Li-Li 2.40 Å,
shortest Li-O 1.88 Å.

    python tests/llzo.py llzo.cif      # writes the cell as a CIF file
"""

from __future__ import annotations

import sys

import numpy as np

LATTICE = 12.97
"""Cubic lattice parameter, Å."""
LA_24C = (0.125, 0.0, 0.25)
ZR_16A = (0.0, 0.0, 0.0)
O_96H = (-0.0326, 0.0553, 0.1497)
LI_24D = (0.375, 0.0, 0.25)
CAGE_48G = (0.125, 0.2, 0.45)
"""An octahedral cage: on the two-fold axis (1/8, y, 1/4 + y), y where its six O are farthest from it."""
FILLED_TETRAHEDRA = 8
CAGE_SHIFT = 0.4
"""Å a cage's Li moves away from its filled tetrahedral neighbour."""
FACE_SHARING = 2.2
"""Å: a cage centre and the two tetrahedra it shares faces with are 2.0 Å apart; the next tetrahedra are 4.7 Å."""


def _orbit(lattice, point) -> np.ndarray:
    from pymatgen.core import Structure

    return Structure.from_spacegroup("Ia-3d", lattice, ["X"], [point]).frac_coords


def _minimum_image(vectors: np.ndarray) -> np.ndarray:
    return vectors - np.rint(vectors)


def _filled_tetrahedra(tetrahedra: np.ndarray, shares_cage: np.ndarray) -> list[int]:
    """The tetrahedral sites on the planes y = 0 and y = 1/2 (8 of the 24); no two of them border the same cage."""
    on_planes = np.isclose(np.mod(tetrahedra[:, 1] * 2, 1.0), 0.0, atol=1e-6)
    filled = np.flatnonzero(on_planes).tolist()
    if len(filled) != FILLED_TETRAHEDRA or shares_cage[np.ix_(filled, filled)].any():
        raise RuntimeError(f"{len(filled)} tetrahedra on y = 0, 1/2, or two of them share a cage")
    return filled


def ordered_li_positions(lattice) -> np.ndarray:
    """Fractional coordinates of the 56 Li of the ordered cell (see the module docstring)."""
    tetrahedra, cages = _orbit(lattice, LI_24D), _orbit(lattice, CAGE_48G)
    offsets = _minimum_image(cages[:, None, :] - tetrahedra[None, :, :]) @ lattice.matrix
    borders = np.linalg.norm(offsets, axis=2) < FACE_SHARING  # (cage, tetrahedron)
    shares_cage = (borders.T.astype(int) @ borders.astype(int)) > 0
    np.fill_diagonal(shares_cage, False)
    filled = _filled_tetrahedra(tetrahedra, shares_cage)
    positions = [tetrahedra[site] for site in filled]
    for cage, centre in enumerate(cages):
        neighbours = [site for site in filled if borders[cage, site]]
        shift = np.zeros(3)
        if neighbours:
            away = offsets[cage, neighbours[0]]
            shift = CAGE_SHIFT * away / np.linalg.norm(away) @ lattice.inv_matrix
        positions.append(centre + shift)
    return np.mod(np.array(positions), 1.0)


def llzo_structure():
    """The ordered 192-atom conventional cell of cubic LLZO as a pymatgen Structure (Li first, then La, Zr, O)."""
    from pymatgen.core import Lattice, Structure

    lattice = Lattice.cubic(LATTICE)
    framework = Structure.from_spacegroup("Ia-3d", lattice, ["La", "Zr", "O"], [LA_24C, ZR_16A, O_96H])
    lithium = ordered_li_positions(lattice)
    species = ["Li"] * len(lithium) + [site.specie.symbol for site in framework]
    return Structure(lattice, species, np.vstack([lithium, framework.frac_coords]))


def llzo_atoms():
    """The same cell as ASE Atoms."""
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_atoms(llzo_structure())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/llzo.py OUT.cif")
    llzo_structure().to(filename=sys.argv[1])
    print(f"wrote {sys.argv[1]}: {llzo_structure().composition.formula}")
