"""The hacknip-heads plugin: registration, accuracy on small synthetic problems, scikit-learn compatibility,
input validation, and a light plugin import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.datasets import make_classification, make_friedman1
from sklearn.metrics import mean_absolute_error, roc_auc_score
from sklearn.preprocessing import StandardScaler

from hacknip.plugins.head import CLASSIFICATION, REGRESSION, Head
from hacknip.plugins.registry import create_head, head_specs

HEAD_NAMES = ["lightgbm", "xgboost", "mlp", "ridge"]
BOTH_TASKS = frozenset({REGRESSION, CLASSIFICATION})
HEAVY_MODULES = ["torch", "lightgbm", "xgboost", "sklearn"]

# Small training budgets keep this file fast; the defaults are sized for real datasets. One thread each: the
# few CPU cores here are shared, and multithreaded boosting stalls badly when they are oversubscribed.
FAST_PARAMS = {
    "lightgbm": {"n_estimators": 200, "learning_rate": 0.05, "n_jobs": 1},
    "xgboost": {"n_estimators": 200, "learning_rate": 0.05, "n_jobs": 1},
    "mlp": {"max_epochs": 150},
    "ridge": {},
}


def fast_head(name: str, **params):
    return create_head(name, **{"random_state": 0, **FAST_PARAMS[name], **params})


def standardised_split(X, y, n_train):
    scaler = StandardScaler().fit(X[:n_train])
    return scaler.transform(X[:n_train]), y[:n_train], scaler.transform(X[n_train:]), y[n_train:]


# Like the boosting heads' n_jobs=1 above (the fixture is in conftest.py).
pytestmark = pytest.mark.usefixtures("single_threaded_torch")


@pytest.fixture(scope="module")
def regression_data():
    X, y = make_friedman1(n_samples=400, noise=0.5, random_state=0)
    return standardised_split(X, y, n_train=300)


@pytest.fixture(scope="module")
def classification_data():
    X, y = make_classification(n_samples=400, n_features=20, n_informative=5, random_state=0)
    return standardised_split(X, y, n_train=300)


@pytest.fixture(scope="module", params=HEAD_NAMES)
def fitted_regressor(request, regression_data):
    X_train, y_train, _, _ = regression_data
    return fast_head(request.param).fit(X_train, y_train)


@pytest.fixture(scope="module", params=HEAD_NAMES)
def fitted_classifier(request, classification_data):
    X_train, y_train, _, _ = classification_data
    return fast_head(request.param, task=CLASSIFICATION).fit(X_train, y_train)


def test_every_head_is_registered_by_this_package():
    specs = head_specs()
    for name in HEAD_NAMES:
        spec = specs[name]
        assert spec.package == "hacknip-heads"
        assert spec.factory.startswith("hacknip_heads.")
        assert spec.task_kinds == BOTH_TASKS
        assert spec.description


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_created_heads_satisfy_the_protocol(name):
    head = create_head(name)
    assert isinstance(head, Head)
    assert type(head).task_kinds == BOTH_TASKS
    assert is_regressor(head)
    assert is_classifier(create_head(name, task=CLASSIFICATION))


def test_regression_beats_the_mean_predictor(fitted_regressor, regression_data):
    _, y_train, X_test, y_test = regression_data
    dummy_mae = mean_absolute_error(y_test, np.full_like(y_test, y_train.mean()))
    head_mae = mean_absolute_error(y_test, fitted_regressor.predict(X_test))
    assert head_mae < 0.6 * dummy_mae


def test_classification_ranks_well_and_gives_probabilities(fitted_classifier, classification_data):
    _, _, X_test, y_test = classification_data
    probabilities = fitted_classifier.predict_proba(X_test)
    assert probabilities.shape == (len(X_test), 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert roc_auc_score(y_test, probabilities[:, 1]) > 0.8
    labels = fitted_classifier.predict(X_test)
    np.testing.assert_array_equal(labels, (probabilities[:, 1] > 0.5).astype(int))


def test_same_random_state_gives_identical_predictions(fitted_regressor, regression_data):
    X_train, y_train, X_test, _ = regression_data
    refitted = clone(fitted_regressor).fit(X_train, y_train)
    np.testing.assert_array_equal(refitted.predict(X_test), fitted_regressor.predict(X_test))


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_clone_and_set_params_round_trip(name):
    head = fast_head(name, task=CLASSIFICATION, random_state=7)
    params = head.get_params()
    assert clone(head).get_params() == params
    assert create_head(name).set_params(**params).get_params() == params


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_nan_in_features_names_the_first_bad_row(name, regression_data):
    X_train, y_train, _, _ = regression_data
    X_bad = X_train.copy()
    X_bad[[17, 40], 3] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN.* row 17, column 3"):
        fast_head(name).fit(X_bad, y_train)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_infinite_target_names_the_row(name, regression_data):
    X_train, y_train, _, _ = regression_data
    y_bad = y_train.copy()
    y_bad[5] = np.inf
    with pytest.raises(ValueError, match=r"y contains .* row 5 \(infinity\)"):
        fast_head(name).fit(X_train, y_bad)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_classification_rejects_non_binary_labels(name, classification_data):
    X_train, y_train, _, _ = classification_data
    y_three_classes = y_train.copy()
    y_three_classes[:10] = 2
    with pytest.raises(ValueError, match=r"found labels \[0, 1, 2\]"):
        fast_head(name, task=CLASSIFICATION).fit(X_train, y_three_classes)


def test_regression_heads_have_no_predict_proba(fitted_regressor, regression_data):
    assert not hasattr(fitted_regressor, "predict_proba")
    with pytest.raises(AttributeError, match="needs task='classification'"):
        fitted_regressor.predict_proba(regression_data[2])


def test_predict_rejects_a_different_feature_count(fitted_regressor, regression_data):
    X_test = regression_data[2]
    with pytest.raises(ValueError, match="X has 9 features, but .*Head is expecting 10 features"):
        fitted_regressor.predict(X_test[:, :9])


class LowestValueTrial:
    """Stands in for an Optuna trial, always answering the low end of each range."""

    def suggest_int(self, name, low, high, **kwargs):
        return low

    def suggest_float(self, name, low, high, **kwargs):
        return low

    def suggest_categorical(self, name, choices):
        return choices[0]


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_search_space_gives_hyperparameters_the_head_accepts(name, regression_data):
    X_train, y_train, X_test, _ = regression_data
    head_class = type(create_head(name))
    params = head_class.search_space(LowestValueTrial())
    head = fast_head(name, max_epochs=10) if name == "mlp" else fast_head(name)
    head.set_params(**params).fit(X_train[:100], y_train[:100])
    assert np.isfinite(head.predict(X_test)).all()


@pytest.mark.parametrize("task", [REGRESSION, CLASSIFICATION])
def test_mlp_with_default_settings_fits_100_samples(task, regression_data):
    X_train, y_train, X_test, _ = regression_data
    X_small = X_train[:100]
    y_small = y_train[:100] if task == REGRESSION else (y_train[:100] > np.median(y_train)).astype(int)
    head = create_head("mlp", task=task, random_state=0).fit(X_small, y_small)
    assert head.best_epoch_ <= head.n_epochs_ <= 400
    assert np.isfinite(head.predict(X_test)).all()


def test_mlp_leaves_the_global_torch_random_state_alone(regression_data):
    X_train, y_train, _, _ = regression_data
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fast_head("mlp", max_epochs=2).fit(X_train, y_train)
    torch.testing.assert_close(torch.rand(3), expected)


def test_plugin_import_loads_no_heavy_library():
    code = (
        "import sys, hacknip_heads.plugin as plugin\n"
        "specs = []\n"
        "plugin.register_heads(register=specs.append)\n"
        f"print(sorted(s.name for s in specs), [m for m in {HEAVY_MODULES!r} if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['lightgbm', 'mlp', 'modnet', 'ridge', 'xgboost'] []"
