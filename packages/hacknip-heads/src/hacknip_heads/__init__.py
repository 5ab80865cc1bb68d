"""Shallow models ("heads") for hacknip: MODNet (in PyTorch), LightGBM, XGBoost and a PyTorch MLP.

Importing this package is cheap: each head class, and the library behind it, loads on first access. ``RidgeHead``
now lives in hacknip-core (:mod:`hacknip.plugins.ridge_head`); it is still importable from here.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_HEAD_MODULES = {
    "MODNetHead": "hacknip_heads.modnet",
    "LightGBMHead": "hacknip_heads.lightgbm_head",
    "XGBoostHead": "hacknip_heads.xgboost_head",
    "MLPHead": "hacknip_heads.mlp",
    "RidgeHead": "hacknip.plugins.ridge_head",
}

__all__ = ["__version__", *_HEAD_MODULES]


def __getattr__(name: str) -> Any:
    if name in _HEAD_MODULES:
        return getattr(importlib.import_module(_HEAD_MODULES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
