"""The stored features of one backbone identity: its shards and their index; reading, writing, checking, compacting."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from hacknip.errors import InputError
from hacknip.features.pooling import STATISTICS
from hacknip.store import legacy
from hacknip.store.claims import Claims
from hacknip.store.files import DAMAGED_FOLDER, DamagedShardWarning
from hacknip.store.folder import LocalFolder, RemoteFolder, read_into
from hacknip.store.index import INDEX_FILE, KeyIndex, ShardInfo, read_index, write_index
from hacknip.store.shard import SUFFIX, Shard, ShardLayout, ShardWriter, encode_keys, write_shard

SETTLED_NS = 2_000_000_000
"""A folder whose modification time is older than this (2 s) is taken as settled: unchanged since it was listed."""
REINDEX_TAIL_SHARDS = 16
"""Shards written after the index that make the next opener write the index again."""
SMALL_SHARD_BYTES = 64 << 20
COMPACT_SMALL_SHARDS = 16
"""Small shards (under 64 MB) that make the next writer merge them into shards of up to 1 GB (on a local folder; on
object storage, where nothing can lock, only ``hacknip store compact`` merges them)."""
TARGET_SHARD_BYTES = 1 << 30
COPY_ROWS = 2048
"""Rows copied at once by compaction and checked at once by :meth:`BackboneFeatures.check`."""
OPEN_SHARDS = 64
"""Shards kept open (one file descriptor each); beyond that the oldest are let go (closed once no read in progress
holds them) and opened again when needed."""
UNREADABLE = (OSError, EOFError, ValueError, KeyError, IndexError, pa.ArrowException)
_shard_counter = count()


class DamagedFeaturesError(InputError):
    """Stored features turned out damaged while being read; the shard was set aside, and the next run computes its
    structures again."""


@dataclass
class CompactionReport:
    merged: int
    """Small shards merged (and removed)."""
    written: int
    """Shards they became."""
    seconds: float


class BackboneFeatures:
    """The stored features of one backbone identity (see :mod:`hacknip.store` for the layout)."""

    def __init__(self, folder: LocalFolder | RemoteFolder, identity: dict[str, Any]):
        self.folder, self.identity = folder, identity
        self.set_aside: list[str] = []
        """Damaged files this object moved to ``damaged/``."""
        self._opened: dict[int, Shard] = {}
        self._listed_at: int | None = None
        self._index_stamp: tuple | None = None
        self._load_index()
        if not folder.remote and legacy.legacy_shards(folder.path):
            self._migrate()
        self.refresh()

    @property
    def path(self) -> Path | str:
        """Where these features live: a folder, or a URL on object storage."""
        return self.folder.path if not self.folder.remote else str(self.folder)

    # ---- what is where -------------------------------------------------------------------------------------------

    def _load_index(self) -> None:
        """Read the index (memory-mapped); the tail is listed again by :meth:`refresh`."""
        self._index_stamp = self.folder.stamp(INDEX_FILE)
        try:
            main, shards = read_index(self.folder)
        except FileNotFoundError:
            main, shards = KeyIndex.empty(), []
        except UNREADABLE as error:
            warnings.warn(f"{self.folder.where(INDEX_FILE)}: unreadable feature-store index ({type(error).__name__}: "
                          f"{error}); it is rebuilt from the shards", DamagedShardWarning, stacklevel=3)
            main, shards = KeyIndex.empty(), []
            self._index_stamp = None
        for shard in self._opened.values():
            shard.close()
        self._opened = {}
        self._shards: list[ShardInfo] = list(shards)
        self._ids = {info.name: i for i, info in enumerate(shards)}
        self._indexed = len(shards)
        self._alive = np.ones(len(shards), dtype=bool)
        self._main, self._tail = main, KeyIndex.empty()
        self._layer_table = _layer_table(shards)

    def refresh(self, force: bool = False) -> None:
        """See shards written since the last look (by this or another process) and shards gone; set aside unreadable
        ones. The folder is listed again unless its modification time is unchanged and old: file systems stamp times
        coarsely, so a shard renamed into the folder within the same tick as the last listing could otherwise go
        unseen."""
        stamp = self.folder.listing_stamp()
        if not force and stamp is not None and stamp == self._listed_at and time.time_ns() - stamp > SETTLED_NS:
            return
        self._listed_at = stamp
        if self.folder.stamp(INDEX_FILE) != self._index_stamp:
            self._load_index()
        on_disk = set(_shard_names(self.folder))
        for shard_id, info in enumerate(self._shards):
            if self._alive[shard_id] and info.name not in on_disk:
                self._forget(shard_id)  # compacted away or set aside by another process
        for name in sorted(on_disk - set(self._ids)):
            self._add_to_tail(name)
        if len(self._shards) - self._indexed >= REINDEX_TAIL_SHARDS and self._try_reindex():
            self.refresh(force=True)

    def _try_reindex(self) -> bool:
        """Write the index again if this process may: a reader of a store it cannot write reads the tail instead."""
        try:
            return self.reindex()
        except PermissionError:
            return False

    def _add_to_tail(self, name: str, layout: ShardLayout | None = None) -> None:
        try:
            shard = Shard(self.folder, name, layout)
        except FileNotFoundError:
            return  # another process compacted it away or set it aside meanwhile
        except UNREADABLE as error:
            self._set_aside(name, error)
            return
        shard_id = len(self._shards)
        self._shards.append(ShardInfo(name, shard.layout))
        self._ids[name] = shard_id
        self._alive = np.append(self._alive, True)
        self._layer_table = _layer_table(self._shards, self._alive)
        self._tail = self._tail.merged(KeyIndex.of_shard(shard_id, shard.keys, shard.n_atoms))
        self._keep_open(shard_id, shard)

    def _entries(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every live record of each query: ``(query position, shard id, row, n_atoms)``, older shards first."""
        parts = []
        for index in (self._main, self._tail):
            query, position = index.entries(queries)
            parts.append((query, index.shard[position].astype(np.int64), index.row[position].astype(np.int64),
                          index.n_atoms[position]))
        query, shard, row, n_atoms = (np.concatenate(column) for column in zip(*parts))
        live = self._alive[shard]
        return query[live], shard[live], row[live], n_atoms[live]

    def _covered(self, keys: Sequence[str], layers: Sequence[int]) -> np.ndarray:
        """``(len(keys), len(layers))``: whether each structure has each layer stored."""
        layers = np.asarray(list(layers), dtype=np.int64)
        query, shard, _, _ = self._entries(encode_keys(keys))
        known = layers < self._layer_table.shape[1]
        has = np.zeros((len(query), len(layers)), dtype=bool)
        has[:, known] = self._layer_table[shard][:, layers[known]]
        covered = np.zeros((len(keys), len(layers)), dtype=bool)
        np.logical_or.at(covered, query, has)
        return covered

    def has(self, key: str, layers: Iterable[int]) -> bool:
        return bool(self._covered([key], list(layers)).all())

    def missing(self, keys: Sequence[str], layers: Sequence[int]) -> list[int]:
        """Positions in ``keys`` that lack any of ``layers`` (from the index alone: :meth:`verify` reads the records)."""
        if not len(keys):
            return []
        return np.flatnonzero(~self._covered(keys, layers).all(axis=1)).tolist()

    def _locate(self, queries: np.ndarray, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The shard, row and atom count of the record holding ``layer`` of each query (the oldest such record); -1
        where none does."""
        query, shard, row, n_atoms = self._entries(queries)
        holds = self._layer_table[shard, layer] if layer < self._layer_table.shape[1] else np.zeros(len(shard), bool)
        query, shard, row, n_atoms = query[holds], shard[holds], row[holds], n_atoms[holds]
        found, first = np.unique(query, return_index=True)
        where = tuple(np.full(len(queries), -1, np.int64) for _ in range(3))
        where[0][found], where[1][found], where[2][found] = shard[first], row[first], n_atoms[first]
        return where

    def stored_layers(self) -> list[int]:
        return sorted({layer for info, alive in zip(self._shards, self._alive) if alive for layer in info.layers})

    def __len__(self) -> int:
        """Structures with any record."""
        return len(self._live_keys())

    @property
    def shard_count(self) -> int:
        return int(self._alive.sum())

    # ---- reading -------------------------------------------------------------------------------------------------

    def read(self, keys: Sequence[str], layer: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Statistics of ``layer`` for ``keys`` in order: ``({statistic: (n, width)}, n_atoms)``. Reads only those
        rows of that layer. Raises :class:`DamagedFeaturesError` when a record read is damaged (its shard is set
        aside: run again to compute its structures)."""
        staged, order, n_atoms = self._gather(keys, layer)
        where = np.argsort(order)  # keys[j] was read into staged[where[j]]
        return {statistic: np.take(staged[:, i], where, axis=0).astype(np.float64)
                for i, statistic in enumerate(STATISTICS)}, n_atoms

    def read_blocks(self, keys: Sequence[str], layer: int) -> tuple[np.ndarray, np.ndarray]:
        """``layer`` for ``keys`` as one ``(n, 3, width)`` float32 array (statistics in :data:`STATISTICS` order), and
        the atom counts: half the memory of :meth:`read`."""
        staged, order, n_atoms = self._gather(keys, layer)
        return np.take(staged, np.argsort(order), axis=0), n_atoms

    def _gather(self, keys: Sequence[str], layer: int, retried: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(blocks, order, n_atoms)``: the blocks of ``layer`` in the order they were read (by shard, then row),
        ``blocks[i]`` being ``keys[order[i]]``'s; ``n_atoms`` in the order of ``keys``."""
        queries = encode_keys(keys)
        shard_of, row_of, atoms_of = self._locate(queries, layer)
        if (absent := np.flatnonzero(shard_of < 0)).size:
            raise InputError(f"{absent.size} structures have no stored layer {layer} for {self.identity.get('name')} "
                             f"(first: {keys[absent[0]]}); run hacknip featurize first")
        order = np.lexsort((row_of, shard_of))  # by shard, rows ascending: the cheapest reads
        try:
            parts, reads, start = [], [], 0
            for shard_id, count in zip(*np.unique(shard_of[order], return_counts=True)):
                shard = self._shard(int(shard_id))
                chosen = order[start:start + count]
                parts.append((shard, chosen, start))
                start += count
            width = parts[0][0].widths[layer] if parts else 0
            staged = np.empty((len(keys), len(STATISTICS), width), np.float32)
            for shard, chosen, first in parts:
                reads += shard.reads(row_of[chosen], layer, staged[first:first + len(chosen)])
            read_into(reads)
            for shard, chosen, first in parts:
                self._check_read(shard, row_of[chosen], layer, staged[first:first + len(chosen)], queries[chosen],
                                 atoms_of[chosen])
        except (FileNotFoundError, _StaleIndex) as error:
            if retried:
                raise
            # compacted away by another process since this one looked, or an index that is wrong: look again
            if isinstance(error, _StaleIndex):
                self.reindex(rebuild=True)
            self.refresh(force=True)
            return self._gather(keys, layer, retried=True)
        return staged, order, atoms_of

    def _check_read(self, shard: Shard, rows: np.ndarray, layer: int, blocks: np.ndarray, keys: np.ndarray,
                    n_atoms: np.ndarray) -> None:
        """The checksum covers key and atom count: a record that passes is the one asked for, as the index said."""
        if not (bad := shard.damaged_rows(rows, layer, blocks, keys, n_atoms)).size:
            return
        if (shard.keys[rows[bad]] != keys[bad]).any() or (shard.n_atoms[rows[bad]] != n_atoms[bad]).any():
            raise _StaleIndex(f"{shard.where}: the index points at other records")
        error = ValueError(f"{bad.size} records of layer {layer} fail their checksum")
        self._set_aside(shard.name, error)
        raise self._damaged(shard.name, error)

    def _damaged(self, name: str, error: BaseException) -> DamagedFeaturesError:
        return DamagedFeaturesError(f"{self.folder.where(name)}: damaged feature-store shard ({type(error).__name__}: "
                                    f"{error}); moved to {self.folder.where(DAMAGED_FOLDER)}. Run the same command "
                                    f"again: its structures will be computed again")

    def verify(self, keys: Sequence[str], layers: Sequence[int]) -> int:
        """Read the records of ``keys`` for ``layers`` and check them; set aside the shards of damaged ones (their
        structures then count as missing). Returns the shards set aside."""
        before = len(self.set_aside)
        queries = encode_keys(keys)
        for layer in layers:
            shard_of, row_of, _ = self._locate(queries, layer)
            for shard_id in np.unique(shard_of[shard_of >= 0]):
                rows = np.unique(row_of[shard_of == shard_id])
                self._check_rows(int(shard_id), rows, [layer])
        return len(self.set_aside) - before

    def _check_rows(self, shard_id: int, rows: np.ndarray, layers: Sequence[int]) -> None:
        """Read and check ``rows`` of a shard in chunks; set it aside if any fails."""
        try:
            shard = self._shard(shard_id)
            for layer in layers:
                for start in range(0, len(rows), COPY_ROWS):
                    chunk = rows[start:start + COPY_ROWS]
                    if (bad := shard.damaged_rows(chunk, layer, shard.read_blocks(chunk, layer))).size:
                        raise ValueError(f"{bad.size} records of layer {layer} fail their checksum")
        except FileNotFoundError:
            pass  # compacted away meanwhile: its records are elsewhere now
        except UNREADABLE as error:
            self._set_aside(self._shards[shard_id].name, error)

    def check(self) -> tuple[int, list[str]]:
        """Read every record of every shard and check it; set aside damaged shards and write the index again.
        Returns ``(readable shards, damaged files set aside)``."""
        self.refresh(force=True)
        for shard_id, info in enumerate(self._shards):
            if self._alive[shard_id]:
                self._check_rows(shard_id, np.arange(info.rows), info.layers)
        self.reindex(rebuild=True)
        self.refresh(force=True)
        return self.shard_count, list(self.set_aside)

    def _shard(self, shard_id: int) -> Shard:
        """The open shard (opened now if need be; a damaged one is set aside and raises)."""
        if (shard := self._opened.get(shard_id)) is not None:
            return shard
        name = self._shards[shard_id].name
        try:
            shard = Shard(self.folder, name, self._shards[shard_id].layout)
        except FileNotFoundError:
            raise
        except UNREADABLE as error:
            self._set_aside(name, error)
            raise self._damaged(name, error) from error
        self._keep_open(shard_id, shard)
        return shard

    def _keep_open(self, shard_id: int, shard: Shard) -> None:
        self._opened[shard_id] = shard
        while len(self._opened) > OPEN_SHARDS:
            del self._opened[next(iter(self._opened))]  # closed once no read in progress holds it

    # ---- writing -------------------------------------------------------------------------------------------------

    def write(self, records: Sequence[Any]) -> None:
        """Append :class:`hacknip.store.Record` s as one new shard (never rewriting another)."""
        if not records:
            return
        layers = sorted(records[0].stats)
        keys = encode_keys([r.key for r in records])
        n_atoms = np.array([r.n_atoms for r in records], dtype=np.int64)
        blocks = {layer: np.array([[r.stats[layer][s] for s in STATISTICS] for r in records], dtype=np.float32)
                  for layer in layers}
        name = _new_shard_name()
        self._add_to_tail(name, write_shard(self.folder, name, keys, n_atoms, blocks))
        self.refresh()
        if not self.folder.remote and self._small_shards() >= COMPACT_SMALL_SHARDS:
            self.compact()

    def _small_shards(self) -> int:
        return sum(1 for info, alive in zip(self._shards, self._alive) if alive and info.size < SMALL_SHARD_BYTES)

    def reindex(self, rebuild: bool = False, without: Iterable[str] = ()) -> bool:
        """Write the index again: the current one merged with the shards written since (or, with ``rebuild``, from
        every shard). ``without``: shards to leave out (compaction's sources). False when another process is at it."""
        with self.folder.lock("index.lock") as held:
            if not held:
                return False
            without, on_disk = set(without), set(_shard_names(self.folder))
            keep = [i for i, info in enumerate(self._shards)
                    if self._alive[i] and info.name in on_disk and info.name not in without]
            indexed = set() if rebuild else set(range(self._indexed))
            old = [i for i in keep if i in indexed]
            shards = [self._shards[i] for i in old]
            renumber = np.full(len(self._shards) + 1, -1, np.int64)
            renumber[old] = np.arange(len(old))
            main = self._main.where(renumber[self._main.shard] >= 0) if old else KeyIndex.empty()
            main.shard = renumber[main.shard].astype(np.uint32)
            fresh = sorted(self._shards[i].name for i in keep if i not in indexed)
            fresh += sorted(on_disk - without - {self._shards[i].name for i in keep} - set(self._ids))
            added = []
            for name in fresh:
                known = self._shards[self._ids[name]].layout if name in self._ids else None
                try:
                    shard = Shard(self.folder, name, known)
                except FileNotFoundError:
                    continue
                except UNREADABLE as error:
                    self._set_aside(name, error)
                    continue
                added.append(KeyIndex.of_shard(len(shards), shard.keys, shard.n_atoms))
                shards.append(ShardInfo(name, shard.layout))
                shard.close()
            if added:
                main = main.merged(KeyIndex.concatenated(added))
            write_index(self.folder, main, shards)
        self._load_index()
        self._listed_at = None
        return True

    def compact(self) -> CompactionReport:
        """Merge the small shards (under 64 MB) into shards of up to 1 GB, without repeated records; damaged records
        are left out and their shard set aside. Another process compacting meanwhile makes this a no-op."""
        started = time.perf_counter()
        with self.folder.lock("compact.lock") as held:
            if not held:
                return CompactionReport(0, 0, time.perf_counter() - started)
            self.refresh(force=True)
            groups: dict[tuple, list[int]] = {}
            for shard_id, info in enumerate(self._shards):
                if self._alive[shard_id] and info.size < SMALL_SHARD_BYTES:
                    try:
                        shard = self._shard(shard_id)
                    except (FileNotFoundError, DamagedFeaturesError):
                        continue
                    groups.setdefault(tuple(sorted(shard.widths.items())), []).append(shard_id)
            sources, written = [], []
            for widths, members in groups.items():
                if len(members) > 1:
                    merged, outputs = self._merge(dict(widths), members)
                    sources += merged
                    written += outputs
            if sources:
                for name, layout in written:
                    self._add_to_tail(name, layout)
                self.reindex(without=sources)
                for name in sources:
                    self.folder.remove(name)
                self.refresh(force=True)
        return CompactionReport(len(sources), len(written), time.perf_counter() - started)

    def _merge(self, widths: dict[int, int], members: list[int]) -> tuple[list[str], list[tuple[str, ShardLayout]]]:
        """Copy the records of ``members`` (each structure once) into new shards. Returns (merged names, new shards
        with their layouts)."""
        seen: set[bytes] = set()
        merged, outputs = [], []
        writer = None
        try:
            for shard_id in members:
                try:
                    shard = self._shard(shard_id)
                except (FileNotFoundError, DamagedFeaturesError):
                    continue  # compacted by another process meanwhile, or set aside now
                fresh = np.array([i for i, key in enumerate(shard.keys.tolist()) if key not in seen], np.int64)
                for start in range(0, len(fresh), COPY_ROWS):
                    rows = fresh[start:start + COPY_ROWS]
                    try:
                        blocks = {layer: shard.read_blocks(rows, layer) for layer in widths}
                        damaged = any(shard.damaged_rows(rows, layer, block).size for layer, block in blocks.items())
                    except UNREADABLE:
                        damaged = True
                    if damaged:
                        break  # the rest of this shard is not copied (and it is set aside below)
                    if writer is None:
                        writer = ShardWriter(self.folder, _new_shard_name(), widths)
                    writer.write(shard.keys[rows], shard.n_atoms[rows], blocks,
                                 {layer: shard.checksums(rows, layer) for layer in widths})
                    seen.update(shard.keys[rows].tolist())
                    if writer.bytes >= TARGET_SHARD_BYTES:
                        outputs.append((writer.name, writer.commit()))
                        writer = None
                else:
                    merged.append(shard.name)
                    continue
                self._set_aside(shard.name, ValueError("records fail their checksum"))
            if writer is not None:
                outputs.append((writer.name, writer.commit()))
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        return merged, outputs

    # ---- damage, claims ------------------------------------------------------------------------------------------

    def _set_aside(self, name: str, error: BaseException) -> None:
        target = self.folder.set_aside(name)
        if (shard_id := self._ids.get(name)) is not None:
            self._forget(shard_id)
        self.set_aside.append(target)
        warnings.warn(f"{self.folder.where(name)}: damaged feature-store shard ({type(error).__name__}: {error}); "
                      f"moved to {target}, its structures will be computed again", DamagedShardWarning, stacklevel=3)

    def _forget(self, shard_id: int) -> None:
        self._alive[shard_id] = False
        self._layer_table = _layer_table(self._shards, self._alive)
        if (shard := self._opened.pop(shard_id, None)) is not None:
            shard.close()

    def _migrate(self) -> None:
        """Rewrite the ``.npz`` shards of hacknip 0.1 as Arrow shards (same names, so the same order), once."""
        with self.folder.lock("index.lock", wait=True):
            for path in legacy.legacy_shards(self.folder.path):
                try:
                    keys, n_atoms, blocks = legacy.read_legacy_shard(path)
                    if keys:
                        write_shard(self.folder, path.with_suffix(SUFFIX).name, encode_keys(keys), n_atoms, blocks)
                except FileNotFoundError:
                    continue  # migrated by another process meanwhile
                except legacy.UNREADABLE as error:
                    self._set_aside(path.name, error)
                    continue
                path.unlink(missing_ok=True)

    @contextmanager
    def claims(self) -> Iterator[Claims]:
        """Claims on structures this process is about to compute, released when the block ends."""
        claims = self.folder.claims()
        try:
            yield claims
        finally:
            claims.release(list(claims.held))

    def _live_keys(self) -> np.ndarray:
        parts = [index.keys[self._alive[index.shard]] for index in (self._main, self._tail)]
        return np.unique(np.concatenate(parts))


class _StaleIndex(Exception):
    """The index sent a read to a record of another structure."""


def _new_shard_name() -> str:
    """A name no other writer uses, sorting after every shard written before (older shards win ties)."""
    return f"shard-{time.time_ns()}-{os.getpid()}-{next(_shard_counter)}{SUFFIX}"


def _shard_names(folder: LocalFolder | RemoteFolder) -> list[str]:
    return [name for name in folder.files() if name.startswith("shard-") and name.endswith(SUFFIX)]


def _layer_table(shards: Sequence[ShardInfo], alive: Sequence[bool] | None = None) -> np.ndarray:
    """``table[shard id, layer]``: whether that shard holds that layer (never, once it is set aside)."""
    width = 1 + max((layer for info in shards for layer in info.layers), default=-1)
    table = np.zeros((len(shards), width), dtype=bool)
    for shard_id, info in enumerate(shards):
        if alive is None or alive[shard_id]:
            table[shard_id, list(info.layers)] = True
    return table
