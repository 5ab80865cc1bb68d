"""The feature store: pooled per-layer statistics of every structure a backbone has seen, on disk.

Layout under ``$HACKNIP_HOME/features`` (default ``~/.cache/hacknip/features``)::

    <backbone-name>-<identity key>/
        identity.json              the backbone identity the key was made from
        shard-<time>-<pid>-<n>.npz  a batch of records: structure hashes, atom counts, and for each layer
                                   the mean / std / max of the per-atom features

        claims/claims.lock         one byte per structure being computed, locked (POSIX byte-range lock) by the
                                   process computing it
        damaged/                   shards that could not be read, set aside (their structures are computed again)

Records are keyed by (backbone identity, structure content hash, layer); every pooling is derived from the
stored statistics. Shards are written to a temporary name and renamed, so a killed run leaves only whole
shards behind and the next run computes just what is missing. A shard that cannot be read (truncated, zeroed,
bit-flipped: zip CRCs catch those) is named in a :class:`DamagedShardWarning`, moved to ``damaged/`` and its
structures count as missing again. Processes featurising into one store claim structures before computing them,
so they share the work instead of repeating it. The format is plain ``.npz`` and JSON (no pickle), readable from
any Python environment with numpy: features made where one NIP library is installed combine with features made
where another is. Files follow the umask, so a store can be shared by a group.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from hacknip.errors import InputError
from hacknip.features.pooling import STATISTICS
from hacknip.plugins.backbone import identity_key

try:
    import fcntl
except ImportError:  # Windows: no claims; concurrent processes may compute a structure twice (never wrongly)
    fcntl = None

HOME_ENV = "HACKNIP_HOME"
DAMAGED_FOLDER = "damaged"
CLAIMS_FOLDER = "claims"
CLAIMS_FILE = "claims.lock"
_shard_counter = count()
SETTLED_NS = 2_000_000_000
"""A folder whose modification time is older than this (2 s) is taken as settled: unchanged since it was listed."""
_UNREADABLE = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)
"""What numpy and zipfile raise for a damaged ``.npz``: truncated (BadZipFile, EOFError), bit flips (BadZipFile: bad
CRC-32, zlib.error), garbage (ValueError: numpy takes it for a pickle, which it refuses to load)."""


class DamagedShardWarning(UserWarning):
    """A feature-store shard could not be read; it was moved aside and its structures will be computed again."""


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


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
        os.chmod(temporary, _file_mode())  # mkstemp makes owner-only files; a store may be shared by a group
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
        self._index: dict[Path, tuple[list[str], list[int]]] = {}
        self._shards: dict[Path, dict[str, np.ndarray]] = {}
        self.set_aside: list[Path] = []
        """Damaged shards this object moved to ``damaged/``."""
        self._listed_at: int | None = None
        self.refresh()

    def refresh(self) -> None:
        """Index shards written since the last look (by this or another process); set aside unreadable ones. The
        folder is listed again unless its modification time is unchanged and old: file systems stamp times coarsely,
        so a shard renamed into the folder within the same tick as the last listing could otherwise go unseen."""
        stamp = os.stat(self.path).st_mtime_ns
        if stamp == self._listed_at and time.time_ns() - stamp > SETTLED_NS:
            return
        self._listed_at = stamp
        for shard in sorted(self.path.glob("shard-*.npz")):
            if shard in self._index:
                continue
            try:
                with open(shard, "rb") as handle, np.load(handle, allow_pickle=False) as data:
                    keys, layers = data["key"].tolist(), data["layers"].tolist()
            except FileNotFoundError:
                continue  # another process set it aside meanwhile
            except _UNREADABLE as error:
                self._set_aside(shard, error)
                continue
            self._index[shard] = (keys, layers)
            self._locate(shard, keys, layers)

    def _locate(self, shard: Path, keys: list[str], layers: list[int]) -> None:
        """Where each (structure, layer) of a shard is; the first shard to hold one keeps it."""
        for row, key in enumerate(keys):
            for layer in layers:
                self._where.setdefault((key, layer), (shard, row))

    def has(self, key: str, layers: Iterable[int]) -> bool:
        return all((key, layer) in self._where for layer in layers)

    def missing(self, keys: Sequence[str], layers: Sequence[int]) -> list[int]:
        """Positions in ``keys`` that lack any of ``layers``. The shards holding the others are read whole first (they
        are needed next anyway), so a damaged one is set aside here and its structures count as missing."""
        layers = list(layers)
        self._verify({self._where[(key, layer)][0] for key in keys for layer in layers if (key, layer) in self._where})
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

    def _shard(self, path: Path) -> dict[str, np.ndarray]:
        """Every array of a shard, checked against its index (raises one of ``_UNREADABLE`` if it is damaged)."""
        if path not in self._shards:
            # numpy leaves the file open when it fails to read it: open it here, so it is closed either way
            with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            _check_shard(arrays, *self._index[path])
            self._shards[path] = arrays
        return self._shards[path]

    def _set_aside(self, shard: Path, error: BaseException) -> None:
        target = self.path / DAMAGED_FOLDER / shard.name
        target.parent.mkdir(exist_ok=True)
        try:
            os.replace(shard, target)
        except FileNotFoundError:
            pass  # another process set it aside first
        self._index.pop(shard, None)
        self._shards.pop(shard, None)
        self.set_aside.append(target)
        warnings.warn(f"{shard}: damaged feature-store shard ({type(error).__name__}: {error}); moved to {target}, its "
                      f"structures will be computed again", DamagedShardWarning, stacklevel=3)

    def _verify(self, shards: Iterable[Path]) -> None:
        """Read these shards whole; set damaged ones aside and forget where their structures were."""
        damaged = False
        for shard in sorted(shards):
            try:
                self._shard(shard)
            except _UNREADABLE as error:
                self._set_aside(shard, error)
                damaged = True
        if damaged:
            self._where.clear()
            for shard, (keys, layers) in sorted(self._index.items()):
                self._locate(shard, keys, layers)

    def check(self) -> tuple[int, list[Path]]:
        """Read every shard whole: ``(readable shards, damaged shards set aside)``."""
        self.refresh()
        self._verify(list(self._index))
        return len(self._index), list(self.set_aside)

    def read(self, keys: Sequence[str], layer: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Statistics of ``layer`` for ``keys`` in order: ``({statistic: (n, width)}, n_atoms)``."""
        absent = [key for key in keys if (key, layer) not in self._where]
        if absent:
            raise InputError(f"{len(absent)} structures have no stored layer {layer} for {self.identity.get('name')} "
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

    @contextmanager
    def claims(self) -> Iterator[Claims]:
        """Claims on structures this process is about to compute, released when the block ends."""
        claims = Claims(self.path / CLAIMS_FOLDER)
        try:
            yield claims
        finally:
            claims.release(list(claims.held))


def _check_shard(arrays: dict[str, np.ndarray], keys: list[str], layers: list[int]) -> None:
    n = len(keys)
    if arrays["n_atoms"].shape != (n,):
        raise ValueError(f"n_atoms has shape {arrays['n_atoms'].shape} for {n} records")
    for layer in layers:
        for statistic in STATISTICS:
            values = arrays[f"L{layer}_{statistic}"]
            if values.ndim != 2 or len(values) != n:
                raise ValueError(f"L{layer}_{statistic} has shape {values.shape} for {n} records")


@dataclass
class Claims:
    """Exclusive, advisory locks on structure keys: one byte of ``claims/claims.lock`` each (a POSIX byte-range lock at
    an offset drawn from the key), so that claiming creates no file. The operating system drops a process's locks when
    it dies, so a killed featuriser never blocks the others. Two keys sharing an offset (odds 2^-60) only make one wait
    for the other. The locks belong to the process: two featurisations in threads of one process do not exclude each
    other (at worst they compute a structure twice, never wrongly). Holding a claim does not mean the structure is
    still missing: check the store after claiming (another process may have just finished it)."""

    folder: Path
    held: set[str] = field(default_factory=set)
    supported: bool = fcntl is not None
    """False where the file system refuses locks (some network file systems): then every key is taken."""
    _handle: int | None = None

    def take(self, keys: Iterable[str]) -> list[str]:
        """Claim what no other process holds; returns the keys now held by this one."""
        keys = list(keys)
        if not self.supported:
            return keys
        taken = []
        for key in keys:
            if key not in self.held:
                try:
                    fcntl.lockf(self._lock_file(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _lock_offset(key))
                except OSError as error:
                    if error.errno in (errno.EACCES, errno.EAGAIN):  # another process holds it
                        continue
                    self.supported = False  # ENOLCK, EOPNOTSUPP: no locks on this file system
                    warnings.warn(f"{self.folder}: the file system refuses locks ({error}); processes featurising into "
                                  f"this store at once may compute a structure twice", stacklevel=2)
                    return keys
                self.held.add(key)
            taken.append(key)
        return taken

    def release(self, keys: Iterable[str]) -> None:
        for key in keys:
            if key in self.held:
                self.held.discard(key)
                fcntl.lockf(self._handle, fcntl.LOCK_UN, 1, _lock_offset(key))
        if not self.held and self._handle is not None:
            os.close(self._handle)  # closing drops every lock of this process on the file: only when none is held
            self._handle = None

    def _lock_file(self) -> int:
        if self._handle is None:
            self.folder.mkdir(exist_ok=True)
            self._handle = os.open(self.folder / CLAIMS_FILE, os.O_RDWR | os.O_CREAT, _file_mode())
        return self._handle


def _lock_offset(key: str) -> int:
    """60 bits drawn from the key: a byte offset well within a 64-bit file offset."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 4


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:48].strip("_") or "backbone"


class FeatureStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else hacknip_home() / "features"

    def check_usable(self) -> None:
        """Fail early (before any work) when the store cannot be a folder."""
        for path in (self.root, *self.root.parents):
            if path.exists():
                if not path.is_dir():
                    raise InputError(f"{path} is a file, so the feature store {self.root} cannot be made there; point "
                                     f"--store or ${HOME_ENV} at a folder")
                if not os.access(path, os.W_OK | os.X_OK):
                    raise InputError(f"cannot write to {path} (feature store {self.root}); point --store or ${HOME_ENV} "
                                     f"at a folder you can write to")
                return

    def open(self, identity: dict[str, Any], names: Iterable[str] = ()) -> BackboneFeatures:
        """The features of ``identity``; ``names`` are the backbone names users typed for it (``orb-v2-paper``,
        ``chgnet:/path/x.pth``), recorded so that another environment can find these features by the same name."""
        self.check_usable()
        path = self.root / f"{_slug(identity['name'])}-{identity_key(identity)}"
        path.mkdir(parents=True, exist_ok=True)
        identity_file = path / "identity.json"
        if _read_json(identity_file) != json.loads(json.dumps(identity)):  # absent or damaged: this identity made the key
            text = json.dumps(identity, indent=2, sort_keys=True).encode()
            _atomic_write(identity_file, lambda stream: stream.write(text))
        known = _read_names(path)
        if not set(names) <= known:
            text = json.dumps(sorted(known | set(names))).encode()
            _atomic_write(path / "names.json", lambda stream: stream.write(text))
        return BackboneFeatures(path, identity)

    def folders(self) -> list[tuple[Path, dict[str, Any] | None]]:
        """Every backbone folder with its identity (``None`` where identity.json is missing or unreadable)."""
        return [(folder, _read_json(folder / "identity.json")) for folder in sorted(self.root.glob("*/"))
                if folder.is_dir()]

    def identities(self) -> list[dict[str, Any]]:
        """Every backbone identity with stored features."""
        return [identity for _, identity in self.folders() if identity is not None]

    def find(self, name: str) -> list[dict[str, Any]]:
        """Stored identities known under ``name`` (used when the backbone's plugin is not installed here)."""
        return [identity for folder, identity in self.folders()
                if identity is not None and (name == identity.get("name") or name in _read_names(folder))]


def _read_json(file: Path) -> Any:
    """A small JSON file of the store, or None when it is absent or damaged (it is rewritten from what it held)."""
    try:
        return json.loads(file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        warnings.warn(f"{file}: unreadable ({error}); it will be written again", DamagedShardWarning, stacklevel=3)
        return None


def _read_names(folder: Path) -> set[str]:
    names = _read_json(folder / "names.json")
    return {name for name in names if isinstance(name, str)} if isinstance(names, list) else set()
