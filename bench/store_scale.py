"""The feature store at scale: synthetic records of real shape (16 layers × 3 statistics × 256 floats), written in
shards as featurisation writes them, then opened and read back, each phase in its own process so that its peak memory
is its own.

    python bench/store_scale.py --records 100000 --shard 1000 --read 10000 --folder /tmp/store-scale

Prints, per phase: wall time, peak resident memory (ru_maxrss of the phase's process), and at the end the bytes on
disk and the file count. Phases: ``write`` (every record, in shards of ``--shard``), ``open`` (a fresh process opens
the store: lists and indexes every shard), ``read`` (``--read`` random keys, one layer, through ``FeatureStore.open``
and ``BackboneFeatures.read``, as ``hacknip run`` reads a layer). Issue 15's goal at 10⁶ records: open < 1 s, reading
one layer of 10⁵ random keys < 5 s, peak memory < 2 GB, on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

LAYERS, WIDTH = 16, 256
IDENTITY = {"name": "synthetic", "library": "bench", "library_version": "1", "width": WIDTH, "layers": LAYERS}


def key_of(index: int) -> str:
    return f"{index:032x}"


def write_phase(folder: Path, records: int, shard: int) -> dict:
    import numpy as np

    from hacknip.features.pooling import STATISTICS
    from hacknip.features.store import FeatureStore, Record

    features = FeatureStore(folder).open(IDENTITY)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for start in range(0, records, shard):
        batch = [Record(key_of(i), 8, {layer: {s: rng.standard_normal(WIDTH).astype(np.float32) for s in STATISTICS}
                                       for layer in range(LAYERS)})
                 for i in range(start, min(start + shard, records))]
        features.write(batch)
    return {"seconds": time.perf_counter() - started}


def open_phase(folder: Path) -> dict:
    from hacknip.features.store import FeatureStore

    started = time.perf_counter()
    features = FeatureStore(folder).open(IDENTITY)
    return {"seconds": time.perf_counter() - started, "records": len(features)}


def read_phase(folder: Path, records: int, n_read: int) -> dict:
    import numpy as np

    from hacknip.features.store import FeatureStore

    keys = [key_of(int(i)) for i in np.random.default_rng(1).choice(records, n_read, replace=False)]
    started = time.perf_counter()
    features = FeatureStore(folder).open(IDENTITY)
    opened = time.perf_counter() - started
    stats, _ = features.read(keys, LAYERS // 2)
    return {"seconds": time.perf_counter() - started, "open_seconds": opened, "shape": list(stats["mean"].shape)}


def run_phase(arguments: list[str]) -> dict:
    """One phase in a fresh interpreter; its result and its peak memory."""
    output = subprocess.run([sys.executable, __file__, *arguments], check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--shard", type=int, default=1000)
    parser.add_argument("--read", type=int, default=10_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/hacknip-store-scale"))
    parser.add_argument("--phase", choices=["write", "open", "read"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        result = {"write": lambda: write_phase(args.folder, args.records, args.shard),
                  "open": lambda: open_phase(args.folder),
                  "read": lambda: read_phase(args.folder, args.records, args.read)}[args.phase]()
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    shutil.rmtree(args.folder, ignore_errors=True)
    common = ["--records", str(args.records), "--shard", str(args.shard), "--read", str(args.read),
              "--folder", str(args.folder)]
    print(f"{args.records} records of {LAYERS} layers x 3 statistics x {WIDTH} float32, shards of {args.shard}")
    results = {}
    for phase in ("write", "open", "read"):
        results[phase] = result = run_phase([*common, "--phase", phase])
        extra = {k: v for k, v in result.items() if k not in ("seconds", "peak_mb")}
        print(f"{phase}: {result['seconds']:.2f} s, peak memory {result['peak_mb']:.0f} MB {extra or ''}")
    files = [p for p in args.folder.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    print(f"on disk: {size / 1e9:.2f} GB in {len(files)} files; writing {args.records / results['write']['seconds']:.0f} "
          f"records/s")
    shutil.rmtree(args.folder, ignore_errors=True)


if __name__ == "__main__":
    main()
