"""Per-atom Jensen–Shannon divergence across depth (the HackNIP paper's Fig. 6): how much each atom's view of the
structure changes from one layer of a backbone to the next.

Definition (fixed; the paper does not spell out its distributions). For atom ``i`` at layer ``L`` with invariant
features ``h_i``, its view of the structure is a distribution over the atoms ``j`` of the structure (``i`` included)::

    P_i^L(j) = softmax_j( cos(h_i^L, h_j^L) / T ),   T = 0.2

and the divergence of the transition ``L-1 -> L`` is ``JSD(P_i^{L-1} || P_i^L)`` in bits (base 2), so it lies in
[0, 1]: 0 when the atom relates to the others in the same way in both layers. The support is the atoms, not the
feature dimensions, so layers of different widths compare (MACE, SevenNet), and so do layers of equal width, whose
neurons do not correspond anyway: a softmax over feature dimensions would compare unrelated coordinates. The view is
unchanged by reordering the atoms (rows are permuted with them), by rescaling a layer, and by repeating a periodic cell
(each copy of an atom shares its weight, which leaves the divergence as it was). A zero feature vector has cosine 0
with every atom. ``T`` sets how far a view looks. Measured with CHGNet (docs: the JSD section): at T <= 0.1 every
view of the LLZO example spreads evenly over the atom's own element and nothing else (so its JSD measures almost
nothing, mean 0.0015 bits), at T >= 0.5 caffeine's views approach uniform (an effective 0.8 of its atoms or more; mean 0.0032
bits, against 0.0208 at T = 0.05); T = 0.2 keeps both informative (means 0.0069 and 0.0097 bits, views of an
effective 0.4 of the atoms).

:func:`jsd_map` runs one backbone forward pass over one structure and returns a :class:`JsdMap`;
:func:`read_structure` and :func:`molecule_from_smiles` make that structure from a file or a SMILES string.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hacknip.errors import InputError
from hacknip.progress import Progress, no_progress

if TYPE_CHECKING:
    from ase import Atoms

    from hacknip.data.molecules import EmbedOptions, RelaxOptions
    from hacknip.plugins.backbone import Backbone, BackboneSpec

TEMPERATURE = 0.2
"""Softmax temperature applied to cosine similarities (which lie in [-1, 1])."""
ZERO_NORM = 1e-12
"""Feature vectors shorter than this have no direction: cosine 0 with every atom."""
ALL_ATOMS = "all"
"""Label of the all-atom mean in the per-element table."""

# --- the divergence -----------------------------------------------------------------------------------------

def atom_views(features: np.ndarray, temperature: float = TEMPERATURE) -> np.ndarray:
    """Row ``i``: atom ``i``'s view of the structure, softmax over atoms of cosine similarity / ``temperature``."""
    features = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    directions = np.divide(features, norms, out=np.zeros_like(features), where=norms > ZERO_NORM)
    logits = directions @ directions.T / temperature
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def jensen_shannon_bits(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Jensen–Shannon divergence of two stacks of distributions, in bits (in [0, 1])."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    mixture = (p + q) / 2
    return np.clip((_kl_bits(p, mixture) + _kl_bits(q, mixture)) / 2, 0.0, 1.0)


def _kl_bits(p: np.ndarray, mixture: np.ndarray) -> np.ndarray:
    """KL(p || mixture) per row; ``mixture >= p / 2`` is positive wherever ``p`` is."""
    ratio = np.divide(p, mixture, out=np.ones_like(p), where=p > 0)
    return np.sum(p * np.log2(ratio), axis=1)


def jsd_across_depth(features: Mapping[int, np.ndarray], temperature: float = TEMPERATURE,
                     on_transition: Callable[[int], None] | None = None) -> np.ndarray:
    """``(n_atoms, n_layers - 1)``: column ``k`` is each atom's JSD between the ``k``-th and ``k+1``-th layers of
    ``features`` (layer -> ``(n_atoms, width)``), in increasing layer order."""
    layers = sorted(features)
    if len(layers) < 2:
        raise InputError(f"layers {layers}: the JSD compares consecutive layers, so give at least two")
    if not temperature > 0:
        raise InputError(f"temperature {temperature}: must be positive")
    sizes = {layer: np.shape(features[layer])[0] for layer in layers}
    if len(set(sizes.values())) != 1:
        raise InputError(f"the layers hold different numbers of atoms ({sizes}); give features of one structure")
    views = {}
    for layer in layers:
        bad = np.flatnonzero(~np.isfinite(features[layer]).all(axis=1))
        if len(bad):
            raise InputError(f"layer {layer} has non-finite (NaN or infinite) features for atoms {bad.tolist()[:10]}; "
                             "the backbone cannot describe them (an atom without neighbours?), so no JSD is defined")
        views[layer] = atom_views(features[layer], temperature)
    columns = []
    for before, after in zip(layers, layers[1:]):
        columns.append(jensen_shannon_bits(views[before], views[after]))
        if on_transition:
            on_transition(1)
    return np.stack(columns, axis=1)


# --- the result ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JsdMap:
    """Per-atom JSD of one structure between consecutive layers of one backbone."""

    jsd: np.ndarray
    """``(n_atoms, n_transitions)``, bits; rows in the structure's atom order."""
    symbols: tuple[str, ...]
    layers: tuple[int, ...]
    """The compared layers, increasing; transition ``k`` is ``layers[k] -> layers[k + 1]``."""
    backbone: str
    label: str
    """What the structure came from: a file name or a SMILES string."""
    temperature: float = TEMPERATURE
    notes: tuple[str, ...] = field(default=())
    """What a reader should know about the structure (an ordered approximant, a relaxation that did not converge)."""

    @property
    def transitions(self) -> list[tuple[int, int]]:
        return list(zip(self.layers, self.layers[1:]))

    @property
    def columns(self) -> list[str]:
        """CSV column of each transition: ``jsd_0_1``, ..."""
        return [f"jsd_{before}_{after}" for before, after in self.transitions]

    @property
    def formula(self) -> str:
        from ase.symbols import Symbols

        return Symbols.fromsymbols(self.symbols).get_chemical_formula()

    @property
    def elements(self) -> list[str]:
        """The elements present, by increasing atomic number."""
        from ase.data import atomic_numbers

        return sorted(set(self.symbols), key=atomic_numbers.__getitem__)

    def atom_order(self) -> np.ndarray:
        """Atom indices grouped by element (in :attr:`elements` order), each group in structure order."""
        rank = {element: position for position, element in enumerate(self.elements)}
        return np.array(sorted(range(len(self.symbols)), key=lambda i: (rank[self.symbols[i]], i)), dtype=int)

    def element_means(self) -> dict[str, np.ndarray]:
        """Mean JSD of each element's atoms per transition, and of all atoms under :data:`ALL_ATOMS`."""
        symbols = np.array(self.symbols)
        means = {element: self.jsd[symbols == element].mean(axis=0) for element in self.elements}
        means[ALL_ATOMS] = self.jsd.mean(axis=0)
        return means

    def largest(self) -> tuple[int, int]:
        """(atom, transition) of the largest JSD."""
        atom, transition = np.unravel_index(int(np.argmax(self.jsd)), self.jsd.shape)
        return int(atom), int(transition)

    def to_csv(self, path: str | Path) -> Path:
        """One row per atom: ``index, element, jsd_<a>_<b>...``."""
        rows = ([index, symbol, *_formatted(values)] for index, (symbol, values) in enumerate(zip(self.symbols, self.jsd)))
        return _write_csv(path, ["index", "element", *self.columns], rows)

    def element_csv(self, path: str | Path) -> Path:
        """One row per element (and ``all``): ``element, n_atoms, jsd_<a>_<b>...`` (means over its atoms)."""
        counts = {element: self.symbols.count(element) for element in self.elements} | {ALL_ATOMS: len(self.symbols)}
        rows = ([element, counts[element], *_formatted(means)] for element, means in self.element_means().items())
        return _write_csv(path, ["element", "n_atoms", *self.columns], rows)


def _formatted(values: np.ndarray) -> list[str]:
    return [f"{value:.6g}" for value in values]


def _write_csv(path: str | Path, header: list[str], rows) -> Path:
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- from a structure ---------------------------------------------------------------------------------------

def jsd_map(atoms: Atoms, backbone: str | Backbone, layers: Sequence[int] | None = None, *,
            temperature: float = TEMPERATURE, label: str | None = None, progress: Progress | None = None) -> JsdMap:
    """Per-atom JSD between consecutive ``layers`` (default: all) of ``backbone`` (a name or a loaded backbone) for
    one structure, from one forward pass. A backbone that needs cutoff-sized supercells gets one, as featurising does;
    each atom's value is then the mean over its copies (equal copies give the value of the cell itself). Raises
    :class:`~hacknip.errors.InputError` for layers the backbone does not have and
    :class:`~hacknip.errors.BadStructureError` for a structure it cannot featurise.

    Example::

        backbone = hacknip.load_backbone("chgnet")
        result = jsd_map(read_structure("llzo.cif"), backbone)
        result.to_csv("jsd.csv"); result.element_means()["Zr"]     # mean JSD of Zr per transition
    """
    from hacknip.data.structures import WARNING_KEY

    backbone = _loaded(backbone)
    layers = checked_layers(backbone, layers)
    inputs = _featurised_cell(atoms, backbone)
    start = progress or no_progress
    advance = start(f"{backbone.name} forward pass ({len(inputs)} atoms)", 1)
    features = backbone.per_atom_features([inputs], layers)[0]
    advance(1)
    matrix = jsd_across_depth(features, temperature, start("JSD between layers", len(layers) - 1))
    copies = len(inputs) // len(atoms)
    matrix = matrix.reshape(copies, len(atoms), -1).mean(axis=0)  # ASE repeats the whole cell, copy after copy
    notes = [note for note in [atoms.info.get(WARNING_KEY)] if note]
    if copies > 1:
        notes.append(f"{backbone.name} needs cutoff-sized supercells: featurised as {copies} copies of the cell "
                     f"({len(inputs)} atoms); each atom's JSD is the mean over its copies")
    return JsdMap(matrix, tuple(atoms.get_chemical_symbols()), tuple(layers), backbone.name,
                  label or atoms.get_chemical_formula(), temperature, tuple(notes))


def _featurised_cell(atoms: Atoms, backbone: Backbone) -> Atoms:
    """What featurising gives the backbone: the cell itself, or a cutoff-sized supercell when it needs one."""
    if not backbone.needs_supercell:
        return atoms
    from hacknip.features.supercell import cutoff_supercell
    from hacknip.plugins.backbone import supercell_rule

    return cutoff_supercell(atoms, backbone.cutoff, supercell_rule(backbone))


def checked_layers(backbone: Backbone | BackboneSpec, layers: Sequence[int] | None) -> list[int]:
    """``layers`` sorted and unique (default: every layer of ``backbone``, or of a registered spec before loading it),
    at least two, all within its range."""
    available = len(backbone.layer_widths)
    if layers is None:
        layers = range(available)
    chosen = sorted({int(layer) for layer in layers})
    outside = [layer for layer in chosen if not 0 <= layer < available]
    if outside:
        raise InputError(f"layers {outside}: {backbone.name} has layers 0-{available - 1}; pick at least two of them")
    if len(chosen) < 2:
        raise InputError(f"layers {chosen}: the JSD compares consecutive layers, so pick at least two of "
                         f"{backbone.name}'s layers 0-{available - 1}")
    return chosen


def _loaded(backbone: str | Backbone) -> Backbone:
    if isinstance(backbone, str):
        from hacknip.plugins.registry import load_backbone

        return load_backbone(backbone)
    return backbone


STRUCTURE_HINT = "give a CIF or POSCAR file (or an .xyz file for a molecule)"
ASE_SUFFIXES = (".xyz", ".extxyz")


def read_structure(path: str | Path, disordered: str = "refuse") -> Atoms:
    """One structure from a CIF / POSCAR file (pymatgen) or an (ext)xyz file (ASE, first frame), checked as the
    dataset readers check rows; ``disordered="approximant"`` orders partially occupied sites
    (:mod:`hacknip.data.disorder`). Every problem is an :class:`~hacknip.errors.InputError` naming the file."""
    from hacknip.data.structures import DISORDERED_CHOICES, checked_atoms, pymatgen_to_atoms

    path = Path(path)
    if disordered not in DISORDERED_CHOICES:
        raise InputError(f"disordered={disordered!r}: choose one of {', '.join(DISORDERED_CHOICES)}")
    if not path.is_file():
        raise InputError(f"{path}: no such file; {STRUCTURE_HINT}")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file; {STRUCTURE_HINT}")
    parsed = _parsed(path)
    try:
        atoms = parsed if path.suffix.lower() in ASE_SUFFIXES else pymatgen_to_atoms(parsed, disordered)
        return checked_atoms(atoms)
    except ValueError as error:  # hacknip's own checks, written for people
        raise InputError(f"{path}: {error}") from None


def _parsed(path: Path):
    """ASE ``Atoms`` for an (ext)xyz file, else a pymatgen ``Structure``; a file neither reads is an InputError."""
    try:
        if path.suffix.lower() in ASE_SUFFIXES:
            import ase.io

            return ase.io.read(path, index=0)
        from pymatgen.core import Structure

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen warns before it raises; the error below says it once
            return Structure.from_file(str(path))
    except Exception as error:  # parsers raise anything from KeyError to their own types
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: unreadable structure ({reason}); {STRUCTURE_HINT}") from None


def molecule_from_smiles(smiles: str, embed_options: EmbedOptions | None = None) -> Atoms:
    """A molecule as the project makes them (:mod:`hacknip.data.molecules`): RDKit, explicit hydrogens, one seeded
    ETKDG conformer (optimised with MMFF94 if ``embed_options`` says so), non-periodic. A SMILES RDKit cannot read is
    an :class:`~hacknip.errors.InputError`."""
    from hacknip.data.molecules import EmbedOptions, MoleculeError, embed, parse_smiles

    try:
        atoms = embed(parse_smiles(smiles), embed_options or EmbedOptions())
    except MoleculeError as error:
        raise InputError(f"SMILES {smiles!r}: {error}; check the SMILES string") from None
    atoms.info["smiles"] = smiles
    return atoms


def relax_molecule(atoms: Atoms, backbone: str | Backbone, options: RelaxOptions | None = None) -> Atoms:
    """``atoms`` relaxed with ``backbone``'s forces (BFGS, fmax 0.05 eV/Å, at most 200 steps by default) in a
    box as wide as its cutoff, as :mod:`hacknip.data.molecules` relaxes molecules. A relaxation that does not converge
    is kept, with a note in ``atoms.info`` that :func:`jsd_map` carries into its result; ``relax_converged``,
    ``relax_steps`` and ``relax_fmax`` (eV/Å) record how it went."""
    from hacknip.data.relaxation import RelaxOptions, calculator_of, relax
    from hacknip.data.structures import WARNING_KEY
    from hacknip.plugins.backbone import check_elements

    backbone = _loaded(backbone)
    options = options or RelaxOptions()
    if backbone.supported_elements is not None:
        check_elements([atoms], backbone.supported_elements, backbone.name)
    vacuum = options.vacuum_or(float(backbone.cutoff))
    relaxation = relax(atoms, calculator_of(backbone), options, vacuum)
    relaxed = relaxation.atoms  # a copy of atoms, info included
    relaxed.info.update(relax_converged=relaxation.converged, relax_steps=relaxation.steps, relax_fmax=relaxation.fmax)
    if not relaxation.converged:
        relaxed.info[WARNING_KEY] = (f"relaxation not converged: largest force {relaxation.fmax:.3g} eV/Å after "
                                     f"{relaxation.steps} steps (asked for {options.fmax} eV/Å)")
    return relaxed
