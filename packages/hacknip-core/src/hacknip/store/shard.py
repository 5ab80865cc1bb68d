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

Reading scattered rows costs what those rows weigh: the blocks of a layer are read with ``pread`` (ranged GETs on object
storage, :mod:`hacknip.store.folder`) at offsets found in the file's metadata once, then kept in the index (a memory
map would fault in 64 KB around every row, and count it all as the process's memory). The keys, atom counts and
checksums are small and read whole.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from hacknip.features.pooling import STATISTICS
from hacknip.store.folder import LocalFile, LocalFolder, RemoteFile, RemoteFolder, read_into

FORMAT = "hacknip-features/1"
SUFFIX = ".arrow"
KEY_BYTES = 16


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


def write_shard(folder: LocalFolder | RemoteFolder, name: str, keys: np.ndarray, n_atoms: np.ndarray,
                blocks: dict[int, np.ndarray]) -> ShardLayout:
    """Write one shard of one record batch; returns its layout."""
    writer = ShardWriter(folder, name, {layer: block.shape[2] for layer, block in blocks.items()})
    try:
        writer.write(keys, n_atoms, blocks)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


class ShardWriter:
    """Streams record batches into a new shard, written where its folder says (beside it under a temporary name, or
    a local temporary file for object storage); :meth:`commit` puts it in place whole."""

    def __init__(self, folder: LocalFolder | RemoteFolder, name: str, widths: dict[int, int]):
        self.folder, self.name, self.schema = folder, name, shard_schema(widths)
        self.scratch = folder.scratch(name)
        self._sink = pa.OSFile(str(self.scratch), "wb")
        self._writer = pa.ipc.new_file(self._sink, self.schema)
        self.rows = self.bytes = 0

    def write(self, keys: np.ndarray, n_atoms: np.ndarray, blocks: dict[int, np.ndarray],
              checksums: dict[int, np.ndarray] | None = None) -> None:
        batch = record_batch(self.schema, keys, n_atoms, blocks, checksums)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows
        self.bytes += batch.nbytes

    def commit(self) -> ShardLayout:
        """Put the shard in place; returns its layout (read from the file written, before it leaves this machine)."""
        self._writer.close()
        self._sink.close()
        with pa.memory_map(str(self.scratch)) as mapped:
            layout = read_layout(mapped)
        self.folder.commit(self.scratch, self.name)
        return layout

    def abort(self) -> None:
        try:
            self._writer.close()
            self._sink.close()
        finally:
            self.scratch.unlink(missing_ok=True)


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


def read_layout(mapped: pa.NativeFile) -> ShardLayout:
    """Parse a shard's Arrow metadata (through a memory map, whose data pages stay untouched, or a buffer: the offsets
    are those of the buffers within the file)."""
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

    def __init__(self, folder: LocalFolder | RemoteFolder, name: str, layout: ShardLayout | None = None):
        self.name, self.where = name, folder.where(name)
        self.file: LocalFile | RemoteFile | None = folder.open_file(name)
        try:
            if layout is None:
                with folder.arrow_source(name) as source:
                    layout = read_layout(source)
            layout.check(self.file.size)
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
        """A small column, whole: one read per record batch (a memory map would read far around each)."""
        label = name if layer is None else f"{name}{layer}"
        if label not in self._columns:
            parts = [np.empty(batch["rows"], dtype=dtype) for batch in self.layout.batches]
            read_into([(self.file, part, batch[name] if layer is None else batch[name][layer])
                       for part, batch in zip(parts, self.layout.batches)])
            self._columns[label] = np.concatenate(parts) if parts else np.empty(0, dtype)
        return self._columns[label]

    def row_bytes(self, layer: int) -> int:
        return self.layout.row_bytes(layer)

    def read_blocks(self, rows: np.ndarray, layer: int) -> np.ndarray:
        """The (len(rows), 3, width) float32 blocks of ``layer`` at ``rows`` (ascending reads are the fastest)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), len(STATISTICS), self.widths[layer]), dtype="<f4")
        read_into(self.reads(rows, layer, out))
        return out

    def reads(self, rows: np.ndarray, layer: int, out: np.ndarray) -> list[tuple[LocalFile | RemoteFile, np.ndarray, int]]:
        """What :func:`hacknip.store.folder.read_into` does to fill ``out`` with the blocks of ``layer`` at ``rows``."""
        flat = out.reshape(len(rows), -1)
        return [(self.file, flat[first:first + count], offset) for first, count, offset in self._runs(rows, layer)]

    def _runs(self, rows: np.ndarray, layer: int) -> Iterable[tuple[int, int, int]]:
        """``(position in rows, count, file offset)`` of each run of consecutive rows within one record batch."""
        row_bytes = self.row_bytes(layer)
        which = np.searchsorted(self._starts, rows, side="right") - 1
        if len(rows) and (rows.min() < 0 or rows.max() >= self.rows):
            raise IndexError(f"{self.where}: rows outside 0..{self.rows - 1}")
        breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(which) != 0)) + 1
        for first, stop in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
            batch = self.layout.batches[which[first]]
            yield int(first), int(stop - first), batch["blocks"][layer] + (int(rows[first]) - batch["start"]) * row_bytes

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
        if getattr(self, "file", None) is not None:
            self.file.close()
            self.file = None
