"""The scaler in front of every head (imports scikit-learn, so :mod:`hacknip.evaluation.crossval` imports it late)."""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import StandardScaler


class MeanImputingScaler(StandardScaler):
    """A ``StandardScaler`` that also fills undefined features. scikit-learn's scaler ignores NaN when fitting and
    keeps it when transforming; this one then puts 0 there, the training rows' mean. A descriptor's NaN marks a
    feature undefined for that structure; embeddings are always finite, so for them this is the plain scaler."""

    def transform(self, X, copy=None):
        return np.nan_to_num(super().transform(X, copy=copy), nan=0.0, posinf=np.inf, neginf=-np.inf)
