"""Every head this project ships runs hacknip's HeadConformance suite (hacknip.plugins.testing), with small-fit
settings: the ridge head of hacknip-core and the heads of hacknip-heads."""

from __future__ import annotations

import pytest

from hacknip.plugins.testing import HeadConformance

# Settings that fit the suite's 200-row problems in a fraction of a second and still learn them; the defaults are
# sized for real datasets. One thread each (boosting here, torch through single_threaded_torch): the few CPU cores
# are shared, and multithreaded boosting stalls badly when they are oversubscribed. test_heads.py uses them too.
SMALL = {
    "ridge": {"alphas": (0.1, 1.0, 10.0), "cv": 3},
    "lightgbm": {"n_estimators": 20, "learning_rate": 0.2, "n_jobs": 1},
    "xgboost": {"n_estimators": 20, "learning_rate": 0.2, "n_jobs": 1},
    "mlp": {"hidden_layer_sizes": (16,), "max_epochs": 15, "learning_rate": 0.01, "batch_size": 32},
    "modnet": {"n_feat": 4, "num_neurons": ([16], [], [], []), "epochs": 15, "lr": 0.01, "batch_size": 32},
}
SMALL["ensemble"] = {"members": "ridge+lightgbm", "params": {"ridge": SMALL["ridge"], "lightgbm": SMALL["lightgbm"]}}


def small_head(name: str, **params):
    """The head registered as ``name``, with the small-fit settings above."""
    from hacknip.plugins.registry import create_head

    return create_head(name, **{**SMALL[name], **params})


pytestmark = pytest.mark.usefixtures("single_threaded_torch")


class TestRidge(HeadConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def head(cls):
        return small_head("ridge")


class TestLightGBM(HeadConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def head(cls):
        return small_head("lightgbm")


class TestXGBoost(HeadConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def head(cls):
        return small_head("xgboost")


class TestMLP(HeadConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def head(cls):
        return small_head("mlp")


class TestMODNet(HeadConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def head(cls):
        return small_head("modnet")


class TestEnsemble(HeadConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def head(cls):
        return small_head("ensemble")


class TestToyKNN(HeadConformance):
    """A head that does not subclass BaseHead (tests/toy_head.py): the suite is for any plugin's head."""

    mean_error_ratio = 0.7  # five neighbours in eight dimensions, 200 rows: a smooth target is learned only roughly

    @pytest.fixture(scope="class")
    @classmethod
    def head(cls):
        from toy_head import KNNHead

        return KNNHead()
