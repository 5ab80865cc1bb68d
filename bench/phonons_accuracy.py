"""What moves accuracy on Matbench phonons (official folds): layer choice, pooling, several layers, several backbones
(``--set layers``); NIP embeddings against hand-crafted descriptors, both, other heads (``--set ablation``).

    python bench/phonons_accuracy.py [--set layers|ablation] [--head lightgbm] [--out bench-results/phonons]

Runs each configuration through ``hacknip.workflow.run.run`` exactly as ``hacknip run`` would (features come from the
store, so re-running is cheap), then prints a markdown table and writes ``summary.json`` plus each run's outputs.
Every head is untuned (its defaults): no configuration is chosen on the test folds here.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ENSEMBLE = ("ensemble", {"members": "lightgbm+xgboost"})
SETS = {  # (backbone, pooling, head or None for --head, head parameters)
    "layers": [
        ("chgnet", "mean", None, {}),
        ("sevennet", "mean", None, {}),
        ("chgnet@all", "mean+max+std", None, {}),
        ("sevennet@1,2", "mean+max+std", None, {}),
        ("sevennet@1,2+chgnet@all", "mean+max+std", None, {}),
    ],
    "ablation": [
        ("chgnet@all", "mean+max+std", None, {}),
        ("matminer:all", "mean", None, {}),
        ("matminer:modnet", "mean", None, {}),
        ("chgnet@all+matminer:all", "mean+max+std", None, {}),
        ("chgnet@all+matminer:modnet", "mean+max+std", None, {}),
        ("chgnet@all+matminer:all", "mean+max+std", *ENSEMBLE),
        ("chgnet@all+sevennet:7net-mf-0@all+matminer:all", "mean+max+std", None, {}),
    ],
}
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matbench" / "matbench_phonons.json.gz"


def main():
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=sorted(SETS), default="layers")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--head", default="lightgbm")
    parser.add_argument("--out", type=Path, default=Path("bench-results/phonons"))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="head fits at once (processes)")
    args = parser.parse_args()

    from hacknip.report import write_results
    from hacknip.workflow.run import RunConfig, run

    rows = []
    for backbone, pooling, head, params in SETS[args.set]:
        head = head or args.head
        results = run(RunConfig(data=args.data, backbone=backbone, head=head, head_params=params, pooling=pooling,
                                jobs=args.jobs))
        name = f"{backbone}-{pooling}-{head}".replace("+", "_").replace(":", "_").replace("@", "_")
        write_results(results, args.out / name)
        rows.append({"backbone": backbone, "pooling": pooling, "head": head, "best_layer": results["best_layer"],
                     "n_features": results["n_features"], "mae_mean": results["mae_mean"], "mae_std": results["mae_std"],
                     "relative_mae": results["relative_mae"], "rank": (results["leaderboard"] or {}).get("rank"),
                     "seconds": results["timings_s"]["total"]})
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    print("\n| backbone | pooling | head | layer(s) | features | MAE (cm⁻¹) | relative MAE | leaderboard rank | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| `{row['backbone']}` | {row['pooling']} | {row['head']} | {row['best_layer']} | {row['n_features']} | "
              f"{row['mae_mean']:.1f} ± {row['mae_std']:.1f} | {row['relative_mae']:.3f} | {row['rank']} | "
              f"{row['seconds']:.0f} |")


if __name__ == "__main__":
    main()
