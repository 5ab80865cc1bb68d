"""What the feature store's safety costs: claiming structures (so that concurrent featurisers share the work) and
looking for shards other processes wrote (after every claim).

    python bench/store_overhead.py [--keys 10000] [--shards 2000]

Prints seconds per 10 000 structures claimed and released in batches of 16, and milliseconds per refresh of a folder
of ``--shards`` shards while it is fresh (changed < 2 s ago: listed again) and once settled (not listed again).
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from pathlib import Path

import numpy as np

from hacknip.store import Claims
from hacknip.store.features import SETTLED_NS, BackboneFeatures
from hacknip.store.folder import LocalFolder
from hacknip.store.shard import encode_keys, write_shard


def claim_seconds(n_keys: int, batch: int = 16) -> float:
    keys = [secrets.token_hex(16) for _ in range(n_keys)]
    claims = Claims(Path(tempfile.mkdtemp()) / "claims")
    started = time.perf_counter()
    for start in range(0, n_keys, batch):
        chunk = keys[start:start + batch]
        claims.take(chunk)
        claims.release(chunk)
    return time.perf_counter() - started


def refresh_milliseconds(n_shards: int, calls: int) -> tuple[float, float]:
    folder = LocalFolder(Path(tempfile.mkdtemp()))
    empty = np.zeros((1, 3, 4), np.float32)
    for i in range(n_shards):
        write_shard(folder, f"shard-{i:06d}-0-{i}.arrow", encode_keys([f"{i:032x}"]), np.array([1]), {0: empty})
    features = BackboneFeatures(folder, {"name": "bench"})
    fresh = _per_call(features.refresh, calls // 10)
    time.sleep(SETTLED_NS / 1e9 + 0.1)
    features.refresh()
    return fresh, _per_call(features.refresh, calls)


def _per_call(function, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=2_000)
    parser.add_argument("--calls", type=int, default=1_000)
    args = parser.parse_args()
    seconds = claim_seconds(args.keys)
    print(f"claim + release: {seconds:.2f} s for {args.keys} structures ({seconds / args.keys * 1e6:.0f} µs each)")
    fresh, settled = refresh_milliseconds(args.shards, args.calls)
    print(f"refresh, {args.shards} shards: {fresh:.2f} ms while the folder is fresh, {settled:.4f} ms once settled")


if __name__ == "__main__":
    main()
