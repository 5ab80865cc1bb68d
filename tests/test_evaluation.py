from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from hacknip.data.structures import matbench_ids
from hacknip.evaluation.crossval import dummy_cv, matbench_folds, random_folds, regression_metrics
from hacknip.evaluation.leaderboard import leaderboard_rank
from hacknip.features.compose import parse_backbones
from hacknip.features.pooling import parse_pooling

MATBENCH = "matbench_phonons"


@pytest.fixture(scope="module")
def validation_file(phonons_path):
    return phonons_path.parent / "matbench_v0.1_validation.json.gz"


def test_official_folds_are_the_published_ones(validation_file):
    ids = matbench_ids(MATBENCH, 1265)
    folds = matbench_folds(ids, MATBENCH, validation_file)
    with gzip.open(validation_file, "rt") as handle:
        published = json.load(handle)["splits"][MATBENCH]
    for number, (train, test) in enumerate(folds):
        assert sorted(ids[i] for i in test) == sorted(published[f"fold_{number}"]["test"])
        assert sorted(ids[i] for i in train) == sorted(published[f"fold_{number}"]["train"])
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(1265))


def test_seeded_kfold_reproduces_the_official_folds(validation_file):
    ids = matbench_ids(MATBENCH, 1265)
    official = matbench_folds(ids, MATBENCH, validation_file)
    for (_, expected), (_, ours) in zip(official, random_folds(1265)):
        assert sorted(expected) == sorted(ours)


def test_a_slice_keeps_each_sample_in_its_official_fold(validation_file):
    ids = matbench_ids(MATBENCH, 1265)
    full = matbench_folds(ids, MATBENCH, validation_file)
    part = matbench_folds(ids[:100], MATBENCH, validation_file)
    for (_, full_test), (_, part_test) in zip(full, part):
        assert part_test.tolist() == [i for i in sorted(full_test) if i < 100]


def test_ids_outside_the_task_are_an_error(validation_file):
    with pytest.raises(ValueError, match="not in the official"):
        matbench_folds(["mb-phonons-9999"], MATBENCH, validation_file)


def test_metrics_and_dummy():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    metrics = regression_metrics(y, y + np.array([0.5, -0.5, 0.5, -0.5]))
    assert metrics == pytest.approx({"mae": 0.5, "rmse": 0.5, "r2": 1 - 1.0 / 5.0})
    folds = [(np.array([0, 1]), np.array([2, 3])), (np.array([2, 3]), np.array([0, 1]))]
    dummy = dummy_cv(y, folds)
    assert dummy.predictions.tolist() == [3.5, 3.5, 1.5, 1.5]
    assert dummy.mae_mean == pytest.approx(2.0)


def test_dummy_matches_the_published_matbench_dummy(phonons_path, validation_file):
    from hacknip.data.read import read_dataset

    dataset = read_dataset(phonons_path)
    dummy = dummy_cv(dataset.targets, matbench_folds(dataset.ids, MATBENCH, validation_file))
    assert dummy.mae_mean == pytest.approx(323.9822, abs=1e-3)  # leaderboard's Dummy entry for phonons


def test_a_rank_needs_the_whole_task_on_its_official_folds(phonons_path):
    from hacknip.data.read import read_dataset
    from hacknip.evaluation.leaderboard import official_task_size
    from hacknip.workflow.run import VALIDATION_FILE, RunConfig, why_not_ranked

    assert official_task_size(MATBENCH, phonons_path.parent / VALIDATION_FILE) == 1265
    dataset = read_dataset(phonons_path)
    config = RunConfig(data=phonons_path, backbone="chgnet")
    assert why_not_ranked(config, dataset, "official Matbench v0.1 folds (x)") is None
    assert "all 1265 rows" in why_not_ranked(config, dataset.head(100), "official Matbench v0.1 folds (x)")
    assert "official folds" in why_not_ranked(config, dataset, "KFold(5, shuffle=True, random_state=18012019)")


def test_leaderboard_rank(phonons_path):
    summary = phonons_path.parent / "leaderboard" / "matbench_v0.1_leaderboard_summary.csv"
    rank = leaderboard_rank(MATBENCH, 35.0, summary)
    assert rank.rank == 7 and rank.better[0] == ("MegNet (kgcnn v2.1.0)", 28.7606)
    assert leaderboard_rank(MATBENCH, 1.0, summary).rank == 1
    assert leaderboard_rank("matbench_unknown", 1.0, summary) is None


@pytest.mark.parametrize("expression, expected", [
    ("chgnet", [("chgnet", None, False)]),
    ("chgnet@4", [("chgnet", (4,), False)]),
    ("chgnet@1-3,5+sevennet", [("chgnet", (1, 2, 3, 5), False), ("sevennet", None, False)]),
    ("sevennet:7net-l3i5@all", [("sevennet:7net-l3i5", None, True)]),
    ("sevennet:/models/a@b.pth", [("sevennet:/models/a@b.pth", None, False)]),
])
def test_backbone_expressions(expression, expected):
    assert [(m.name, m.layers, m.all_layers) for m in parse_backbones(expression)] == expected


def test_backbone_expression_errors():
    with pytest.raises(ValueError, match="listed twice"):
        parse_backbones("chgnet+chgnet@2")
    with pytest.raises(ValueError, match="has layers 0..4"):
        parse_backbones("chgnet@7")[0].resolve(5)


def test_pooling_names():
    assert parse_pooling("mean+max+std") == ("mean", "max", "std")
    with pytest.raises(ValueError, match="unknown pooling"):
        parse_pooling("median")


def test_group_folds_keep_each_group_in_one_test_fold_and_are_reproducible():
    from hacknip.evaluation.crossval import group_folds

    groups = [f"g{i % 13}" for i in range(70)]
    folds = group_folds(groups)
    tests = [set(test.tolist()) for _, test in folds]
    assert sorted(i for test in tests for i in test) == list(range(70))
    for group in set(groups):
        members = {i for i, g in enumerate(groups) if g == group}
        assert sum(bool(members & test) for test in tests) == 1
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, group_folds(groups)))
    with pytest.raises(ValueError, match="3 distinct groups are too few for 5 grouped folds"):
        group_folds(["a", "b", "c", "a", "b", "c"])


def test_fits_in_worker_processes_score_exactly_as_one_after_another():
    from hacknip.evaluation.crossval import cross_validate, cross_validate_each, make_model
    from hacknip_heads.lightgbm_head import LightGBMHead

    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 6))
    y = X[:, 0] * 2 + np.sin(X[:, 1]) + 0.1 * rng.standard_normal(120)
    folds = random_folds(len(y))
    problems = [(k, (lambda k=k: X[:, :k]), lambda: make_model(LightGBMHead(n_estimators=30))) for k in (2, 4, 6)]
    done = []
    serial = cross_validate_each(problems, y, folds, on_fold=lambda: done.append(1))
    parallel = cross_validate_each(problems, y, folds, on_fold=lambda: done.append(2), jobs=2)
    assert done == [1] * 15 + [2] * 15  # every fit of every problem, as it finished
    for k in (2, 4, 6):
        np.testing.assert_array_equal(serial[k].predictions, parallel[k].predictions)
        assert serial[k].folds == parallel[k].folds
    alone = cross_validate(X[:, :4], y, folds, lambda: make_model(LightGBMHead(n_estimators=30)))
    np.testing.assert_array_equal(alone.predictions, parallel[4].predictions)
