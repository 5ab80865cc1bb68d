"""What a UMAP of one layer costs: 10^4 embeddings of width 256 (ORB's width) projected to 2-D the way
``hacknip analyze umap`` does it (standardised, seeded, so single-threaded), with numba's compilation timed apart.

    python bench/umap_cost.py                       # 10000 x 256, 8 Gaussian clusters
    python bench/umap_cost.py --search pynndescent  # umap-learn's own neighbour search instead of the exact one
    python bench/umap_cost.py --n 2000 --parallel   # also time an unseeded UMAP using every core

The embeddings are random but structured: ``--clusters`` Gaussian clusters whose centres lie in a 10-dimensional
subspace, mapped into ``--dim`` dimensions and blurred with isotropic noise, so that nearest-neighbour search and the
layout face real structure. In one fresh process the same seeded UMAP runs twice: the first call pays numba's
just-in-time compilation (umap-learn and pynndescent compile their kernels on first use, per process), the second
does not; their difference is the compile time. The two calls must give identical coordinates (that is what the seed
is for). ``--search``: ``exact`` is what hacknip does up to ``EXACT_NEIGHBOURS_UP_TO`` samples (scikit-learn finds the
neighbours, timed apart as ``exact_neighbours_s``), ``pynndescent`` is umap-learn's own approximate search.
Also printed: ``import umap`` time, and the share of each point's 15 nearest 2-D neighbours that come from its own
cluster (near 1: the clusters survived the projection). ``--json FILE`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from hacknip.analysis import projection
from hacknip.analysis.projection import UmapSettings, exact_neighbours, umap_coordinates

SUBSPACE = 10
NEIGHBOURS_CHECKED = 15


def structured_embeddings(n: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(X, labels)``: Gaussian clusters in a ``SUBSPACE``-dimensional subspace of ``dim`` dimensions, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(clusters, size=n)
    centres = rng.normal(scale=4.0, size=(clusters, SUBSPACE))
    points = centres[labels] + rng.normal(size=(n, SUBSPACE))
    mixing = rng.normal(size=(SUBSPACE, dim)) / np.sqrt(SUBSPACE)
    return (points @ mixing + 0.5 * rng.normal(size=(n, dim))).astype(np.float32), labels


def same_cluster_share(xy: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.neighbors import NearestNeighbors

    _, neighbours = NearestNeighbors(n_neighbors=NEIGHBOURS_CHECKED + 1).fit(xy).kneighbors(xy)
    return float((labels[neighbours[:, 1:]] == labels[:, None]).mean())


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def parallel_umap(X: np.ndarray) -> np.ndarray:
    """Unseeded UMAP on every core (umap-learn's default), for comparison: not reproducible run to run."""
    import umap
    from sklearn.preprocessing import StandardScaler

    return umap.UMAP(n_components=2, n_jobs=-1).fit_transform(StandardScaler().fit_transform(X))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--search", choices=("exact", "pynndescent"), default="exact",
                        help="nearest-neighbour search (default: exact, as hacknip does up to 20000 samples)")
    parser.add_argument("--parallel", action="store_true", help="also time an unseeded UMAP on every core")
    parser.add_argument("--json", help="write the numbers to this file")
    args = parser.parse_args()

    X, labels = structured_embeddings(args.n, args.dim, args.clusters, args.seed)
    projection.EXACT_NEIGHBOURS_UP_TO = args.n if args.search == "exact" else 0
    _, import_seconds = timed(__import__, "umap")
    settings = UmapSettings(seed=args.seed)
    first, first_seconds = timed(umap_coordinates, X, settings)
    second, second_seconds = timed(umap_coordinates, X, settings)
    numbers = {
        "n": args.n, "dim": args.dim, "clusters": args.clusters, "seed": args.seed, "search": args.search,
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "versions": _versions(),
        "import_umap_s": round(import_seconds, 2),
        "first_call_s": round(first_seconds, 2),
        "warm_call_s": round(second_seconds, 2),
        "numba_compile_s": round(first_seconds - second_seconds, 2),
        "identical_coordinates": bool(np.array_equal(first, second)),
        "same_cluster_neighbour_share": round(same_cluster_share(second, labels), 4),
    }
    if args.search == "exact":
        _, seconds = timed(exact_neighbours, X, settings.n_neighbors)
        numbers["exact_neighbours_s"] = round(seconds, 2)
    if args.parallel:
        _, numbers["unseeded_all_cores_s"] = timed(parallel_umap, X)
        numbers["unseeded_all_cores_s"] = round(numbers["unseeded_all_cores_s"], 2)
    for name, value in numbers.items():
        print(f"{name}: {value}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(numbers, handle, indent=2)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {package: version(package) for package in ("umap-learn", "pynndescent", "numba", "numpy", "scikit-learn")}


if __name__ == "__main__":
    main()
