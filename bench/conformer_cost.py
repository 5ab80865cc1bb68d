"""What storing conformers saves: one SMILES table made 3D twice in one process, unrelaxed — first into an empty
store (RDKit's ETKDG for every molecule, each conformer written), then from the filled store — timed in CPU and wall
seconds.

    python bench/conformer_cost.py --data ../shared/data/moleculenet/bbbp.csv --target p_np --workers 1

The store is a fresh temporary folder, so the first pass is a cold one. Checks that both passes give the same
molecules (ids, atoms) and prints the seconds and the ratio of the cold to the warm pass.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hacknip.data.molecules import molecules_to_dataset, quiet_rdkit
from hacknip.store import FeatureStore


def timed(make):
    wall, cpu = time.perf_counter(), time.process_time()
    dataset = make()
    return dataset, time.perf_counter() - wall, time.process_time() - cpu


def same(first, second) -> bool:
    return [s.id for s in first.samples] == [s.id for s in second.samples] and all(
        a.atoms == b.atoms for a, b in zip(first.samples, second.samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--target")
    parser.add_argument("--limit", type=int, help="only the first rows")
    parser.add_argument("--workers", type=int, default=1, help="processes making conformers in the cold pass")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, quiet_rdkit():
        make = lambda: molecules_to_dataset(args.data, target=args.target, store=FeatureStore(folder),  # noqa: E731
                                            workers=args.workers, on_error="skip", limit=args.limit)
        cold, *cold_times = timed(make)
        warm, *warm_times = timed(make)
    if not same(cold, warm):
        raise SystemExit("the stored conformers differ from the ones just made")
    print(f"{len(cold.samples)} molecules from {args.data} ({len(cold.skipped)} rows skipped), "
          f"{args.workers} worker(s) in the cold pass")
    for name, (wall, cpu) in (("made and stored", cold_times), ("read back", warm_times)):
        print(f"{name:>15}: {wall:7.2f} s wall, {cpu:7.2f} s CPU (this process)")
    print(f"made / read back: {cold_times[0] / warm_times[0]:.0f}x wall")


if __name__ == "__main__":
    main()
