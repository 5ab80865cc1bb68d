"""``clip_features`` of the network heads: a new row's features are clipped to the range the training rows spanned.

A feature almost constant over the training rows is scaled by a tiny range (min-max) or deviation (standard), so a
new row that differs there lands hundreds of units outside anything the network was fitted on; on 3DSC, pure Fe's
magnetic moment put a network's ln Tc at -70. Clipped, the row is predicted as its nearest point of the training
box. Trees never see the difference (their splits lie between training values), so only the networks need this.

On by default since 2026-12-04: on Matbench phonons it moved no row by more than the seed's noise (six MODNet and
MLP rows, each 0.07–0.38 cm⁻¹ lower), and on 3DSC it turned a fold's MAE of 0.944 (MODNet) and ∞ (MLP) into ordinary
ones (docs/benchmarks.md, "Clipping features by default").
"""

from __future__ import annotations

import numpy as np

from hacknip.errors import InputError

FeatureRange = tuple[np.ndarray, np.ndarray]  # (low, high) per feature
LOW, HIGH = "feature_range/low", "feature_range/high"


def check_clip_flag(clip_features) -> None:
    if not isinstance(clip_features, (bool, np.bool_)):
        raise InputError(f"clip_features must be true or false, got {clip_features!r}")


def training_range(X: np.ndarray, clip_features: bool) -> FeatureRange | None:
    return (X.min(axis=0), X.max(axis=0)) if clip_features else None


def clipped(X: np.ndarray, feature_range: FeatureRange | None) -> np.ndarray:
    return X if feature_range is None else np.clip(X, *feature_range)


def range_arrays(feature_range: FeatureRange | None) -> dict[str, np.ndarray]:
    """The arrays a saved head keeps (none when it does not clip)."""
    return {} if feature_range is None else {LOW: feature_range[0], HIGH: feature_range[1]}


def restored_range(arrays: dict[str, np.ndarray], head: str) -> FeatureRange | None:
    """The range a saved head clipped to, or None if it did not clip. The arrays decide, not ``clip_features``: a
    head saved before clipping was the default carries no range and no ``clip_features`` in its params, and must
    predict as it did when it was saved."""
    if (LOW in arrays) != (HIGH in arrays):
        raise InputError(f"this saved {head} head holds only one end of its training feature range "
                         f"({LOW if LOW in arrays else HIGH}); the file is damaged: save the model again")
    return (arrays[LOW], arrays[HIGH]) if LOW in arrays else None
