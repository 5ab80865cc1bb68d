"""matminer featurisers behind hacknip's :class:`~hacknip.plugins.descriptor.Descriptor` protocol: a structure in
(ASE ``Atoms``), one vector of floats out. matminer does all the work; this module only picks featurisers, turns
their outputs into numbers and says which structures they cannot describe."""

from __future__ import annotations

import warnings
from importlib import metadata
from typing import Any

import numpy as np
from ase import Atoms

COMPOSITION = ("magpie", "stoichiometry", "valence")
STRUCTURE = ("density", "symmetry")
SITES = ("crystalnn", "opsite", "agni", "gaussian_symmetry", "grdf", "coordination", "property_difference",
         "bond_length", "bond_angle", "bond_orientation", "voronoi")
"""MODNet's site featurisers (its DeBreuck2020 preset, ChemEnvSiteFingerprint left out: seconds per site), each
summarised over the sites by matminer's SiteStatsFingerprint (mean and standard deviation)."""
NEEDS_STRUCTURE = STRUCTURE + SITES
NOISY_MODULES = (r"matminer\.", r"pymatgen\.")
SYMMETRY_FEATURES = ("spacegroup_num", "crystal_system_int", "is_centrosymmetric", "n_symmetry_ops")
"""matminer's GlobalSymmetryFeatures without ``crystal_system``, the name of what ``crystal_system_int`` numbers."""


def _featurizer(part: str):
    from matminer.featurizers.composition import ElementProperty, Stoichiometry, ValenceOrbital
    from matminer.featurizers.structure import DensityFeatures, GlobalSymmetryFeatures

    if part in SITES:
        from matminer.featurizers.structure import SiteStatsFingerprint

        return SiteStatsFingerprint(_site_featurizer(part), stats=("mean", "std_dev"))
    return {
        "magpie": lambda: ElementProperty.from_preset("magpie", impute_nan=True),
        "stoichiometry": Stoichiometry,
        "valence": lambda: ValenceOrbital(impute_nan=True),
        "density": DensityFeatures,
        "symmetry": lambda: GlobalSymmetryFeatures(desired_features=list(SYMMETRY_FEATURES)),
    }[part]()


def _site_featurizer(part: str):
    from matminer.featurizers import site
    from pymatgen.analysis.local_env import VoronoiNN

    return {
        "crystalnn": lambda: site.CrystalNNFingerprint.from_preset("ops"),
        "opsite": site.OPSiteFingerprint,
        "agni": site.AGNIFingerprints,
        "gaussian_symmetry": site.GaussianSymmFunc,
        "grdf": lambda: site.GeneralizedRadialDistributionFunction.from_preset("gaussian"),
        "coordination": site.CoordinationNumber,
        "property_difference": site.LocalPropertyDifference,
        "bond_length": lambda: site.AverageBondLength(VoronoiNN()),
        "bond_angle": lambda: site.AverageBondAngle(VoronoiNN()),
        "bond_orientation": site.BondOrientationalParameter,
        "voronoi": site.VoronoiFingerprint,
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
        with warnings.catch_warnings():
            # matminer and pymatgen warn for every site whose radius or oxidation state they guess (thousands of
            # lines a dataset, none the user can act on); what cannot be described is reported per row instead
            for module in NOISY_MODULES:
                warnings.filterwarnings("ignore", category=UserWarning, module=module)
                warnings.filterwarnings("ignore", category=RuntimeWarning, module=module)
            return self._describe(atoms)

    def _describe(self, atoms: Atoms) -> np.ndarray:
        needs_structure = any(part in NEEDS_STRUCTURE for part in self.parts)
        structure = _structure(atoms) if needs_structure else None
        composition = structure.composition if structure is not None else _composition(atoms)
        values: list[float] = []
        for part, featurizer in self._featurizers:
            values += _part_values(part, featurizer, structure if part in NEEDS_STRUCTURE else composition)
        return np.asarray(values, dtype=np.float64)

    def __repr__(self) -> str:
        return f"MatminerDescriptor({self.preset!r})"


def _part_values(part: str, featurizer, material) -> list[float]:
    """One featuriser's values; a site featuriser that fails on some site (pymatgen's Voronoi on a pathological
    cell) leaves its features undefined (NaN) for this structure, as the Descriptor protocol says."""
    try:
        return [float(v) for v in featurizer.featurize(material)]
    except (ValueError, RuntimeError):
        if part not in SITES:
            raise
        return [float("nan")] * len(featurizer.feature_labels())


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
                "all": COMPOSITION + STRUCTURE, "sites": SITES, "modnet": COMPOSITION + STRUCTURE + SITES}


def load_magpie() -> MatminerDescriptor:
    return MatminerDescriptor("magpie", PRESET_PARTS["magpie"])


def load_composition() -> MatminerDescriptor:
    return MatminerDescriptor("composition", PRESET_PARTS["composition"])


def load_structure() -> MatminerDescriptor:
    return MatminerDescriptor("structure", PRESET_PARTS["structure"])


def load_all() -> MatminerDescriptor:
    return MatminerDescriptor("all", PRESET_PARTS["all"])


def load_sites() -> MatminerDescriptor:
    return MatminerDescriptor("sites", PRESET_PARTS["sites"])


def load_modnet() -> MatminerDescriptor:
    return MatminerDescriptor("modnet", PRESET_PARTS["modnet"])
