"""The feature store: pooled per-layer statistics of every structure a backbone has seen, on disk.

Layout under ``$HACKNIP_HOME/features`` (default ``~/.cache/hacknip/features``), or under any folder or fsspec URL
(``s3://bucket/hacknip``: :mod:`hacknip.store.folder` says what changes on object storage)::

    <backbone-name>-<identity key>/
        identity.json               the backbone identity the key was made from
        names.json                  the names users typed for it
        shard-<time>-<pid>-<n>.arrow records: structure key, atom count, and per layer the mean / std / max of the
                                    per-atom features with a CRC-32 per row (Arrow IPC, :mod:`hacknip.store.shard`)
        index.arrow                 every record's shard and row, sorted by key (:mod:`hacknip.store.index`)
        claims/claims.lock          one byte per structure being computed, locked by the process computing it
        damaged/                    files that could not be read, set aside (their structures are computed again)
        index.lock, compact.lock    held by a process writing the index or compacting

Records are keyed by (backbone identity, structure content hash, layer); every pooling is derived from the stored
statistics. Writers append shards (written under a temporary name and renamed, so a killed run leaves only whole
shards and the next run computes just what is missing); opening reads the index through a memory map and only the
shards written since; reading a layer of some structures reads only those rows of that layer. Small shards are merged
into shards of up to 1 GB by the writer that finds 16 of them (or ``hacknip store compact``). A damaged shard
(truncated, zeroed, a flipped bit: the row checksums catch those) is named in a :class:`DamagedShardWarning`, moved to
``damaged/`` and its structures count as missing again. Processes featurising into one store claim structures before
computing them, so they share the work instead of repeating it. Nothing is pickled; the files are readable from any
environment with pyarrow (no NIP library needed), so features made where one NIP library is installed combine with
features made where another is. Files follow the umask, so a store can be shared by a group. Stores of hacknip 0.1
(``shard-*.npz``) are rewritten in this format when first opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from hacknip.errors import InputError
from hacknip.plugins.backbone import identity_key
from hacknip.store.claims import Claims
from hacknip.store.features import BackboneFeatures, CompactionReport, DamagedFeaturesError
from hacknip.store.files import (
    DAMAGED_FOLDER,
    GEOMETRIES_FOLDER,
    HOME_ENV,
    DamagedShardWarning,
    atomic_write,
    hacknip_home,
    slug,
)
from hacknip.store.folder import LocalFolder, RemoteFolder, is_url, open_folder

__all__ = ["DAMAGED_FOLDER", "GEOMETRIES_FOLDER", "BackboneFeatures", "Claims", "CompactionReport", "DamagedFeaturesError",
           "DamagedShardWarning", "FeatureStore", "NO_GEOMETRY_KEY", "Record", "atomic_write", "hacknip_home", "slug",
           "structure_hash"]


NO_GEOMETRY_KEY = "hacknip_no_geometry"
"""``atoms.info`` key of a molecule made without a 3-D geometry (``--conformer none``): its atoms, hydrogens included,
all at the origin, and its canonical SMILES in ``atoms.info["smiles"]``, which is then what tells it apart."""


def structure_hash(atoms: Atoms) -> str:
    """Content hash of a structure: species, positions and cell to 1e-6 Å, and periodicity; for a molecule without a
    geometry (:data:`NO_GEOMETRY_KEY`), its canonical SMILES too (isomers have the same atoms at the same origin)."""
    digest = hashlib.sha256()
    digest.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    for array in (atoms.positions, atoms.cell.array):
        digest.update((np.round(np.asarray(array, dtype=np.float64), 6) + 0.0).tobytes())
    digest.update(np.asarray(atoms.pbc, dtype=np.bool_).tobytes())
    if atoms.info.get(NO_GEOMETRY_KEY):
        digest.update(atoms.info["smiles"].encode())
    return digest.hexdigest()[:32]


@dataclass
class Record:
    """One structure's pooled statistics: ``stats[layer][statistic]`` is a 1-D array."""

    key: str
    n_atoms: int
    stats: dict[int, dict[str, np.ndarray]]


class FeatureStore:
    """Every backbone's stored features under one root: a folder, or an fsspec URL (``s3://bucket/hacknip``) for a
    store on object storage (``pip install 'hacknip-core[remote]'`` and the file system's package)."""

    def __init__(self, root: str | Path | None = None):
        self.root: Path | str = root if is_url(root) else Path(root) if root else hacknip_home() / "features"
        self.folder = open_folder(self.root)

    @property
    def local_root(self) -> Path:
        """Where files that stay on this machine go (relaxed geometries): the root, or ``$HACKNIP_HOME/features`` for a
        store on object storage."""
        return self.folder.path if not self.folder.remote else hacknip_home() / "features"

    def exists(self) -> bool:
        return self.folder.exists()

    def check_usable(self) -> None:
        """Fail early (before any work) when the store cannot be a folder."""
        if self.folder.remote:
            return  # an object store says what it refuses at the first write, in its own words
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
        folder = self.folder.child(f"{slug(identity['name'])}-{identity_key(identity)}")
        folder.ensure()
        if _read_json(folder, "identity.json") != json.loads(json.dumps(identity)):  # absent or damaged: rewrite
            text = json.dumps(identity, indent=2, sort_keys=True).encode()
            folder.write_atomic("identity.json", lambda stream: stream.write(text))
        known = _read_names(folder)
        if not set(names) <= known:
            text = json.dumps(sorted(known | set(names))).encode()
            folder.write_atomic("names.json", lambda stream: stream.write(text))
        return BackboneFeatures(folder, identity)

    def folders(self) -> list[tuple[LocalFolder | RemoteFolder, dict[str, Any] | None]]:
        """Every backbone folder with its identity (``None`` where identity.json is missing or unreadable)."""
        return [(folder, _read_json(folder, "identity.json")) for folder in self.folder.children()
                if folder.name != GEOMETRIES_FOLDER]

    def identities(self) -> list[dict[str, Any]]:
        """Every backbone identity with stored features."""
        return [identity for _, identity in self.folders() if identity is not None]

    def find(self, name: str) -> list[dict[str, Any]]:
        """Stored identities known under ``name`` (used when the backbone's plugin is not installed here)."""
        return [identity for folder, identity in self.folders()
                if identity is not None and (name == identity.get("name") or name in _read_names(folder))]


def _read_json(folder: LocalFolder | RemoteFolder, name: str) -> Any:
    """A small JSON file of the store, or None when it is absent or damaged (it is rewritten from what it held)."""
    try:
        return json.loads(folder.read_text(name))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        warnings.warn(f"{folder.where(name)}: unreadable ({error}); it will be written again", DamagedShardWarning,
                      stacklevel=3)
        return None


def _read_names(folder: LocalFolder | RemoteFolder) -> set[str]:
    names = _read_json(folder, "names.json")
    return {name for name in names if isinstance(name, str)} if isinstance(names, list) else set()
