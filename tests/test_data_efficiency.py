"""Data efficiency: curve fits, their crossing and its bootstrap, per-neuron update ratios, and the two figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import brentq

from hacknip.analysis.data_efficiency import (
    Fit,
    crossing,
    crossing_estimate,
    fit,
    fit_log_linear,
    fit_power_law,
    ratio_summary,
    update_ratios,
)
from hacknip.errors import InputError
from hacknip.report import curve_plot, update_ratio_plot

SIZES = np.array([100.0, 1_000.0, 10_000.0, 100_000.0])


def power_law(n, a=3.0, b=0.3):
    return a * np.asarray(n, dtype=float) ** (-b)


def log_linear(n, a=0.8, b=-0.12):
    return a + b * np.log10(np.asarray(n, dtype=float))


def test_power_law_fit_recovers_exact_parameters():
    n = np.geomspace(50, 1e5, 7)
    fitted = fit_power_law(n, 50 * n**-0.3)
    assert fitted.kind == "power_law"
    assert fitted.params == pytest.approx({"a": 50.0, "b": 0.3}, rel=1e-10)
    assert fitted.n_range == pytest.approx((50.0, 1e5))
    assert fitted.predict(np.array([1e3])) == pytest.approx(50 * 1e3**-0.3)


def test_log_linear_fit_recovers_exact_parameters():
    n = np.repeat(SIZES, 3)
    fitted = fit("log_linear", n, 80 - 10 * np.log10(n))
    assert fitted.params == pytest.approx({"a": 80.0, "b": -10.0}, rel=1e-10)
    assert fit_log_linear(n, 80 - 10 * np.log10(n)) == fitted


def test_fit_as_dict_is_json_ready_with_a_formula():
    fitted = fit_power_law(SIZES, power_law(SIZES, 50, 0.3))
    described = json.loads(json.dumps(fitted.as_dict()))
    assert described["kind"] == "power_law" and described["n_range"] == [100.0, 100_000.0]
    assert described["formula"] == "MAE = 50 · N^(-0.3)"
    assert fit_log_linear(SIZES, log_linear(SIZES, 80, -10)).as_dict()["formula"] == "MAE = 80 - 10 · log10(N)"


@pytest.mark.parametrize("n, mae", [([100, 100, 100], [1.0, 2.0, 3.0]), ([100], [1.0]), ([100, 0], [1.0, 2.0]),
                                    ([100, 1000], [1.0]), ([100, 1000], [1.0, np.nan])])
def test_fits_refuse_points_that_cannot_define_a_curve(n, mae):
    for kind in ("power_law", "log_linear"):
        with pytest.raises(InputError):
            fit(kind, n, mae)


def test_power_law_refuses_non_positive_mae_and_unknown_kinds_are_refused():
    with pytest.raises(InputError, match="positive MAE"):
        fit_power_law([100, 1000], [0.5, 0.0])
    assert fit_log_linear([100, 1000], [0.5, 0.0]).params["b"] == pytest.approx(-0.5)
    with pytest.raises(InputError, match="unknown fit kind"):
        fit("exponential", [100, 1000], [1.0, 0.5])


def test_crossing_matches_an_independent_root_finder():
    first, second = Fit("power_law", {"a": 3.0, "b": 0.3}, (1e2, 1e5)), Fit("log_linear", {"a": 0.8, "b": -0.12}, (1e2, 1e5))
    expected = 10 ** brentq(lambda x: power_law(10**x) - log_linear(10**x), 2.0, 4.0, xtol=1e-14, rtol=1e-15)
    found = crossing(first, second, 1e2, 1e5)
    assert found == pytest.approx(expected, rel=1e-10)
    assert crossing(second, first, 1e2, 1e5) == pytest.approx(expected, rel=1e-10)


def test_crossing_of_a_power_law_with_a_constant_is_analytic():
    falling, flat = Fit("power_law", {"a": 50.0, "b": 0.3}, (1, 1e6)), Fit("log_linear", {"a": 20.0, "b": 0.0}, (1, 1e6))
    assert crossing(falling, flat, 1, 1e6) == pytest.approx(2.5 ** (1 / 0.3), rel=1e-10)


def test_crossing_returns_the_smallest_of_two_and_none_out_of_range():
    # convex power law against a line can cross twice; the smaller size is the one reported
    first, second = Fit("power_law", {"a": 3.0, "b": 0.3}, (1, 1e9)), Fit("log_linear", {"a": 0.72, "b": -0.12}, (1, 1e9))
    x = np.linspace(0, 9, 2_000_001)
    difference = power_law(10**x) - log_linear(10**x, 0.72, -0.12)
    roots = 10 ** x[np.flatnonzero(np.diff(np.sign(difference)))]
    assert len(roots) == 2
    assert crossing(first, second, 1, 1e9) == pytest.approx(roots[0], rel=1e-4)
    assert crossing(first, second, roots[0] * 1.1, 1e9) == pytest.approx(roots[1], rel=1e-4)
    assert crossing(first, second, 1, roots[0] * 0.9) is None


def test_parallel_curves_do_not_cross_and_bad_ranges_are_refused():
    low, high = Fit("log_linear", {"a": 1.0, "b": -0.1}, (1, 10)), Fit("log_linear", {"a": 2.0, "b": -0.1}, (1, 10))
    assert crossing(low, high, 10, 1e5) is None
    with pytest.raises(InputError):
        crossing(low, high, 1e5, 10)
    with pytest.raises(InputError):
        crossing(low, high, 0, 10)


def noisy_points(curve, rng, repeats=5, noise=0.02):
    return [(float(n), float(curve(n) * (1 + noise * rng.standard_normal()))) for n in SIZES for _ in range(repeats)]


def test_bootstrap_brackets_the_crossing_of_well_separated_curves():
    rng = np.random.default_rng(1)
    points = {"fine-tuned": noisy_points(power_law, rng), "hacknip": noisy_points(log_linear, rng)}
    estimate = crossing_estimate(points, {"fine-tuned": "power_law", "hacknip": "log_linear"}, n_boot=300, seed=3)
    assert json.loads(json.dumps(estimate)) == estimate
    assert estimate["range"] == [100.0, 100_000.0] and estimate["n_boot"] == 300
    assert estimate["low"] <= estimate["n"] <= estimate["high"]
    assert estimate["bootstrap_with_crossing"] >= 0.95
    exact = crossing(Fit("power_law", {"a": 3.0, "b": 0.3}, (1, 1)), Fit("log_linear", {"a": 0.8, "b": -0.12}, (1, 1)),
                     100, 1e5)
    assert estimate["n"] == pytest.approx(exact, rel=0.3)
    assert estimate["fits"]["fine-tuned"]["params"]["b"] == pytest.approx(0.3, abs=0.03)
    again = crossing_estimate(points, {"fine-tuned": "power_law", "hacknip": "log_linear"}, n_boot=300, seed=3)
    assert again == estimate


def test_curves_that_never_cross_give_none_everywhere():
    rng = np.random.default_rng(2)
    points = {"a": noisy_points(power_law, rng), "b": noisy_points(lambda n: power_law(n) + 1.0, rng)}
    estimate = crossing_estimate(points, {"a": "power_law", "b": "power_law"}, n_boot=50)
    assert estimate["n"] is None and estimate["low"] is None and estimate["high"] is None
    assert estimate["bootstrap_with_crossing"] == 0.0


def test_default_range_is_where_both_methods_were_measured():
    rng = np.random.default_rng(4)
    points = {"a": noisy_points(power_law, rng)[5:], "b": noisy_points(log_linear, rng)[:-5]}
    estimate = crossing_estimate(points, {"a": "power_law", "b": "log_linear"}, n_boot=0)
    assert estimate["range"] == [1_000.0, 10_000.0]
    assert estimate["bootstrap_with_crossing"] is None and estimate["low"] is None
    wider = crossing_estimate(points, {"a": "power_law", "b": "log_linear"}, n_boot=0, n_range=(10, 1e6))
    assert wider["range"] == [10.0, 1e6]


def test_crossing_estimate_refuses_other_than_two_methods_and_missing_kinds():
    rng = np.random.default_rng(5)
    one = {"a": noisy_points(power_law, rng)}
    with pytest.raises(InputError, match="exactly two"):
        crossing_estimate(one, {"a": "power_law"})
    with pytest.raises(InputError, match="no fit kind"):
        crossing_estimate({**one, "b": one["a"]}, {"a": "power_law"})
    with pytest.raises(InputError, match="b:"):
        crossing_estimate({**one, "b": [(100.0, 0.5)]}, {"a": "power_law", "b": "power_law"})


def states():
    """Two 2x3 matrices, a bias, a frozen matrix and a 2-D tensor that is not a weight."""
    initial = {"b.weight": np.zeros((2, 3)), "b.bias": np.zeros(2), "a.weight": np.ones((1, 2)),
               "frozen.weight": np.ones((2, 2)), "table": np.zeros((2, 2))}
    full = {"b.weight": np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]]), "b.bias": np.ones(2),
            "a.weight": np.array([[1.0, 11.0]]), "frozen.weight": np.ones((2, 2)), "table": np.ones((2, 2))}
    fraction = {"b.weight": np.array([[0.6, 0.8, 0.0], [0.0, 1.0, 0.0]]), "b.bias": np.full(2, 5.0),
                "a.weight": np.array([[4.0, 5.0]]), "frozen.weight": np.full((2, 2), 7.0), "table": np.full((2, 2), 9.0)}
    return initial, fraction, full


def test_update_ratios_follow_the_formula_row_by_row_in_name_order():
    initial, fraction, full = states()
    ratios = update_ratios(initial, fraction, full)
    # a.weight: |(3, 4)| / |(0, 10)| = 0.5; b.weight rows: 1 / 5 and 1 / 2; bias, frozen and table skipped
    np.testing.assert_allclose(ratios, [0.5, 0.2, 0.5], rtol=1e-10)
    assert update_ratios(initial, fraction, full, eps=5.0)[1] == pytest.approx(1 / 10)


def test_update_ratios_refuse_mismatched_states():
    initial, fraction, full = states()
    with pytest.raises(InputError, match="shape"):
        update_ratios(initial, {**fraction, "b.weight": np.zeros((3, 2))}, full)
    with pytest.raises(InputError, match="different tensors"):
        update_ratios(initial, fraction, {**full, "extra.weight": np.zeros((1, 1))})
    with pytest.raises(InputError, match="nothing to compare"):
        update_ratios({"w.weight": np.ones((2, 2))}, {"w.weight": np.zeros((2, 2))}, {"w.weight": np.ones((2, 2))})


def test_ratio_summary():
    summary = ratio_summary([0.05, 0.2, 0.3, 1.0])
    assert summary["n_neurons"] == 4 and summary["fraction_above_0_1"] == 0.75
    assert summary["median"] == pytest.approx(0.25) and summary["quartiles"][1] == summary["median"]
    with pytest.raises(InputError):
        ratio_summary([])


def curve(methods, repeats):
    rng = np.random.default_rng(6)
    shapes = {"fine-tuned ORB": ("power_law", power_law), "HackNIP": ("log_linear", log_linear)}
    result = {"target": "band gap", "metric": "mae", "methods": {}, "crossing": None}
    points = {}
    for method in methods:
        kind, shape = shapes[method]
        points[method] = noisy_points(shape, rng, repeats=repeats)
        rows = [{"n_samples": int(n), "fraction": n / SIZES[-1], "repeat": i % repeats, "mae": mae}
                for i, (n, mae) in enumerate(points[method])]
        result["methods"][method] = {"points": rows, "fit": fit(kind, *zip(*points[method])).as_dict()}
    if len(methods) == 2:
        result["crossing"] = crossing_estimate(points, {m: shapes[m][0] for m in methods}, n_boot=50)
    return result


@pytest.mark.parametrize("methods, repeats", [(("fine-tuned ORB", "HackNIP"), 5), (("HackNIP",), 5),
                                              (("fine-tuned ORB", "HackNIP"), 1)])
def test_curve_plot_writes_a_png(tmp_path, methods, repeats):
    path = curve_plot(curve(methods, repeats), tmp_path / "curve.png")
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 1000


def test_curve_plot_without_fits(tmp_path):
    data = curve(("HackNIP",), 2)
    data["methods"]["HackNIP"]["fit"] = None
    assert curve_plot(data, tmp_path / "curve.png").stat().st_size > 1000


@pytest.mark.parametrize("ratios", [{"fine-tuned ORB": np.random.default_rng(0).lognormal(-2.3, 1, 500),
                                     "HackNIP": np.random.default_rng(1).lognormal(-1.2, 0.5, 343)},
                                    {"HackNIP": [0.3]}, {"HackNIP": [0.0, 0.0, 0.3], "fine-tuned ORB": [0.0]}])
def test_update_ratio_plot_writes_a_png(tmp_path, ratios):
    path = update_ratio_plot(ratios, tmp_path / "ratios.png", "1 %")
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 1000


def test_update_ratio_plot_refuses_nothing_to_draw(tmp_path):
    with pytest.raises(InputError):
        update_ratio_plot({"HackNIP": [0.0]}, tmp_path / "ratios.png", "1 %")
