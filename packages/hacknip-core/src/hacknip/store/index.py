"""Where each structure's record is: keys sorted once and searched, so that opening a store costs the same whatever it
holds.

``index.arrow`` (an Arrow IPC file like the shards) has one row per record, sorted by key: ``key``
(fixed_size_binary[16]), ``shard`` (uint32, a position in the shard list of the schema metadata), ``row`` (uint32)
and ``n_atoms`` (int64). The schema metadata lists the shards with their layouts (where each column is), so that
reading rows needs nothing from a shard but those rows. It is opened through a memory map, so only the pages a search
touches are read (on object storage it is fetched whole: 32 bytes a record). The index is derived data:
shards written after it (the *tail*) are read at opening, and it is written again (merged, not sorted again) once the
tail grows; a damaged or missing index is rebuilt from the shards, and every read checks the key it finds in the shard
itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from hacknip.store.folder import LocalFolder, RemoteFolder
from hacknip.store.shard import KEY_BYTES, ShardLayout

INDEX_FILE = "index.arrow"
INDEX_FORMAT = "hacknip-features-index/1"


@dataclass(frozen=True)
class ShardInfo:
    name: str
    layout: ShardLayout

    @property
    def rows(self) -> int:
        return self.layout.rows

    @property
    def layers(self) -> tuple[int, ...]:
        return self.layout.layers

    @property
    def size(self) -> int:
        return self.layout.size


@dataclass
class KeyIndex:
    """Records sorted by key (ties: older shards first)."""

    keys: np.ndarray
    shard: np.ndarray
    row: np.ndarray
    n_atoms: np.ndarray

    @classmethod
    def empty(cls) -> KeyIndex:
        return cls(np.empty(0, f"S{KEY_BYTES}"), np.empty(0, np.uint32), np.empty(0, np.uint32), np.empty(0, np.int64))

    @classmethod
    def of_shard(cls, shard_id: int, keys: np.ndarray, n_atoms: np.ndarray) -> KeyIndex:
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], np.full(len(keys), shard_id, np.uint32), order.astype(np.uint32), n_atoms[order])

    @classmethod
    def concatenated(cls, parts: list[KeyIndex]) -> KeyIndex:
        """Several indexes in one, sorted again (ties: in the order given)."""
        if not parts:
            return cls.empty()
        joined = cls(*(np.concatenate(column) for column in zip(*((p.keys, p.shard, p.row, p.n_atoms) for p in parts))))
        return joined.where(np.argsort(joined.keys, kind="stable"))

    def __len__(self) -> int:
        return len(self.keys)

    def merged(self, other: KeyIndex) -> KeyIndex:
        """Both indexes in one; ``other``'s records after this one's for equal keys. Linear: a merge, not a sort."""
        at = np.searchsorted(self.keys, other.keys, side="right")
        return KeyIndex(np.insert(self.keys, at, other.keys), np.insert(self.shard, at, other.shard),
                        np.insert(self.row, at, other.row), np.insert(self.n_atoms, at, other.n_atoms))

    def where(self, keep: np.ndarray) -> KeyIndex:
        return KeyIndex(self.keys[keep], self.shard[keep], self.row[keep], self.n_atoms[keep])

    def entries(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every record of each query: ``(query position, position in this index)``, queries in order."""
        left = np.searchsorted(self.keys, queries, side="left")
        counts = np.searchsorted(self.keys, queries, side="right") - left
        query = np.repeat(np.arange(len(queries)), counts)
        first = np.repeat(left - np.cumsum(counts) + counts, counts)
        return query, first + np.arange(len(query))


def write_index(folder: LocalFolder | RemoteFolder, index: KeyIndex, shards: list[ShardInfo]) -> None:
    table = pa.table({
        "key": pa.FixedSizeBinaryArray.from_buffers(pa.binary(KEY_BYTES), len(index),
                                                    [None, pa.py_buffer(np.ascontiguousarray(index.keys).tobytes())]),
        "shard": pa.array(index.shard, pa.uint32()),
        "row": pa.array(index.row, pa.uint32()),
        "n_atoms": pa.array(index.n_atoms, pa.int64()),
    })
    listed = [{"name": s.name, **s.layout.to_json()} for s in shards]
    table = table.replace_schema_metadata({"format": INDEX_FORMAT, "shards": json.dumps(listed)})

    def write(stream) -> None:
        with pa.ipc.new_file(stream, table.schema) as writer:
            writer.write_table(table)

    folder.write_atomic(INDEX_FILE, write)


def read_index(folder: LocalFolder | RemoteFolder) -> tuple[KeyIndex, list[ShardInfo]]:
    """The index and its shard list (memory-mapped where the folder is local). Raises ``FileNotFoundError`` when
    there is none, and ``pyarrow.ArrowInvalid``, ``ValueError`` or ``KeyError`` when it is damaged."""
    with folder.arrow_source(INDEX_FILE) as mapped:
        reader = pa.ipc.open_file(mapped)
        metadata = reader.schema.metadata or {}
        if metadata.get(b"format") != INDEX_FORMAT.encode():
            raise ValueError(f"not a hacknip feature index (format {metadata.get(b'format')!r})")
        shards = [ShardInfo(s["name"], ShardLayout.from_json(s)) for s in json.loads(metadata[b"shards"])]
        table = reader.read_all()
    if table.num_rows == 0:
        return KeyIndex.empty(), shards
    keys = table.column("key").combine_chunks()
    index = KeyIndex(np.frombuffer(keys.buffers()[1], f"S{KEY_BYTES}")[keys.offset:][:len(keys)],
                     *(table.column(name).combine_chunks().to_numpy() for name in ("shard", "row", "n_atoms")))
    if index.shard.size and int(index.shard.max()) >= len(shards):
        raise ValueError(f"the index names shard {int(index.shard.max())} of {len(shards)}")
    return index, shards
