"""Stores written before shards were Arrow files (``shard-*.npz``, hacknip 0.1): read them once, write their records
as Arrow shards, and remove them."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from hacknip.features.pooling import STATISTICS

LEGACY_PATTERN = "shard-*.npz"
UNREADABLE = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)
"""What numpy and zipfile raise for a damaged ``.npz``: truncated (BadZipFile, EOFError), bit flips (BadZipFile: bad
CRC-32, zlib.error), garbage (ValueError: numpy takes it for a pickle, which it refuses to load)."""


def legacy_shards(folder: Path) -> list[Path]:
    return sorted(folder.glob(LEGACY_PATTERN))


def read_legacy_shard(path: Path) -> tuple[list[str], np.ndarray, dict[int, np.ndarray]]:
    """``(keys, n_atoms, {layer: (rows, 3, width) float32})``; raises one of :data:`UNREADABLE` when damaged."""
    # numpy leaves the file open when it fails to read it: open it here, so it is closed either way
    with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    keys, layers = arrays["key"].tolist(), arrays["layers"].tolist()
    n_atoms = arrays["n_atoms"]
    if n_atoms.shape != (len(keys),):
        raise ValueError(f"n_atoms has shape {n_atoms.shape} for {len(keys)} records")
    blocks = {}
    for layer in layers:
        parts = [arrays[f"L{layer}_{statistic}"] for statistic in STATISTICS]
        if any(part.ndim != 2 or len(part) != len(keys) for part in parts):
            raise ValueError(f"layer {layer} has shapes {[part.shape for part in parts]} for {len(keys)} records")
        blocks[layer] = np.stack(parts, axis=1).astype(np.float32)
    return keys, n_atoms, blocks
