"""RDKit's hand-crafted molecular descriptors behind the Descriptor protocol (:mod:`hacknip.plugins.descriptor`): the
molecular counterpart of hacknip-matminer, so that NIP embeddings can be set against the descriptors chemists use
(and joined with them) on the same folds and head: ``chgnet@all+rdkit:descriptors``.

They describe the molecule a row names, not its 3-D geometry: the canonical SMILES hacknip's molecule reader keeps in
``atoms.info["smiles"]`` (a SMILES column or an SDF). A structure without one (a crystal, an XYZ file) cannot be
described; nor can one whose atoms are not that SMILES' atoms with their hydrogens (a row whose SMILES and geometry
disagree). RDKit does all the work; this module picks the descriptors and turns their values into floats. It imports
nothing heavy at import time: :mod:`hacknip.plugins.default_descriptors` registers its names for ``hacknip list``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from ase import Atoms

RDKIT_2D = tuple("""
MaxAbsEStateIndex MaxEStateIndex MinAbsEStateIndex MinEStateIndex qed SPS MolWt HeavyAtomMolWt ExactMolWt
NumValenceElectrons NumRadicalElectrons MaxPartialCharge MinPartialCharge MaxAbsPartialCharge MinAbsPartialCharge
FpDensityMorgan1 FpDensityMorgan2 FpDensityMorgan3 BCUT2D_MWHI BCUT2D_MWLOW BCUT2D_CHGHI BCUT2D_CHGLO BCUT2D_LOGPHI
BCUT2D_LOGPLOW BCUT2D_MRHI BCUT2D_MRLOW AvgIpc BalabanJ BertzCT Chi0 Chi0n Chi0v Chi1 Chi1n Chi1v Chi2n Chi2v Chi3n
Chi3v Chi4n Chi4v HallKierAlpha Ipc Kappa1 Kappa2 Kappa3 LabuteASA PEOE_VSA1 PEOE_VSA10 PEOE_VSA11 PEOE_VSA12
PEOE_VSA13 PEOE_VSA14 PEOE_VSA2 PEOE_VSA3 PEOE_VSA4 PEOE_VSA5 PEOE_VSA6 PEOE_VSA7 PEOE_VSA8 PEOE_VSA9 SMR_VSA1
SMR_VSA10 SMR_VSA2 SMR_VSA3 SMR_VSA4 SMR_VSA5 SMR_VSA6 SMR_VSA7 SMR_VSA8 SMR_VSA9 SlogP_VSA1 SlogP_VSA10 SlogP_VSA11
SlogP_VSA12 SlogP_VSA2 SlogP_VSA3 SlogP_VSA4 SlogP_VSA5 SlogP_VSA6 SlogP_VSA7 SlogP_VSA8 SlogP_VSA9 TPSA EState_VSA1
EState_VSA10 EState_VSA11 EState_VSA2 EState_VSA3 EState_VSA4 EState_VSA5 EState_VSA6 EState_VSA7 EState_VSA8
EState_VSA9 VSA_EState1 VSA_EState10 VSA_EState2 VSA_EState3 VSA_EState4 VSA_EState5 VSA_EState6 VSA_EState7
VSA_EState8 VSA_EState9 FractionCSP3 HeavyAtomCount NHOHCount NOCount NumAliphaticCarbocycles NumAliphaticHeterocycles
NumAliphaticRings NumAmideBonds NumAromaticCarbocycles NumAromaticHeterocycles NumAromaticRings NumAtomStereoCenters
NumBridgeheadAtoms NumHAcceptors NumHDonors NumHeteroatoms NumHeterocycles NumRotatableBonds NumSaturatedCarbocycles
NumSaturatedHeterocycles NumSaturatedRings NumSpiroAtoms NumUnspecifiedAtomStereoCenters Phi RingCount MolLogP MolMR
fr_Al_COO fr_Al_OH fr_Al_OH_noTert fr_ArN fr_Ar_COO fr_Ar_N fr_Ar_NH fr_Ar_OH fr_COO fr_COO2 fr_C_O fr_C_O_noCOO
fr_C_S fr_HOCCN fr_Imine fr_NH0 fr_NH1 fr_NH2 fr_N_O fr_Ndealkylation1 fr_Ndealkylation2 fr_Nhpyrrole fr_SH
fr_aldehyde fr_alkyl_carbamate fr_alkyl_halide fr_allylic_oxid fr_amide fr_amidine fr_aniline fr_aryl_methyl fr_azide
fr_azo fr_barbitur fr_benzene fr_benzodiazepine fr_bicyclic fr_diazo fr_dihydropyridine fr_epoxide fr_ester fr_ether
fr_furan fr_guanido fr_halogen fr_hdrzine fr_hdrzone fr_imidazole fr_imide fr_isocyan fr_isothiocyan fr_ketone
fr_ketone_Topliss fr_lactam fr_lactone fr_methoxy fr_morpholine fr_nitrile fr_nitro fr_nitro_arom
fr_nitro_arom_nonortho fr_nitroso fr_oxazole fr_oxime fr_para_hydroxylation fr_phenol fr_phenol_noOrthoHbond
fr_phos_acid fr_phos_ester fr_piperdine fr_piperzine fr_priamide fr_prisulfonamd fr_pyridine fr_quatN fr_sulfide
fr_sulfonamd fr_sulfone fr_term_acetylene fr_tetrazole fr_thiazole fr_thiocyan fr_thiophene fr_unbrch_alkane fr_urea
""".split())
"""RDKit's 2-D descriptors (``rdkit.Chem.Descriptors.descList`` of RDKit 2026.09), fixed here so that the width and
the columns do not move when RDKit adds one."""

MORGAN_RADIUS = 2
MORGAN_BITS = 2048
"""Morgan count fingerprint of radius 2 (ECFP4's environments), folded to 2048 counts."""


LOG_SCALED = ("Ipc",)
"""Descriptors given as ``log10(1 + value)``: Ipc grows exponentially with the molecule (6e39 for one ClinTox drug),
beyond the float32 the feature store keeps."""


class RDKitDescriptors:
    """RDKit's 2-D descriptors of each molecule (:data:`RDKIT_2D`, those in :data:`LOG_SCALED` as ``log10(1 + x)``);
    a value RDKit cannot compute (Gasteiger charges of zinc, BCUT2D of a lone atom) is undefined (NaN)."""

    name = "rdkit:descriptors"
    feature_names = tuple(f"log10(1+{name})" if name in LOG_SCALED else name for name in RDKIT_2D)

    def __init__(self) -> None:
        from rdkit.Chem import Descriptors

        from hacknip.data.molecules import rdkit_version

        functions = dict(Descriptors.descList)
        missing = [name for name in RDKIT_2D if name not in functions]
        if missing:
            raise ImportError(f"{self.name} needs a newer RDKit: RDKit {rdkit_version()} lacks "
                              f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; "
                              "pip install -U rdkit")
        self._functions = [_log10_of_1_plus(functions[name]) if name in LOG_SCALED else functions[name]
                           for name in RDKIT_2D]

    def __reduce__(self):  # to worker processes: made again there (RDKit's functions do not all pickle)
        return type(self), ()

    def identity(self) -> dict[str, Any]:
        from hacknip.data.molecules import rdkit_version

        return {"name": self.name, "library": "rdkit", "rdkit": rdkit_version(), "width": len(self.feature_names),
                "log10_1_plus": list(LOG_SCALED)}

    def describe(self, atoms: Atoms) -> np.ndarray:
        import numpy as np

        from hacknip.data.molecules import quiet_rdkit

        molecule = molecule_of(atoms, self.name)
        with quiet_rdkit():  # RDKit logs about hydrogens some descriptors remove; nothing for the user to act on
            return np.asarray([_finite_or_nan(function, molecule) for function in self._functions], dtype=np.float64)


class MorganCounts:
    """How often each circular environment of radius :data:`MORGAN_RADIUS` occurs in the molecule, hashed into
    :data:`MORGAN_BITS` counts (ECFP4 with counts, the usual fingerprint baseline)."""

    name = "rdkit:morgan"
    feature_names = tuple(f"morgan_{bit}" for bit in range(MORGAN_BITS))

    def __init__(self) -> None:
        from rdkit.Chem import rdFingerprintGenerator

        self._generator = rdFingerprintGenerator.GetMorganGenerator(radius=MORGAN_RADIUS, fpSize=MORGAN_BITS)

    def __reduce__(self):  # to worker processes: made again there (RDKit's generator does not pickle)
        return type(self), ()

    def identity(self) -> dict[str, Any]:
        from hacknip.data.molecules import rdkit_version

        return {"name": self.name, "library": "rdkit", "rdkit": rdkit_version(), "radius": MORGAN_RADIUS,
                "width": MORGAN_BITS}

    def describe(self, atoms: Atoms) -> np.ndarray:
        return self._generator.GetCountFingerprintAsNumPy(molecule_of(atoms, self.name)).astype(float)


def molecule_of(atoms: Atoms, descriptor: str):
    """The RDKit molecule of the SMILES a row was made from, checked to have exactly ``atoms``' elements."""
    smiles = atoms.info.get("smiles")
    if not smiles:
        raise ValueError(f"{descriptor} describes molecules read from SMILES (a SMILES column or an SDF); this "
                         f"structure ({atoms.get_chemical_formula()}) came without one")
    from rdkit import Chem

    from hacknip.data.molecules import parse_smiles

    molecule = parse_smiles(smiles)
    with_hydrogens = Chem.AddHs(molecule)
    elements = sorted(atom.GetAtomicNum() for atom in with_hydrogens.GetAtoms())
    if elements != sorted(int(number) for number in atoms.numbers):
        raise ValueError(f"{descriptor}: the structure's atoms ({atoms.get_chemical_formula()}) are not those of its "
                         f"SMILES {smiles!r} with hydrogens")
    return molecule


def _log10_of_1_plus(function):
    return lambda molecule: math.log10(1.0 + function(molecule))


def _finite_or_nan(function, molecule) -> float:
    try:
        value = float(function(molecule))
    except (ValueError, RuntimeError, ZeroDivisionError, OverflowError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def load_descriptors() -> RDKitDescriptors:
    _require_rdkit()
    return RDKitDescriptors()


def load_morgan() -> MorganCounts:
    _require_rdkit()
    return MorganCounts()


def _require_rdkit() -> None:
    from hacknip.data.molecules import INSTALL_HINT

    try:
        import rdkit  # noqa: F401
    except ImportError:
        raise ImportError(f"the rdkit descriptors need RDKit: {INSTALL_HINT}") from None
