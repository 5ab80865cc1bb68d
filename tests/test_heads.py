"""The heads: scikit-learn's estimator checks, registration, hacknip's input messages, the MLP's specifics and a light
plugin import. What every head promises (protocol, shapes, determinism, learning, probabilities, saving, search
spaces) is checked once, by the HeadConformance suite in test_head_conformance.py."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification, make_friedman1
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from test_head_conformance import SMALL, small_head

from hacknip.plugins.head import CLASSIFICATION, REGRESSION
from hacknip.plugins.registry import head_specs

HEADS_PACKAGE_NAMES = ["lightgbm", "xgboost", "mlp", "modnet"]
BOTH_TASKS = frozenset({REGRESSION, CLASSIFICATION})
HEAVY_MODULES = ["torch", "lightgbm", "xgboost", "sklearn"]

# Like the boosting heads' n_jobs=1 (the fixture is in conftest.py).
pytestmark = pytest.mark.usefixtures("single_threaded_torch")


# -- scikit-learn's estimator checks --------------------------------------------------------------------------------

# Checks that cannot apply to a head by design, per head class and task, with the reason. Everything else passes.
EXPECTED_FAILED_CHECKS = {
    ("RidgeHead", REGRESSION): {
        "check_non_transformer_estimators_n_iter":
            "max_iter bounds LogisticRegressionCV, i.e. classification only; regression is RidgeCV's closed-form "
            "leave-one-out solve, which runs no iterations, so there is no n_iter_ to report",
    },
}


def expected_failed_checks(estimator) -> dict[str, str]:
    return EXPECTED_FAILED_CHECKS.get((type(estimator).__name__, estimator.task), {})


@parametrize_with_checks([small_head(name, task=task) for name in SMALL for task in (REGRESSION, CLASSIFICATION)],
                         expected_failed_checks=expected_failed_checks, xfail_strict=True)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


# -- registration and input messages --------------------------------------------------------------------------------

def test_heads_are_registered_by_their_package():
    specs = head_specs()
    for name in HEADS_PACKAGE_NAMES:
        spec = specs[name]
        assert spec.package == "hacknip-heads"
        assert spec.factory.startswith("hacknip_heads.")
        assert spec.task_kinds == BOTH_TASKS
        assert spec.description
    ridge = specs["ridge"]  # the light linear baseline comes with hacknip-core, so that it alone can run a job
    assert ridge.package == "hacknip-core" and ridge.factory.startswith("hacknip.plugins.")
    assert ridge.task_kinds == BOTH_TASKS


def test_ridge_head_is_still_importable_from_hacknip_heads():
    from hacknip.plugins.ridge_head import RidgeHead as CoreRidgeHead
    from hacknip_heads import RidgeHead

    assert RidgeHead is CoreRidgeHead


@pytest.fixture(scope="module")
def regression_data():
    X, y = make_friedman1(n_samples=400, noise=0.5, random_state=0)
    scaler = StandardScaler().fit(X[:300])
    return scaler.transform(X[:300]), y[:300], scaler.transform(X[300:]), y[300:]


@pytest.fixture(scope="module")
def classification_data():
    X, y = make_classification(n_samples=400, n_features=20, n_informative=5, random_state=0)
    return X[:300], y[:300], X[300:], y[300:]


@pytest.mark.parametrize("name", SMALL)
def test_nan_in_features_names_the_first_bad_row(name, regression_data):
    X_train, y_train, _, _ = regression_data
    X_bad = X_train.copy()
    X_bad[[17, 40], 3] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN.* row 17, column 3"):
        small_head(name).fit(X_bad, y_train)


@pytest.mark.parametrize("name", SMALL)
def test_infinite_target_names_the_row(name, regression_data):
    X_train, y_train, _, _ = regression_data
    y_bad = y_train.copy()
    y_bad[5] = np.inf
    with pytest.raises(ValueError, match=r"y contains .* row 5 \(infinity\)"):
        small_head(name).fit(X_train, y_bad)


@pytest.mark.parametrize("name", SMALL)
def test_classification_rejects_more_than_two_labels_and_names_them(name, classification_data):
    X_train, y_train, _, _ = classification_data
    y_three_classes = y_train.copy()
    y_three_classes[:10] = 2
    with pytest.raises(ValueError, match=r"Only binary classification is supported.*found labels \[0, 1, 2\]"):
        small_head(name, task=CLASSIFICATION).fit(X_train, y_three_classes)


@pytest.mark.parametrize("name", SMALL)
def test_classification_keeps_the_labels_it_was_given(name, classification_data):
    """Any two labels work (scikit-learn's convention): predict gives them back, predict_proba orders them as classes_,
    and a saved head keeps them."""
    X_train, y_train, X_test, _ = classification_data
    labels = np.array(["stable", "unstable"])
    head = small_head(name, task=CLASSIFICATION).fit(X_train, labels[y_train])
    numeric = small_head(name, task=CLASSIFICATION).fit(X_train, y_train)
    assert head.classes_.tolist() == ["stable", "unstable"]
    np.testing.assert_array_equal(head.predict(X_test), labels[numeric.predict(X_test)])
    np.testing.assert_array_equal(head.predict_proba(X_test), numeric.predict_proba(X_test))
    meta, arrays = head.get_state()
    restored = type(head).from_state(head.get_params(), meta, arrays)
    np.testing.assert_array_equal(restored.predict(X_test), head.predict(X_test))


def test_regression_head_says_why_it_has_no_predict_proba(regression_data):
    head = small_head("ridge").fit(*regression_data[:2])
    with pytest.raises(AttributeError, match="has no attribute 'predict_proba'") as caught:
        head.predict_proba(regression_data[2])
    assert "needs task='classification'" in str(caught.value.__cause__)


# -- the tree heads' histogram bins --------------------------------------------------------------------------------

def _split_thresholds_per_feature(head) -> list[int]:
    """How many distinct split thresholds the fitted trees use on each feature they split on."""
    if head.__class__.__name__ == "LightGBMHead":
        trees = head.model_.booster_.trees_to_dataframe().dropna(subset=["split_feature"])
        return list(trees.groupby("split_feature")["threshold"].nunique())
    trees = head.model_.get_booster().trees_to_dataframe()
    trees = trees[trees["Feature"] != "Leaf"]
    return list(trees.groupby("Feature")["Split"].nunique())


@pytest.mark.parametrize("name", ["lightgbm", "xgboost"])
def test_max_bin_reaches_the_library(name, regression_data):
    X_train, y_train, _, _ = regression_data
    many = _split_thresholds_per_feature(small_head(name, max_bin=255).fit(X_train, y_train))
    few = _split_thresholds_per_feature(small_head(name, max_bin=4).fit(X_train, y_train))
    assert max(many) > 3  # without the bound, the trees use more thresholds than four bins allow
    assert max(few) <= 3  # four bins leave at most three places to split a feature


# -- the MLP --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", [REGRESSION, CLASSIFICATION])
def test_mlp_with_default_settings_fits_100_samples(task, regression_data):
    from hacknip.plugins.registry import create_head

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
    small_head("mlp", max_epochs=2).fit(X_train, y_train)
    torch.testing.assert_close(torch.rand(3), expected)


# -- the networks' clip_features ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp", "modnet"])
def test_clip_features_holds_new_rows_to_the_training_range_and_is_saved(name, regression_data):
    """A feature almost constant in training (pure Fe's magnetic moment among superconductors) once put a network's
    ln Tc at -70; clipped, a far row is predicted as the nearest row of the training box."""
    from hacknip.errors import InputError

    X_train, y_train, X_test, _ = regression_data
    plain = small_head(name, clip_features=False).fit(X_train, y_train)
    clipped = small_head(name).fit(X_train, y_train)  # clipping is the default
    far = X_test * 1e4
    inside = np.clip(far, X_train.min(axis=0), X_train.max(axis=0))
    np.testing.assert_allclose(clipped.predict(far), plain.predict(inside), rtol=1e-6)
    assert not np.allclose(plain.predict(far), plain.predict(inside))
    np.testing.assert_array_equal(clipped.predict(X_train), plain.predict(X_train))  # training rows lie inside
    restored = type(clipped).from_state(clipped.get_params(), *clipped.get_state())
    np.testing.assert_array_equal(restored.predict(far), clipped.predict(far))
    meta, arrays = clipped.get_state()
    with pytest.raises(InputError, match="holds only one end of its training feature range"):
        type(clipped).from_state(clipped.get_params(), meta, {k: v for k, v in arrays.items() if "high" not in k})
    with pytest.raises(InputError, match="clip_features must be true or false"):
        small_head(name, clip_features="yes").fit(X_train, y_train)


@pytest.mark.parametrize("name", ["mlp", "modnet"])
def test_a_head_saved_before_clipping_was_the_default_predicts_as_it_did(name, regression_data):
    """Saved before 2026-12-04, a network head's params name no clip_features and its arrays hold no range: restored
    under today's default (clip), it must still feed far rows unclipped, as it did when it was saved."""
    X_train, y_train, X_test, _ = regression_data
    unclipped = small_head(name, clip_features=False).fit(X_train, y_train)
    old_params = {key: value for key, value in unclipped.get_params().items() if key != "clip_features"}
    restored = type(unclipped).from_state(old_params, *unclipped.get_state())
    far = X_test * 1e4
    np.testing.assert_array_equal(restored.predict(far), unclipped.predict(far))
    assert restored.clip_features is False


# -- the plugin module ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["hacknip_heads.plugin", "hacknip.plugins.default_heads"])
def test_plugin_import_loads_no_heavy_library(module):
    code = (
        f"import sys, {module} as plugin\n"
        "specs = []\n"
        "plugin.register_heads(register=specs.append)\n"
        f"print(sorted(s.name for s in specs), [m for m in {HEAVY_MODULES!r} if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names = ["ensemble", "ridge"] if module.startswith("hacknip.") else sorted(HEADS_PACKAGE_NAMES)
    assert result.stdout.strip() == f"{names} []"
