"""One shard of the feature store: an Arrow IPC file (Feather v2, uncompressed) of structure records.

Columns, one row per structure::

    key         fixed_size_binary[16]                          content hash of the structure (32 hex digits)
    n_atoms     int64                                          atoms of the structure as given
    L<l>        fixed_size_list<fixed_size_list<float>[w]>[3]  mean, std and max over atoms of layer l's features
    L<l>_crc32  uint32                                         CRC-32 of the row's key, n_atoms (int64) and L<l>
                                                               (float32), little-endian, in that order

Schema metadata: ``format`` (``hacknip-features/1``), ``layers`` and ``statistics`` (JSON lists). pyarrow, polars,
DuckDB or R's arrow read it as it is (``pyarrow.ipc.open_file``); nothing in it is pickled. A shard holds one or more
record batches (compaction streams several into one file).

Reading scattered rows costs what those rows weigh: the blocks of a layer are read with ``pread`` at offsets found
through a memory map of the file, whose data pages are never touched (a memory map would fault in 64 KB around every
row, and count it all as the process's memory). The keys, atom counts and checksums are small and read whole.
"""

from __future__ import annotations

import json
import os
import threading
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from hacknip.features.pooling import STATISTICS
from hacknip.store.files import atomic_write, file_mode

FORMAT = "hacknip-features/1"
SUFFIX = ".arrow"
KEY_BYTES = 16
READ_THREADS = 16
"""Reads in flight at once: a disk answers several scattered reads together faster than one after another (16 was
the fastest of 8, 16, 32 and 64 for 10⁵ rows of a 49 GB store read cold here: 2.6 s against 4.0, 3.3 and 3.8 s)."""


def encode_keys(keys: Sequence[str]) -> np.ndarray:
    """Content hashes (32 hex digits) as 16-byte strings, the form the shards and the index sort and search."""
    try:
        raw = b"".join(bytes.fromhex(key) for key in keys)
    except (ValueError, TypeError) as error:
        raise ValueError(f"feature-store keys are 32 hex digits (structure_hash): {error}") from None
    if len(raw) != KEY_BYTES * len(keys):
        bad = next(key for key in keys if len(key) != 2 * KEY_BYTES)
        raise ValueError(f"feature-store keys are 32 hex digits (structure_hash), got {bad!r}")
    return np.frombuffer(raw, dtype=f"S{KEY_BYTES}")


def row_heads(keys: np.ndarray, n_atoms: np.ndarray) -> list[int]:
    """CRC-32 of each row's key and atom count: where every layer's checksum of that row starts."""
    key_bytes = np.ascontiguousarray(keys).tobytes()
    atom_bytes = np.ascontiguousarray(n_atoms, dtype="<i8").tobytes()
    return [zlib.crc32(atom_bytes[8 * i:8 * i + 8], zlib.crc32(key_bytes[KEY_BYTES * i:KEY_BYTES * (i + 1)]))
            for i in range(len(n_atoms))]


def row_checksums(heads: list[int], blocks: np.ndarray) -> np.ndarray:
    """CRC-32 of each row's key, atom count (``heads``, from :func:`row_heads`) and one layer's (3, width) block."""
    blocks = np.ascontiguousarray(blocks, dtype="<f4")
    return np.fromiter((zlib.crc32(block, head) for head, block in zip(heads, blocks)), np.uint32, len(heads))


def shard_schema(widths: dict[int, int]) -> pa.Schema:
    fields = [pa.field("key", pa.binary(KEY_BYTES), nullable=False), pa.field("n_atoms", pa.int64(), nullable=False)]
    for layer, width in sorted(widths.items()):
        block = pa.list_(pa.list_(pa.float32(), width), len(STATISTICS))
        fields += [pa.field(f"L{layer}", block, nullable=False), pa.field(f"L{layer}_crc32", pa.uint32(), nullable=False)]
    metadata = {"format": FORMAT, "layers": json.dumps(sorted(widths)), "statistics": json.dumps(list(STATISTICS))}
    return pa.schema(fields, metadata=metadata)


def record_batch(schema: pa.Schema, keys: np.ndarray, n_atoms: np.ndarray, blocks: dict[int, np.ndarray],
                 checksums: dict[int, np.ndarray] | None = None) -> pa.RecordBatch:
    """``blocks[layer]``: (rows, 3, width) float32 in the order of :data:`STATISTICS`; ``checksums``: their row
    checksums when already known (copied records), else computed."""
    n = len(keys)
    keys = np.ascontiguousarray(keys, dtype=f"S{KEY_BYTES}")
    heads = row_heads(keys, n_atoms) if checksums is None else []
    arrays = [pa.FixedSizeBinaryArray.from_buffers(pa.binary(KEY_BYTES), n, [None, pa.py_buffer(keys.tobytes())]),
              pa.array(np.asarray(n_atoms, dtype=np.int64))]
    for layer in sorted(blocks):
        block = np.ascontiguousarray(blocks[layer], dtype=np.float32)
        inner = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), block.shape[2])
        arrays += [pa.FixedSizeListArray.from_arrays(inner, len(STATISTICS)),
                   pa.array(row_checksums(heads, block) if checksums is None else checksums[layer], pa.uint32())]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def write_shard(path: Path, keys: np.ndarray, n_atoms: np.ndarray, blocks: dict[int, np.ndarray]) -> None:
    schema = shard_schema({layer: block.shape[2] for layer, block in blocks.items()})
    batch = record_batch(schema, keys, n_atoms, blocks)

    def write(stream) -> None:
        with pa.ipc.new_file(stream, schema) as writer:
            writer.write_batch(batch)

    atomic_write(path, write)


class ShardWriter:
    """Streams record batches into a new shard under a temporary name; :meth:`commit` renames it into place."""

    def __init__(self, path: Path, widths: dict[int, int]):
        self.path, self.schema = path, shard_schema(widths)
        self.temporary = path.with_name(f".tmp-{path.name}")
        self._sink = pa.OSFile(str(self.temporary), "wb")
        self._writer = pa.ipc.new_file(self._sink, self.schema)
        self.rows = self.bytes = 0

    def write(self, keys: np.ndarray, n_atoms: np.ndarray, blocks: dict[int, np.ndarray],
              checksums: dict[int, np.ndarray] | None = None) -> None:
        batch = record_batch(self.schema, keys, n_atoms, blocks, checksums)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows
        self.bytes += batch.nbytes

    def commit(self) -> Path:
        self._writer.close()
        self._sink.close()
        handle = os.open(self.temporary, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
        os.chmod(self.temporary, file_mode())
        os.replace(self.temporary, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._writer.close()
            self._sink.close()
        finally:
            self.temporary.unlink(missing_ok=True)


_seek_lock = threading.Lock()


def read_all(reads: Sequence[tuple[Shard, np.ndarray, int]]) -> None:
    """Fill each ``(shard, target, offset)``'s target from that offset of that shard, :data:`READ_THREADS` at once
    (in one pool across shards, so that the disk always has reads queued)."""
    if len(reads) < 64:
        for shard, target, offset in reads:
            shard._pread(target, offset)
        return
    chunks = np.array_split(np.arange(len(reads)), 4 * READ_THREADS)

    def read_chunk(chunk: np.ndarray) -> None:
        for i in chunk:
            shard, target, offset = reads[i]
            shard._pread(target, offset)

    with ThreadPoolExecutor(READ_THREADS) as pool:
        for _ in pool.map(read_chunk, chunks):
            pass


def _preadv(handle: int, view: memoryview, offset: int) -> int:
    """Read into ``view`` at ``offset`` without moving the file position (where the system has no ``preadv``,
    Windows, a seek and a read under a lock)."""
    if hasattr(os, "preadv"):
        return os.preadv(handle, [view], offset)
    with _seek_lock:
        os.lseek(handle, offset, os.SEEK_SET)
        data = os.read(handle, len(view))
    view[:len(data)] = data
    return len(data)


@dataclass
class ShardLayout:
    """Where everything is in a shard: found by parsing the file once, then kept in the index, so that opening an
    indexed shard reads none of its metadata. ``batches``: per record batch, its first row, its rows and the byte
    offsets of its ``key`` and ``n_atoms`` columns and of each layer's blocks and checksums."""

    size: int
    widths: dict[int, int]
    batches: list[dict[str, Any]]

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted(self.widths))

    @property
    def rows(self) -> int:
        return sum(batch["rows"] for batch in self.batches)

    def row_bytes(self, layer: int) -> int:
        return 4 * len(STATISTICS) * self.widths[layer]

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "widths": {str(k): v for k, v in self.widths.items()},
                "batches": [{**b, "blocks": {str(k): v for k, v in b["blocks"].items()},
                             "crc32": {str(k): v for k, v in b["crc32"].items()}} for b in self.batches]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardLayout:
        return cls(int(data["size"]), {int(k): int(v) for k, v in data["widths"].items()},
                   [{**b, "blocks": {int(k): int(v) for k, v in b["blocks"].items()},
                     "crc32": {int(k): int(v) for k, v in b["crc32"].items()}} for b in data["batches"]])

    def check(self, size: int) -> None:
        """Raise ``ValueError`` unless the file has the size this layout was made for and every column lies in it."""
        if size != self.size:
            raise ValueError(f"the file has {size} bytes where it was written with {self.size}")
        start = 0
        for batch in self.batches:
            rows = batch["rows"]
            extents = [(batch["key"], KEY_BYTES), (batch["n_atoms"], 8)]
            extents += [(batch["blocks"][layer], self.row_bytes(layer)) for layer in self.widths]
            extents += [(batch["crc32"][layer], 4) for layer in self.widths]
            if batch["start"] != start or any(at < 0 or at + rows * item > size for at, item in extents):
                raise ValueError(f"a record batch at row {batch['start']} lies outside the file ({size} bytes)")
            start += rows


def read_layout(mapped: pa.MemoryMappedFile) -> ShardLayout:
    """Parse a shard's Arrow metadata (through a memory map: its data pages stay untouched)."""
    size = mapped.size()
    base = mapped.read_buffer(1).address
    mapped.seek(0)
    reader = pa.ipc.open_file(mapped)
    metadata = reader.schema.metadata or {}
    if metadata.get(b"format") != FORMAT.encode():
        raise ValueError(f"not a hacknip feature shard (format {metadata.get(b'format')!r}, expected {FORMAT!r})")
    layers = json.loads(metadata[b"layers"])
    widths = {layer: reader.schema.field(f"L{layer}").type.value_type.list_size for layer in layers}
    batches, start = [], 0
    for number in range(reader.num_record_batches):
        batch = reader.get_batch(number)

        def at(name: str, flat: bool = False, batch=batch) -> int:
            array = batch.column(name).flatten().flatten() if flat else batch.column(name)
            item = 4 if flat else array.type.bit_width // 8
            return array.buffers()[1].address - base + item * array.offset

        batches.append({"start": start, "rows": batch.num_rows, "key": at("key"), "n_atoms": at("n_atoms"),
                        "blocks": {layer: at(f"L{layer}", flat=True) for layer in layers},
                        "crc32": {layer: at(f"L{layer}_crc32") for layer in layers}})
        start += batch.num_rows
    return ShardLayout(size, widths, batches)


class Shard:
    """A shard opened for reading, from its own metadata or from the layout the index kept. Raises ``OSError``
    (absent, unreadable), ``pyarrow.ArrowInvalid`` or ``ValueError`` (truncated, zeroed, not a shard) on opening; a
    damaged row is found by :meth:`damaged_rows`."""

    def __init__(self, path: Path, layout: ShardLayout | None = None):
        self.path = path
        self._handle: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            if hasattr(os, "posix_fadvise"):  # scattered rows: no read-ahead around each
                os.posix_fadvise(self._handle, 0, 0, os.POSIX_FADV_RANDOM)
            if layout is None:
                with pa.memory_map(str(path)) as mapped:
                    layout = read_layout(mapped)
            layout.check(os.fstat(self._handle).st_size)
        except BaseException:
            self.close()
            raise
        self.layout, self.layers, self.widths = layout, layout.layers, layout.widths
        self.rows, self.size = layout.rows, layout.size
        self._starts = np.array([batch["start"] for batch in layout.batches], dtype=np.int64)
        self._columns: dict[str, np.ndarray] = {}

    @property
    def keys(self) -> np.ndarray:
        """Every row's key (read the first time it is asked for)."""
        return self._column("key", f"S{KEY_BYTES}")

    @property
    def n_atoms(self) -> np.ndarray:
        return self._column("n_atoms", "<i8")

    def _column(self, name: str, dtype: str, layer: int | None = None) -> np.ndarray:
        """A small column, whole: one ``pread`` per record batch (a memory map would read far around each)."""
        label = name if layer is None else f"{name}{layer}"
        if label not in self._columns:
            parts = []
            for batch in self.layout.batches:
                part = np.empty(batch["rows"], dtype=dtype)
                self._pread(part, batch[name] if layer is None else batch[name][layer])
                parts.append(part)
            self._columns[label] = np.concatenate(parts) if parts else np.empty(0, dtype)
        return self._columns[label]

    def row_bytes(self, layer: int) -> int:
        return self.layout.row_bytes(layer)

    def read_blocks(self, rows: np.ndarray, layer: int) -> np.ndarray:
        """The (len(rows), 3, width) float32 blocks of ``layer`` at ``rows`` (ascending reads are the fastest)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), len(STATISTICS), self.widths[layer]), dtype="<f4")
        read_all(self.reads(rows, layer, out))
        return out

    def reads(self, rows: np.ndarray, layer: int, out: np.ndarray) -> list[tuple[Shard, np.ndarray, int]]:
        """What :func:`read_all` does to fill ``out`` with the blocks of ``layer`` at ``rows``."""
        flat = out.reshape(len(rows), -1)
        return [(self, flat[first:first + count], offset) for first, count, offset in self._runs(rows, layer)]

    def _runs(self, rows: np.ndarray, layer: int) -> Iterable[tuple[int, int, int]]:
        """``(position in rows, count, file offset)`` of each run of consecutive rows within one record batch."""
        row_bytes = self.row_bytes(layer)
        which = np.searchsorted(self._starts, rows, side="right") - 1
        if len(rows) and (rows.min() < 0 or rows.max() >= self.rows):
            raise IndexError(f"{self.path}: rows outside 0..{self.rows - 1}")
        breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(which) != 0)) + 1
        for first, stop in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
            batch = self.layout.batches[which[first]]
            yield int(first), int(stop - first), batch["blocks"][layer] + (int(rows[first]) - batch["start"]) * row_bytes

    def _pread(self, target: np.ndarray, offset: int) -> None:
        if not target.nbytes:
            return
        view = memoryview(target).cast("B")
        done = 0
        while done < len(view):
            got = _preadv(self._handle, view[done:], offset + done)
            if got == 0:
                raise EOFError(f"{self.path}: ends at {offset + done} bytes, inside a record")
            done += got

    def checksums(self, rows: np.ndarray, layer: int) -> np.ndarray:
        """The stored checksums of ``layer`` at ``rows`` (the layer's checksum column is read the first time)."""
        return self._column("crc32", "<u4", layer)[np.asarray(rows, dtype=np.int64)]

    def damaged_rows(self, rows: np.ndarray, layer: int, blocks: np.ndarray, keys: np.ndarray | None = None,
                     n_atoms: np.ndarray | None = None) -> np.ndarray:
        """Positions in ``rows`` whose ``blocks`` (as read) do not match their stored checksum, computed with ``keys``
        and ``n_atoms`` where given (what the index says is there), else with the shard's own."""
        rows = np.asarray(rows, dtype=np.int64)
        keys = self.keys[rows] if keys is None else keys
        n_atoms = self.n_atoms[rows] if n_atoms is None else n_atoms
        found = row_checksums(row_heads(keys, n_atoms), blocks)
        return np.flatnonzero(found != self.checksums(rows, layer))

    def close(self) -> None:
        if getattr(self, "_handle", None) is not None:
            os.close(self._handle)
            self._handle = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
