"""Reading any supported input, chosen by what the path is: :func:`read_dataset`."""

from __future__ import annotations

from pathlib import Path

from hacknip.data.molecules import molecules_to_dataset
from hacknip.data.structures import (
    DISORDERED_CHOICES,
    Dataset,
    _first_line,
    _read_csv,
    read_ase_file,
    read_cif_table,
    read_matbench,
    read_structure_folder,
)
from hacknip.errors import InputError
from hacknip.progress import Progress, no_progress


def read_dataset(path: str | Path, *, target: str | None = None, structure_column: str = "cif",
                 id_column: str | None = None, targets: str | Path | None = None,
                 on_error: str = "raise", smiles_column: str | None = None, disordered: str = "refuse",
                 parsed_cache: str | Path | None = None, progress: Progress = no_progress) -> Dataset:
    """Read any supported input, chosen by what ``path`` is. Molecules (a table with a SMILES column, an SDF file)
    get RDKit geometries, unrelaxed: :func:`hacknip.data.molecules.molecules_to_dataset` relaxes them with a backbone.
    ``disordered="approximant"`` orders CIF/POSCAR structures with partially occupied sites (the ordered cell is
    what gets featurised, and the sample is flagged with its description). ``target=UNLABELLED`` reads structures
    without targets (for prediction). ``parsed_cache``, an SQLite file, keeps the parsed structures of a CIF table or
    folder for the next read (:mod:`hacknip.data.parsed_cache`; the command line keeps it beside the feature store),
    and ``progress`` (:mod:`hacknip.progress`) follows their rows.
    Bad rows raise a :class:`BadInputError` naming the row, or with ``on_error="skip"`` are listed in
    ``Dataset.skipped``.

    Example::

        data = hacknip.read_dataset("matbench_phonons.json.gz")
        structures, y = [sample.atoms for sample in data.samples], data.targets
    """
    if disordered not in DISORDERED_CHOICES:
        raise InputError(f"disordered must be one of {', '.join(DISORDERED_CHOICES)}, not {disordered!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    name = path.name.lower()
    if path.is_dir():
        return read_structure_folder(path, Path(targets) if targets else None, target, id_column, on_error,
                                     disordered, parsed_cache, progress)
    if name.endswith((".json", ".json.gz")):
        return read_matbench(path, on_error, target)
    if is_molecule_input(path, structure_column, smiles_column):
        return molecules_to_dataset(path, smiles_column=smiles_column, target=target, id_column=id_column,
                                    on_error=on_error)
    if name.endswith((".csv", ".parquet")):
        return read_cif_table(path, structure_column, target, id_column, on_error, disordered, parsed_cache, progress)
    if name.endswith((".xyz", ".extxyz", ".db", ".traj")):
        return read_ase_file(path, target, on_error)
    raise InputError(f"{path}: unknown input kind; give a matbench_*.json.gz, a CSV/parquet with a CIF or SMILES "
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

        try:
            return list(pq.read_schema(path).names)
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: not a readable parquet file ({_first_line(error)}); write it again") from None
    return [str(column) for column in _read_csv(path, nrows=0).columns]


def _smiles_table(path: Path) -> bool:
    return any(column.lower() == "smiles" for column in _columns(path))
