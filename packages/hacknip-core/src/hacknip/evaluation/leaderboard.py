"""Where a result would rank on the Matbench v0.1 leaderboard."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

SUMMARY_FILE = "matbench_v0.1_leaderboard_summary.csv"


@dataclass
class Rank:
    task: str
    rank: int
    """1 = best; where the result would stand among the entries."""
    entries: int
    better: list[tuple[str, float]]
    """The entries ahead of the result: (algorithm, mean MAE), best first."""
    file: str
    behind: list[tuple[str, float]] = field(default_factory=list)
    """The entries the result is ahead of (or ties), best first."""

    def as_dict(self) -> dict:
        return {"task": self.task, "rank": self.rank, "out_of": self.entries + 1,
                "ahead": [{"algorithm": a, "mae_mean": m} for a, m in self.better],
                "behind": [{"algorithm": a, "mae_mean": m} for a, m in self.behind], "leaderboard_file": self.file}


def leaderboard_rank(task: str, mae_mean: float, summary_file: str | Path) -> Rank | None:
    """Rank of ``mae_mean`` among the leaderboard entries for ``task``; None when the file has no such task."""
    with open(summary_file, newline="") as handle:
        entries = [(row["algorithm"], float(row["mean_mae"])) for row in csv.DictReader(handle) if row["task"] == task]
    if not entries:
        return None
    ordered = sorted(entries, key=lambda entry: entry[1])
    better = [entry for entry in ordered if entry[1] < mae_mean]
    return Rank(task, len(better) + 1, len(entries), better, str(summary_file), ordered[len(better):])


def find_matbench_file(data_path: Path, name: str) -> Path | None:
    """Matbench side files (folds, leaderboard) kept next to the data file, or in a ``leaderboard/`` beside it."""
    folder = data_path.parent
    for candidate in (folder / name, folder / "leaderboard" / name):
        if candidate.exists():
            return candidate
    return None


def official_task_size(task: str, validation_file: str | Path) -> int | None:
    """How many rows the official Matbench folds of ``task`` hold (None when the file has no such task)."""
    import gzip
    import json

    opener = gzip.open if str(validation_file).endswith(".gz") else open
    with opener(validation_file, "rt") as handle:
        splits = json.load(handle)["splits"]
    if task not in splits:
        return None
    return len({sample_id for fold in splits[task].values() for sample_id in fold["test"]})
