"""hacknip's featurisation against CHGNet's own batched forward pass over the same structures and batches, same
threads, in one run (issue 15's "framework overhead").

    python bench/framework_overhead.py --n 400 --batch-size 16 --repeats 3

raw      from the same ASE structures: pymatgen conversion and CHGNet's graph converter on each structure, then
         ``model(graphs, task="e")`` per batch: what a user of the library would write to get energies, no features.
hacknip  ``featurize`` into a fresh store: the same graphs and forward pass with every layer captured, per-atom
         statistics (mean, std, max) of every layer, the finite check, and the store writes; one batch at a time
         (``threads=1``), the batches of ``--batch-size`` consecutive structures (the atom budget set above any batch).

Both run with torch's thread count as it is (``--threads`` sets it), alternating ``--repeats`` times; it prints the
best wall and CPU time of each, the ratios of the best times and the median of the repeats' ratios, and where
hacknip's extra time goes (statistics and store writes, timed apart). On a shared machine wall times swing by tens
of per cent between repeats; CPU time swings less.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matbench" / "matbench_phonons.json.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()

    import torch

    from hacknip.data.read import read_dataset
    from hacknip.plugins.registry import load_backbone

    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = read_dataset(DATA).head(args.n)
    backbone = load_backbone("chgnet", batch_size=args.batch_size)
    print(f"CHGNet, {args.n} phonons structures, batches of {args.batch_size}, torch threads {torch.get_num_threads()}")
    times: dict[str, list[tuple[float, float]]] = {"raw": [], "hacknip": []}
    for repeat in range(args.repeats):
        times["raw"].append(timed(raw_forward, backbone, dataset, args.batch_size))
        times["hacknip"].append(timed(hacknip_featurize, backbone, dataset, args.batch_size))
        print(f"repeat {repeat + 1}: " + ", ".join(f"{name} {w[-1][0]:.2f} s wall, {w[-1][1]:.2f} s CPU"
                                                   for name, w in times.items()))
    for kind, column in (("wall", 0), ("CPU", 1)):
        raw, ours = (min(t[column] for t in times[name]) for name in ("raw", "hacknip"))
        ratios = sorted(o[column] / r[column] for o, r in zip(times["hacknip"], times["raw"]))
        print(f"{kind}: best raw {raw:.2f} s, best hacknip {ours:.2f} s; hacknip / raw {ours / raw:.3f} (best times), "
              f"median of the repeats' ratios {ratios[len(ratios) // 2]:.3f} (range {ratios[0]:.3f}-{ratios[-1]:.3f})")
    stats, writes = statistics_and_writes(backbone, dataset)
    print(f"of hacknip's time: per-atom statistics {stats:.2f} s, store writes {writes:.2f} s")


def timed(function, *args) -> tuple[float, float]:
    """(wall, CPU) seconds of ``function(*args)``; CPU counts every thread of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def raw_forward(backbone, dataset, batch_size: int) -> None:
    import torch
    from pymatgen.io.ase import AseAtomsAdaptor

    model = backbone.network
    atoms = [sample.atoms for sample in dataset.samples]
    with torch.no_grad():
        for start in range(0, len(atoms), batch_size):
            graphs = [model.graph_converter(AseAtomsAdaptor.get_structure(a)) for a in atoms[start:start + batch_size]]
            model(graphs, task="e")


def hacknip_featurize(backbone, dataset, batch_size: int) -> None:
    from hacknip.features.featurize import featurize
    from hacknip.store import FeatureStore

    with tempfile.TemporaryDirectory() as folder:
        report = featurize(dataset, backbone, FeatureStore(folder), batch_size=batch_size, threads=1,
                           batch_atoms=10**9)
    assert report.computed == len(dataset.samples)


def statistics_and_writes(backbone, dataset) -> tuple[float, float]:
    """The parts of hacknip's time that the raw pass does not have: per-atom statistics, and writing the records."""
    from hacknip.features.pooling import atom_statistics
    from hacknip.store import FeatureStore, Record

    layers = list(range(len(backbone.layer_widths)))
    atoms = [sample.atoms for sample in dataset.samples]
    per_atom = backbone.per_atom_features(atoms, layers)
    started = time.perf_counter()
    records = [Record(f"{i:032x}", len(a), {layer: atom_statistics(f[layer]) for layer in layers})
               for i, (a, f) in enumerate(zip(atoms, per_atom))]
    stats = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        features = FeatureStore(folder).open(backbone.identity())
        started = time.perf_counter()
        features.write(records)  # featurize writes what it has every few seconds: one shard for a short run
        writes = time.perf_counter() - started
    return stats, writes


if __name__ == "__main__":
    main()
