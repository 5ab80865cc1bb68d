"""MODNet (De Breuck et al., npj Comput. Mater. 2021) re-implemented in PyTorch, as used by the HackNIP paper.

Upstream ``modnet`` 0.4.5 needs TensorFlow <= 2.15, pandas <= 1.5 and numpy < 2, so it cannot share hacknip's
environment. This module follows upstream's code for a single target:

* feature selection: ``MODData.feature_selection`` (``nmi_target``, ``get_cross_nmi``, ``get_features_dyn`` and the
  p/c schedule of ``get_rr_p_parameter_default`` / ``get_rr_c_parameter_default``);
* the network: ``MODNetModel.build_model`` (Dense blocks from ``num_neurons``, Glorot-uniform weights, zero biases,
  a linear/``out_act`` output for regression, softmax over two classes for classification);
* training: ``MODNetModel.fit`` (MinMaxScaler to [-0.5, 0.5] on the selected features, unscaled targets, Adam,
  shuffled minibatches, Keras-style ``EarlyStopping`` when asked).

Where ours differs, and why, is listed in ``docs/modnet.md``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.special import ndtri, xlogy
from scipy.stats import rankdata
from sklearn.feature_selection import mutual_info_classif, mutual_info_regression
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from torch import nn

from hacknip.errors import InputError
from hacknip.plugins.head import CLASSIFICATION, REGRESSION
from hacknip.plugins.head_base import BaseHead
from hacknip_heads._feature_range import check_clip_flag, clipped, range_arrays, restored_range, training_range
from hacknip_heads._torch_training import (
    EarlyStopping,
    evaluate_loss,
    float32_tensor,
    network_weights,
    predict_in_chunks,
    torch_seed,
    train_one_epoch,
)

ACTIVATIONS = {
    "linear": nn.Identity, "relu": nn.ReLU, "elu": nn.ELU, "selu": nn.SELU, "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid, "softplus": nn.Softplus, "swish": nn.SiLU, "silu": nn.SiLU, "gelu": nn.GELU,
}
REGRESSION_LOSSES = {"mae": nn.L1Loss, "mse": nn.MSELoss}
CLASSIFICATION_LOSSES = {"categorical_crossentropy": nn.CrossEntropyLoss}
XSCALES = ("minmax", "standard", None)
FEATURE_SELECTIONS = ("nmi", "first")
N_BLOCKS = 4
BUILT_BLOCKS = 3  # upstream 0.4.5 builds Dense layers from num_neurons[0..2] only; the fourth block is unused
MINMAX_RANGE = (-0.5, 0.5)  # upstream MODNetModel.fit, xscale="minmax"
ADAM_EPSILON = 1e-7  # Keras' Adam default (PyTorch's is 1e-8)
EARLY_STOPPING_MIN_DELTA = 0.001  # upstream's tf.keras.callbacks.EarlyStopping(min_delta=0.001, ...)
OUT_OF_BOUNDS_MARGIN = 0.25  # upstream predict(remap_out_of_bounds=True): range widened by 25 % on each side

# Feature selection constants, as in upstream MODData.feature_selection / get_cross_nmi.
MAX_NMI_SAMPLES = 6000
MIN_SELF_INFORMATION = 0.2
MI_NEIGHBOURS = 3
_RANKING_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
_RANKING_CACHE_SIZE = 8


# ---------------------------------------------------------------------------------------------------------------
# Feature selection: normalised mutual information, relevance versus redundancy
# ---------------------------------------------------------------------------------------------------------------

def rr_p(n_selected: int) -> float:
    """Upstream ``get_rr_p_parameter_default``: how strongly redundancy counts (falls as features accumulate)."""
    return max(0.1, 4.5 - 0.4 * n_selected**0.4)


def rr_c(n_selected: int) -> float:
    """Upstream ``get_rr_c_parameter_default``: an offset that makes relevance dominate once many are selected."""
    return min(1e5, 1e-6 * n_selected**3)


def candidate_columns(X: np.ndarray) -> np.ndarray:
    """Columns upstream keeps: not constant, and the first of any group of exactly equal columns."""
    varying = np.flatnonzero((X != X[0]).any(axis=0))
    _, first_of_each = np.unique(X[:, varying].T, axis=0, return_index=True)
    return varying[np.sort(first_of_each)]


def self_information(X: np.ndarray, seed: int) -> np.ndarray:
    """Upstream's per-feature normaliser: scikit-learn's k-NN estimate of I(x; x), one value per column.

    The estimate only depends on ties: every column with all-distinct values gets the value of any other such
    column of the same length, so it is computed once for those and per column only for columns with ties."""
    n_rows = len(X)
    information = np.empty(X.shape[1])
    has_ties = np.array([len(np.unique(column)) < n_rows for column in X.T], dtype=bool)
    reference = np.random.default_rng(seed).standard_normal(n_rows)
    information[~has_ties] = _knn_mutual_information(reference, reference, seed)
    for column in np.flatnonzero(has_ties):
        information[column] = _knn_mutual_information(X[:, column], X[:, column], seed)
    return information


def _knn_mutual_information(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    return float(mutual_info_regression(x.reshape(-1, 1), y, n_neighbors=MI_NEIGHBOURS, random_state=seed)[0])


def target_nmi(X: np.ndarray, y: np.ndarray, task: str, information: np.ndarray, seed: int) -> np.ndarray:
    """Upstream ``nmi_target``: I(x_j; y) / ((I(y; y) + I(x_j; x_j)) / 2), with NaN or infinity read as 0."""
    if task == CLASSIFICATION:
        mutual = mutual_info_classif(X, y, n_neighbors=MI_NEIGHBOURS, random_state=seed)
        target_information = mutual_info_classif(y.reshape(-1, 1), y, discrete_features=True, random_state=seed)[0]
    else:
        mutual = mutual_info_regression(X, y, n_neighbors=MI_NEIGHBOURS, random_state=seed)
        target_information = _knn_mutual_information(y, y, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        nmi = mutual / ((target_information + information) / 2)
    return np.nan_to_num(nmi, nan=0.0, posinf=0.0, neginf=0.0)


def cross_nmi(X: np.ndarray, information: np.ndarray) -> np.ndarray:
    """NMI between every pair of columns: I(x_i; x_j) / ((I(x_i; x_i) + I(x_j; x_j)) / 2), clipped to [0, 1].

    Upstream estimates every I(x_i; x_j) with scikit-learn's k-NN estimator, one pair per call (51 040 calls for
    320 features: most of an hour here). Here I(x_i; x_j) is the larger of two vectorised estimates: the plug-in
    estimate on equal-frequency bins (joint bin counts from one ``bincount`` per column), which sees non-monotone
    dependence, and the Gaussian-copula estimate, which sees near-copies; the normaliser is upstream's. The bin
    count (about 1.5 n^(1/3)) was chosen so that the values track upstream's on real embeddings (see docs/modnet.md)."""
    n_rows, n_columns = X.shape
    n_bins = cross_nmi_bins(n_rows)
    bins = np.minimum(((rankdata(X, axis=0) - 1) * n_bins / n_rows).astype(np.int32), n_bins - 1)
    entropy = np.array([_entropy_from_counts(np.bincount(column, minlength=n_bins), n_rows) for column in bins.T])
    mutual = np.empty((n_columns, n_columns))
    cell_offsets = np.arange(n_columns, dtype=np.int32) * n_bins**2
    for column in range(n_columns):
        # Joint bin counts of this column with itself and every later column, in one bincount.
        cells = bins[:, column, None] * n_bins + bins[:, column:] + cell_offsets[: n_columns - column]
        joint = np.bincount(cells.ravel(), minlength=(n_columns - column) * n_bins**2).reshape(-1, n_bins**2)
        pair_mutual = entropy[column] + entropy[column:] - _entropy_from_counts(joint, n_rows)
        mutual[column, column:] = mutual[column:, column] = pair_mutual
    mutual = np.maximum(mutual, _gaussian_copula_mutual_information(X))
    nmi = np.clip(mutual / ((information[:, None] + information[None, :]) / 2), 0.0, 1.0)
    np.fill_diagonal(nmi, 1.0)
    return nmi


def _gaussian_copula_mutual_information(X: np.ndarray) -> np.ndarray:
    """-log(1 - rho^2) / 2 for the correlation rho of the columns' normal scores: a lower bound on I(x_i; x_j) that,
    unlike the binned estimate (at most log n_bins), keeps growing as two columns approach being copies."""
    normal_scores = ndtri(rankdata(X, axis=0) / (len(X) + 1))
    normal_scores -= normal_scores.mean(axis=0)
    normal_scores /= np.linalg.norm(normal_scores, axis=0)
    correlation_squared = np.clip((normal_scores.T @ normal_scores) ** 2, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        return -0.5 * np.log1p(-correlation_squared)


def cross_nmi_bins(n_rows: int) -> int:
    return int(np.clip(round(1.5 * n_rows ** (1 / 3)), 4, 32))


def _entropy_from_counts(counts: np.ndarray, n_rows: int) -> np.ndarray:
    """Plug-in entropy (nats) of the distributions along the last axis, from counts summing to ``n_rows``."""
    return np.log(n_rows) - xlogy(counts, counts).sum(axis=-1, dtype=np.float64) / n_rows


def relevance_redundancy_ranking(relevance: np.ndarray, redundancy: np.ndarray, n_feat: int) -> np.ndarray:
    """Upstream ``get_features_dyn``: greedy ranking of columns by relevance / (redundancy^p + c).

    Start from the most relevant column; at step n (0-based) add the column maximising
    min over selected s of relevance_j / (redundancy_js^p(n) + c(n)). Because p > 0, that minimum is reached at the
    selected column most redundant with j, so one running maximum replaces upstream's full score table."""
    n_feat = min(n_feat, len(relevance))
    remaining = np.ones(len(relevance), dtype=bool)
    order = [int(np.argmax(relevance))]
    remaining[order[0]] = False
    worst_redundancy = redundancy[:, order[0]].copy()
    for n_selected in range(n_feat - 1):
        with np.errstate(divide="ignore", invalid="ignore"):
            score = relevance / (worst_redundancy ** rr_p(n_selected) + rr_c(n_selected))
        score = np.where(remaining & ~np.isnan(score), score, -np.inf)
        best = int(np.argmax(score))
        if not remaining[best]:  # every score NaN (0 / 0): upstream's idxmax has nothing to pick either
            best = int(np.flatnonzero(remaining)[0])
        order.append(best)
        remaining[best] = False
        np.maximum(worst_redundancy, redundancy[:, best], out=worst_redundancy)
    return np.array(order, dtype=np.int64)


def rank_features(X: np.ndarray, y: np.ndarray, task: str, random_state) -> np.ndarray:
    """Every usable column of ``X``, most useful first, as upstream ``MODData.feature_selection`` ranks them.

    Constant columns, exact duplicates and columns whose self-information is below 0.2 (upstream's ``drop_thr``)
    are left out. Results are cached, so tuning runs that differ only in ``n_feat`` rank each fold once."""
    key = (_digest(X), _digest(y), task, repr(random_state))
    if key in _RANKING_CACHE:
        _RANKING_CACHE.move_to_end(key)
        return _RANKING_CACHE[key]
    seed = torch_seed(random_state)
    if len(X) > MAX_NMI_SAMPLES:
        rows = np.random.default_rng(seed).choice(len(X), MAX_NMI_SAMPLES, replace=False)
        X, y = X[rows], y[rows]
    columns = candidate_columns(X)
    information = self_information(X[:, columns], seed)
    informative = information >= MIN_SELF_INFORMATION
    columns, information = columns[informative], information[informative]
    if len(columns) == 0:
        raise InputError("MODNet feature selection found no usable feature: every column is constant or takes too "
                         "few distinct values (self-information < 0.2). Use feature_selection='first' to skip it")
    relevance = target_nmi(X[:, columns], y, task, information, seed)
    ranking = columns[relevance_redundancy_ranking(relevance, cross_nmi(X[:, columns], information), len(columns))]
    _RANKING_CACHE[key] = ranking
    if len(_RANKING_CACHE) > _RANKING_CACHE_SIZE:
        _RANKING_CACHE.popitem(last=False)
    return ranking


def _digest(array: np.ndarray) -> tuple:
    contiguous = np.ascontiguousarray(array)
    return contiguous.shape, str(contiguous.dtype), hashlib.blake2b(contiguous.data, digest_size=16).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# The head
# ---------------------------------------------------------------------------------------------------------------

class MODNetHead(BaseHead):
    """MODNet: relevance-redundancy feature selection, then a feed-forward network, as upstream ``modnet`` 0.4.5.

    Hyperparameters keep upstream's (and the HackNIP paper's Table S1) names:

    * ``n_feat``: features kept after ranking (None: all columns, unranked). Capped at the number of usable
      columns; ``n_feat_`` says how many were used.
    * ``num_neurons``: four blocks of layer widths, e.g. ``([132], [132], [132], [])``. Upstream 0.4.5 builds
      layers from the first three blocks only and ignores the fourth; so does this head (``hidden_layer_sizes_``
      lists the layers built).
    * ``act`` (hidden layers), ``out_act`` (regression output), ``loss`` ("mae" or "mse" for regression;
      classification uses "categorical_crossentropy" over a two-class softmax), ``lr``, ``batch_size``,
      ``epochs``.
    * ``xscale``: "minmax" (upstream default, to [-0.5, 0.5]), "standard" or None; fitted on the training rows.
    * ``patience``: None trains all ``epochs`` (upstream ``fit`` without callbacks, as the paper's scripts did);
      an int stops as Keras' ``EarlyStopping(min_delta=0.001, patience=...)``, on the training loss, or on the
      held-out ``val_fraction`` loss (restoring that split's best weights) when ``val_fraction > 0``.
    * ``feature_selection``: "nmi" (upstream) or "first" (the first ``n_feat`` columns, as the paper's scripts).
    * ``remap_out_of_bounds``: upstream ``predict``'s option (default there True, in the paper's scripts False):
      regression predictions beyond the training range widened by 25 % are replaced by uniform draws inside it.
    * ``clip_features``: not upstream's (default True; False is upstream's behaviour). A new row's selected
      features are clipped to the range the training rows spanned before scaling, so that a feature almost
      constant in training (scaled by a tiny range) cannot drive the network far outside anything it was fitted on.
    """

    def __init__(
        self,
        *,
        task: str = REGRESSION,
        n_feat: int | None = None,
        num_neurons: Sequence[Sequence[int]] = ([256], [256], [256], [256]),
        act: str = "relu",
        out_act: str = "linear",
        loss: str | None = None,
        lr: float = 0.001,
        batch_size: int = 128,
        epochs: int = 200,
        patience: int | None = None,
        val_fraction: float = 0.0,
        xscale: str | None = "minmax",
        feature_selection: str = "nmi",
        remap_out_of_bounds: bool = False,
        clip_features: bool = True,
        random_state: int | None = 0,
    ):
        self.task = task
        self.n_feat = n_feat
        self.num_neurons = num_neurons
        self.act = act
        self.out_act = out_act
        self.loss = loss
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.val_fraction = val_fraction
        self.xscale = xscale
        self.feature_selection = feature_selection
        self.remap_out_of_bounds = remap_out_of_bounds
        self.clip_features = clip_features
        self.random_state = random_state

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        """The HackNIP paper's Optuna ranges (its ``6_opt_hp_modnet.py``; Table S1 lists the winners). Depth and
        width are drawn as scalars because Optuna's categorical choices cannot be lists."""
        depth = trial.suggest_int("depth", 1, N_BLOCKS)
        width = trial.suggest_int("width", 32, 256, log=True)
        return {
            "n_feat": trial.suggest_int("n_feat", 50, 256),
            "num_neurons": tuple([width] for _ in range(depth)) + ([],) * (N_BLOCKS - depth),
            "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [16, 32, 128]),
            "out_act": trial.suggest_categorical("out_act", ["linear", "relu"]),
        }

    # -- fitting ---------------------------------------------------------------------------------------------

    def _fit(self, X, y) -> None:
        blocks = self._checked_hyperparameters()
        self.selected_features_ = self._select_features(X, y)
        self.n_feat_ = len(self.selected_features_)
        X = X[:, self.selected_features_]
        self.feature_range_ = training_range(X, self.clip_features)
        self.scaler_ = _make_scaler(self.xscale)
        if self.scaler_ is not None:
            X = self.scaler_.fit_transform(X)
        self.target_min_, self.target_max_ = float(y.min()), float(y.max())
        self.hidden_layer_sizes_ = tuple(width for block in blocks[:BUILT_BLOCKS] for width in block)
        seed = torch_seed(self.random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.network_ = _build_network(self.n_feat_, self.hidden_layer_sizes_, self.act, self._output_activation())
            self._train(X, y, np.random.default_rng(seed))

    def _select_features(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.n_feat is None:
            return np.arange(X.shape[1])
        if self.feature_selection == "first":
            return np.arange(min(self.n_feat, X.shape[1]))
        return rank_features(X, y, self.task, self.random_state)[: self.n_feat]

    def _output_activation(self) -> str | None:
        """None for classification: two logits, whose softmax lives in the loss and in predict_proba."""
        return None if self.task == CLASSIFICATION else self.out_act

    def _train(self, X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        features = float32_tensor(X)
        targets = torch.from_numpy(np.array(y, dtype=np.int64 if self.task == CLASSIFICATION else np.float32))
        train_rows, validation_rows = _split_rows(len(y), self.val_fraction, rng)
        train = (features[train_rows], targets[train_rows])
        validation = (features[validation_rows], targets[validation_rows])
        loss_function = self._loss_function()
        optimizer = torch.optim.Adam(self.network_.parameters(), lr=self.lr, eps=ADAM_EPSILON)
        early_stopping = EarlyStopping(self.patience, EARLY_STOPPING_MIN_DELTA) if self.patience else None
        self.history_ = {"loss": [], "val_loss": []}
        self.initial_weights_ = network_weights(self.network_)
        for epoch in range(1, self.epochs + 1):
            self.history_["loss"].append(train_one_epoch(self.network_, *train, loss_function, optimizer,
                                                         self.batch_size))
            if len(validation_rows):
                self.history_["val_loss"].append(evaluate_loss(self.network_, *validation, loss_function))
            monitored = self.history_["val_loss" if len(validation_rows) else "loss"][-1]
            if early_stopping is not None and early_stopping.should_stop(self.network_, monitored, epoch):
                break
        # Upstream keeps the last epoch's weights (restore_best_weights=False); a held-out split is there to pick
        # the best epoch, so with one the best weights come back.
        if early_stopping is not None and len(validation_rows) and early_stopping.best_weights is not None:
            self.network_.load_state_dict(early_stopping.best_weights)
        self.network_.eval()
        self.trained_weights_ = network_weights(self.network_)
        self.n_epochs_ = epoch

    def _loss_function(self) -> nn.Module:
        if self.task == CLASSIFICATION:
            return CLASSIFICATION_LOSSES[self.loss or "categorical_crossentropy"]()
        return REGRESSION_LOSSES[self.loss or "mae"]()

    # -- predicting ------------------------------------------------------------------------------------------

    def _network_output(self, X: np.ndarray) -> torch.Tensor:
        X = clipped(X[:, self.selected_features_], self.feature_range_)
        if self.scaler_ is not None:
            X = self.scaler_.transform(X)
        return predict_in_chunks(self.network_, X).double()

    def _predict_values(self, X: np.ndarray) -> np.ndarray:
        values = self._network_output(X).numpy()
        if self.remap_out_of_bounds:
            values = self._remapped(values)
        return values

    def _remapped(self, values: np.ndarray) -> np.ndarray:
        spread = self.target_max_ - self.target_min_
        outside = (values < self.target_min_ - OUT_OF_BOUNDS_MARGIN * spread) | \
                  (values > self.target_max_ + OUT_OF_BOUNDS_MARGIN * spread)
        # Seeded per call, so the same input always gets the same prediction (upstream draws unseeded).
        draws = np.random.default_rng(torch_seed(self.random_state)).uniform(size=int(outside.sum()))
        values = values.copy()
        values[outside] = self.target_min_ + draws * spread
        return values

    def _predict_positive_probability(self, X: np.ndarray) -> np.ndarray:
        return torch.softmax(self._network_output(X), dim=1)[:, 1].numpy()

    # -- saving ----------------------------------------------------------------------------------------------

    def _state(self):
        meta = {"target_min": self.target_min_, "target_max": self.target_max_,
                "hidden_layer_sizes": list(self.hidden_layer_sizes_), "scaled": self.scaler_ is not None}
        arrays = {"selected_features": self.selected_features_,
                  **{f"network/{name}": value.numpy() for name, value in self.network_.state_dict().items()}}
        if self.scaler_ is not None:
            arrays["scaler/multiply"], arrays["scaler/add"] = _affine_coefficients(self.scaler_)
        return meta, {**arrays, **range_arrays(self.feature_range_)}

    def _restore(self, meta, arrays) -> None:
        self.selected_features_ = arrays["selected_features"]
        self.n_feat_ = len(self.selected_features_)
        self.target_min_, self.target_max_ = meta["target_min"], meta["target_max"]
        self.hidden_layer_sizes_ = tuple(meta["hidden_layer_sizes"])
        self.scaler_ = _AffineScaler(arrays["scaler/multiply"], arrays["scaler/add"]) if meta["scaled"] else None
        self.feature_range_ = restored_range(arrays, "MODNet")
        self.clip_features = self.feature_range_ is not None  # what the saved head did
        self.network_ = _build_network(self.n_feat_, self.hidden_layer_sizes_, self.act, self._output_activation())
        self.network_.load_state_dict({name.removeprefix("network/"): torch.from_numpy(np.array(value))
                                       for name, value in arrays.items() if name.startswith("network/")})
        self.network_.eval()

    # -- validation ------------------------------------------------------------------------------------------

    def _checked_hyperparameters(self) -> list[list[int]]:
        if self.n_feat is not None and (not _is_int(self.n_feat) or self.n_feat < 1):
            raise InputError(f"n_feat must be a positive int (features to keep) or None (all), got {self.n_feat!r}")
        _check_choice("act", self.act, ACTIVATIONS)
        _check_choice("out_act", self.out_act, ACTIVATIONS)
        losses = CLASSIFICATION_LOSSES if self.task == CLASSIFICATION else REGRESSION_LOSSES
        if self.loss is not None:
            _check_choice("loss", self.loss, losses, f" for task={self.task!r}")
        _check_choice("xscale", self.xscale, XSCALES)
        _check_choice("feature_selection", self.feature_selection, FEATURE_SELECTIONS)
        check_clip_flag(self.clip_features)
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise InputError(f"lr (learning rate) must be a positive number, got {self.lr!r}")
        for name in ("batch_size", "epochs"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise InputError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.patience is not None and (not _is_int(self.patience) or self.patience < 1):
            raise InputError(f"patience must be a positive int (epochs without improvement) or None (train all "
                             f"epochs), got {self.patience!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        return _checked_blocks(self.num_neurons)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_choice(name: str, value, choices, context: str = "") -> None:
    if value not in choices:
        shown = ", ".join(repr(choice) for choice in choices)
        raise InputError(f"{name}={value!r} is not supported{context}; choose one of {shown}")


def _checked_blocks(num_neurons) -> list[list[int]]:
    example = "e.g. num_neurons=([128], [64], [32], [])"
    if isinstance(num_neurons, (str, bytes)) or not isinstance(num_neurons, Sequence) or len(num_neurons) != N_BLOCKS:
        raise InputError(f"num_neurons must be {N_BLOCKS} blocks of layer widths as upstream MODNet takes them, "
                         f"{example}; got {num_neurons!r}")
    blocks = []
    for block in num_neurons:
        if isinstance(block, (str, bytes)) or not isinstance(block, Sequence) or \
                not all(_is_int(width) and width >= 1 for width in block):
            raise InputError(f"each num_neurons block must be a list of positive ints (possibly empty), {example}; "
                             f"got block {block!r}")
        blocks.append([int(width) for width in block])
    if not any(blocks[:BUILT_BLOCKS]):
        raise InputError(f"num_neurons={num_neurons!r} builds no hidden layer: upstream MODNet builds layers from the "
                         f"first three blocks only (the fourth is ignored), so put at least one width there")
    return blocks


def _affine_coefficients(scaler) -> tuple[np.ndarray, np.ndarray]:
    """A fitted MinMax or Standard scaler as ``X * multiply + add``."""
    if isinstance(scaler, MinMaxScaler):
        return scaler.scale_, scaler.min_
    return 1.0 / scaler.scale_, -scaler.mean_ / scaler.scale_


class _AffineScaler:
    """A feature scaler read back from a saved model."""

    def __init__(self, multiply: np.ndarray, add: np.ndarray):
        self.multiply, self.add = multiply, add

    def transform(self, X: np.ndarray) -> np.ndarray:
        return X * self.multiply + self.add


def _make_scaler(xscale: str | None):
    if xscale == "minmax":
        return MinMaxScaler(feature_range=MINMAX_RANGE)
    if xscale == "standard":
        return StandardScaler()
    return None


def _split_rows(n_rows: int, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    rows = rng.permutation(n_rows)
    n_validation = int(round(val_fraction * n_rows))
    if val_fraction > 0 and not 1 <= n_validation < n_rows:
        raise InputError(f"val_fraction={val_fraction} of {n_rows} rows leaves no validation or no training row")
    return np.sort(rows[n_validation:]), np.sort(rows[:n_validation])


def _build_network(n_features: int, hidden_layer_sizes: tuple[int, ...], act: str,
                   out_act: str | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_features
    for hidden_width in hidden_layer_sizes:
        layers += [nn.Linear(width, hidden_width), ACTIVATIONS[act]()]
        width = hidden_width
    if out_act is None:
        layers.append(nn.Linear(width, 2))
    else:
        layers += [nn.Linear(width, 1), ACTIVATIONS[out_act](), nn.Flatten(start_dim=0)]
    network = nn.Sequential(*layers)
    for module in network.modules():
        if isinstance(module, nn.Linear):  # Keras Dense defaults: Glorot-uniform kernel, zero bias
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return network
