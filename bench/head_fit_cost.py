"""What one head fit costs on wide features, and what cheaper settings lose: each variant of the head's
hyperparameters fitted on the same official Matbench folds (one process, one thread, alternating variants per fold),
with its fit time and test MAE.

    python bench/head_fit_cost.py --backbone chgnet@all+matminer:modnet --pooling mean+max+std \\
        --variant '{}' --variant '{"max_bin": 63}' --variant '{"colsample_bytree": 0.3}' --folds 0,1,2,3,4

Features come from the store (featurise or describe first, e.g. ``hacknip featurize --backbone matminer:modnet``).
Prints one row per (fold, variant) as it goes, then per variant: mean fit seconds, mean test MAE, and the ratio of
its fit time to the first variant's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matbench" / "matbench_phonons.json.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backbone", default="chgnet@all+matminer:modnet")
    parser.add_argument("--pooling", default="mean+max+std")
    parser.add_argument("--head", default="lightgbm")
    parser.add_argument("--variant", action="append", type=json.loads,
                        help="head hyperparameters as JSON (repeatable; the first is the reference)")
    parser.add_argument("--folds", default="0,1,2,3,4")
    args = parser.parse_args()
    variants = args.variant or [{}]
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import numpy as np

    from hacknip.workflow.run import RunConfig, model_factory, prepare

    config = RunConfig(data=args.data, backbone=args.backbone, pooling=args.pooling, head=args.head, jobs=1)
    prepared = prepare(config)
    layers = {m.member.name: list(m.member.resolve(m.n_layers)) for m in prepared.members}
    X, y = prepared.matrix(layers), prepared.y
    print(f"{args.backbone} ({args.pooling}): {X.shape[0]} rows x {X.shape[1]} features, head {args.head}", flush=True)
    seconds = {i: [] for i in range(len(variants))}
    errors = {i: [] for i in range(len(variants))}
    for fold in (int(f) for f in args.folds.split(",")):
        train, test = prepared.folds[fold]
        for i, params in enumerate(variants):
            model = model_factory(dataclasses.replace(config, head_params=params), prepared.task)()
            started = time.perf_counter()
            model.fit(X[train], y[train])
            seconds[i].append(time.perf_counter() - started)
            errors[i].append(float(np.mean(np.abs(model.predict(X[test]) - y[test]))))
            print(f"fold {fold} {json.dumps(params)}: fit {seconds[i][-1]:.1f} s, test MAE {errors[i][-1]:.3f}", flush=True)
    print("\n| head parameters | fit s (mean) | time ratio | test MAE (mean ± std over folds) |\n|---|---|---|---|")
    for i, params in enumerate(variants):
        print(f"| `{json.dumps(params)}` | {np.mean(seconds[i]):.1f} | {np.mean(seconds[i]) / np.mean(seconds[0]):.2f} | "
              f"{np.mean(errors[i]):.2f} ± {np.std(errors[i]):.2f} |")


if __name__ == "__main__":
    main()
