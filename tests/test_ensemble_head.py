"""The ensemble head: the average of its members, tuned as one, saved and predicted like any head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import write_cif_table
from test_head_conformance import SMALL

from hacknip.cli import cli
from hacknip.errors import HacknipError
from hacknip.plugins.head import CLASSIFICATION
from hacknip.plugins.registry import create_head
from hacknip.plugins.testing import easy_classification, easy_regression

pytestmark = pytest.mark.usefixtures("single_threaded_torch")

MEMBERS = "ridge+lightgbm"
PARAMS = {"ridge": SMALL["ridge"], "lightgbm": SMALL["lightgbm"]}


@pytest.fixture
def regression_data():
    return easy_regression()


@pytest.fixture
def classification_data():
    return easy_classification()


def test_regression_is_the_mean_of_the_members(regression_data):
    X_train, y_train, X_test, _ = regression_data
    ensemble = create_head("ensemble", members=MEMBERS, params=PARAMS).fit(X_train, y_train)
    alone = [create_head(name, **params).fit(X_train, y_train).predict(X_test) for name, params in PARAMS.items()]
    np.testing.assert_allclose(ensemble.predict(X_test), np.mean(alone, axis=0), rtol=1e-12)


def test_classification_averages_the_probabilities_and_keeps_the_labels(classification_data):
    X_train, y_train, X_test, _ = classification_data
    labels = np.where(y_train == 1, "toxic", "safe")
    ensemble = create_head("ensemble", task=CLASSIFICATION, members=MEMBERS, params=PARAMS).fit(X_train, labels)
    alone = [create_head(name, task=CLASSIFICATION, **params).fit(X_train, y_train).predict_proba(X_test)[:, 1]
             for name, params in PARAMS.items()]
    np.testing.assert_allclose(ensemble.predict_proba(X_test)[:, 1], np.mean(alone, axis=0), rtol=1e-12)
    assert set(ensemble.predict(X_test)) <= {"safe", "toxic"}


@pytest.mark.parametrize(("params", "message"), [
    ({"members": "ridge+nosuchhead"}, "nosuchhead"),
    ({"members": "ridge+ensemble"}, "cannot be one of its own members"),
    ({"members": "ridge+ridge"}, "name ridge more than once"),
    ({"members": ""}, "members must name heads joined by '+'"),
    ({"members": "ridge", "params": {"lightgbm": {}}}, "params for lightgbm, which members ('ridge') does not name"),
    ({"members": "ridge", "params": {"ridge": 3}}, "params must map member names to their hyperparameters"),
])
def test_bad_members_or_params_are_one_line(regression_data, params, message):
    X_train, y_train, _, _ = regression_data
    with pytest.raises(HacknipError) as error:
        create_head("ensemble", **params).fit(X_train, y_train)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_search_space_holds_every_members_space_apart():
    import optuna

    from hacknip.evaluation.tuning import head_search_space
    from hacknip.plugins.registry import get_head_spec

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = head_search_space(get_head_spec("ensemble"), {"members": "xgboost+lightgbm"})(trial)
    assert set(params) == {"params"} and set(params["params"]) == {"xgboost", "lightgbm"}
    assert trial.params["lightgbm:learning_rate"] == params["params"]["lightgbm"]["learning_rate"]
    assert trial.params["xgboost:learning_rate"] == params["params"]["xgboost"]["learning_rate"]
    create_head("ensemble", members="xgboost+lightgbm", **params)  # what the trial gives is what the head takes


@pytest.fixture
def cif_table(phonons_path, tmp_path):
    return write_cif_table(phonons_path, tmp_path / "structures.csv", 60, "last phdos peak")


def _invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_tuned_ensemble_is_saved_and_predicts(toy_plugin, cif_table, tmp_path):
    head = ["--head", "ensemble", "--head-param", f"members={MEMBERS}", "--head-param", 'params={"lightgbm": {"n_jobs": 1}}']
    _invoke("tune", "--data", cif_table, "--id-column", "name", "--backbone", "toy@1", *head, "--trials", "2",
            "--inner-folds", "2", "--storage", tmp_path / "studies.db", "--out", tmp_path / "tuned")
    tuned = json.loads((tmp_path / "tuned" / "results.json").read_text())
    deployed = tuned["params"]["head_params"]
    assert deployed["members"] == MEMBERS and set(deployed["params"]) == {"ridge", "lightgbm"}
    assert deployed["params"]["lightgbm"]["n_jobs"] == 1 and "learning_rate" in deployed["params"]["lightgbm"]
    assert tuned["head_params"] == deployed  # what the final scoring ran with: the tuned values and the fixed one

    params_file = tmp_path / "tuned" / "params.json"
    _invoke("run", "--params", params_file, "--backbone", "toy@1", "--data", cif_table, "--id-column", "name",
            "--head-param", 'params={"lightgbm": {"n_jobs": 1}}', "--save", tmp_path / "model",
            "--out", tmp_path / "run")
    saved = json.loads((tmp_path / "model" / "model.json").read_text())
    assert saved["head_params"]["params"] == {"ridge": deployed["params"]["ridge"],
                                              "lightgbm": {**deployed["params"]["lightgbm"], "n_jobs": 1}}
    assert [member["name"] for member in saved["head_state"]["members"]] == ["ridge", "lightgbm"]
    _invoke("predict", tmp_path / "model", "--data", cif_table, "--id-column", "name", "--out", tmp_path / "p.csv")
    predictions = pd.read_csv(tmp_path / "p.csv")
    assert len(predictions) == 60 and np.isfinite(predictions["predicted"]).all()


def test_a_members_fixed_hyperparameter_keeps_the_others_tuned():
    from hacknip.workflow.run import RunConfig, model_factory

    tuned = {"params": {"ridge": {"alphas": [0.5]}, "lightgbm": {"n_estimators": 7, "num_leaves": 5}}}
    config = RunConfig(data=Path("unused.csv"), backbone="toy", head="ensemble",
                       head_params={"members": MEMBERS, "params": {"lightgbm": {"n_jobs": 1}}})
    head = model_factory(config, "regression", tuned=tuned)()[-1]
    assert head.params == {"ridge": {"alphas": [0.5]}, "lightgbm": {"n_estimators": 7, "num_leaves": 5, "n_jobs": 1}}


SEEDED = {"modnet": {**SMALL["modnet"], "n_feat": None}}


def test_seeds_average_one_fit_of_each_member_per_successive_random_state(regression_data):
    X_train, y_train, X_test, _ = regression_data
    ensemble = create_head("ensemble", members="modnet", params=SEEDED, seeds=3, random_state=4).fit(X_train, y_train)
    alone = [create_head("modnet", **SEEDED["modnet"], random_state=seed).fit(X_train, y_train).predict(X_test)
             for seed in (4, 5, 6)]
    assert not np.allclose(alone[0], alone[1])  # the seed matters, so a fit that ignored seeds would fail below
    np.testing.assert_allclose(ensemble.predict(X_test), np.mean(alone, axis=0), rtol=1e-6)
    assert [name for name, _ in ensemble.members_] == ["modnet"] * 3


def test_seeds_refuse_a_member_without_a_random_state(regression_data, toy_head):
    X_train, y_train, _, _ = regression_data
    with pytest.raises(HacknipError, match="member 'knn' takes no random_state, so seeds=2 would fit the same head"):
        create_head("ensemble", members="modnet+knn", params=SEEDED, seeds=2).fit(X_train, y_train)
    create_head("ensemble", members="modnet+knn", params=SEEDED, seeds=1).fit(X_train, y_train)


def test_a_seeded_ensemble_is_saved_and_restored(regression_data):
    X_train, y_train, X_test, _ = regression_data
    params = {"members": "modnet", "params": SEEDED, "seeds": 2}
    fitted = create_head("ensemble", **params).fit(X_train, y_train)
    meta, arrays = fitted.get_state()
    restored = type(fitted).from_state(params, meta, arrays)
    np.testing.assert_array_equal(restored.predict(X_test), fitted.predict(X_test))
    with pytest.raises(HacknipError, match="saved members .* are not those members='modnet', seeds=3"):
        type(fitted).from_state({**params, "seeds": 3}, meta, arrays)


@pytest.mark.parametrize("seeds", [0, -1, 1.5, True, "3"])
def test_seeds_that_are_not_a_positive_int_are_one_line(regression_data, seeds):
    X_train, y_train, _, _ = regression_data
    with pytest.raises(HacknipError, match="seeds must be a positive int") as error:
        create_head("ensemble", members="modnet", params=SEEDED, seeds=seeds).fit(X_train, y_train)
    assert "\n" not in str(error.value)
