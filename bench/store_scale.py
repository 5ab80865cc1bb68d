"""The feature store at scale: synthetic records of real shape (16 layers × 3 statistics × 256 float32), written in
batches as featurisation writes them, then opened and read back, each phase in its own process so that its peak memory
is its own.

    python bench/store_scale.py --records 1000000 --batch 1000 --read 100000 --folder /work/store-scale

Prints, per phase: wall time and peak resident memory (ru_maxrss of the phase's process); at the end the bytes on disk
and the file count. Phases: ``write`` (every record, ``--batch`` at a time through ``BackboneFeatures.write``, which
merges small shards as it goes), ``open`` (a fresh process opens the store), ``read`` (``--read`` random keys, one
layer, through ``BackboneFeatures.read`` as ``hacknip run`` reads a layer, float64 out), ``read-cold`` (the same after
dropping the page cache, where this user may: root on Linux). Issue 15's goal at 10⁶ records: open < 1 s, reading one
layer of 10⁵ random keys < 5 s, peak memory < 2 GB, on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

LAYERS, WIDTH = 16, 256
IDENTITY = {"name": "synthetic", "library": "bench", "library_version": "1", "width": WIDTH, "layers": LAYERS}
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def key_of(index: int) -> str:
    return f"{index:032x}"


def write_phase(folder: Path, records: int, batch: int) -> dict:
    import numpy as np

    from hacknip.features.pooling import STATISTICS
    from hacknip.store import FeatureStore, Record

    features = FeatureStore(folder).open(IDENTITY)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for start in range(0, records, batch):
        stop = min(start + batch, records)
        values = rng.standard_normal((stop - start, LAYERS, len(STATISTICS), WIDTH), dtype=np.float32)
        features.write([Record(key_of(i), 8, {layer: dict(zip(STATISTICS, values[i - start, layer]))
                                              for layer in range(LAYERS)}) for i in range(start, stop)])
    return {"seconds": time.perf_counter() - started, "shards": features.shard_count}


def open_phase(folder: Path) -> dict:
    from hacknip.store import FeatureStore

    started = time.perf_counter()
    features = FeatureStore(folder).open(IDENTITY)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "records": len(features), "shards": features.shard_count}


def read_phase(folder: Path, records: int, n_read: int) -> dict:
    import numpy as np

    from hacknip.store import FeatureStore

    keys = [key_of(int(i)) for i in np.random.default_rng(1).choice(records, n_read, replace=False)]
    started = time.perf_counter()
    features = FeatureStore(folder).open(IDENTITY)
    opened = time.perf_counter() - started
    stats, _ = features.read(keys, LAYERS // 2)
    return {"seconds": time.perf_counter() - started, "open_seconds": round(opened, 3),
            "shape": list(stats["mean"].shape)}


def drop_page_cache() -> bool:
    try:
        os.sync()
        DROP_CACHES.write_text("3\n")
        return True
    except OSError:
        return False


def run_phase(arguments: list[str]) -> dict:
    """One phase in a fresh interpreter; its result and its peak memory."""
    output = subprocess.run([sys.executable, __file__, *arguments], check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000, help="Records per write (one shard each, before merging).")
    parser.add_argument("--read", type=int, default=10_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/hacknip-store-scale"))
    parser.add_argument("--keep", action="store_true", help="Leave the store on disk.")
    parser.add_argument("--phase", choices=["write", "open", "read"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        result = {"write": lambda: write_phase(args.folder, args.records, args.batch),
                  "open": lambda: open_phase(args.folder),
                  "read": lambda: read_phase(args.folder, args.records, args.read)}[args.phase]()
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    shutil.rmtree(args.folder, ignore_errors=True)
    common = ["--records", str(args.records), "--batch", str(args.batch), "--read", str(args.read),
              "--folder", str(args.folder)]
    print(f"{args.records} records of {LAYERS} layers x 3 statistics x {WIDTH} float32, written {args.batch} at a time")
    results = {}
    for phase in ("write", "open", "read", "read-cold"):
        if phase == "read-cold" and not drop_page_cache():
            print("read-cold: skipped (cannot drop the page cache as this user)")
            continue
        results[phase] = result = run_phase([*common, "--phase", phase.removesuffix("-cold")])
        extra = {k: v for k, v in result.items() if k not in ("seconds", "peak_mb")}
        print(f"{phase}: {result['seconds']:.2f} s, peak memory {result['peak_mb']:.0f} MB {extra or ''}", flush=True)
    files = [p for p in args.folder.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    print(f"on disk: {size / 1e9:.2f} GB in {len(files)} files; writing {args.records / results['write']['seconds']:.0f} "
          f"records/s ({size / 1e6 / results['write']['seconds']:.0f} MB/s)")
    if not args.keep:
        shutil.rmtree(args.folder, ignore_errors=True)


if __name__ == "__main__":
    main()
