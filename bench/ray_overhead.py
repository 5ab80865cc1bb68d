"""Local featurisation against the ray executor on the same cores, in one run (issue 15's "Ray's overhead").

    python bench/ray_overhead.py --backbone chgnet --n 400 --workers 2 [--repeats 2]

Each measurement featurises the first N Matbench phonons structures into a fresh store (every layer). Local is
hacknip's default (this process; one batch per torch thread for backbones that declare concurrent batches); ray
starts a local Ray instance with --workers actors of one CPU each; its start-up (ray.init, actors loading the
backbone) is timed apart from featurising. Prints structures/s and the ratio."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matbench" / "matbench_phonons.json.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="chgnet")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import ray
    import torch

    from hacknip.data.read import read_dataset
    from hacknip.features.executors import RayExecutor
    from hacknip.features.featurize import featurize
    from hacknip.plugins.executor import BackboneRef
    from hacknip.plugins.registry import load_backbone
    from hacknip.store import FeatureStore

    dataset = read_dataset(DATA).head(args.n)
    backbone = load_backbone(args.backbone)
    print(f"{args.backbone}, {args.n} structures, torch threads {torch.get_num_threads()}, ray {ray.__version__}")
    started = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="warning")
    print(f"ray.init: {time.perf_counter() - started:.1f} s")
    def on_ray(data, folder: Path) -> float:
        started = time.perf_counter()
        report = featurize(data, backbone, FeatureStore(folder), executor=RayExecutor(workers=args.workers),
                           backbone_ref=BackboneRef(args.backbone))
        assert report.computed == len(data.samples)
        return time.perf_counter() - started

    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            local = featurize(dataset, backbone, FeatureStore(Path(folder) / "local"))
            start_up = on_ray(dataset.head(args.workers), Path(folder) / "ray-start")  # actors load, one batch each
            ray_wall = on_ray(dataset, Path(folder) / "ray")
        assert local.computed == args.n
        print(f"repeat {repeat + 1}: local {local.seconds:.1f} s ({args.n / local.seconds:.1f} structures/s); ray "
              f"{args.workers} workers {ray_wall:.1f} s ({args.n / ray_wall:.1f} structures/s), of which start-up "
              f"(actors loading the backbone, measured on {args.workers} structures) {start_up:.1f} s; ray / local "
              f"time {ray_wall / local.seconds:.2f}, without start-up {(ray_wall - start_up) / local.seconds:.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
