"""The feature store: pooled per-layer statistics of every structure a backbone has seen, on disk.

Layout under ``$HACKNIP_HOME/features`` (default ``~/.cache/hacknip/features``)::

    <backbone-name>-<identity key>/
        identity.json              the backbone identity the key was made from
        shard-<time>-<pid>-<n>.npz  a batch of records: structure hashes, atom counts, and for each layer
                                   the mean / std / max of the per-atom features

Records are keyed by (backbone identity, structure content hash, layer); every pooling is derived from the
stored statistics. Shards are written to a temporary name and renamed, so a killed run leaves only whole
shards behind and the next run computes just what is missing. The format is plain ``.npz`` and JSON (no
pickle), readable from any Python environment with numpy: features made where one NIP library is installed
combine with features made where another is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from hacknip.backbone import identity_key
from hacknip.pooling import STATISTICS

HOME_ENV = "HACKNIP_HOME"
_shard_counter = count()


def hacknip_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "hacknip")


def structure_hash(atoms: Atoms) -> str:
    """Content hash of a structure: species, positions and cell to 1e-6 Å, and periodicity."""
    digest = hashlib.sha256()
    digest.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    for array in (atoms.positions, atoms.cell.array):
        digest.update((np.round(np.asarray(array, dtype=np.float64), 6) + 0.0).tobytes())
    digest.update(np.asarray(atoms.pbc, dtype=np.bool_).tobytes())
    return digest.hexdigest()[:32]


def _atomic_write(path: Path, write) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass
class Record:
    """One structure's pooled statistics: ``stats[layer][statistic]`` is a 1-D array."""

    key: str
    n_atoms: int
    stats: dict[int, dict[str, np.ndarray]]


class BackboneFeatures:
    """The stored features of one backbone identity."""

    def __init__(self, path: Path, identity: dict[str, Any]):
        self.path, self.identity = path, identity
        self._where: dict[tuple[str, int], tuple[Path, int]] = {}
        self._shards: dict[Path, Any] = {}
        self._scanned: set[Path] = set()
        self.refresh()

    def refresh(self) -> None:
        """Index shards written since the last look (by this or another process)."""
        for shard in sorted(self.path.glob("shard-*.npz")):
            if shard in self._scanned:
                continue
            self._scanned.add(shard)
            with np.load(shard, allow_pickle=False) as data:
                keys, layers = data["key"].tolist(), data["layers"].tolist()
            for row, key in enumerate(keys):
                for layer in layers:
                    self._where.setdefault((key, layer), (shard, row))

    def has(self, key: str, layers: Iterable[int]) -> bool:
        return all((key, layer) in self._where for layer in layers)

    def missing(self, keys: Sequence[str], layers: Sequence[int]) -> list[int]:
        """Positions in ``keys`` that lack any of ``layers``."""
        return [i for i, key in enumerate(keys) if not self.has(key, layers)]

    def write(self, records: Sequence[Record]) -> None:
        if not records:
            return
        layers = sorted(records[0].stats)
        arrays = {
            "key": np.array([r.key for r in records]),
            "n_atoms": np.array([r.n_atoms for r in records], dtype=np.int64),
            "layers": np.array(layers, dtype=np.int64),
        }
        for layer in layers:
            for statistic in STATISTICS:
                arrays[f"L{layer}_{statistic}"] = np.stack([r.stats[layer][statistic] for r in records]).astype(np.float32)
        name = f"shard-{time.time_ns()}-{os.getpid()}-{next(_shard_counter)}.npz"
        _atomic_write(self.path / name, lambda stream: np.savez(stream, **arrays))
        self.refresh()

    def _shard(self, path: Path):
        if path not in self._shards:
            with np.load(path, allow_pickle=False) as data:
                self._shards[path] = dict(data)
        return self._shards[path]

    def read(self, keys: Sequence[str], layer: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Statistics of ``layer`` for ``keys`` in order: ``({statistic: (n, width)}, n_atoms)``."""
        absent = [key for key in keys if (key, layer) not in self._where]
        if absent:
            raise KeyError(f"{len(absent)} structures have no stored layer {layer} for {self.identity.get('name')} "
                           f"(first: {absent[0]}); run hacknip featurize first")
        rows = [self._where[(key, layer)] for key in keys]
        stats = {s: np.stack([self._shard(p)[f"L{layer}_{s}"][r] for p, r in rows]).astype(np.float64)
                 for s in STATISTICS}
        n_atoms = np.array([self._shard(p)["n_atoms"][r] for p, r in rows])
        return stats, n_atoms

    def stored_layers(self) -> list[int]:
        return sorted({layer for _, layer in self._where})

    def __len__(self) -> int:
        return len({key for key, _ in self._where})


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:48].strip("_") or "backbone"


class FeatureStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else hacknip_home() / "features"

    def open(self, identity: dict[str, Any], names: Iterable[str] = ()) -> BackboneFeatures:
        """The features of ``identity``; ``names`` are the backbone names users typed for it (``orb-v2-paper``,
        ``chgnet:/path/x.pth``), recorded so that another environment can find these features by the same name."""
        path = self.root / f"{_slug(identity['name'])}-{identity_key(identity)}"
        path.mkdir(parents=True, exist_ok=True)
        identity_file = path / "identity.json"
        if not identity_file.exists():
            text = json.dumps(identity, indent=2, sort_keys=True).encode()
            _atomic_write(identity_file, lambda stream: stream.write(text))
        known = _read_names(path)
        if not set(names) <= known:
            text = json.dumps(sorted(known | set(names))).encode()
            _atomic_write(path / "names.json", lambda stream: stream.write(text))
        return BackboneFeatures(path, identity)

    def identities(self) -> list[dict[str, Any]]:
        """Every backbone identity with stored features."""
        return [json.loads(file.read_text()) for file in sorted(self.root.glob("*/identity.json"))]

    def find(self, name: str) -> list[dict[str, Any]]:
        """Stored identities known under ``name`` (used when the backbone's plugin is not installed here)."""
        found = []
        for file in sorted(self.root.glob("*/identity.json")):
            identity = json.loads(file.read_text())
            if name == identity.get("name") or name in _read_names(file.parent):
                found.append(identity)
        return found


def _read_names(folder: Path) -> set[str]:
    file = folder / "names.json"
    return set(json.loads(file.read_text())) if file.exists() else set()
