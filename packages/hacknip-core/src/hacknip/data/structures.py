"""Reading labelled structures: Matbench files, folders of CIF/POSCAR files, extxyz / ASE databases, and
CSV/parquet tables with a CIF-text column.

Every reader validates each row (parseable, non-empty, finite target, no two atoms closer than
:data:`MIN_DISTANCE`) and either raises a :class:`BadInputError` naming the row, or — with ``on_error="skip"`` —
records it in ``Dataset.skipped``. Rows whose structure is identical to another row's are kept and flagged
(``Dataset.flagged``). A file that cannot be read at all raises one :class:`~hacknip.errors.InputError` line.
Nothing is dropped silently.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import math
import re
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from hacknip.errors import BadStructureError, InputError
from hacknip.progress import Progress, no_progress

STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar")
ON_ERROR_CHOICES = ("raise", "skip")
UNLABELLED = "<no target>"
"""Pass as ``target`` to read structures without targets (for prediction); targets are then NaN."""


WARNING_KEY = "hacknip_warning"
"""``atoms.info`` key of a kept sample's warning (a non-converged relaxation, an ordered approximant);
:attr:`Dataset.flagged` lists them, with the copies of another row's structure (``DUPLICATE_KEY``)."""

MIN_DISTANCE = 0.5
"""Atoms closer than this (Å, minimum image in periodic cells) are refused: almost always a duplicated site."""
DUPLICATE_STRUCTURE = "same structure as"
"""Start of the warning on samples whose structure (species, positions, cell) is also another row's."""
DUPLICATE_KEY = "hacknip_duplicate"
"""``atoms.info`` key of a copy of another row's structure: (structure hash, warning). Kept apart from
``WARNING_KEY`` so that a grouped split can take it back; :attr:`Dataset.flagged` lists both."""


def _warnings(atoms: Atoms) -> str:
    duplicate = atoms.info.get(DUPLICATE_KEY)
    return "; ".join(w for w in (atoms.info.get(WARNING_KEY), duplicate[1] if duplicate else None) if w)


def add_warning(atoms: Atoms, warning: str) -> None:
    """Flag a kept sample: append ``warning`` to ``atoms.info[WARNING_KEY]``, keeping any warning already there."""
    existing = atoms.info.get(WARNING_KEY)
    if not existing:
        atoms.info[WARNING_KEY] = warning
    elif warning not in existing:
        atoms.info[WARNING_KEY] = f"{existing}; {warning}"


class BadInputError(InputError):
    """A row of the input that cannot be used, with where it is and what to do."""

    def __init__(self, source: str, row: str, sample_id: str, reason: str):
        self.source, self.row, self.sample_id, self.reason = source, row, sample_id, reason
        super().__init__(f"{source}: {row} (id {sample_id}): {reason}. "
                         "Fix or remove that row, or pass --on-error skip to leave it out and list it in the results.")


@dataclass
class Sample:
    id: str
    row: str
    """Where the sample is in its source, as a person would look for it: 'row 17', 'entry 3', 'file x.cif'."""
    atoms: Atoms
    target: float


@dataclass
class SkippedRow:
    row: str
    id: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"row": self.row, "id": self.id, "reason": self.reason}


@dataclass
class Dataset:
    samples: list[Sample]
    target_name: str
    source: str
    matbench_task: str | None = None
    skipped: list[SkippedRow] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [sample.id for sample in self.samples]

    @property
    def targets(self) -> np.ndarray:
        return np.array([sample.target for sample in self.samples], dtype=np.float64)

    @property
    def flagged(self) -> list[SkippedRow]:
        """Kept samples that carry a warning in ``atoms.info[WARNING_KEY]`` (e.g. a molecule whose relaxation
        did not converge) or are a copy of another row's structure, listed like skipped rows."""
        return [SkippedRow(s.row, s.id, reason) for s in self.samples if (reason := _warnings(s.atoms))]

    def drop(self, rejected: Iterable[SkippedRow]) -> Dataset:
        """A copy without the rejected rows, which are added to ``skipped``."""
        rejected = list(rejected)
        gone = {entry.id for entry in rejected}
        kept = [sample for sample in self.samples if sample.id not in gone]
        return Dataset(kept, self.target_name, self.source, self.matbench_task, self.skipped + rejected)

    def head(self, n: int) -> Dataset:
        return Dataset(self.samples[:n], self.target_name, self.source, self.matbench_task, list(self.skipped))

    def subset(self, rows: Iterable[int]) -> Dataset:
        """The samples at these positions, in this order."""
        return Dataset([self.samples[row] for row in rows], self.target_name, self.source, self.matbench_task,
                       list(self.skipped))


class _RowCollector:
    """Builds samples row by row, turning each failure into an error or a skipped entry."""

    def __init__(self, source: str, on_error: str, labelled: bool = True):
        check_on_error(on_error)
        self.source, self.on_error, self.labelled = source, on_error, labelled
        self.samples: list[Sample] = []
        self.skipped: list[SkippedRow] = []
        self.seen_ids: set[str] = set()

    def add(self, row: str, sample_id: str, make_atoms: Callable[[], Atoms], target: Any) -> None:
        try:
            if sample_id in self.seen_ids:
                raise ValueError("duplicate id")
            atoms = _checked_atoms(make_atoms)
            value = _checked_target(target) if self.labelled else float("nan")
        except ValueError as error:
            self.reject(row, sample_id, str(error))
            return
        self.seen_ids.add(sample_id)
        self.samples.append(Sample(sample_id, row, atoms, value))

    def reject(self, row: str, sample_id: str, reason: str) -> None:
        if self.on_error == "raise":
            raise BadInputError(self.source, row, sample_id, reason)
        self.skipped.append(SkippedRow(row, sample_id, reason))

    def dataset(self, target_name: str, matbench_task: str | None = None, flag_duplicates: bool = False) -> Dataset:
        """The collected samples; ``flag_duplicates`` flags samples whose structure is also another row's."""
        if not self.samples:
            detail = f"; all {len(self.skipped)} rows were rejected, first: {self.skipped[0].reason}" if self.skipped else ""
            raise InputError(f"{self.source}: no usable structures{detail}")
        if flag_duplicates:
            flag_duplicate_structures(self.samples)
        return Dataset(self.samples, target_name, self.source, matbench_task, self.skipped)


def flag_duplicate_structures(samples: Sequence[Sample]) -> None:
    """Flag (keep, with a warning) every sample whose structure is identical to another's: the same species,
    positions and cell (:func:`hacknip.store.structure_hash`). Such rows leak between cross-validation folds."""
    from hacknip.store import structure_hash

    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(structure_hash(sample.atoms), []).append(sample)
    for key, group in groups.items():
        if len(group) < 2:
            continue
        for position, sample in enumerate(group):
            other = group[1] if position == 0 else group[0]
            more = f" and {len(group) - 2} more" if len(group) > 2 else ""
            warning = (f"{DUPLICATE_STRUCTURE} {other.row} (id {other.id}){more}: identical structures in different "
                       "cross-validation folds leak; remove the copies, or keep them in one fold with --split group:COLUMN")
            sample.atoms.info[DUPLICATE_KEY] = (key, warning)


def clear_duplicates_within_groups(samples: Sequence[Sample], groups: Sequence[Any]) -> None:
    """Take back the duplicate-structure flag of copies that all share one split group: a grouped split (outer and
    inner folds) never separates them, so they cannot leak."""
    copies: dict[str, list[tuple[Sample, Any]]] = {}
    for sample, group in zip(samples, groups, strict=True):
        if DUPLICATE_KEY in sample.atoms.info:
            copies.setdefault(sample.atoms.info[DUPLICATE_KEY][0], []).append((sample, group))
    for members in copies.values():
        if len({group for _, group in members}) == 1:
            for sample, _ in members:
                del sample.atoms.info[DUPLICATE_KEY]


def _checked_atoms(make_atoms: Callable[[], Atoms]) -> Atoms:
    try:
        atoms = make_atoms()
    except Exception as error:  # parsers raise anything from KeyError to their own types
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"unreadable structure ({message})") from error
    return checked_atoms(atoms)


def checked_atoms(atoms: Atoms) -> Atoms:
    """``atoms`` if every reader would accept it as a row: atoms, a cell with volume, finite positions, no two atoms
    closer than :data:`MIN_DISTANCE`; else a ``ValueError`` saying what is wrong (the caller names the row)."""
    if len(atoms) == 0:
        raise ValueError("empty structure (no atoms)")
    if atoms.pbc.any() and abs(atoms.cell.volume) < 1e-6:
        raise ValueError("periodic structure with a zero-volume cell")
    if not np.isfinite(atoms.positions).all():
        raise ValueError("non-finite atomic positions")
    if not has_no_geometry(atoms):  # a molecule made without one has all its atoms at the origin
        _check_distances(atoms)
    return atoms


def has_no_geometry(atoms: Atoms) -> bool:
    """A molecule made without a 3-D geometry (``--conformer none``), for descriptors that read its SMILES."""
    from hacknip.store import NO_GEOMETRY_KEY

    return bool(atoms.info.get(NO_GEOMETRY_KEY))


def require_geometries(dataset: Dataset, user: str) -> None:
    """``user`` (a backbone's name) needs atomic positions: refuse molecules made without a geometry."""
    if any(has_no_geometry(sample.atoms) for sample in dataset.samples):
        raise InputError(f"{dataset.source}: its molecules were made without 3-D geometries (--conformer none), and "
                         f"{user} needs atomic positions: use --conformer etkdg or mmff94, or only descriptors that "
                         "read the SMILES (rdkit:descriptors, rdkit:morgan)")


PAIRWISE_MAX_ATOMS = 200
"""Up to this many atoms, :func:`closest_pair` compares all pairs in numpy (ASE's neighbour list costs a few ms
per structure, more than parsing it); larger structures use the neighbour list."""


def closest_pair(atoms: Atoms, cutoff: float = MIN_DISTANCE) -> tuple[int, int, float] | None:
    """The two closest atoms ``(i, j, distance)`` with ``i <= j`` (minimum image along periodic directions; ``i == j``
    is an atom and its own image) if they are closer than ``cutoff`` Å, else None."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not pbc.any():
        if len(atoms) < 2:
            return None
        from scipy.spatial import cKDTree

        pairs = cKDTree(atoms.positions).query_pairs(cutoff, output_type="ndarray")
        first, second = pairs[:, 0], pairs[:, 1]
        distances = np.linalg.norm(atoms.positions[first] - atoms.positions[second], axis=1)
    else:
        cell = atoms.cell.array
        inverse = np.linalg.inv(cell)
        heights = 1 / np.sqrt(np.einsum("ij,ij->j", inverse, inverse))  # between lattice planes
        if len(atoms) <= PAIRWISE_MAX_ATOMS and heights[pbc].min() >= cutoff:
            return _closest_pair_pairwise(atoms.positions @ inverse, cell, heights, pbc, cutoff)
        from ase.neighborlist import neighbor_list

        first, second, distances = neighbor_list("ijd", atoms, cutoff)
    if len(distances) == 0:
        return None
    closest = int(np.argmin(distances))
    i, j = sorted((int(first[closest]), int(second[closest])))
    return i, j, float(distances[closest])


def _closest_pair_pairwise(fractional: np.ndarray, cell: np.ndarray, heights: np.ndarray, pbc: np.ndarray,
                           cutoff: float) -> tuple[int, int, float] | None:
    """All pairs ``i < j``, for cells whose periodic plane spacings are all >= ``cutoff`` (then no atom is that close
    to its own image, and the images one cell away from the wrapped difference are all that can be)."""
    first, second = _upper_pairs(len(fractional))
    delta = fractional[second] - fractional[first]
    if pbc.all():
        delta -= np.rint(delta)
    else:
        delta[:, pbc] -= np.rint(delta[:, pbc])
    # |fractional difference along k| * plane spacing k is a lower bound of the distance of every image
    close = (np.abs(delta) * heights).max(axis=1) < cutoff
    if not close.any():
        return None
    first, second, delta = first[close], second[close], delta[close]
    vectors = (delta @ cell)[:, None, :] + _image_shifts(tuple(bool(periodic) for periodic in pbc)) @ cell
    nearest = np.sqrt(np.einsum("psk,psk->ps", vectors, vectors).min(axis=1))
    closest = int(np.argmin(nearest))
    if nearest[closest] >= cutoff:
        return None
    return int(first[closest]), int(second[closest]), float(nearest[closest])


@functools.lru_cache(maxsize=256)
def _upper_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, 1)


@functools.lru_cache(maxsize=8)
def _image_shifts(pbc: tuple[bool, ...]) -> np.ndarray:
    return np.array(list(itertools.product(*[(-1, 0, 1) if periodic else (0,) for periodic in pbc])), dtype=float)


def _check_distances(atoms: Atoms) -> None:
    """Refuse two atoms closer than :data:`MIN_DISTANCE` (minimum image in periodic cells)."""
    if atoms.pbc.all():
        # spheres of radius MIN_DISTANCE / 2 around the atoms fill at most 74% of space (close packing): a cell with
        # less room per atom than that must hold two atoms closer than MIN_DISTANCE, usually from a unit mix-up
        room = abs(atoms.cell.volume) / len(atoms)
        if room < math.pi / 6 * MIN_DISTANCE ** 3 / 0.7405:
            raise ValueError(f"the cell has {room:.3g} Å³ per atom, too little for atoms {MIN_DISTANCE} Å apart (solids "
                             "have 5 Å³ or more): check the lattice parameters and that they are in Å")
    pair = closest_pair(atoms)
    if pair is None:
        return
    i, j, distance = pair
    symbols = atoms.get_chemical_symbols()
    if i == j:
        raise ValueError(f"atom {i} ({symbols[i]}) is {distance:.3g} Å from its own periodic image (closer than "
                         f"{MIN_DISTANCE} Å): the cell is far too small; check the lattice parameters")
    raise ValueError(f"atoms {i} ({symbols[i]}) and {j} ({symbols[j]}) (counting from 0) are {distance:.3g} Å apart "
                     f"(closer than {MIN_DISTANCE} Å): almost always a duplicated site; remove one of them")


def boxed(atoms: Atoms, vacuum: float) -> Atoms:
    """A copy; a structure without three cell vectors gets a box ``vacuum`` Å wider than it on each non-periodic axis,
    which stays non-periodic (CHGNet's and pymatgen's graphs need a full-rank lattice even for a molecule)."""
    copy = atoms.copy()
    if atoms.cell.rank == 3:
        return copy
    copy.center(vacuum=vacuum, axis=[axis for axis in range(3) if not atoms.pbc[axis]])
    if copy.cell.rank != 3:
        raise BadStructureError(f"{atoms.get_chemical_formula()}: a periodic axis has no cell vector (cell {atoms.cell})")
    return copy


def _checked_target(target: Any) -> float:
    try:
        value = float(target)
    except (TypeError, ValueError):
        raise ValueError(f"target {target!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"target is {value} (not finite)")
    return value


DISORDERED_CHOICES = ("refuse", "approximant")
"""What readers do with partially occupied sites: refuse the row, or order it (:mod:`hacknip.data.disorder`)."""
APPROXIMANT_MAX_ATOMS = 128


def pymatgen_to_atoms(structure, disordered: str = "refuse") -> Atoms:
    from pymatgen.io.ase import AseAtomsAdaptor

    if structure.is_ordered:
        return AseAtomsAdaptor.get_atoms(structure)
    if disordered != "approximant":
        raise ValueError("partially occupied sites (disordered structure); pass --disordered approximant to order "
                         "it in a supercell, or give an ordered structure")
    from hacknip.data.disorder import ordered_approximant

    approximant = ordered_approximant(structure, max_atoms=APPROXIMANT_MAX_ATOMS)
    if approximant.dropped:
        raise ValueError(f"partially occupied sites: no ordered approximant of <= {APPROXIMANT_MAX_ATOMS} atoms holds "
                         f"{', '.join(approximant.dropped)} ({approximant.describe()}); give an ordered structure")
    atoms = AseAtomsAdaptor.get_atoms(approximant.structure)
    atoms.info[WARNING_KEY] = f"ordered approximant of a disordered structure: {approximant.describe()}"
    return atoms


def cif_text_to_atoms(text: str, disordered: str = "refuse") -> Atoms:
    from pymatgen.io.cif import CifParser

    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty CIF text")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structures = CifParser.from_str(text).parse_structures(primitive=False)
        except Exception as error:
            # pymatgen says what it could not parse in warnings; deprecation notices say nothing about the file
            said = [str(w.message).splitlines()[0] for w in caught
                    if not issubclass(w.category, (DeprecationWarning, FutureWarning))]
            reason = said[-1] if said else f"{type(error).__name__}: {error}"
            raise ValueError(f"not a valid CIF: {reason}") from error
    return pymatgen_to_atoms(structures[0], disordered)


def structure_file_to_atoms(path: Path, disordered: str = "refuse") -> Atoms:
    from pymatgen.core import Structure

    if path.stat().st_size == 0:
        raise ValueError("empty file")
    return pymatgen_to_atoms(Structure.from_file(str(path)), disordered)


# --- Matbench ---------------------------------------------------------------------------------------------

def matbench_task_name(path: Path) -> str | None:
    match = re.match(r"(matbench_[a-z0-9_]+?)(\.json)?(\.gz)?$", path.name)
    return match.group(1) if match else None


def matbench_ids(task: str, n: int) -> list[str]:
    """Matbench's own ids: ``mb-phonons-0001`` ..., zero-padded to the width of ``n``."""
    stem = task.removeprefix("matbench_").replace("_", "-")
    width = len(str(n))
    return [f"mb-{stem}-{i + 1:0{width}d}" for i in range(n)]


GZIP_MAGIC = b"\x1f\x8b"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_json(path: Path) -> Any:
    """A JSON file, gzip-compressed when its name ends in ``.gz``; an empty, truncated, mis-named or invalid file
    raises one :class:`InputError` line naming it."""
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file; download or write it again")
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == GZIP_MAGIC
    named_gz = path.name.lower().endswith(".gz")
    if named_gz and not gzipped:
        raise InputError(f"{path}: named .gz but not a gzip file; if it is plain JSON rename it to end in .json, "
                         "otherwise download or write it again")
    if gzipped and not named_gz:
        raise InputError(f"{path}: a gzip-compressed file whose name does not end in .gz; rename it to end in .json.gz")
    if gzipped:
        try:
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        except (EOFError, OSError, zlib.error) as error:
            raise InputError(f"{path}: not a complete gzip file (truncated or damaged: {_first_line(error)}); "
                             "download or write it again") from None
    else:
        raw = path.read_bytes()
    if not raw.strip():
        raise InputError(f"{path}: empty file (nothing but whitespace{' once decompressed' if gzipped else ''}); "
                         "download or write it again")
    try:
        return json.loads(raw)
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text (byte {raw[error.start]:#04x} at offset {error.start}); "
                         "save it as UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno}); "
                         "if it was cut short, download or write it again") from None


def read_matbench(path: Path, on_error: str = "raise", target: str | None = None) -> Dataset:
    """A ``matbench_<task>.json.gz`` file (pandas split orientation: index, columns, data). ``target``: a column
    (default: the last one other than ``structure``), or :data:`UNLABELLED` for structures without targets."""
    from pymatgen.core import Structure

    table = read_json(path)
    if not isinstance(table, dict) or not {"columns", "data"} <= set(table):
        raise InputError(f"{path}: not a Matbench file (expected a JSON object with keys 'columns' and 'data', as "
                         "pandas writes with orient='split')")
    columns, rows = table["columns"], table["data"]
    if not isinstance(columns, list) or not isinstance(rows, list):
        raise InputError(f"{path}: not a Matbench file ('columns' and 'data' must be lists)")
    if "structure" not in columns:
        raise InputError(f"{path}: this Matbench file has no 'structure' column (columns: {columns}); "
                         "hacknip needs structures")
    others = [column for column in columns if column != "structure"]
    if target is None:
        if not others:
            raise InputError(f"{path}: no target column (columns: {columns}); to train, give a file with a target "
                             "column, or use this file of structures only with hacknip predict")
        target = others[-1]
    elif target != UNLABELLED and target not in columns:
        raise InputError(f"{path}: no target column {target!r} (columns: {columns}); name one with --target")
    labelled = target != UNLABELLED
    task = matbench_task_name(path)
    ids = matbench_ids(task, len(rows)) if task else [f"entry-{i}" for i in range(len(rows))]
    structure_at = columns.index("structure")
    target_at = columns.index(target) if labelled else None
    collector = _RowCollector(str(path), on_error, labelled=labelled)
    for index, (row, sample_id) in enumerate(zip(rows, ids)):
        if not isinstance(row, list) or len(row) != len(columns):
            found = f"{len(row)} values" if isinstance(row, list) else f"a {type(row).__name__}"
            collector.reject(f"entry {index}", sample_id, f"expected {len(columns)} values (columns {columns}), "
                                                          f"found {found}")
            continue
        collector.add(f"entry {index}", sample_id,
                      lambda row=row: pymatgen_to_atoms(Structure.from_dict(row[structure_at])),
                      row[target_at] if labelled else None)
    return collector.dataset(target, task, flag_duplicates=True)


# --- tables -----------------------------------------------------------------------------------------------

def _read_table(path: Path):
    """A CSV or parquet table; an absent, empty, non-UTF-8 or unparseable file raises one :class:`InputError` line."""
    import pandas as pd

    if not path.is_file():
        raise InputError(f"{path}: no such file; check the path")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file; write the table again (a header row, then one row per sample)")
    if path.suffix.lower() == ".parquet":
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
            raise InputError(f"{path}: not a readable parquet file ({_first_line(error)}); write it again") from None
    return _read_csv(path)


def _read_csv(path: Path, **options):
    import pandas as pd

    try:
        return pd.read_csv(path, **options)
    except UnicodeDecodeError:
        raise InputError(_not_utf8(path)) from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: no header row (the file is blank); write the table again") from None
    except pd.errors.ParserError as error:
        raise InputError(f"{path}: not a readable CSV table ({_first_line(error)}); check that row's commas and "
                         "quotes") from None


def _not_utf8(path: Path) -> str:
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
        where = ""
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        where = f" (byte {raw[error.start]:#04x} on line {line})"
    return (f"{path}: not UTF-8 text{where}, probably Latin-1 or Windows-1252; save it as UTF-8 (a spreadsheet's "
            f"'CSV UTF-8' format, or iconv -f cp1252 -t utf-8)")


def _pick_target(frame, target: str | None, exclude: set[str], source: str) -> str:
    if target == UNLABELLED:
        return target
    if target is not None:
        if target not in frame.columns:
            raise InputError(f"{source}: no target column {target!r} (columns: {list(frame.columns)}); "
                             "name one with --target")
        return target
    numeric = [c for c in frame.columns if c not in exclude and frame[c].dtype.kind in "fiu"]
    return the_only_numeric(numeric, source, "column", list(frame.columns))


def the_only_numeric(numeric: list[str], source: str, kind: str, names: Sequence[str]) -> str:
    """The target when none was named: the only numeric column (or info key, SDF property) among ``names``."""
    if not numeric:
        raise InputError(f"{source}: no numeric target {kind} ({kind}s: {list(names)}); to train, add one or name it "
                         f"with --target; structures without targets are for hacknip predict")
    if len(numeric) > 1:
        raise InputError(f"{source}: say which {kind} is the target with --target (numeric {kind}s: {numeric})")
    return numeric[0]


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR_CHOICES:
        raise InputError(f"on_error must be one of {', '.join(ON_ERROR_CHOICES)}, not {on_error!r}")


def _target_values(frame, target: str) -> list:
    return [None] * len(frame) if target == UNLABELLED else list(frame[target])


def read_cif_table(path: Path, structure_column: str = "cif", target: str | None = None,
                   id_column: str | None = None, on_error: str = "raise", disordered: str = "refuse",
                   parsed_cache: str | Path | None = None, progress: Progress = no_progress) -> Dataset:
    """CSV or parquet with one CIF text per row; ``parsed_cache`` keeps the parsed rows
    (:mod:`hacknip.data.parsed_cache`), so that the next read of the same CIF texts skips pymatgen; ``progress`` is
    advanced a row at a time."""
    frame = _read_table(path)
    if structure_column not in frame.columns:
        raise InputError(f"{path}: no structure column {structure_column!r} (columns: {list(frame.columns)}); "
                         "name it with --structure-column")
    target = _pick_target(frame, target, {structure_column, id_column}, str(path))
    ids = frame[id_column].astype(str) if id_column else [str(i) for i in range(len(frame))]
    collector = _RowCollector(str(path), on_error, labelled=target != UNLABELLED)
    rows = zip(frame[structure_column], _target_values(frame, target), ids)
    advance = progress(f"reading {Path(path).name}", len(frame))
    with _cached_parsing(parsed_cache, disordered) as parse:
        for index, (text, value, sample_id) in enumerate(rows):
            make_atoms = functools.partial(cif_text_to_atoms, text, disordered)
            collector.add(f"row {index + 2}", sample_id, functools.partial(parse, text, make_atoms), value)
            advance(1)
    return collector.dataset(target, flag_duplicates=True)


Parse = Callable[[Any, Callable[[], Atoms]], Atoms]
"""``parse(source, make_atoms)``: ``make_atoms()``, or what it gave before for the same source (a CIF text, or a
structure file's path: the same name and bytes)."""


@contextmanager
def _cached_parsing(parsed_cache: str | Path | None, disordered: str) -> Iterator[Parse]:
    """Parsing through the cache of parsed structures (:mod:`hacknip.data.parsed_cache`) when there is one."""
    if parsed_cache is None:
        yield lambda source, make_atoms: make_atoms()
        return
    from hacknip.data.parsed_cache import ParsedStructures

    with ParsedStructures(parsed_cache) as cache:
        def parse(source, make_atoms: Callable[[], Atoms]) -> Atoms:
            if isinstance(source, Path):
                key = cache.key(source.read_bytes(), disordered, source.name)
            elif isinstance(source, str):
                key = cache.key(source, disordered)
            else:
                return make_atoms()  # an empty table cell: the parser says what is wrong
            atoms = cache.get(key)
            if atoms is None:
                atoms = make_atoms()
                cache.put(key, atoms)
            return atoms

        yield parse


def _parsed_file(path: Path, disordered: str, parse: Parse) -> Atoms:
    return parse(path, functools.partial(structure_file_to_atoms, path, disordered))


def read_structure_folder(folder: Path, targets: Path | None = None, target: str | None = None,
                          id_column: str | None = None, on_error: str = "raise", disordered: str = "refuse",
                          parsed_cache: str | Path | None = None, progress: Progress = no_progress) -> Dataset:
    """A folder of CIF/POSCAR files with a CSV whose id column names the files (with or without suffix). For
    prediction (``target=UNLABELLED``) without that CSV, every structure file in the folder, by file name.
    ``parsed_cache`` and ``progress`` as for :func:`read_cif_table` (the cache keyed by file name and content)."""
    structure_files = [path for path in sorted(folder.iterdir())
                       if path.suffix.lower() in STRUCTURE_SUFFIXES or path.name.startswith(("POSCAR", "CONTCAR"))]
    explicit = targets is not None
    targets = targets or folder / "targets.csv"
    if not targets.exists() and target == UNLABELLED and not explicit:
        return _read_unlabelled_folder(folder, structure_files, on_error, disordered, parsed_cache, progress)
    if not targets.exists():
        raise InputError(f"{folder}: needs a CSV of targets (looked for {targets}); pass it with --targets")
    frame = _read_table(targets)
    if not len(frame.columns):
        raise InputError(f"{targets}: no columns; write a header row with the file-name column first")
    id_column = id_column or frame.columns[0]
    if id_column not in frame.columns:
        raise InputError(f"{targets}: no id column {id_column!r} (columns: {list(frame.columns)}); "
                         "name it with --id-column")
    target = _pick_target(frame, target, {id_column}, str(targets))
    files = {}
    for path in structure_files:
        files.setdefault(path.name, path)
        files.setdefault(path.stem, path)
    collector = _RowCollector(str(targets), on_error, labelled=target != UNLABELLED)
    advance = progress(f"reading {folder.name}", len(frame))
    with _cached_parsing(parsed_cache, disordered) as parse:
        for index, (name, value) in enumerate(zip(frame[id_column].astype(str), _target_values(frame, target))):
            row = f"row {index + 2}"
            if name in files:
                collector.add(row, name, functools.partial(_parsed_file, files[name], disordered, parse), value)
            else:
                collector.reject(row, name, f"no structure file named {name!r} in {folder}")
            advance(1)
    return collector.dataset(target, flag_duplicates=True)


def _read_unlabelled_folder(folder: Path, files: list[Path], on_error: str, disordered: str,
                            parsed_cache: str | Path | None, progress: Progress) -> Dataset:
    if not files:
        raise InputError(f"{folder}: no structure files (looked for *.cif, *.vasp, *.poscar, POSCAR*, CONTCAR*)")
    collector = _RowCollector(str(folder), on_error, labelled=False)
    advance = progress(f"reading {folder.name}", len(files))
    with _cached_parsing(parsed_cache, disordered) as parse:
        for path in files:
            collector.add(f"file {path.name}", path.name, functools.partial(_parsed_file, path, disordered, parse),
                          None)
            advance(1)
    return collector.dataset(UNLABELLED, flag_duplicates=True)


def read_ase_file(path: Path, target: str | None = None, on_error: str = "raise") -> Dataset:
    """extxyz or an ASE database, with the target in each structure's ``info`` (or key-value pairs)."""
    import ase.io

    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file; write it again")
    try:
        frames = ase.io.read(str(path), index=":")
    except Exception as error:  # ASE's readers raise anything from StopIteration to their own types
        raise InputError(f"{path}: ASE cannot read it ({_first_line(error)}); check that it is a complete extxyz "
                         "file or ASE database") from None
    if not frames:
        raise InputError(f"{path}: no structures")
    if target is None:
        info = frames[0].info
        target = the_only_numeric([k for k, v in info.items() if is_number(v)], str(path), "info key", list(info))
    collector = _RowCollector(str(path), on_error, labelled=target != UNLABELLED)
    for index, atoms in enumerate(frames):
        sample_id = str(atoms.info.get("id", index))
        if target != UNLABELLED and target not in atoms.info:
            collector.reject(f"structure {index}", sample_id, f"no {target!r} in its info")
            continue
        collector.add(f"structure {index}", sample_id, lambda atoms=atoms: atoms, atoms.info.get(target))
    return collector.dataset(target, flag_duplicates=True)


def read_extra_features(dataset: Dataset, path: str | Path, columns: Sequence[str], targets: str | Path | None = None
                        ) -> np.ndarray:
    """Per-sample scalars (e.g. temperature) to append to the embedding: ``columns`` of a table input (or of a
    folder's targets CSV), or ``info`` keys of an extxyz / ASE database input. Shape ``(n_samples, len(columns))``."""
    if not columns:
        return np.empty((len(dataset.samples), 0))
    values, source = read_sample_columns(dataset, path, columns, targets, purpose="--extra-features")
    return _checked_extras(dataset, columns, values, source)


def read_sample_columns(dataset: Dataset, path: str | Path, columns: Sequence[str], targets: str | Path | None = None,
                        purpose: str = "this option") -> tuple[list[list[Any]], str]:
    """The raw values of ``columns`` for each sample (one list per sample) and where they were read: columns of a
    table input (or of a folder's targets CSV), or ``info`` keys of an extxyz / ASE database input."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".xyz", ".extxyz", ".db", ".traj")):
        return [[sample.atoms.info.get(column) for column in columns] for sample in dataset.samples], str(path)
    table_path = (Path(targets) if targets else path / "targets.csv") if path.is_dir() else path
    if not table_path.name.lower().endswith((".csv", ".parquet")):
        raise InputError(f"{path}: {purpose} reads table columns or extxyz/ASE info keys, not this input")
    frame = _read_table(table_path)
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise InputError(f"{table_path}: no column {missing[0]!r} for {purpose} (columns: {list(frame.columns)})")
    if not all(sample.row.startswith("row ") for sample in dataset.samples):
        raise InputError(f"{path}: {purpose} reads the rows of a table; this input's samples are not table rows")
    positions = [int(sample.row.removeprefix("row ")) - 2 for sample in dataset.samples]
    return frame[list(columns)].iloc[positions].to_numpy(dtype=object).tolist(), str(table_path)


def _checked_extras(dataset: Dataset, columns: Sequence[str], values: list[list[Any]], source: str) -> np.ndarray:
    for sample, row in zip(dataset.samples, values):
        for column, value in zip(columns, row):
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            if not np.isfinite(number):
                raise BadInputError(source, sample.row, sample.id, f"extra feature {column!r} is {value!r}, not a finite number")
    return np.array(values, dtype=np.float64)
