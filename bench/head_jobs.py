"""Head fits in parallel processes: a whole ``hacknip run`` (layer sweep and final cross-validation) with one fit at a
time against ``--jobs`` fits at once, same data, same store, alternating, checking that every score is identical.

    python bench/head_jobs.py --backbone chgnet --pooling mean+max+std --jobs 2 --repeats 2

Featurises once first (into a temporary store), so the timed runs read the store and fit heads. Prints, per repeat,
the wall time of the layer sweep plus the final cross-validation for each setting and their ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matbench" / "matbench_phonons.json.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backbone", default="chgnet")
    parser.add_argument("--pooling", default="mean+max+std")
    parser.add_argument("--head", default="lightgbm")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from hacknip.workflow.run import RunConfig, run

    store = Path(tempfile.mkdtemp()) / "features"
    base = RunConfig(data=args.data, backbone=args.backbone, pooling=args.pooling, head=args.head, store=store)
    run(base)  # featurise once
    rows = []
    for repeat in range(args.repeats):
        timings, scores = {}, {}
        for jobs in (1, args.jobs):
            results = run(RunConfig(**{**base.__dict__, "jobs": jobs}))
            timings[jobs] = results["timings_s"]["layer_sweep"] + results["timings_s"]["final_cv"]
            scores[jobs] = json.dumps([results["per_layer"], results["folds"], results["predictions"]], sort_keys=True)
        same = scores[1] == scores[args.jobs]
        rows.append((repeat, timings[1], timings[args.jobs], same))
        print(f"repeat {repeat}: jobs=1 {timings[1]:.1f} s, jobs={args.jobs} {timings[args.jobs]:.1f} s, "
              f"speed-up {timings[1] / timings[args.jobs]:.2f}x, scores identical: {same}", flush=True)
    if not all(row[3] for row in rows):
        raise SystemExit("the scores differ between settings")


if __name__ == "__main__":
    main()
