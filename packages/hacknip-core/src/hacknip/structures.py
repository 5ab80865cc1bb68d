"""Reading labelled structures: Matbench files, folders of CIF/POSCAR files, extxyz / ASE databases, and
CSV/parquet tables with a CIF-text column.

Every reader validates each row (parseable, non-empty, finite target) and either raises a
:class:`BadInputError` naming the row, or — with ``on_error="skip"`` — records it in ``Dataset.skipped``.
Nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar")
ON_ERROR_CHOICES = ("raise", "skip")
UNLABELLED = "<no target>"
"""Pass as ``target`` to read structures without targets (for prediction); targets are then NaN."""


WARNING_KEY = "hacknip_warning"
"""``atoms.info`` key of a kept sample's warning (a non-converged relaxation, an ordered approximant);
:attr:`Dataset.flagged` lists them."""


class BadInputError(ValueError):
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
        did not converge), listed like skipped rows."""
        return [SkippedRow(s.row, s.id, s.atoms.info[WARNING_KEY]) for s in self.samples if s.atoms.info.get(WARNING_KEY)]

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
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, not {on_error!r}")
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

    def dataset(self, target_name: str, matbench_task: str | None = None) -> Dataset:
        if not self.samples:
            detail = f"; all {len(self.skipped)} rows were rejected, first: {self.skipped[0].reason}" if self.skipped else ""
            raise ValueError(f"{self.source}: no usable structures{detail}")
        return Dataset(self.samples, target_name, self.source, matbench_task, self.skipped)


def _checked_atoms(make_atoms: Callable[[], Atoms]) -> Atoms:
    try:
        atoms = make_atoms()
    except Exception as error:  # parsers raise anything from KeyError to their own types
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"unreadable structure ({message})") from error
    if len(atoms) == 0:
        raise ValueError("empty structure (no atoms)")
    if atoms.pbc.any() and abs(atoms.cell.volume) < 1e-6:
        raise ValueError("periodic structure with a zero-volume cell")
    if not np.isfinite(atoms.positions).all():
        raise ValueError("non-finite atomic positions")
    return atoms


def _checked_target(target: Any) -> float:
    try:
        value = float(target)
    except (TypeError, ValueError):
        raise ValueError(f"target {target!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"target is {value} (not finite)")
    return value


DISORDERED_CHOICES = ("refuse", "approximant")
"""What readers do with partially occupied sites: refuse the row, or order it (:mod:`hacknip.disorder`)."""
APPROXIMANT_MAX_ATOMS = 128


def pymatgen_to_atoms(structure, disordered: str = "refuse") -> Atoms:
    from pymatgen.io.ase import AseAtomsAdaptor

    if structure.is_ordered:
        return AseAtomsAdaptor.get_atoms(structure)
    if disordered != "approximant":
        raise ValueError("partially occupied sites (disordered structure); pass --disordered approximant to order "
                         "it in a supercell, or give an ordered structure")
    from hacknip.disorder import ordered_approximant

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
            structures = CifParser(io.StringIO(text)).parse_structures(primitive=False)
        except Exception as error:
            said = [str(w.message).splitlines()[0] for w in caught] or [f"{type(error).__name__}: {error}"]
            raise ValueError(f"not a valid CIF: {said[-1]}") from error
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


def read_matbench(path: Path, on_error: str = "raise", target: str | None = None) -> Dataset:
    """A ``matbench_<task>.json.gz`` file (pandas split orientation: index, columns, data)."""
    from pymatgen.core import Structure

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        table = json.load(handle)
    if not {"columns", "data"} <= set(table):
        raise ValueError(f"{path}: not a Matbench file (expected keys 'columns' and 'data')")
    columns = table["columns"]
    if "structure" not in columns:
        raise ValueError(f"{path}: this Matbench file has no 'structure' column (columns: {columns}); "
                         "hacknip needs structures")
    target = target or next(c for c in reversed(columns) if c != "structure")
    if target not in columns:
        raise ValueError(f"{path}: no target column {target!r} (columns: {columns})")
    task = matbench_task_name(path)
    ids = matbench_ids(task, len(table["data"])) if task else [f"entry-{i}" for i in range(len(table["data"]))]
    structure_at, target_at = columns.index("structure"), columns.index(target)
    collector = _RowCollector(str(path), on_error)
    for index, (row, sample_id) in enumerate(zip(table["data"], ids)):
        collector.add(f"entry {index}", sample_id,
                      lambda row=row: pymatgen_to_atoms(Structure.from_dict(row[structure_at])), row[target_at])
    return collector.dataset(target, task)


# --- tables -----------------------------------------------------------------------------------------------

def _read_table(path: Path):
    import pandas as pd

    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def _pick_target(frame, target: str | None, exclude: set[str], source: str) -> str:
    if target == UNLABELLED:
        return target
    if target is not None:
        if target not in frame.columns:
            raise ValueError(f"{source}: no target column {target!r} (columns: {list(frame.columns)})")
        return target
    numeric = [c for c in frame.columns if c not in exclude and frame[c].dtype.kind in "fiu"]
    if len(numeric) != 1:
        raise ValueError(f"{source}: say which column is the target with --target (numeric columns: {numeric})")
    return numeric[0]


def _target_values(frame, target: str) -> list:
    return [None] * len(frame) if target == UNLABELLED else list(frame[target])


def read_cif_table(path: Path, structure_column: str = "cif", target: str | None = None,
                   id_column: str | None = None, on_error: str = "raise", disordered: str = "refuse") -> Dataset:
    """CSV or parquet with one CIF text per row."""
    frame = _read_table(path)
    if structure_column not in frame.columns:
        raise ValueError(f"{path}: no structure column {structure_column!r} (columns: {list(frame.columns)}); "
                         "name it with --structure-column")
    target = _pick_target(frame, target, {structure_column, id_column}, str(path))
    ids = frame[id_column].astype(str) if id_column else [str(i) for i in range(len(frame))]
    collector = _RowCollector(str(path), on_error, labelled=target != UNLABELLED)
    for index, (text, value, sample_id) in enumerate(zip(frame[structure_column], _target_values(frame, target), ids)):
        collector.add(f"row {index + 2}", sample_id, lambda text=text: cif_text_to_atoms(text, disordered), value)
    return collector.dataset(target)


def read_structure_folder(folder: Path, targets: Path | None = None, target: str | None = None,
                          id_column: str | None = None, on_error: str = "raise", disordered: str = "refuse") -> Dataset:
    """A folder of CIF/POSCAR files with a CSV whose id column names the files (with or without suffix)."""
    targets = targets or folder / "targets.csv"
    if not targets.exists():
        raise ValueError(f"{folder}: needs a CSV of targets (looked for {targets}); pass it with --targets")
    frame = _read_table(targets)
    id_column = id_column or frame.columns[0]
    target = _pick_target(frame, target, {id_column}, str(targets))
    files = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in STRUCTURE_SUFFIXES or path.name.startswith(("POSCAR", "CONTCAR")):
            files.setdefault(path.name, path)
            files.setdefault(path.stem, path)
    collector = _RowCollector(str(targets), on_error, labelled=target != UNLABELLED)
    for index, (name, value) in enumerate(zip(frame[id_column].astype(str), _target_values(frame, target))):
        row = f"row {index + 2}"
        if name not in files:
            collector.reject(row, name, f"no structure file named {name!r} in {folder}")
            continue
        collector.add(row, name, lambda path=files[name]: structure_file_to_atoms(path, disordered), value)
    return collector.dataset(target)


def read_ase_file(path: Path, target: str | None = None, on_error: str = "raise") -> Dataset:
    """extxyz or an ASE database, with the target in each structure's ``info`` (or key-value pairs)."""
    import ase.io

    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file")
    frames = ase.io.read(str(path), index=":")
    if not frames:
        raise ValueError(f"{path}: no structures")
    if target is None:
        keys = [k for k, v in frames[0].info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(keys) != 1:
            raise ValueError(f"{path}: say which info key is the target with --target (numeric keys: {keys})")
        target = keys[0]
    collector = _RowCollector(str(path), on_error, labelled=target != UNLABELLED)
    for index, atoms in enumerate(frames):
        sample_id = str(atoms.info.get("id", index))
        if target != UNLABELLED and target not in atoms.info:
            collector.reject(f"structure {index}", sample_id, f"no {target!r} in its info")
            continue
        collector.add(f"structure {index}", sample_id, lambda atoms=atoms: atoms, atoms.info.get(target))
    return collector.dataset(target)


def read_dataset(path: str | Path, *, target: str | None = None, structure_column: str = "cif",
                 id_column: str | None = None, targets: str | Path | None = None,
                 on_error: str = "raise", smiles_column: str | None = None, disordered: str = "refuse") -> Dataset:
    """Read any supported input, chosen by what ``path`` is. Molecules (a table with a SMILES column, an SDF file)
    get RDKit geometries, unrelaxed: :func:`hacknip.molecules.molecules_to_dataset` relaxes them with a backbone.
    ``disordered="approximant"`` orders CIF/POSCAR structures with partially occupied sites (the ordered cell is
    what gets featurised, and the sample is flagged with its description)."""
    if disordered not in DISORDERED_CHOICES:
        raise ValueError(f"disordered must be one of {', '.join(DISORDERED_CHOICES)}, not {disordered!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    name = path.name.lower()
    if path.is_dir():
        return read_structure_folder(path, Path(targets) if targets else None, target, id_column, on_error,
                                     disordered)
    if name.endswith((".json", ".json.gz")):
        return read_matbench(path, on_error, target)
    if is_molecule_input(path, structure_column, smiles_column):
        from hacknip.molecules import molecules_to_dataset

        return molecules_to_dataset(path, smiles_column=smiles_column, target=target, id_column=id_column,
                                    on_error=on_error)
    if name.endswith((".csv", ".parquet")):
        return read_cif_table(path, structure_column, target, id_column, on_error, disordered)
    if name.endswith((".xyz", ".extxyz", ".db", ".traj")):
        return read_ase_file(path, target, on_error)
    raise ValueError(f"{path}: unknown input kind; give a matbench_*.json.gz, a CSV/parquet with a CIF or SMILES "
                     "column, an SDF file, an extxyz/ASE database, or a folder of CIF/POSCAR files with targets.csv")


def is_molecule_input(path: Path, structure_column: str = "cif", smiles_column: str | None = None) -> bool:
    """An SDF file, or a table with a SMILES column (named by ``smiles_column`` or called smiles) and no CIF column."""
    name = Path(path).name.lower()
    if name.endswith(".sdf"):
        return True
    return (name.endswith((".csv", ".parquet")) and structure_column not in _columns(Path(path))
            and bool(smiles_column or _smiles_table(Path(path))))


def _columns(path: Path) -> list[str]:
    if path.stat().st_size == 0:
        return []
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    import pandas as pd

    return [str(column) for column in pd.read_csv(path, nrows=0).columns]


def _smiles_table(path: Path) -> bool:
    return any(column.lower() == "smiles" for column in _columns(path))


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
        raise ValueError(f"{path}: {purpose} reads table columns or extxyz/ASE info keys, not this input")
    frame = _read_table(table_path)
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{table_path}: no column {missing[0]!r} for {purpose} (columns: {list(frame.columns)})")
    if not all(sample.row.startswith("row ") for sample in dataset.samples):
        raise ValueError(f"{path}: {purpose} reads the rows of a table; this input's samples are not table rows")
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
