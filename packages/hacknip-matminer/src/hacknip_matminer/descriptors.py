"""matminer featurisers behind hacknip's :class:`~hacknip.plugins.descriptor.Descriptor` protocol: a structure in
(ASE ``Atoms``), one vector of floats out. matminer does all the work; this module only picks featurisers, turns
their outputs into numbers and says which structures they cannot describe."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import numpy as np
from ase import Atoms

COMPOSITION = ("magpie", "stoichiometry", "valence")
STRUCTURE = ("density", "symmetry")
SYMMETRY_FEATURES = ("spacegroup_num", "crystal_system_int", "is_centrosymmetric", "n_symmetry_ops")
"""matminer's GlobalSymmetryFeatures without ``crystal_system``, the name of what ``crystal_system_int`` numbers."""


def _featurizer(part: str):
    from matminer.featurizers.composition import ElementProperty, Stoichiometry, ValenceOrbital
    from matminer.featurizers.structure import DensityFeatures, GlobalSymmetryFeatures

    return {
        "magpie": lambda: ElementProperty.from_preset("magpie", impute_nan=True),
        "stoichiometry": Stoichiometry,
        "valence": lambda: ValenceOrbital(impute_nan=True),
        "density": DensityFeatures,
        "symmetry": lambda: GlobalSymmetryFeatures(desired_features=list(SYMMETRY_FEATURES)),
    }[part]()


class MatminerDescriptor:
    """Some of matminer's composition and structure featurisers, one after another."""

    def __init__(self, preset: str, parts: tuple[str, ...]):
        self.name, self.preset, self.parts = f"matminer:{preset}", preset, parts
        self._featurizers = [(part, _featurizer(part)) for part in parts]
        self.feature_names = tuple(f"{part}:{label}" for part, featurizer in self._featurizers
                                   for label in featurizer.feature_labels())

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "library": "matminer", "preset": self.preset, "parts": list(self.parts),
                "matminer": metadata.version("matminer"), "pymatgen": metadata.version("pymatgen-core")
                if _installed("pymatgen-core") else metadata.version("pymatgen"),
                "width": len(self.feature_names)}

    def describe(self, atoms: Atoms) -> np.ndarray:
        needs_structure = any(part in STRUCTURE for part in self.parts)
        structure = _structure(atoms) if needs_structure else None
        composition = structure.composition if structure is not None else _composition(atoms)
        values: list[float] = []
        for part, featurizer in self._featurizers:
            values += [float(v) for v in featurizer.featurize(structure if part in STRUCTURE else composition)]
        return np.asarray(values, dtype=np.float64)

    def __repr__(self) -> str:
        return f"MatminerDescriptor({self.preset!r})"


def _installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
        return True
    except metadata.PackageNotFoundError:
        return False


def _composition(atoms: Atoms):
    from pymatgen.core import Composition

    if not len(atoms):
        raise ValueError("no atoms to describe")
    return Composition(atoms.get_chemical_formula())


def _structure(atoms: Atoms):
    from pymatgen.io.ase import AseAtomsAdaptor

    if not atoms.pbc.all() or atoms.cell.volume <= 0:
        raise ValueError("density and symmetry descriptors need a periodic structure with a cell (this one has none); "
                         "use matminer:composition for molecules")
    return AseAtomsAdaptor.get_structure(atoms)


PRESET_PARTS = {"magpie": ("magpie",), "composition": COMPOSITION, "structure": STRUCTURE,
                "all": COMPOSITION + STRUCTURE}


def load_magpie() -> MatminerDescriptor:
    return MatminerDescriptor("magpie", PRESET_PARTS["magpie"])


def load_composition() -> MatminerDescriptor:
    return MatminerDescriptor("composition", PRESET_PARTS["composition"])


def load_structure() -> MatminerDescriptor:
    return MatminerDescriptor("structure", PRESET_PARTS["structure"])


def load_all() -> MatminerDescriptor:
    return MatminerDescriptor("all", PRESET_PARTS["all"])
