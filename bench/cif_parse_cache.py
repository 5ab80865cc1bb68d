"""What the parsed-CIF cache saves: one CIF table read three times in one process — without the cache, with an
empty cache (parsing and writing every row), and with the filled cache — timed in CPU and wall seconds.

    python examples/3dsc/build_table.py --out /tmp/3dsc-doped --doped approximant
    python bench/cif_parse_cache.py --data /tmp/3dsc-doped/3dsc_tc.csv --id-column id --target tc --disordered approximant

The cache goes to a fresh temporary folder, so the first cached read is a cold one. Checks that the three reads give
the same samples (ids, atoms, info) and prints the seconds and the ratio of the uncached to the warm read.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pymatgen.io.ase  # noqa: F401  (imported here, so that the first timed read does not pay for it)
import pymatgen.io.cif  # noqa: F401

from hacknip.data.read import read_dataset


def timed(read):
    wall, cpu = time.perf_counter(), time.process_time()
    dataset = read()
    return dataset, time.perf_counter() - wall, time.process_time() - cpu


def same(first, second) -> bool:
    return [s.id for s in first.samples] == [s.id for s in second.samples] and all(
        a.atoms == b.atoms and a.atoms.info == b.atoms.info for a, b in zip(first.samples, second.samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--target")
    parser.add_argument("--id-column")
    parser.add_argument("--disordered", default="refuse")
    args = parser.parse_args()
    options = {"target": args.target, "id_column": args.id_column, "disordered": args.disordered}
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "parsed-structures.sqlite"
        plain, *plain_times = timed(lambda: read_dataset(args.data, **options))
        cold, *cold_times = timed(lambda: read_dataset(args.data, **options, parsed_cache=cache))
        warm, *warm_times = timed(lambda: read_dataset(args.data, **options, parsed_cache=cache))
        size = cache.stat().st_size
    if not (same(plain, cold) and same(plain, warm)):
        raise SystemExit("the cached reads differ from the uncached one")
    print(f"{len(plain.samples)} structures from {args.data} ({len(plain.skipped)} rows skipped); cache {size / 1e6:.1f} MB")
    for name, (wall, cpu) in (("no cache", plain_times), ("empty cache", cold_times), ("filled cache", warm_times)):
        print(f"{name:>13}: {wall:7.2f} s wall, {cpu:7.2f} s CPU")
    print(f"uncached / warm: {plain_times[0] / warm_times[0]:.0f}x wall")


if __name__ == "__main__":
    main()
