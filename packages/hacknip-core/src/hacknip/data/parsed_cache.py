"""Parsed CIF texts and structure files, kept so that a table or folder is parsed once: pymatgen spends 20–50 ms on
a CIF (expanding its symmetry), so a table of 7 000 rows cost over two minutes before every run, tune or prediction,
even with every feature stored.

One SQLite file (``parsed-structures.sqlite`` beside the feature store's folders) maps a hash of the CIF text (or a
file's name and bytes), the disorder policy and the parser's version to the parsed atoms, written as JSON (numbers,
positions, cell, pbc, info), never pickled. The cache only ever saves time: a row it cannot read or write is parsed as
before, and rows that fail to parse are not kept, so they fail with the same message next time.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
from ase import Atoms

PARSED_FILE = "parsed-structures.sqlite"
FORMAT = 1
"""Bumped when what a CIF parses to changes here (the approximant's construction, the checks): old entries are ignored."""
BUSY_TIMEOUT_S = 30.0


class ParsedStructures:
    """The cache in ``path``: :meth:`get` a row's atoms or ``None``, :meth:`put` what was parsed, :meth:`close` to
    write it (one transaction for the whole table)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.pending: dict[str, str] = {}  # written at close; a CIF repeated in the table is parsed once
        self.connection: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
            self.connection.execute("CREATE TABLE IF NOT EXISTS parsed (key TEXT PRIMARY KEY, atoms TEXT NOT NULL)")
        except (OSError, sqlite3.Error):
            if self.connection is not None:
                self.connection.close()
            self.connection = None  # a read-only or unusable place: parse every row, as without a cache

    @staticmethod
    def key(content: str | bytes, disordered: str, file_name: str = "") -> str:
        """The entry of a CIF text (``file_name`` empty) or of a structure file's bytes (whose name tells pymatgen
        its format)."""
        from pymatgen.core import __version__ as pymatgen_version

        digest = hashlib.sha256(json.dumps([FORMAT, pymatgen_version, disordered, file_name]).encode())
        digest.update(content.encode() if isinstance(content, str) else content)
        return digest.hexdigest()

    def get(self, key: str) -> Atoms | None:
        if self.connection is None:
            return None
        try:
            if key in self.pending:
                return atoms_from_json(self.pending[key])
            row = self.connection.execute("SELECT atoms FROM parsed WHERE key = ?", (key,)).fetchone()
            return None if row is None else atoms_from_json(row[0])
        except (sqlite3.Error, ValueError, KeyError, TypeError):
            return None  # a damaged entry is parsed again and overwritten

    def put(self, key: str, atoms: Atoms) -> None:
        if self.connection is None:
            return
        text = atoms_to_json(atoms)
        if text is not None:
            self.pending[key] = text

    def close(self) -> None:
        if self.connection is None:
            return
        try:
            with self.connection:
                self.connection.executemany("INSERT OR REPLACE INTO parsed (key, atoms) VALUES (?, ?)",
                                            self.pending.items())
        except sqlite3.Error:
            pass  # busy or read-only: these rows are parsed again next time
        finally:
            self.connection.close()
            self.connection, self.pending = None, {}

    def __enter__(self) -> ParsedStructures:
        return self

    def __exit__(self, *exception) -> None:
        self.close()


def atoms_to_json(atoms: Atoms) -> str | None:
    """``atoms`` as JSON, or ``None`` when it holds something JSON cannot give back exactly (it is then not cached)."""
    extra_arrays = set(atoms.arrays) - {"numbers", "positions"}
    if extra_arrays or atoms.constraints or atoms.calc is not None:
        return None
    record = {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(),
              "cell": atoms.cell.array.tolist(), "pbc": atoms.pbc.tolist(), "info": atoms.info}
    try:
        text = json.dumps(record, allow_nan=False)
    except (TypeError, ValueError):
        return None
    restored = atoms_from_json(text)
    same = (np.array_equal(restored.numbers, atoms.numbers) and np.array_equal(restored.positions, atoms.positions)
            and np.array_equal(restored.cell.array, atoms.cell.array) and restored.info == atoms.info)
    return text if same else None


def atoms_from_json(text: str) -> Atoms:
    record = json.loads(text)
    return Atoms(numbers=record["numbers"], positions=record["positions"], cell=record["cell"], pbc=record["pbc"],
                 info=record["info"])
