"""How an averaging ensemble's predictions relate to its members' own runs: the largest difference between each
averaged prediction and the mean of the members' predictions, and the correlation of the members' errors.

    python bench/ensemble_members.py ENSEMBLE/results.json MEMBER1/results.json MEMBER2/results.json

Each argument is the results.json of a ``hacknip run`` on the same data and folds.
"""

import json
import sys

import numpy as np


def predictions(path: str) -> dict:
    table = json.loads(open(path, encoding="utf-8").read())["predictions"]
    return {key: (true, predicted) for key, true, predicted in zip(table["id"], table["true"], table["predicted"])}


def main(ensemble_path: str, *member_paths: str) -> None:
    ensemble, members = predictions(ensemble_path), [predictions(path) for path in member_paths]
    ids = sorted(ensemble)
    mean = np.array([np.mean([member[key][1] for member in members]) for key in ids])
    print("largest |ensemble - mean of members|:", float(np.max(np.abs(np.array([ensemble[k][1] for k in ids]) - mean))))
    errors = np.array([[member[key][1] - member[key][0] for key in ids] for member in members])
    print("correlation of the members' errors:\n", np.corrcoef(errors).round(3))


if __name__ == "__main__":
    main(*sys.argv[1:])
