"""``clip_features`` of the network heads: a new row's features are clipped to the range the training rows spanned.

A feature almost constant over the training rows is scaled by a tiny range (min-max) or deviation (standard), so a
new row that differs there lands hundreds of units outside anything the network was fitted on; on 3DSC, pure Fe's
magnetic moment put a network's ln Tc at -70. Clipped, the row is predicted as its nearest point of the training
box. Trees never see the difference (their splits lie between training values), so only the networks need this.
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


def restored_range(arrays: dict[str, np.ndarray], clip_features: bool, head: str) -> FeatureRange | None:
    if not clip_features:
        return None
    if LOW not in arrays or HIGH not in arrays:
        raise InputError(f"this saved {head} head says clip_features=True but holds no training feature range; "
                         "save it again with this version of hacknip-heads")
    return arrays[LOW], arrays[HIGH]
