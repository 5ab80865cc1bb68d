"""The MODNet head: upstream's relevance-redundancy feature selection, learning, classification, reproducibility,
hyperparameter checks and creation by name. What every head promises is checked by test_head_conformance.py."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_friedman1
from sklearn.preprocessing import StandardScaler

from hacknip.plugins.head import CLASSIFICATION, REGRESSION
from hacknip.plugins.registry import create_head
from hacknip_heads.modnet import (
    MODNetHead,
    cross_nmi,
    rank_features,
    relevance_redundancy_ranking,
    rr_c,
    rr_p,
    self_information,
)

# Small networks and few epochs keep this file fast; the defaults are sized for real datasets.
FAST = {"num_neurons": ([32], [16], [8], []), "epochs": 60, "batch_size": 32, "lr": 0.005}


pytestmark = pytest.mark.usefixtures("single_threaded_torch")


@pytest.fixture(scope="module")
def selection_problem():
    """y depends on three columns; one more column nearly duplicates the first of them; twenty are noise."""
    rng = np.random.default_rng(0)
    n = 400
    informative = rng.normal(size=(n, 3))
    y = np.sin(2 * informative[:, 0]) + informative[:, 1] ** 2 + informative[:, 2] + 0.1 * rng.normal(size=n)
    near_duplicate = informative[:, [0]] + 0.01 * rng.normal(size=(n, 1))
    noise = rng.normal(size=(n, 20))
    X = np.hstack([noise[:, :10], informative[:, [0]], near_duplicate, informative[:, 1:], noise[:, 10:]])
    return X, y, {"informative": {10, 12, 13}, "near_duplicate": 11}


@pytest.fixture(scope="module")
def regression_data():
    X, y = make_friedman1(n_samples=500, n_features=10, noise=0.3, random_state=0)
    scaler = StandardScaler().fit(X[:400])
    return scaler.transform(X[:400]), y[:400], scaler.transform(X[400:]), y[400:]


@pytest.fixture(scope="module")
def classification_data():
    X, y = make_classification(n_samples=500, n_features=15, n_informative=5, random_state=0)
    return X[:400], y[:400], X[400:], y[400:]


# -- feature selection --------------------------------------------------------------------------------------------

def test_pc_schedule_is_upstreams():
    # get_rr_p_parameter_default / get_rr_c_parameter_default of modnet 0.4.5
    assert rr_p(0) == 4.5 and rr_c(0) == 0.0
    assert rr_p(10) == pytest.approx(4.5 - 0.4 * 10**0.4)
    assert rr_p(10_000) == 0.1
    assert rr_c(100) == pytest.approx(1.0)
    assert rr_c(10**4) == 1e5


def test_ranking_prefers_an_independent_column_over_a_redundant_more_relevant_one():
    relevance = np.array([1.0, 0.9, 0.5])
    redundancy = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert relevance_redundancy_ranking(relevance, redundancy, 3).tolist() == [0, 2, 1]
    assert relevance_redundancy_ranking(relevance, redundancy, 2).tolist() == [0, 2]


def test_cross_nmi_is_one_for_copies_and_small_for_independent_columns():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 500))
    X = np.column_stack([a, np.exp(a), b])  # a monotone transform carries all of a's information
    nmi = cross_nmi(X, self_information(X, seed=0))
    assert nmi[0, 1] > 0.99
    assert nmi[0, 2] < 0.05 and nmi[1, 2] < 0.05  # the binned estimate's small-sample bias, not dependence
    np.testing.assert_allclose(nmi, nmi.T)


def test_selection_keeps_informative_columns_and_ranks_the_near_duplicate_after_them(selection_problem):
    X, y, columns = selection_problem
    ranking = rank_features(X, y, REGRESSION, random_state=0).tolist()
    assert columns["informative"] <= set(ranking[:4])
    assert ranking.index(columns["near_duplicate"]) > max(ranking.index(c) for c in columns["informative"])


def test_selection_drops_constant_and_exactly_duplicated_columns(selection_problem):
    X, y, _ = selection_problem
    padded = np.hstack([X, np.ones((len(X), 1)), X[:, [12]]])  # a constant column, a copy of column 12
    ranking = rank_features(padded, y, REGRESSION, random_state=0)
    assert X.shape[1] not in ranking and X.shape[1] + 1 not in ranking
    assert len(ranking) == X.shape[1]


def test_head_uses_the_selected_columns(selection_problem):
    X, y, columns = selection_problem
    one_epoch = {**FAST, "epochs": 1}
    head = MODNetHead(n_feat=4, **one_epoch).fit(X, y)
    assert head.n_feat_ == 4 and columns["informative"] <= set(head.selected_features_.tolist())
    first = MODNetHead(n_feat=4, feature_selection="first", **one_epoch).fit(X, y)
    assert first.selected_features_.tolist() == [0, 1, 2, 3]


# -- learning ----------------------------------------------------------------------------------------------------

def test_regression_beats_the_mean_by_far(regression_data):
    X_train, y_train, X_test, y_test = regression_data
    head = MODNetHead(**FAST).fit(X_train, y_train)
    mae = np.abs(head.predict(X_test) - y_test).mean()
    dummy_mae = np.abs(y_train.mean() - y_test).mean()
    assert mae < 0.4 * dummy_mae, (mae, dummy_mae)
    assert head.hidden_layer_sizes_ == (32, 16, 8) and head.n_epochs_ == FAST["epochs"]


def test_classification_accuracy(classification_data):
    # Probabilities' shape and range, and the absence of predict_proba for regression: the HeadConformance suite.
    X_train, y_train, X_test, y_test = classification_data
    head = MODNetHead(task=CLASSIFICATION, n_feat=10, **FAST).fit(X_train, y_train)
    assert np.mean(head.predict(X_test) == y_test) > 0.8


def test_other_random_states_give_other_models(regression_data):
    # That the same state gives the same model is checked by the HeadConformance suite.
    X_train, y_train, X_test, _ = regression_data
    params = {**FAST, "epochs": 10}
    first = MODNetHead(random_state=3, **params).fit(X_train, y_train).predict(X_test)
    other = MODNetHead(random_state=4, **params).fit(X_train, y_train).predict(X_test)
    assert not np.allclose(first, other)


def test_early_stopping_on_a_validation_split_stops_before_the_epoch_budget(regression_data):
    X_train, y_train, _, _ = regression_data
    head = MODNetHead(**{**FAST, "epochs": 500, "lr": 0.02}, patience=5, val_fraction=0.2).fit(X_train, y_train)
    assert head.n_epochs_ < 500
    assert len(head.history_["val_loss"]) == head.n_epochs_


def test_fourth_block_is_ignored_as_upstream_does(regression_data):
    X_train, y_train, _, _ = regression_data
    head = MODNetHead(**{**FAST, "epochs": 1, "num_neurons": ([8], [4], [2], [99])}).fit(X_train, y_train)
    assert head.hidden_layer_sizes_ == (8, 4, 2)


def test_remap_out_of_bounds_keeps_predictions_inside_the_training_range(regression_data):
    X_train, y_train, X_test, _ = regression_data
    head = MODNetHead(**{**FAST, "epochs": 1}, remap_out_of_bounds=True, clip_features=False).fit(X_train, y_train)
    far = X_test * 1e4  # unclipped, pushes raw outputs far outside the widened training range
    predictions = head.predict(far)
    assert np.all((predictions >= y_train.min()) & (predictions <= y_train.max()))
    np.testing.assert_array_equal(predictions, head.predict(far))


# -- hyperparameters ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("params", "message"), [
    ({"num_neurons": [64, 32]}, "num_neurons must be 4 blocks"),
    ({"num_neurons": ([64], [0], [], [])}, "positive ints"),
    ({"num_neurons": ([], [], [], [64])}, "fourth is ignored"),
    ({"act": "relu6"}, "act='relu6' is not supported"),
    ({"loss": "huber"}, "loss='huber' is not supported for task='regression'"),
    ({"task": CLASSIFICATION, "loss": "mae"}, "loss='mae' is not supported for task='classification'"),
    ({"n_feat": 0}, "n_feat must be a positive int"),
    ({"lr": -1.0}, "lr .learning rate. must be a positive number"),
    ({"batch_size": 0}, "batch_size must be a positive int"),
    ({"patience": 0}, "patience must be a positive int"),
    ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
    ({"xscale": "robust"}, "xscale='robust' is not supported"),
    ({"feature_selection": "mrmr"}, "feature_selection='mrmr' is not supported"),
])
def test_bad_hyperparameters_are_named(params, message):
    X, y = make_friedman1(n_samples=40, n_features=5, random_state=0)
    if params.get("task") == CLASSIFICATION:
        y = (y > np.median(y)).astype(int)
    with pytest.raises(ValueError, match=message):
        MODNetHead(**params).fit(X, y)


def test_search_space_builds_the_papers_blocks_from_depth_and_width():
    optuna = pytest.importorskip("optuna")
    trial = optuna.trial.FixedTrial({"depth": 2, "width": 132, "n_feat": 255, "lr": 0.004464, "batch_size": 32,
                                     "out_act": "relu"})
    params = MODNetHead.search_space(trial)
    assert params["num_neurons"] == ([132], [132], [], [])
    assert MODNetHead(**params)._checked_hyperparameters() == [[132], [132], [], []]


def test_created_by_name():  # its spec (package, tasks) is checked with the other heads' in test_heads.py
    head = create_head("modnet", n_feat=5, task=CLASSIFICATION)
    assert isinstance(head, MODNetHead) and head.n_feat == 5 and head.random_state == 0
