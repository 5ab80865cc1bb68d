"""Why the feature store's shards are Arrow IPC files read row by row: the same synthetic records (real shape: 16
layers × 3 statistics × 256 float32) in hacknip's store and in Parquet, and the time and peak memory to read one layer
of random keys from each, each read in a fresh process after dropping the page cache where this user may (root).

    python bench/store_formats.py --records 100000 --read 10000 --folder /work/store-formats

Parquet (pyarrow, row groups of 1000 records, uncompressed: random floats do not compress) is the other standard
columnar format the issue names; it must decode whole pages of a column, so reading a few rows of a layer costs
reading that layer for every record. hacknip's shards are Arrow IPC files whose offsets are known, so a read fetches
just the rows asked for.
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

sys.path.insert(0, str(Path(__file__).parent))
from store_scale import IDENTITY, LAYERS, WIDTH, drop_page_cache, key_of, write_phase  # noqa: E402

READ_LAYER = LAYERS // 2


def write_parquet(folder: Path, records: int, batch: int) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    with pq.ParquetWriter(folder / "records.parquet", _schema(pa), compression="none") as writer:
        for start in range(0, records, batch):
            stop = min(start + batch, records)
            values = rng.standard_normal((stop - start, LAYERS, 3, WIDTH), dtype=np.float32)
            columns = {"key": pa.array([bytes.fromhex(key_of(i)) for i in range(start, stop)], pa.binary(16)),
                       "n_atoms": pa.array(np.full(stop - start, 8, np.int64))}
            for layer in range(LAYERS):
                inner = pa.FixedSizeListArray.from_arrays(pa.array(values[:, layer].reshape(-1)), WIDTH)
                columns[f"L{layer}"] = pa.FixedSizeListArray.from_arrays(inner, 3)
            writer.write_table(pa.table(columns, schema=_schema(pa)), row_group_size=batch)
    return {"seconds": time.perf_counter() - started}


def _schema(pa):
    block = pa.list_(pa.list_(pa.float32(), WIDTH), 3)
    return pa.schema([("key", pa.binary(16)), ("n_atoms", pa.int64())] + [(f"L{i}", block) for i in range(LAYERS)])


def read_parquet(folder: Path, records: int, n_read: int) -> dict:
    import numpy as np
    import pyarrow.parquet as pq

    wanted = [bytes.fromhex(key_of(int(i))) for i in np.random.default_rng(1).choice(records, n_read, replace=False)]
    started = time.perf_counter()
    table = pq.read_table(folder / "records.parquet", columns=["key", f"L{READ_LAYER}"])
    row = {key: i for i, key in enumerate(table.column("key").to_pylist())}
    taken = table.column(f"L{READ_LAYER}").take([row[key] for key in wanted]).combine_chunks()
    blocks = taken.flatten().flatten().to_numpy().reshape(n_read, 3, WIDTH).astype(np.float64)
    return {"seconds": time.perf_counter() - started, "shape": list(blocks.shape)}


def read_hacknip(folder: Path, records: int, n_read: int) -> dict:
    import numpy as np

    from hacknip.store import FeatureStore

    keys = [key_of(int(i)) for i in np.random.default_rng(1).choice(records, n_read, replace=False)]
    started = time.perf_counter()
    stats, _ = FeatureStore(folder).open(IDENTITY).read(keys, READ_LAYER)
    return {"seconds": time.perf_counter() - started, "shape": [n_read, 3, stats["mean"].shape[1]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--read", type=int, default=10_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/hacknip-store-formats"))
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    phases = {"write-hacknip": lambda: write_phase(args.folder / "hacknip", args.records, 1000),
              "write-parquet": lambda: write_parquet(args.folder / "parquet", args.records, 1000),
              "read-hacknip": lambda: read_hacknip(args.folder / "hacknip", args.records, args.read),
              "read-parquet": lambda: read_parquet(args.folder / "parquet", args.records, args.read)}
    if args.phase:
        result = phases[args.phase]()
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    shutil.rmtree(args.folder, ignore_errors=True)
    (args.folder / "parquet").mkdir(parents=True)
    common = ["--records", str(args.records), "--read", str(args.read), "--folder", str(args.folder)]
    print(f"{args.records} records, reading layer {READ_LAYER} of {args.read} random keys")
    for phase in phases:
        cold = phase.startswith("read") and drop_page_cache()
        output = subprocess.run([sys.executable, __file__, *common, "--phase", phase], check=True, capture_output=True,
                                text=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        size = sum(p.stat().st_size for p in (args.folder / phase.split("-")[1]).rglob("*") if p.is_file())
        print(f"{phase}{' (cold cache)' if cold else ''}: {result['seconds']:.2f} s, peak memory "
              f"{result['peak_mb']:.0f} MB" + (f", {size / 1e9:.2f} GB on disk" if phase.startswith("write") else ""),
              flush=True)
    shutil.rmtree(args.folder, ignore_errors=True)


if __name__ == "__main__":
    main()
