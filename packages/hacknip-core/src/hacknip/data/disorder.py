"""Ordered approximants of partially occupied (disordered) crystal structures.

A NIP needs one species per site. ``ordered_approximant`` expands a disordered cell into the smallest supercell
(up to ``max_atoms``) whose sites can carry the occupancies as whole atoms, deals the species of each set of
identically occupied sites over the copies of those sites by largest remainder (vacancies become missing atoms), in
a seeded random order, and reports how far the approximant's composition is from the disordered one. A dopant too
dilute to get one atom in ``max_atoms`` is dropped, and the report says so: the caller decides whether that is
acceptable (``max_composition_error``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

VACANCY = "vacancy"


@dataclass
class Approximant:
    structure: object
    """The ordered pymatgen ``Structure``."""
    multiplicity: int
    scaling: tuple[int, int, int]
    composition_error: float
    """Largest difference of an element's atomic fraction between the approximant and the disordered structure."""
    dropped: list[str] = field(default_factory=list)
    """Elements of the disordered structure absent from the approximant (too dilute for its size)."""

    def describe(self) -> str:
        dropped = f"; dropped {', '.join(self.dropped)}" if self.dropped else ""
        return (f"{self.multiplicity}x supercell {self.scaling}, {len(self.structure)} atoms, composition off by "
                f"{self.composition_error:.3f} in atomic fraction{dropped}")


def ordered_approximant(structure, max_atoms: int = 64, seed: int = 0, tolerance: float = 0.005) -> Approximant:
    """The smallest-multiplicity ordered supercell of ``structure`` (a pymatgen Structure) with at most ``max_atoms``
    sites that holds every element and whose composition is within ``tolerance`` (atomic fraction) of the disordered
    one; if none is, the closest (fewest elements dropped, then smallest error). An ordered structure comes back
    unchanged."""
    if structure.is_ordered:
        return Approximant(structure.copy(), 1, (1, 1, 1), 0.0)
    pools = _occupancy_pools(structure)
    best = None
    for multiplicity in range(1, max(1, max_atoms // len(structure)) + 1):
        counts = {key: _largest_remainder(occupancy, len(sites) * multiplicity) for key, (occupancy, sites) in pools.items()}
        missing, error = _composition_error(structure, counts)
        if best is None or (missing, error) < (best[1][0], best[1][1] - 1e-12):
            best = (multiplicity, (missing, error), counts)
        if not missing and error <= tolerance:
            break
    multiplicity, (_, error), counts = best
    scaling = _compact_scaling(structure.lattice, multiplicity)
    ordered = _decorate(structure, pools, counts, scaling, np.random.default_rng(seed))
    dropped = sorted({el.symbol for el in structure.composition.elements} -
                     {el.symbol for el in ordered.composition.elements})
    return Approximant(ordered, multiplicity, scaling, error, dropped)


def _occupancy_pools(structure) -> dict[tuple, tuple[dict[str, float], list[int]]]:
    """Sites grouped by identical occupancy: key -> (species -> fraction incl. vacancy, site indices)."""
    pools: dict[tuple, tuple[dict[str, float], list[int]]] = {}
    for index, site in enumerate(structure):
        occupancy = {str(species): float(amount) for species, amount in site.species.items()}
        vacancy = 1.0 - sum(occupancy.values())
        if vacancy > 1e-6:
            occupancy[VACANCY] = vacancy
        key = tuple(sorted((species, round(amount, 6)) for species, amount in occupancy.items()))
        pools.setdefault(key, (occupancy, []))[1].append(index)
    return pools


def _largest_remainder(occupancy: dict[str, float], n: int) -> dict[str, int]:
    total = sum(occupancy.values())
    exact = {species: amount / total * n for species, amount in occupancy.items()}
    counts = {species: math.floor(value) for species, value in exact.items()}
    remainders = sorted(exact, key=lambda species: (-(exact[species] - counts[species]), species))
    for species in remainders[:n - sum(counts.values())]:
        counts[species] += 1
    return counts


def _composition_error(structure, counts: dict[tuple, dict[str, int]]) -> tuple[int, float]:
    """How many elements the counts leave out, and the largest atomic-fraction difference."""
    target = structure.composition.fractional_composition
    obtained: dict[str, float] = {}
    for pool_counts in counts.values():
        for species, count in pool_counts.items():
            if species != VACANCY and count:
                element = _element(species)
                obtained[element] = obtained.get(element, 0) + count
    total = sum(obtained.values())
    elements = {el.symbol for el in target.elements} | set(obtained)
    missing = sum(el not in obtained for el in elements)
    return missing, max(abs(obtained.get(el, 0) / total - target[el]) for el in elements)


def _element(species: str) -> str:
    from pymatgen.core import Species

    try:
        return Species.from_str(species).element.symbol
    except ValueError:
        return species


def _compact_scaling(lattice, multiplicity: int) -> tuple[int, int, int]:
    """Diagonal scaling with the given product whose supercell is most compact: the largest smallest lattice length,
    then the largest next one."""
    options = [(a, b, multiplicity // (a * b)) for a, b in itertools.product(range(1, multiplicity + 1), repeat=2)
               if multiplicity % (a * b) == 0]
    return max(options, key=lambda abc: sorted(n * length for n, length in zip(abc, lattice.abc)))


def _decorate(structure, pools, counts, scaling, rng) -> object:
    from pymatgen.core import Structure

    supercell = structure.copy()
    supercell.make_supercell(scaling)
    copies = len(supercell) // len(structure)
    # pymatgen's make_supercell repeats each site in place: site i of the cell becomes sites i*copies .. i*copies+copies-1
    species, coords = [], []
    for key, (_, sites) in pools.items():
        positions = [index * copies + copy for index in sites for copy in range(copies)]
        deck = [name for name, count in sorted(counts[key].items()) for _ in range(count)]
        for position, name in zip(rng.permutation(positions), deck):
            if name != VACANCY:
                species.append(name)
                coords.append(supercell[int(position)].frac_coords)
    order = np.lexsort(np.array(coords).T[::-1])
    return Structure(supercell.lattice, [species[i] for i in order], [coords[i] for i in order])
