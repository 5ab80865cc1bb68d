"""hacknip tune: nested by default, the paper's protocol labelled, resumable studies, shared by workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hacknip.cli import cli
from hacknip.errors import InputError

TESTS = Path(__file__).parent


def _tune(phonons_path, tmp_path, *extra, out="tuned"):
    args = ["tune", "--data", str(phonons_path), "--backbone", "toy", "--head", "knn", "--limit", "100",
            "--trials", "6", "--patience", "3", "--storage", str(tmp_path / "studies.db"), "--out", str(tmp_path / out),
            *extra]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result, json.loads((tmp_path / out / "results.json").read_text())


def _studies(storage: Path) -> dict[str, list]:
    import optuna

    url = f"sqlite:///{storage}"
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=url).trials
            for s in optuna.get_all_study_summaries(url)}


def test_nested_tuning_never_scores_a_fold_it_tuned_on(toy_plugin, toy_head, phonons_path, tmp_path):
    result, results = _tune(phonons_path, tmp_path)
    tuning = results["tuning"]
    assert tuning["protocol"] == "nested" and not tuning["optimistic"] and "OPTIMISTIC" not in result.output
    assert [row["scope"] for row in tuning["per_fold"]] == [f"fold{k}" for k in range(5)]
    # toy has layers 0..2: the window L*-2..L*+2 covers them all, one study each, per fold and for deployment
    studies = _studies(tmp_path / "studies.db")
    assert len(studies) == 6 * 3
    assert all(3 <= len(trials) <= 6 for trials in studies.values())
    # each fold's score is a refit of its own winner, scored on its test rows only
    assert len(results["folds"]) == 5 and results["metric"] == "mae"
    assert results["mae_mean"] == pytest.approx(np.mean([f["mae"] for f in results["folds"]]))
    params = json.loads((tmp_path / "tuned" / "params.json").read_text())
    assert params == results["params"] and params["head"] == "knn" and params["backbone"].startswith("toy@")
    assert set(params["head_params"]) == {"n_neighbors", "weights"}


def test_outer_scopes_hold_only_training_rows():
    from hacknip.evaluation.crossval import random_folds
    from hacknip.evaluation.tuning import TuneSettings, _outer_scope

    class Prepared:
        y = np.arange(50, dtype=float)
        task = "regression"
        groups = None

    for number, (train, test) in enumerate(random_folds(50)):
        scope = _outer_scope(Prepared, number, train, TuneSettings())
        assert not set(scope.rows) & set(test)
        inner_rows = np.concatenate([validation for _, validation in scope.folds])
        assert sorted(scope.rows[inner_rows]) == sorted(train)


def test_inner_folds_of_a_grouped_split_keep_each_group_whole():
    from hacknip.evaluation.crossval import group_folds
    from hacknip.evaluation.tuning import TuneSettings, _outer_scope

    class Prepared:
        y = np.arange(60, dtype=float)
        task = "regression"
        groups = [f"formula{row // 3}" for row in range(60)]  # 20 formulas, 3 structures each

    for number, (train, _) in enumerate(group_folds(Prepared.groups)):
        scope = _outer_scope(Prepared, number, train, TuneSettings())
        for inner_train, validation in scope.folds:
            seen = {Prepared.groups[scope.rows[row]] for row in inner_train}
            assert not seen & {Prepared.groups[scope.rows[row]] for row in validation}


def test_paper_protocol_is_labelled_optimistic_and_reports_its_best_trial(toy_plugin, toy_head, phonons_path, tmp_path):
    result, results = _tune(phonons_path, tmp_path, "--protocol", "paper", "--layers", "1,2")
    assert results["tuning"]["optimistic"] and "OPTIMISTIC" in result.output
    deploy = results["tuning"]["deploy"]
    assert [study["layers"]["toy"] for study in deploy["studies"]] == [[1], [2]]
    # the reported MAE is the winning trial's own score on the outer folds: that is what makes it optimistic
    assert results["mae_mean"] == pytest.approx(deploy["validation_score"])
    assert results["best_layer"] in (1, 2)
    from hacknip.report.figures import tuning_figure

    axes = tuning_figure(results).axes[0]  # its map says so too: one row, scored on the outer folds
    assert "outer test folds: optimistic" in axes.get_title()
    assert [label.get_text() for label in axes.get_yticklabels()] == ["outer folds"]


def test_a_rerun_resumes_its_studies_instead_of_starting_again(toy_plugin, toy_head, phonons_path, tmp_path):
    _tune(phonons_path, tmp_path, "--protocol", "paper", "--layers", "1", "--patience", "50", "--trials", "4")
    (first,) = _studies(tmp_path / "studies.db").values()
    _tune(phonons_path, tmp_path, "--protocol", "paper", "--layers", "1", "--patience", "50", "--trials", "7",
          out="again")
    (second,) = _studies(tmp_path / "studies.db").values()
    assert len(first) == 4 and len(second) == 7
    assert [t.params for t in second[:4]] == [t.params for t in first]
    # the resumed trials are new draws, not the first random start-up draws again
    assert [t.params for t in second[4:]] != [t.params for t in first[:3]]


def test_run_replays_a_tuned_configuration(toy_plugin, toy_head, phonons_path, tmp_path):
    _, tuned = _tune(phonons_path, tmp_path, "--protocol", "paper", "--layers", "2")
    assert not (tmp_path / "tuned" / "tuning.png").exists()  # one candidate: nothing to compare
    result = CliRunner().invoke(cli, ["run", "--data", str(phonons_path), "--backbone", "toy", "--limit", "100",
                                      "--params", str(tmp_path / "tuned" / "params.json"), "--out", str(tmp_path / "replay")])
    assert result.exit_code == 0, result.output
    replay = json.loads((tmp_path / "replay" / "results.json").read_text())
    assert replay["head"] == "knn" and replay["best_layer"] == 2 and replay["per_layer"] == []
    assert replay["head_params"] == tuned["params"]["head_params"]
    assert replay["mae_mean"] == pytest.approx(tuned["mae_mean"])
    wrong = CliRunner().invoke(cli, ["run", "--data", str(phonons_path), "--backbone", "other", "--limit", "100",
                                     "--params", str(tmp_path / "tuned" / "params.json")])
    assert wrong.exit_code == 1 and "tuned for --backbone 'toy@2'" in wrong.output


def test_run_takes_the_backbones_from_params_when_backbone_is_left_out(toy_plugin, toy_head, phonons_path, tmp_path):
    _, tuned = _tune(phonons_path, tmp_path, "--protocol", "paper", "--layers", "2")
    replay = CliRunner().invoke(cli, ["run", "--data", str(phonons_path), "--limit", "100", "--params",
                                      str(tmp_path / "tuned" / "params.json"), "--out", str(tmp_path / "replay")])
    assert replay.exit_code == 0, replay.output
    replayed = json.loads((tmp_path / "replay" / "results.json").read_text())
    assert replayed["backbone"] == "toy@2" and replayed["mae_mean"] == pytest.approx(tuned["mae_mean"])
    neither = CliRunner().invoke(cli, ["run", "--data", str(phonons_path), "--limit", "100"])
    assert neither.exit_code == 2 and "Missing option '--backbone'" in neither.output


def test_a_tuned_expression_with_a_descriptor_replays(toy_plugin, toy_head, phonons_path, tmp_path):
    common = ["--data", str(phonons_path), "--backbone", "toy+matminer:composition", "--limit", "60",
              "--store", str(tmp_path / "store"), "--jobs", "1", "--workers", "1"]
    tuned = CliRunner().invoke(cli, ["tune", *common, "--head", "knn", "--protocol", "paper", "--layers", "2",
                                     "--trials", "3", "--storage", str(tmp_path / "studies.db"), "--out",
                                     str(tmp_path / "tuned")], catch_exceptions=False)
    assert tuned.exit_code == 0, tuned.output
    params = json.loads((tmp_path / "tuned" / "params.json").read_text())
    assert params["backbone"] == "toy@2+matminer:composition"  # a descriptor has no layers, so no '@'
    assert "tuning outer, toy@2+matminer:composition (knn):" in tuned.output and "composition@" not in tuned.output
    replay = CliRunner().invoke(cli, ["run", *common, "--params", str(tmp_path / "tuned" / "params.json"), "--out",
                                      str(tmp_path / "replay")])
    assert replay.exit_code == 0, replay.output
    tuned_results, replayed = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("tuned", "replay"))
    assert replayed["mae_mean"] == pytest.approx(tuned_results["mae_mean"])


def test_an_untunable_head_is_a_clear_error(toy_plugin, phonons_path, tmp_path, monkeypatch):
    from hacknip.evaluation.tuning import head_search_space
    from hacknip.plugins.head import HeadSpec

    with pytest.raises(ValueError, match="declares no search space"):
        head_search_space(HeadSpec(name="plain", factory="sklearn.linear_model:LinearRegression", task_kinds=frozenset()))


WORKER = """
import sys, json
sys.path.insert(0, {tests!r})
from toy_head import register_everything
register_everything()
from hacknip.workflow.run import RunConfig
from hacknip.evaluation.tuning import TuneSettings, tune
results = tune(RunConfig(data={data!r}, backbone="toy@1", head="knn", head_params={{"fit_delay": 0.01}}, limit=100),
               TuneSettings(n_trials=40, patience=100, protocol="paper", storage={storage!r}, seed={seed}))
print(json.dumps(results["tuning"]["deploy"]["head_params"]))
"""


def test_two_worker_processes_share_one_sqlite_study(phonons_path, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "HACKNIP_HOME": str(tmp_path / "home")}
    # featurise once first, so both workers spend their time on trials rather than racing to fill the store
    subprocess.run([sys.executable, "-c", WORKER.format(tests=str(TESTS), data=str(phonons_path), storage=storage,
                                                        seed=9).replace("n_trials=40", "n_trials=1")],
                   env=env, check=True, capture_output=True)
    workers = [subprocess.Popen([sys.executable, "-c", WORKER.format(tests=str(TESTS), data=str(phonons_path),
                                                                     storage=storage, seed=seed)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    (trials,) = _studies(tmp_path / "shared.db").values()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert 40 <= len(complete) <= 42  # each worker may finish the trial it started when the other reached 40
    assert len({t.user_attrs["worker"] for t in complete}) == 3  # the warm-up process and both workers


def test_scopes_tuned_at_once_tune_as_one_at_a_time(toy_plugin, toy_head, phonons_path, tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    _, serial = _tune(phonons_path, tmp_path / "one", "--jobs", "1")
    _, parallel = _tune(phonons_path, tmp_path / "two", "--jobs", "2")
    assert parallel["params"] == serial["params"] and parallel["folds"] == serial["folds"]
    assert parallel["tuning"]["per_fold"] == serial["tuning"]["per_fold"]
    # with two jobs, two scopes' studies ran at once: some trials of different studies overlap in time
    spans = [(name, t.datetime_start, t.datetime_complete) for name, trials in _studies(tmp_path / "two" / "studies.db").items()
             for t in trials]
    assert any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2] for a in spans for b in spans)
    spans = [(name, t.datetime_start, t.datetime_complete) for name, trials in _studies(tmp_path / "one" / "studies.db").items()
             for t in trials]
    assert not any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2] for a in spans for b in spans)


def test_patience_counts_only_after_the_random_start_up_trials():
    """A best found among the sampler's first random trials does not end the study before TPE proposes any: with
    patience 3 the study runs the 10 start-up trials and 3 chosen by TPE (before, it stopped after trial 3)."""
    import threading

    import optuna

    from hacknip.evaluation.tuning import STARTUP_TRIALS, TuneSettings, _StopRule

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=STARTUP_TRIALS))
    advanced = []
    stop = _StopRule(TuneSettings(n_trials=30, patience=3), advanced.append, threading.Event())
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1) + (0 if trial.number == 0 else 10), n_trials=30,
                   callbacks=[stop])
    assert study.best_trial.number == 0
    assert len(study.trials) == STARTUP_TRIALS + 3 and len(advanced) == STARTUP_TRIALS + 3


def test_another_target_of_the_same_file_is_tuned_in_studies_of_its_own(toy_plugin, toy_head, phonons_path, tmp_path):
    """Two target columns of one table, one storage: the second tune must not resume the first's studies (it did,
    and reported hyperparameters validated on the other target)."""
    import pandas as pd
    from conftest import write_cif_table

    table = write_cif_table(phonons_path, tmp_path / "two.csv", 60, "peak")
    frame = pd.read_csv(table)
    frame["scaled"] = frame["peak"] * 3.0 + 1.0
    frame.to_csv(table, index=False)

    def tune(target):
        args = ["tune", "--data", str(table), "--id-column", "name", "--target", target, "--backbone", "toy@1",
                "--head", "knn", "--trials", "2", "--storage", str(tmp_path / "studies.db"), "--out", str(tmp_path / target)]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output

    tune("peak")
    first = set(_studies(tmp_path / "studies.db"))
    tune("scaled")
    assert len(set(_studies(tmp_path / "studies.db")) - first) == len(first)


def test_a_head_that_searches_more_starts_studies_of_its_own(toy_plugin, toy_head, phonons_path, tmp_path, monkeypatch):
    """A search space that changed (a wider range here; max_bin joined LightGBM's) must not resume studies drawn from
    the old one: those would count as finished and deploy their old winners."""
    from toy_head import KNNHead

    _tune(phonons_path, tmp_path, "--protocol", "paper", "--layers", "1", "--trials", "2")
    first = set(_studies(tmp_path / "studies.db"))
    _tune(phonons_path, tmp_path, "--protocol", "paper", "--layers", "1", "--trials", "2", out="same")
    assert set(_studies(tmp_path / "studies.db")) == first

    def wider(trial):
        return {"n_neighbors": trial.suggest_int("n_neighbors", 1, 30),
                "weights": trial.suggest_categorical("weights", ["uniform", "distance"])}

    monkeypatch.setattr(KNNHead, "search_space", staticmethod(wider))
    _tune(phonons_path, tmp_path, "--protocol", "paper", "--layers", "1", "--trials", "2", out="wider")
    assert len(set(_studies(tmp_path / "studies.db")) - first) == len(first)


def test_a_head_whose_defaults_changed_starts_studies_of_its_own(toy_plugin, toy_head, phonons_path, tmp_path,
                                                                 monkeypatch):
    """A head version with another default for a hyperparameter the command leaves unset (the network heads'
    clip_features became True) must not resume trials fitted with the old one; a default that the search overrides
    changes nothing."""
    from toy_head import KNNHead

    from hacknip.plugins.head import REGRESSION

    _tune(phonons_path, tmp_path, "--protocol", "paper", "--layers", "1", "--trials", "2")
    first = set(_studies(tmp_path / "studies.db"))
    monkeypatch.setattr(KNNHead.__init__, "__defaults__", (REGRESSION, 7, "uniform", 0.0))  # n_neighbors: searched
    _tune(phonons_path, tmp_path, "--protocol", "paper", "--layers", "1", "--trials", "2", out="searched")
    assert set(_studies(tmp_path / "studies.db")) == first
    monkeypatch.setattr(KNNHead.__init__, "__defaults__", (REGRESSION, 5, "uniform", 0.001))  # fit_delay: not
    _tune(phonons_path, tmp_path, "--protocol", "paper", "--layers", "1", "--trials", "2", out="other-default")
    assert len(set(_studies(tmp_path / "studies.db")) - first) == len(first)


def test_params_replay_with_the_defaults_they_were_tuned_with(toy_plugin, toy_head, phonons_path, tmp_path,
                                                               monkeypatch):
    """A params.json tuned before a head's default changed (clip_features became True) replays as it was fitted; a
    --head-param still chooses."""
    from toy_head import KNNHead

    from hacknip.plugins.head import REGRESSION

    _, tuned = _tune(phonons_path, tmp_path, "--protocol", "paper", "--layers", "2")
    params = tmp_path / "tuned" / "params.json"
    assert json.loads(params.read_text())["head_defaults"] == {"task": "'regression'", "fit_delay": "0.0"}
    monkeypatch.setattr(KNNHead.__init__, "__defaults__", (REGRESSION, 5, "uniform", 0.001))

    def replay(out, *extra):
        result = CliRunner().invoke(cli, ["run", "--data", str(phonons_path), "--limit", "100", "--params", str(params),
                                          "--out", str(tmp_path / out), *extra])
        assert result.exit_code == 0, result.output
        return result.output, json.loads((tmp_path / out / "results.json").read_text())

    output, replayed = replay("replay")
    assert replayed["head_params"] == {**tuned["params"]["head_params"], "fit_delay": 0.0}
    assert replayed["mae_mean"] == pytest.approx(tuned["mae_mean"])
    assert "knn's default fit_delay was 0.0 when it was tuned and is 0.001 now; replaying with 0.0" in output
    output, chosen = replay("chosen", "--head-param", "fit_delay=0.002")
    assert chosen["head_params"]["fit_delay"] == 0.002 and "default fit_delay" not in output


def test_an_ensemble_restores_its_members_defaults_under_params():
    from hacknip.plugins.ensemble_head import EnsembleHead
    from hacknip.plugins.head import defaults_of, restore_defaults

    fixed = {"members": "lightgbm", "params": {"lightgbm": {"n_estimators": 50}}}
    recorded = {**defaults_of(EnsembleHead, fixed), "lightgbm:learning_rate": "0.5", "seeds": "2"}
    restored, changed = restore_defaults(EnsembleHead, fixed, recorded)
    assert restored == {"members": "lightgbm", "seeds": 2,
                        "params": {"lightgbm": {"n_estimators": 50, "learning_rate": 0.5}}}
    assert set(changed) == {"lightgbm:learning_rate", "seeds"} and fixed["params"]["lightgbm"] == {"n_estimators": 50}
    assert restore_defaults(EnsembleHead, restored, recorded) == (restored, {})
    with pytest.raises(InputError, match="seeds=os.system"):
        restore_defaults(EnsembleHead, fixed, {"seeds": "os.system('true')"})


def test_an_ensembles_study_names_its_members_defaults():
    from hacknip.plugins.ensemble_head import EnsembleHead
    from hacknip.plugins.head import defaults_of

    defaults = defaults_of(EnsembleHead, {"members": "lightgbm", "params": {"lightgbm": {"n_estimators": 50}}})
    assert defaults["seeds"] == "1" and "lightgbm:learning_rate" in defaults
    assert "members" not in defaults and "lightgbm:n_estimators" not in defaults


def _subsets_tune(phonons_path, tmp_path, *extra, out="subsets"):
    args = ["tune", "--data", str(phonons_path), "--backbone", "toy@2+matminer:composition", "--head", "knn",
            "--limit", "60", "--store", str(tmp_path / "store"), "--jobs", "1", "--workers", "1", "--trials", "3",
            "--storage", str(tmp_path / "studies.db"), "--out", str(tmp_path / out), *extra]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / out / "results.json").read_text())
    for winner in results["tuning"]["per_fold"]:  # what each fold kept, in the terminal too
        assert f"tuned {winner['scope']}" in result.output
    return results


def test_member_subsets_choose_the_features_inside_each_training_fold(toy_plugin, toy_head, phonons_path, tmp_path):
    """--member-subsets: the embedding alone, the descriptors alone and both, one study each per scope; each fold keeps
    the subset its own inner folds scored best, refitted on that subset's columns only."""
    from hacknip.evaluation.tuning import member_subsets

    assert member_subsets({"a": [1], "b": [0], "c": [2]}) == [
        {"a": [1]}, {"b": [0]}, {"c": [2]}, {"a": [1], "b": [0]}, {"a": [1], "c": [2]}, {"b": [0], "c": [2]},
        {"a": [1], "b": [0], "c": [2]}]
    _subsets_tune(phonons_path, tmp_path, out="all-members")
    whole = set(_studies(tmp_path / "studies.db"))
    assert len(whole) == 6  # five folds and the deploy scope
    results = _subsets_tune(phonons_path, tmp_path, "--member-subsets")
    studies = _studies(tmp_path / "studies.db")
    assert len(studies) == 6 * 3 and whole < set(studies)
    assert all(len(trials) == 3 for trials in studies.values())  # the earlier tune's studies were resumed, not rerun
    for winner in [*results["tuning"]["per_fold"], results["tuning"]["deploy"]]:
        tried = {tuple(study["layers"]): study["best_value"] for study in winner["studies"]}
        assert set(tried) == {("toy",), ("matminer:composition",), ("toy", "matminer:composition")}
        assert winner["validation_score"] == min(tried.values())
        assert tuple(winner["layers"]) == min(tried, key=tried.get)
    deployed = results["tuning"]["deploy"]["layers"]
    assert [b["name"] for b in results["backbones"]] == list(deployed)
    params = json.loads((tmp_path / "subsets" / "params.json").read_text())
    assert params["backbone"] == results["tuning"]["deploy"]["features"] == {
        ("toy",): "toy@2", ("matminer:composition",): "matminer:composition",
        ("toy", "matminer:composition"): "toy@2+matminer:composition"}[tuple(deployed)]
    # the report lists every study, the kept one of each scope highlighted
    page = (tmp_path / "subsets" / "report.html").read_text()
    tuning = page[page.index("<h2>Tuning</h2>"):]
    assert tuning.count("<tr") == 1 + 6 * 3 and tuning.count('class="highlight"') == 6
    assert ">toy@2+matminer:composition<" in tuning and ">matminer:composition<" in tuning
    _check_tuning_figure(results, tmp_path / "subsets")
    # replayed with the tune's own --backbone: a subset of it is what runs
    replay = CliRunner().invoke(cli, ["run", "--data", str(phonons_path), "--backbone", "toy@2+matminer:composition",
                                      "--limit", "60", "--store", str(tmp_path / "store"), "--jobs", "1", "--workers",
                                      "1", "--params", str(tmp_path / "subsets" / "params.json"), "--out",
                                      str(tmp_path / "replay")])
    assert replay.exit_code == 0, replay.output
    replayed = json.loads((tmp_path / "replay" / "results.json").read_text())
    assert [b["name"] for b in replayed["backbones"]] == list(deployed)


def _check_tuning_figure(results: dict, out: Path) -> None:
    """tuning.png (and the page) show every study's best validation score, one row per scope, the kept one framed."""
    from hacknip.report.figures import tuning_candidates, tuning_figure

    assert (out / "tuning.png").stat().st_size > 10_000 and 'alt="Validation MAE of each candidate' in \
        (out / "report.html").read_text()
    scopes = [*results["tuning"]["per_fold"], results["tuning"]["deploy"]]
    candidates = tuning_candidates(results["tuning"])
    axes = tuning_figure(results).axes[0]
    frames = [(round(p.get_x() + 0.5), round(p.get_y() + 0.5)) for p in axes.patches]
    assert frames == [(candidates.index((w["head"], w["features"])), row) for row, w in enumerate(scopes)]
    cells = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in axes.texts}
    assert len(cells) == len(scopes) * len(candidates)
    for row, winner in enumerate(scopes):
        for study in winner["studies"]:
            assert cells[candidates.index((study["head"], study["features"])), row] == f"{study['best_value']:.4g}"
    labels = [label.get_text() for label in axes.get_yticklabels()]
    assert labels[-1] == "all rows" and labels[0] == f"fold 1 (test {results['folds'][0]['mae']:.4g})"


def test_member_subsets_with_a_swept_layer_tune_each_subset_once(toy_plugin, toy_head, phonons_path, tmp_path):
    """toy's layers 1 and 2 are the candidates: the descriptors alone are one study, not one per toy layer."""
    results = _subsets_tune(phonons_path, tmp_path, "--member-subsets", "--protocol", "paper", "--layers", "1,2",
                            "--backbone", "toy+matminer:composition")
    features = [study["features"] for study in results["tuning"]["deploy"]["studies"]]
    assert sorted(features) == sorted(["toy@1", "matminer:composition", "toy@1+matminer:composition",
                                       "toy@2", "toy@2+matminer:composition"])
    assert len(_studies(tmp_path / "studies.db")) == 5


def test_zero_trials_choose_among_the_heads_defaults_inside_each_training_fold(toy_plugin, toy_head, phonons_path,
                                                                               tmp_path):
    """--trials 0: no search; each candidate (here each member subset) is one trial of the head as it comes, scored on
    the scope's inner folds, and each fold keeps the best of those: an honest choice of features among untuned
    candidates. Its studies are not the searching ones, so neither resumes the other."""
    from hacknip.evaluation.crossval import cross_validate
    from hacknip.evaluation.tuning import _inner_folds
    from hacknip.workflow.run import RunConfig, model_factory, prepare

    _subsets_tune(phonons_path, tmp_path, "--member-subsets", out="searched")
    searched = set(_studies(tmp_path / "studies.db"))
    results = _subsets_tune(phonons_path, tmp_path, "--member-subsets", "--trials", "0")
    studies = {name: trials for name, trials in _studies(tmp_path / "studies.db").items() if name not in searched}
    assert len(studies) == 6 * 3 and all(name.endswith("/defaults") for name in studies)
    assert all(len(trials) == 1 and trials[0].params == {} for trials in studies.values())
    tuning = results["tuning"]
    assert all(winner["head_params"] == {} for winner in [*tuning["per_fold"], tuning["deploy"]])
    assert json.loads((tmp_path / "subsets" / "params.json").read_text())["head_params"] == {}

    config = RunConfig(data=str(phonons_path), backbone="toy@2+matminer:composition", head="knn", limit=60,
                       store=str(tmp_path / "store"), workers=1)
    prepared = prepare(config)
    folds = _inner_folds(prepared.y, prepared.task, 3)
    untuned = model_factory(config, prepared.task)
    for study in tuning["deploy"]["studies"]:
        scores = cross_validate(prepared.matrix(study["layers"]), prepared.y, folds, untuned)
        assert study["best_value"] == pytest.approx(scores.mean())


def test_negative_trials_are_a_clear_error(toy_plugin, toy_head, phonons_path, tmp_path):
    result = CliRunner().invoke(cli, ["tune", "--data", str(phonons_path), "--backbone", "toy@2", "--head", "knn",
                                      "--limit", "60", "--trials", "-1", "--storage", str(tmp_path / "s.db")])
    assert result.exit_code == 1 and "--trials must be 0 (the head's defaults only) or more" in result.output


def test_several_heads_are_chosen_among_inside_each_training_fold(toy_plugin, toy_head, phonons_path, tmp_path):
    """--head knn,ridge: each scope tunes both heads in the studies a tune of each head alone makes, keeps the head
    whose best study validates best, and each outer fold is the refit of its own winner: its test score is the one
    the tune of that head alone gave the fold."""
    alone = {head: _tune(phonons_path, tmp_path, "--head", head, "--trials", "3", out=head)[1] for head in ("knn", "ridge")}
    studies = set(_studies(tmp_path / "studies.db"))
    result, both = _tune(phonons_path, tmp_path, "--head", "knn,ridge", "--trials", "3", out="both")
    assert set(_studies(tmp_path / "studies.db")) == studies  # each head's studies resumed, none added
    assert "tuned scopes (5 outer folds, then all rows): 6/6" in result.output  # the whole search's progress
    tuning = both["tuning"]
    assert tuning["heads"] == ["knn", "ridge"]
    for number, winner in enumerate(tuning["per_fold"]):
        assert {study["head"] for study in winner["studies"]} == {"knn", "ridge"}
        assert winner["validation_score"] == min(study["best_value"] for study in winner["studies"])
        own = alone[winner["head"]]
        assert own["tuning"]["per_fold"][number]["validation_score"] == winner["validation_score"]
        assert both["folds"][number]["mae"] == pytest.approx(own["folds"][number]["mae"])
        assert f"tuned fold{number}" in result.output and f"→ {winner['head']}, validation" in result.output
    deploy = tuning["deploy"]
    params = json.loads((tmp_path / "both" / "params.json").read_text())
    assert params["head"] == deploy["head"] == both["head"]
    assert params["head_params"] == alone[deploy["head"]]["params"]["head_params"]
    page = (tmp_path / "both" / "report.html").read_text()
    assert page[page.index("<h2>Tuning</h2>"):].count('class="highlight"') == 6
    _check_tuning_figure(both, tmp_path / "both")
    _check_tuning_figure(alone["knn"], tmp_path / "knn")  # one head, three layers: a column each
    from hacknip.report.figures import tuning_figure

    columns = [label.get_text() for label in tuning_figure(alone["knn"]).axes[0].get_xticklabels()]
    assert columns == ["toy@0", "toy@1", "toy@2"]


def test_a_head_param_prefixed_with_a_head_goes_to_that_head_only(toy_plugin, toy_head, phonons_path, tmp_path):
    """--head-param knn:n_neighbors=3 fixes knn's neighbours and leaves ridge, which has no such hyperparameter (it
    would fail on it), alone: the knn studies are those of a knn-only tune with n_neighbors=3, resumed, not new."""
    _, alone = _tune(phonons_path, tmp_path, "--head", "knn", "--trials", "0", "--head-param", "n_neighbors=3",
                     out="knn")
    knn_studies = set(_studies(tmp_path / "studies.db"))
    _, both = _tune(phonons_path, tmp_path, "--head", "knn,ridge", "--trials", "0", "--head-param",
                    "knn:n_neighbors=3", "--head-param", "ridge:cv=3", out="both")
    knn_in_both = {study["study"] for winner in both["tuning"]["per_fold"] for study in winner["studies"]
                   if study["head"] == "knn"}
    assert knn_in_both and knn_in_both <= knn_studies
    for number, winner in enumerate(both["tuning"]["per_fold"]):
        knn = min(study["best_value"] for study in winner["studies"] if study["head"] == "knn")
        assert knn == alone["tuning"]["per_fold"][number]["validation_score"]
    params = json.loads((tmp_path / "both" / "params.json").read_text())
    assert params["head_params"] == ({"n_neighbors": 3} if params["head"] == "knn" else {"cv": 3})


def test_a_head_param_prefixed_with_a_head_the_command_does_not_use_is_a_clear_error(toy_plugin, phonons_path):
    result = CliRunner().invoke(cli, ["run", "--data", str(phonons_path), "--backbone", "toy@2", "--head", "ridge",
                                      "--head-param", "lightgbm:n_estimators=5", "--limit", "20"])
    assert result.exit_code == 1
    assert "'lightgbm' is not a head this command uses (ridge)" in result.output


def test_run_takes_a_head_param_prefixed_with_its_own_head(toy_plugin, phonons_path, tmp_path):
    run = ["run", "--data", str(phonons_path), "--backbone", "toy@2", "--head", "ridge", "--limit", "40"]
    result = CliRunner().invoke(cli, [*run, "--head-param", "ridge:cv=3", "--out", str(tmp_path / "r")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "results.json").read_text())["head_params"] == {"cv": 3}


@pytest.mark.parametrize("head", ["knn,,ridge", "knn,knn"])
def test_a_head_list_with_a_blank_or_a_repeat_is_a_clear_error(toy_plugin, toy_head, phonons_path, tmp_path, head):
    result = CliRunner().invoke(cli, ["tune", "--data", str(phonons_path), "--backbone", "toy@2", "--head", head,
                                      "--limit", "60", "--storage", str(tmp_path / "s.db")])
    assert result.exit_code == 1 and "name one head, or several different ones joined by ','" in result.output


def test_run_refuses_a_list_of_heads_and_points_to_tune(toy_plugin, phonons_path):
    result = CliRunner().invoke(cli, ["run", "--data", str(phonons_path), "--backbone", "toy@2", "--head",
                                      "ridge,lightgbm", "--limit", "20"])
    assert result.exit_code == 1
    assert "several heads joined by ',' are for hacknip tune" in result.output and "name one head here" in result.output


def test_a_subset_leaves_the_other_members_columns_out(toy_plugin, phonons_path, tmp_path):
    from hacknip.workflow.run import RunConfig, prepare

    prepared = prepare(RunConfig(data=str(phonons_path), backbone="toy@2+matminer:composition", limit=20,
                                 store=str(tmp_path / "store"), workers=1))
    both = prepared.matrix({"toy": [2], "matminer:composition": [0]})
    toy = prepared.matrix({"toy": [2]})
    descriptors = prepared.matrix({"matminer:composition": [0]})
    assert toy.shape[1] + descriptors.shape[1] == both.shape[1]
    np.testing.assert_array_equal(np.concatenate([toy, descriptors], axis=1), both)


def test_member_subsets_of_one_member_is_a_clear_error(toy_plugin, toy_head, phonons_path, tmp_path):
    result = CliRunner().invoke(cli, ["tune", "--data", str(phonons_path), "--backbone", "toy@2", "--head", "knn",
                                      "--limit", "60", "--member-subsets", "--storage", str(tmp_path / "s.db")])
    assert result.exit_code == 1 and "--member-subsets needs two or more members" in result.output


def test_an_interrupted_tune_stops_after_the_running_trials_and_resumes_from_them(toy_plugin, toy_head, phonons_path,
                                                                                  tmp_path):
    """Ctrl-C reaches only the main thread. The scopes tuned at once in other threads used to run every study to its
    end before the interrupt surfaced; now each stops after the trial it is running, the scopes not yet started never
    start, and the same call resumes from the stored trials."""
    import signal
    import threading

    from toy_head import KNNHead

    import hacknip
    from hacknip.evaluation.tuning import TuningInterrupted

    storage = tmp_path / "studies.db"
    fit, timers = KNNHead.fit, []

    def fit_and_interrupt_once(head, X, y):
        if not timers:  # Ctrl-C half a second into tuning
            main = threading.main_thread().ident
            timers.append(threading.Timer(0.5, signal.pthread_kill, (main, signal.SIGINT)))
            timers[0].start()
        return fit(head, X, y)

    def tune():
        return hacknip.tune(phonons_path, "toy@1", "knn", trials=8, patience=8, storage=str(storage), limit=100,
                            jobs=2, head_params={"fit_delay": 0.05})

    KNNHead.fit = fit_and_interrupt_once
    # a process started in the background ignores SIGINT (as CI's may): Ctrl-C's handler, as in a terminal
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(TuningInterrupted, match=f"stored in sqlite:///{storage}") as interrupted:
            tune()
    finally:
        KNNHead.fit = fit
        signal.signal(signal.SIGINT, handler)
    assert "Run the same command again" in str(interrupted.value)
    kept = _studies(storage)
    # 8 trials of 3 inner fits of 0.05 s take a scope 1.2 s and Ctrl-C comes at 0.5 s: every started scope stopped short
    # of its end (before, the running ones finished) and the rest never started. Counted, not timed, so that a loaded
    # machine, which slows every trial alike, cannot fail it.
    finished = [sum(t.state.name == "COMPLETE" for t in trials) for trials in kept.values()]
    assert 0 < len(kept) < 6 and all(count < 8 for count in finished)

    result = tune()
    assert result.to_dict()["tuning"]["per_fold"]
    resumed = _studies(storage)
    assert len(resumed) == 6 and all(sum(t.state.name == "COMPLETE" for t in trials) == 8 for trials in resumed.values())
