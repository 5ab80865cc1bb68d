"""Data efficiency: how MAE grows as the training set shrinks, where two methods' curves cross, and how far each
neuron's weights move on a fraction of the data compared with the full data (the paper's section 2.2, Fig. 3b-c).

The paper fits fine-tuned ORB with a power law and HackNIP with a log-linear curve and reports that they cross
between 10^3 and 10^4 samples. :func:`crossing_estimate` turns that statement into a number with an uncertainty:
both curves are fitted, their crossing is found within the measured sizes, and a bootstrap over the repeats at
each size says how much the crossing moves when the repeats are redrawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hacknip.errors import InputError

POWER_LAW = "power_law"
"""MAE = a · N^(−b), fitted by least squares on log MAE against log N."""
LOG_LINEAR = "log_linear"
"""MAE = a + b · log10 N, fitted by least squares on MAE against log10 N."""
KINDS = (POWER_LAW, LOG_LINEAR)

GRID_POINTS = 1024
"""Log-spaced points on which :func:`crossing` looks for a sign change; two crossings closer together than one
grid step (a 1024th of the range, in log N) cancel out and are missed, as is a curve that only touches the other."""
BISECTION_TOLERANCE = 1e-13
"""Width in log10 N at which bisection stops: a relative error in N of about 3e-13."""
BOOTSTRAP_PERCENTILES = (16.0, 84.0)
"""The central 68 % of the bootstrap crossings, the span of ±1 standard deviation of a normal distribution."""
RATIO_THRESHOLD = 0.1
"""The paper's line between neurons that move under limited data and those that barely do (r ≤ 0.1)."""


@dataclass(frozen=True)
class Fit:
    """A curve MAE(N) fitted to measured points; ``n_range`` is the span of N it was fitted on, so that a reader
    can tell interpolation from extrapolation."""

    kind: str
    params: dict[str, float]
    n_range: tuple[float, float]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown fit kind {self.kind!r}; choose one of {', '.join(KINDS)}")

    def predict(self, n: np.ndarray) -> np.ndarray:
        """The fitted MAE at each number of samples in ``n`` (all positive)."""
        n = np.asarray(n, dtype=float)
        if np.any(~(n > 0)):
            raise InputError("numbers of samples must be positive to evaluate a fit")
        a, b = self.params["a"], self.params["b"]
        if self.kind == POWER_LAW:
            return a * n ** (-b)
        return a + b * np.log10(n)

    def formula(self) -> str:
        a, b = self.params["a"], self.params["b"]
        if self.kind == POWER_LAW:
            return f"MAE = {a:.4g} · N^({-b:.4g})"
        return f"MAE = {a:.4g} {'-' if b < 0 else '+'} {abs(b):.4g} · log10(N)"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: kind, parameters, fitted range and the formula as a reader would write it."""
        return {"kind": self.kind, "params": {key: float(value) for key, value in self.params.items()},
                "n_range": [float(self.n_range[0]), float(self.n_range[1])], "formula": self.formula()}


def fit_power_law(n: Sequence[float] | np.ndarray, mae: Sequence[float] | np.ndarray) -> Fit:
    """MAE = a · N^(−b). Fitted on logarithms, so each point weighs by its relative error, as a log-log plot shows
    it; MAE must therefore be positive."""
    n, mae = _validated_points(n, mae)
    if np.any(mae <= 0):
        raise InputError("a power law needs positive MAE values (it is fitted on log MAE)")
    intercept, slope = _least_squares_line(np.log10(n), np.log10(mae))
    return Fit(POWER_LAW, {"a": float(10.0**intercept), "b": float(-slope)}, _span(n))


def fit_log_linear(n: Sequence[float] | np.ndarray, mae: Sequence[float] | np.ndarray) -> Fit:
    """MAE = a + b · log10 N: a straight line on the paper's log-x plot (b < 0 when more data helps)."""
    n, mae = _validated_points(n, mae)
    intercept, slope = _least_squares_line(np.log10(n), mae)
    return Fit(LOG_LINEAR, {"a": float(intercept), "b": float(slope)}, _span(n))


def fit(kind: str, n: Sequence[float] | np.ndarray, mae: Sequence[float] | np.ndarray) -> Fit:
    """Fit a curve of ``kind`` (``power_law`` or ``log_linear``) to (N, MAE) points."""
    fitters = {POWER_LAW: fit_power_law, LOG_LINEAR: fit_log_linear}
    if kind not in fitters:
        raise InputError(f"unknown fit kind {kind!r}; choose one of {', '.join(KINDS)}")
    return fitters[kind](n, mae)


def _validated_points(n: Any, mae: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        n, mae = np.asarray(n, dtype=float).ravel(), np.asarray(mae, dtype=float).ravel()
    except (TypeError, ValueError) as error:
        raise InputError(f"numbers of samples and MAE values must be numbers: {error}") from error
    if n.shape != mae.shape:
        raise InputError(f"{n.size} numbers of samples but {mae.size} MAE values; give one MAE per point")
    if not (np.all(np.isfinite(n)) and np.all(np.isfinite(mae))):
        raise InputError("numbers of samples and MAE values must be finite")
    if np.any(n <= 0):
        raise InputError("numbers of samples must be positive")
    if np.unique(n).size < 2:
        raise InputError(f"a fit needs at least 2 distinct numbers of samples, got {np.unique(n).size}")
    return n, mae


def _least_squares_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Intercept and slope of the ordinary least-squares line through (x, y)."""
    x_centred = x - x.mean()
    slope = float(np.dot(x_centred, y - y.mean()) / np.dot(x_centred, x_centred))
    return float(y.mean() - slope * x.mean()), slope


def _span(n: np.ndarray) -> tuple[float, float]:
    return float(n.min()), float(n.max())


def crossing(first: Fit, second: Fit, n_min: float, n_max: float) -> float | None:
    """The smallest N in [n_min, n_max] at which the two fitted curves give the same MAE; None if they do not cross.

    A power law and a log-linear curve can cross twice (the power law is convex in log N, the line is not). The
    smallest crossing is the one the paper's question is about: below it, the method with the flatter small-data
    curve wins. The difference of the curves is evaluated on :data:`GRID_POINTS` log-spaced sizes; the first sign
    change (or exact zero) is refined by bisection in log N. Identical curves cross everywhere: that gives n_min."""
    low, high = _validated_range(n_min, n_max)
    log_n = np.linspace(np.log10(low), np.log10(high), GRID_POINTS)
    difference = _difference(first, second, log_n)
    exact = np.flatnonzero(difference == 0)
    changes = np.flatnonzero(difference[:-1] * difference[1:] < 0)
    if exact.size and (not changes.size or exact[0] <= changes[0]):
        return float(10.0 ** log_n[exact[0]])
    if not changes.size:
        return None
    return float(10.0 ** _bisect(first, second, log_n[changes[0]], log_n[changes[0] + 1]))


def _difference(first: Fit, second: Fit, log_n: np.ndarray | float) -> np.ndarray:
    n = 10.0 ** np.asarray(log_n, dtype=float)
    return first.predict(n) - second.predict(n)


def _bisect(first: Fit, second: Fit, low: float, high: float) -> float:
    """The root of the curves' difference between log10 N = low and high, where its sign changes."""
    low_sign = np.sign(_difference(first, second, low))
    while high - low > BISECTION_TOLERANCE:
        middle = 0.5 * (low + high)
        middle_sign = np.sign(_difference(first, second, middle))
        if middle_sign == 0:
            return middle
        if middle_sign == low_sign:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def _validated_range(n_min: float, n_max: float) -> tuple[float, float]:
    try:
        low, high = float(n_min), float(n_max)
    except (TypeError, ValueError) as error:
        raise InputError(f"the range of numbers of samples must be two numbers: {error}") from error
    if not (np.isfinite(low) and np.isfinite(high) and 0 < low < high):
        raise InputError(f"the range of numbers of samples must satisfy 0 < n_min < n_max, got [{n_min}, {n_max}]")
    return low, high


Points = Mapping[str, Sequence[tuple[float, float]]]
Repeats = dict[float, np.ndarray]


def crossing_estimate(points: Points, kinds: Mapping[str, str], n_boot: int = 1000, seed: int = 0,
                      n_range: tuple[float, float] | None = None) -> dict[str, Any]:
    """Where two methods' MAE curves cross, with a bootstrap uncertainty; JSON-ready.

    ``points[method]`` holds (n_samples, mae) pairs, several per size (the repeats); ``kinds[method]`` names the
    curve to fit. Each bootstrap sample redraws, for each method and each size, that size's repeats with
    replacement, refits both curves and recomputes the crossing. It measures how much the scatter between repeats
    moves the crossing; with one repeat per size it has nothing to redraw, and low = high = n.

    ``n_range`` defaults to the sizes both methods were measured at (the larger of the two smallest sizes to the
    smaller of the two largest), so a crossing is never extrapolated, as in the paper. ``low``/``high`` are the
    16th/84th percentiles (taken on log N) of the bootstrap samples that cross in range; None when none do."""
    methods = _two_methods(points, kinds)
    repeats = {method: _repeats_by_size(method, points[method]) for method in methods}
    fits = {method: _fit_repeats(method, kinds[method], repeats[method]) for method in methods}
    low, high = _validated_range(*n_range) if n_range is not None else _shared_range(repeats)
    point = crossing(fits[methods[0]], fits[methods[1]], low, high)
    samples = _bootstrap_crossings(methods, kinds, repeats, (low, high), _validated_n_boot(n_boot), seed)
    crossed = np.array([sample for sample in samples if sample is not None])
    percentiles = 10.0 ** np.percentile(np.log10(crossed), BOOTSTRAP_PERCENTILES) if crossed.size else (None, None)
    return {"n": point, "low": _float_or_none(percentiles[0]), "high": _float_or_none(percentiles[1]),
            "bootstrap_with_crossing": crossed.size / len(samples) if samples else None, "n_boot": len(samples),
            "seed": seed, "range": [low, high], "fits": {method: fits[method].as_dict() for method in methods}}


def _two_methods(points: Points, kinds: Mapping[str, str]) -> list[str]:
    methods = list(points)
    if len(methods) != 2:
        raise InputError(f"a crossing needs exactly two methods, got {len(methods)}: {', '.join(map(str, methods))}")
    missing = [method for method in methods if method not in kinds]
    if missing:
        raise InputError(f"no fit kind given for {', '.join(missing)}; set kinds[method] to one of {', '.join(KINDS)}")
    return methods


def _repeats_by_size(method: str, pairs: Sequence[tuple[float, float]]) -> Repeats:
    """The MAE of each repeat, grouped by number of samples (ascending)."""
    try:
        table = np.asarray(pairs, dtype=float)
    except (TypeError, ValueError) as error:
        raise InputError(f"{method}: points must be (n_samples, mae) pairs of numbers: {error}") from error
    if table.ndim != 2 or table.shape[1] != 2:
        raise InputError(f"{method}: points must be a list of (n_samples, mae) pairs")
    return {float(size): table[table[:, 0] == size, 1] for size in np.unique(table[:, 0])}


def _fit_repeats(method: str, kind: str, repeats: Repeats) -> Fit:
    n = np.concatenate([np.full(values.size, size) for size, values in repeats.items()]) if repeats else []
    mae = np.concatenate(list(repeats.values())) if repeats else []
    try:
        return fit(kind, n, mae)
    except InputError as error:
        raise InputError(f"{method}: {error}") from error


def _shared_range(repeats: Mapping[str, Repeats]) -> tuple[float, float]:
    low = max(min(sizes) for sizes in repeats.values())
    high = min(max(sizes) for sizes in repeats.values())
    if not low < high:
        raise InputError(f"the methods share no range of measured sizes (from {low:g} to {high:g}); pass n_range")
    return low, high


def _validated_n_boot(n_boot: int) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 0:
        raise InputError(f"n_boot must be a whole number ≥ 0, got {n_boot!r}")
    return int(n_boot)


def _bootstrap_crossings(methods: list[str], kinds: Mapping[str, str], repeats: Mapping[str, Repeats],
                         n_range: tuple[float, float], n_boot: int, seed: int) -> list[float | None]:
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_boot):
        first, second = (_fit_repeats(method, kinds[method], _resampled(repeats[method], rng)) for method in methods)
        samples.append(crossing(first, second, *n_range))
    return samples


def _resampled(repeats: Repeats, rng: np.random.Generator) -> Repeats:
    """Each size's repeats drawn again with replacement, as many as there were: the sizes themselves stay fixed."""
    return {size: rng.choice(values, size=values.size, replace=True) for size, values in repeats.items()}


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def update_ratios(initial: Mapping[str, np.ndarray], trained_fraction: Mapping[str, np.ndarray],
                  trained_full: Mapping[str, np.ndarray], eps: float = 1e-12) -> np.ndarray:
    """Per-neuron update ratios r_i = ‖W_i^(d) − W_i^(pre)‖₂ / (‖W_i^(100%) − W_i^(pre)‖₂ + eps) (the paper's eq. 3).

    The three arguments are states (name → array) of one architecture: before training, trained on a fraction d
    of the data, trained on all of it. Row i of a 2-D ``...weight`` matrix holds neuron i's incoming weights, as in
    a torch ``Linear``. Biases and norms (1-D), convolution kernels (not 2-D) and tensors the full-data training did
    not move at all (frozen, whose ratio would be 0/eps) are left out. The ratios of all matrices are concatenated
    in sorted name order."""
    if eps < 0:
        raise InputError(f"eps must be ≥ 0, got {eps}")
    _check_same_layout(initial, trained_fraction, trained_full)
    ratios = []
    for name in sorted(initial):
        if not name.endswith("weight") or np.ndim(initial[name]) != 2:
            continue
        before, fraction, full = (np.asarray(state[name], dtype=float) for state in (initial, trained_fraction, trained_full))
        full_update = np.linalg.norm(full - before, axis=1)
        if not np.any(full_update):
            continue
        ratios.append(np.linalg.norm(fraction - before, axis=1) / (full_update + eps))
    if not ratios:
        raise InputError("no 2-D weight matrix that full-data training changed; nothing to compare")
    return np.concatenate(ratios)


def _check_same_layout(initial: Mapping[str, Any], trained_fraction: Mapping[str, Any], trained_full: Mapping[str, Any]) -> None:
    """The three states must name the same tensors with the same shapes: otherwise they are not one architecture."""
    for label, state in (("trained_fraction", trained_fraction), ("trained_full", trained_full)):
        if set(state) != set(initial):
            only_here, only_initial = sorted(set(state) - set(initial)), sorted(set(initial) - set(state))
            raise InputError(f"{label} and initial name different tensors (only in {label}: {only_here[:5]}, "
                             f"only in initial: {only_initial[:5]}); compare states of one architecture")
        for name in sorted(initial):
            if tuple(np.shape(state[name])) != tuple(np.shape(initial[name])):
                raise InputError(f"{name} has shape {tuple(np.shape(state[name]))} in {label} but "
                                 f"{tuple(np.shape(initial[name]))} in initial")


def ratio_summary(r: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """How many neurons, the median ratio, the share above the paper's 0.1 threshold, and the quartiles."""
    r = np.asarray(r, dtype=float).ravel()
    if r.size == 0 or not np.all(np.isfinite(r)):
        raise InputError("update ratios must be a non-empty list of finite numbers")
    quartiles = [float(q) for q in np.percentile(r, [25, 50, 75])]
    return {"n_neurons": int(r.size), "median": quartiles[1], "fraction_above_0_1": float(np.mean(r > RATIO_THRESHOLD)),
            "quartiles": quartiles}
