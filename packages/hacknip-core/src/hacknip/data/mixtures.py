"""Mixtures: samples made of several components (molecules given as SMILES, or structure files) in given amounts.

The sample embedding is the molar-concentration-weighted sum of the component embeddings, as in the HackNIP paper's
electrolyte example (``weighting="sum"``), or the mole-fraction-weighted mean (``weighting="mean"``).

Mixture table (CSV or parquet): one row per sample with an id column (default ``id``), a ``components`` column and
one or more numeric target columns. ``components`` lists parts separated by ``;``, each ``<amount> <unit> <species>``::

    1 M LiPF6; 1 vol EC; 1 vol DMC; 2 wt% VC
    1.2 mol LiFSI; 1.2 mol DME; 3 mol TTE
    0.5 M [Li+].O=S(=O)(F)[N-]S(=O)(=O)F; 1 vol COCCOC
    1 mol file:structures/ion_pair.cif; 3 mol C1COCO1

``<species>`` is a name from a species table (CSV with columns ``name, smiles`` and optionally ``molar_mass``
(g/mol), ``density`` (g/cm³), ``structure`` (a file path)), else ``file:<path>`` (a structure file, relative to
the mixture table's folder), else a SMILES. Units (:data:`UNITS`):

- ``M``: mol per litre of the final mixture.
- ``vol`` / ``wt`` / ``mol``: parts of the solvent by volume, mass or moles (all ratio parts of one mixture share one
  unit). 1 L of solvent is made from these parts with ideal mixing; a salt (a SMILES with charged atoms, e.g.
  ``1 mol LiFSI; 3 mol SL``) adds no volume, any other part needs a density.
- ``vol%`` / ``wt%``: an additive as a volume or mass percentage of the final mixture.

Dissolved components given in ``M`` are taken to add no volume: the solution volume is the solvent volume (plus
additives). Molar masses come from the species table or, for SMILES, from RDKit; densities only from the species
table. A conversion that needs a missing density or molar mass fails for that row, naming the component.

Every distinct component is featurised once: SMILES through :func:`hacknip.data.molecules.molecules_to_dataset` (relaxed
with the backbone's calculator, geometries stored) and then :func:`hacknip.features.featurize.featurize` (features stored).
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hacknip.data.molecules import EmbedOptions, RelaxOptions
from hacknip.data.structures import (
    BadInputError,
    Dataset,
    Sample,
    SkippedRow,
    _checked_target,
    _pick_target,
    _read_table,
    check_on_error,
    structure_file_to_atoms,
)
from hacknip.errors import InputError
from hacknip.features.featurize import featurize, layer_matrix
from hacknip.plugins.backbone import Backbone
from hacknip.store import FeatureStore

UNITS = ("M", "vol", "wt", "mol", "vol%", "wt%")
RATIO_UNITS = ("vol", "wt", "mol")
PERCENT_UNITS = ("vol%", "wt%")
WEIGHTINGS = ("sum", "mean")
FILE_PREFIX = "file:"
SOLVENT_LITRES = 1.0
"""The ratio parts are scaled to make this much solvent; concentrations do not depend on it."""


class MixtureError(ValueError):
    """A mixture that cannot be read or converted; the message says which component and why."""


# --- the model ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Species:
    """What is known about a component: a SMILES or a structure file, and the facts needed for unit conversion."""

    name: str
    smiles: str | None = None
    structure: str | None = None
    molar_mass: float | None = None
    """g/mol; computed from the SMILES when not given."""
    density: float | None = None
    """g/cm³ of the pure liquid; only needed for volume parts, and to count a component's volume."""

    @property
    def is_salt(self) -> bool:
        """Made of ions (a SMILES with charged atoms): dissolved, it is taken to add no volume."""
        return bool(self.smiles) and re.search(r"\[[^\]]*[+-]\d*\]", self.smiles) is not None

    def volume_per_gram(self, why: str) -> float:
        """cm³ per gram in a mixture: 1/density, or 0 for a salt; anything else without a density is an error."""
        if self.density:
            return 1.0 / self.density
        if self.is_salt:
            return 0.0
        raise MixtureError(f"{self.name}: no density, needed {why} (give one in the species table)")

    @property
    def key(self) -> str:
        """Identity of the thing to featurise: the canonical SMILES or the resolved structure path."""
        return f"{FILE_PREFIX}{self.structure}" if self.structure else f"smiles:{self.smiles}"


@dataclass(frozen=True)
class Component:
    species: Species
    amount: float
    unit: str


@dataclass
class Mixture:
    id: str
    row: str
    components: list[Component]
    target: float = float("nan")

    def concentrations(self) -> dict[str, float]:
        """mol/L of the final mixture by :attr:`Species.key` (a species listed twice is summed)."""
        totals: dict[str, float] = {}
        for component, molar in zip(self.components, molar_concentrations(self.components)):
            totals[component.species.key] = totals.get(component.species.key, 0.0) + molar
        return totals


@dataclass
class MixtureTable:
    mixtures: list[Mixture]
    target_name: str
    source: str
    skipped: list[SkippedRow] = field(default_factory=list)

    @property
    def targets(self) -> np.ndarray:
        return np.array([mixture.target for mixture in self.mixtures], dtype=np.float64)


# --- unit conversion ----------------------------------------------------------------------------------------

def _molar_mass(species: Species) -> float:
    if species.molar_mass:
        return species.molar_mass
    if species.smiles:
        from rdkit.Chem import Descriptors

        from hacknip.data.molecules import parse_smiles

        return float(Descriptors.MolWt(parse_smiles(species.smiles)))
    raise MixtureError(f"{species.name}: no molar mass (give one in the species table)")


def _density(species: Species, why: str) -> float:
    if not species.density:
        raise MixtureError(f"{species.name}: no density, needed {why} (give one in the species table)")
    return species.density


def _solvent_moles(parts: Sequence[Component]) -> list[float]:
    """Moles of each ratio part in :data:`SOLVENT_LITRES` of solvent, ideal mixing."""
    units = {part.unit for part in parts}
    if len(units) > 1:
        raise MixtureError(f"solvent parts mix units {sorted(units)}; give them all by vol, wt or mol")
    unit = units.pop()
    share = np.array([part.amount for part in parts], dtype=np.float64) / sum(part.amount for part in parts)
    masses = [_molar_mass(part.species) for part in parts]
    millilitres = SOLVENT_LITRES * 1000.0
    if unit == "vol":
        return [f * millilitres * _density(p.species, "to convert a volume ratio") / m for f, p, m in zip(share, parts, masses)]
    # grams of each part per unit of blend, then the volume they fill (a salt fills none)
    per_unit = share if unit == "wt" else share * np.array(masses)
    volume = sum(g * p.species.volume_per_gram(f"to convert a {unit} ratio") for g, p in zip(per_unit, parts))
    if volume <= 0:
        raise MixtureError(f"the {unit} ratio gives no volume: every part is a salt")
    grams = per_unit * millilitres / volume
    return [g / m for g, m in zip(grams, masses)]


def _percent_additives(additives: Sequence[Component], base_grams: float) -> tuple[list[float], float]:
    """Moles of each additive and the litres they add, for a base of :data:`SOLVENT_LITRES` weighing ``base_grams``."""
    units = {additive.unit for additive in additives}
    if len(units) > 1:
        raise MixtureError("additives given both as wt% and vol%; give them one way")
    total = sum(additive.amount for additive in additives)
    if not 0 <= total < 100:
        raise MixtureError(f"additive percentages add up to {total:g}%")
    moles, litres = [], 0.0
    for additive in additives:
        fraction = additive.amount / (100.0 - total)
        if additive.unit == "wt%":
            grams = fraction * base_grams
            litres += grams * additive.species.volume_per_gram("to count a wt% additive's volume") / 1000.0
        else:
            volume = fraction * SOLVENT_LITRES
            grams = volume * 1000.0 * _density(additive.species, "to convert a vol%")
            litres += volume
        moles.append(grams / _molar_mass(additive.species))
    return moles, litres


def molar_concentrations(components: Sequence[Component]) -> list[float]:
    """mol/L of the final mixture for each component, in order (see the module docstring for the rules)."""
    for component in components:
        if component.unit not in UNITS:
            raise MixtureError(f"{component.species.name}: unknown unit {component.unit!r} (use one of {', '.join(UNITS)})")
        if not (math.isfinite(component.amount) and component.amount > 0):
            raise MixtureError(f"{component.species.name}: amount must be a positive number, not {component.amount!r}")
    fixed = [i for i, c in enumerate(components) if c.unit == "M"]
    parts = [i for i, c in enumerate(components) if c.unit in RATIO_UNITS]
    additives = [i for i, c in enumerate(components) if c.unit in PERCENT_UNITS]
    if not parts:
        if additives:
            raise MixtureError("percentages need a solvent to be a percentage of: give solvent parts (vol, wt or mol)")
        return [components[i].amount for i in fixed]
    moles = [0.0] * len(components)
    for i in fixed:
        moles[i] = components[i].amount * SOLVENT_LITRES
    for i, n in zip(parts, _solvent_moles([components[i] for i in parts])):
        moles[i] = n
    litres = SOLVENT_LITRES
    if additives:
        base_grams = sum(moles[i] * _molar_mass(components[i].species) for i in fixed + parts)
        additive_moles, added_litres = _percent_additives([components[i] for i in additives], base_grams)
        for i, n in zip(additives, additive_moles):
            moles[i] = n
        litres += added_litres
    return [n / litres for n in moles]


# --- reading ------------------------------------------------------------------------------------------------

def read_species_table(path: str | Path) -> dict[str, Species]:
    """Species by name from a CSV with columns ``name, smiles`` and optional ``molar_mass, density, structure``."""
    frame = _read_table(Path(path))
    if "name" not in frame.columns or not {"smiles", "structure"} & set(frame.columns):
        raise InputError(f"{path}: a species table needs a name column and a smiles or structure column")
    species = {}
    for index, row in frame.iterrows():
        name = str(row["name"]).strip()
        if name in species:
            raise InputError(f"{path}: row {index + 2}: species {name!r} listed twice")
        species[name] = Species(name, _text(row.get("smiles")), _text(row.get("structure")),
                                _number(row.get("molar_mass")), _number(row.get("density")))
    return species


def _text(value) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip() \
        else str(value).strip()


def _number(value) -> float | None:
    text = _text(value)
    return float(text) if text is not None else None


_PART = re.compile(r"^\s*(?P<amount>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>M|vol%|wt%|vol|wt|mol)\s+(?P<what>\S+)\s*$")


def parse_components(text: str, species: dict[str, Species] | None = None, folder: Path | None = None) -> list[Component]:
    """``"1 M LiPF6; 1 vol EC; 1 vol DMC"`` → components (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise MixtureError("no components")
    components = []
    for part in text.split(";"):
        if not part.strip():
            continue
        match = _PART.match(part)
        if not match:
            raise MixtureError(f"cannot read {part.strip()!r}: write '<amount> <unit> <species>' with unit one of "
                               f"{', '.join(UNITS)}")
        resolved = resolve_species(match["what"], species or {}, folder)
        components.append(Component(resolved, float(match["amount"]), match["unit"]))
    return components


def resolve_species(what: str, species: dict[str, Species], folder: Path | None = None) -> Species:
    """A species-table entry, a ``file:`` structure, or a SMILES (canonicalised)."""
    if what in species:
        entry = species[what]
        if entry.smiles:
            return Species(entry.name, _canonical(entry.smiles, entry.name), None, entry.molar_mass, entry.density)
        return Species(entry.name, None, str((folder or Path()) / entry.structure), entry.molar_mass, entry.density)
    if what.startswith(FILE_PREFIX):
        path = (folder or Path()) / what.removeprefix(FILE_PREFIX)
        if not path.exists():
            raise MixtureError(f"no structure file {path}")
        return Species(what, structure=str(path))
    return Species(what, smiles=_canonical(what, what))


def _canonical(smiles: str, name: str) -> str:
    from hacknip.data.molecules import MoleculeError, canonical_smiles, parse_smiles

    try:
        return canonical_smiles(parse_smiles(smiles))
    except MoleculeError as error:
        raise MixtureError(f"{name!r} is neither a known species nor a readable SMILES ({error})") from None


def read_mixture_table(path: str | Path, *, target: str | None = None, components_column: str = "components",
                       id_column: str = "id", species: dict[str, Species] | str | Path | None = None,
                       on_error: str = "raise") -> MixtureTable:
    """Mixtures from a table; rows that cannot be read (or converted to molar concentrations) raise a
    :class:`BadInputError` naming the row, or with ``on_error="skip"`` are listed in ``MixtureTable.skipped``."""
    check_on_error(on_error)
    path = Path(path)
    if species is not None and not isinstance(species, dict):
        species = read_species_table(species)
    frame = _read_table(path)
    for column in (components_column, id_column):
        if column not in frame.columns:
            raise InputError(f"{path}: no column {column!r} (columns: {list(frame.columns)})")
    target = target or _pick_target(frame, None, {components_column, id_column}, str(path))
    mixtures, skipped = [], []
    for index, row in enumerate(frame.itertuples(index=False)):
        row_name, sample_id = f"row {index + 2}", str(getattr(row, id_column))
        try:
            components = parse_components(getattr(row, components_column), species, path.parent)
            molar_concentrations(components)  # fail here, naming the row, rather than at featurisation
            mixtures.append(Mixture(sample_id, row_name, components, _checked_target(frame[target].iloc[index])))
        except ValueError as error:
            if on_error == "raise":
                raise BadInputError(str(path), row_name, sample_id, str(error)) from None
            skipped.append(SkippedRow(row_name, sample_id, str(error)))
    return MixtureTable(mixtures, target, str(path), skipped)


# --- embedding ----------------------------------------------------------------------------------------------

@dataclass
class MixtureEmbedding:
    X: np.ndarray
    """One row per kept mixture."""
    mixtures: list[Mixture]
    rejected: list[SkippedRow]
    component_keys: list[str]
    """Every distinct component, featurised once."""
    flagged: list[SkippedRow] = field(default_factory=list)
    """Components kept with a warning (e.g. a relaxation that did not converge), listed like skipped rows."""


def distinct_species(mixtures: Sequence[Mixture]) -> list[Species]:
    seen: dict[str, Species] = {}
    for mixture in mixtures:
        for component in mixture.components:
            seen.setdefault(component.species.key, component.species)
    return list(seen.values())


def component_dataset(species: Sequence[Species], backbone: Backbone | None, store: FeatureStore,
                      relax_options: RelaxOptions | None = RelaxOptions(), embed_options: EmbedOptions | None = None,
                      ) -> tuple[Dataset, list[SkippedRow]]:
    """One sample per distinct species (id = :attr:`Species.key`): SMILES made 3D and relaxed with ``backbone``
    (``relax_options=None``: not relaxed), structure files read as they are. Failures come back as skipped rows."""
    from hacknip.data.molecules import molecules_to_dataset

    samples, skipped = [], []
    smiles = [s for s in species if s.smiles]
    if smiles:
        with tempfile.TemporaryDirectory() as folder:
            table = Path(folder) / "components.csv"
            lines = ["id,smiles,target"] + [f'"{s.key}",{s.smiles},0' for s in smiles]
            table.write_text("\n".join(lines) + "\n")
            molecules = molecules_to_dataset(
                table, smiles_column="smiles", target="target", id_column="id", backbone=backbone,
                embed_options=embed_options, relax_options=relax_options, store=store, on_error="skip")
        samples += molecules.samples
        skipped += molecules.skipped
    for entry in (s for s in species if s.structure):
        try:
            samples.append(Sample(entry.key, entry.structure, structure_file_to_atoms(Path(entry.structure)), 0.0))
        except Exception as error:  # structure readers raise anything; the mixtures using it are rejected
            skipped.append(SkippedRow(entry.structure, entry.key, f"unreadable structure: {error}"))
    return Dataset(samples, "component", "mixture components", skipped=skipped), skipped


def embed_mixtures(mixtures: Sequence[Mixture], backbone: Backbone, store: FeatureStore, layers: Sequence[int],
                   *, pooling: tuple[str, ...] = ("mean",), weighting: str = "sum",
                   relax_options: RelaxOptions | None = RelaxOptions(), embed_options: EmbedOptions | None = None,
                   relax_backbone: Backbone | None = None) -> dict[int, MixtureEmbedding]:
    """Mixture embeddings for each of ``layers``: ``sum`` = Σ cᵢ·eᵢ with cᵢ in mol/L, ``mean`` = Σ xᵢ·eᵢ with mole
    fractions xᵢ. Components are relaxed with ``relax_backbone`` (default ``backbone``) unless ``relax_options`` is
    None. A mixture with a component that failed is rejected, naming that component."""
    if weighting not in WEIGHTINGS:
        raise InputError(f"weighting must be one of {WEIGHTINGS}, not {weighting!r}")
    species = distinct_species(mixtures)
    relaxer = (relax_backbone or backbone) if relax_options is not None else None
    dataset, failed = component_dataset(species, relaxer, store, relax_options, embed_options)
    report = featurize(dataset, backbone, store, layers=list(layers), on_error="skip")
    failed = {entry.id: entry.reason for entry in failed + report.rejected}
    stored = [(sample.id, key) for sample, key in zip(dataset.samples, report.keys) if sample.id not in failed]
    matrices = {layer: layer_matrix(report.features, [key for _, key in stored], [layer], pooling) for layer in layers}
    finite = np.all([np.isfinite(matrix).all(axis=1) for matrix in matrices.values()], axis=0)
    for (species_key, _), ok in zip(stored, finite):
        if not ok:  # e.g. an ion left with no neighbour within the cutoff
            failed[species_key] = f"{backbone.name} gave non-finite features (NaN/inf)"
    species_keys = [species_key for (species_key, _), ok in zip(stored, finite) if ok]
    kept, rejected = _usable(mixtures, failed)
    weights = _weights(kept, species_keys, weighting)
    used = set(species_keys)
    flagged = [entry for entry in dataset.flagged if entry.id in used]
    return {layer: MixtureEmbedding(weights @ matrix[finite], kept, rejected, species_keys, flagged)
            for layer, matrix in matrices.items()}


def _usable(mixtures: Sequence[Mixture], failed: dict[str, str]) -> tuple[list[Mixture], list[SkippedRow]]:
    kept, rejected = [], []
    for mixture in mixtures:
        broken = [c.species for c in mixture.components if c.species.key in failed]
        if broken:
            reason = "; ".join(f"component {s.name}: {failed[s.key]}" for s in broken)
            rejected.append(SkippedRow(mixture.row, mixture.id, reason))
        else:
            kept.append(mixture)
    return kept, rejected


def _weights(mixtures: Sequence[Mixture], species_keys: Sequence[str], weighting: str) -> np.ndarray:
    """(mixtures × components) matrix of molar concentrations, or mole fractions for ``mean``."""
    column = {key: j for j, key in enumerate(species_keys)}
    weights = np.zeros((len(mixtures), len(species_keys)))
    for i, mixture in enumerate(mixtures):
        for key, molar in mixture.concentrations().items():
            weights[i, column[key]] += molar
    if weighting == "mean":
        weights /= weights.sum(axis=1, keepdims=True)
    return weights
