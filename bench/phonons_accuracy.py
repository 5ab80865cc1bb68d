"""What moves accuracy on Matbench phonons (official folds): layer choice, pooling, several layers, several backbones.

    python bench/phonons_accuracy.py [--head lightgbm] [--out bench-results/phonons]

Runs each configuration through ``hacknip.workflow.run.run`` exactly as ``hacknip run`` would (features come from the
store, so re-running is cheap), then prints a markdown table and writes ``summary.json`` plus each run's outputs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

CONFIGURATIONS = [
    ("chgnet", "mean"),
    ("sevennet", "mean"),
    ("chgnet@all", "mean+max+std"),
    ("sevennet@1,2", "mean+max+std"),
    ("sevennet@1,2+chgnet@all", "mean+max+std"),
]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matbench" / "matbench_phonons.json.gz"


def main():
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--head", default="lightgbm")
    parser.add_argument("--out", type=Path, default=Path("bench-results/phonons"))
    args = parser.parse_args()

    from hacknip.report import write_results
    from hacknip.workflow.run import RunConfig, run

    rows = []
    for backbone, pooling in CONFIGURATIONS:
        results = run(RunConfig(data=args.data, backbone=backbone, head=args.head, pooling=pooling))
        write_results(results, args.out / f"{backbone.replace('+', '_')}-{pooling.replace('+', '_')}")
        rows.append({"backbone": backbone, "pooling": pooling, "best_layer": results["best_layer"],
                     "n_features": results["n_features"], "mae_mean": results["mae_mean"], "mae_std": results["mae_std"],
                     "relative_mae": results["relative_mae"], "rank": (results["leaderboard"] or {}).get("rank"),
                     "seconds": results["timings_s"]["total"]})
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    print("\n| backbone | pooling | layer(s) | features | MAE (cm⁻¹) | relative MAE | leaderboard rank |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| `{row['backbone']}` | {row['pooling']} | {row['best_layer']} | {row['n_features']} | "
              f"{row['mae_mean']:.1f} ± {row['mae_std']:.1f} | {row['relative_mae']:.3f} | {row['rank']} |")


if __name__ == "__main__":
    main()
