"""hacknip: layer-wise embeddings from pretrained interatomic potentials, and shallow models on top.

Importing this package is cheap: heavy libraries (torch, pymatgen, scikit-learn, plugin backbones) load only when
used. The library's entry points load on first access:

- :class:`hacknip.Featurizer` — structures -> embeddings, a scikit-learn transformer (``hacknip.featurizer``);
- :func:`hacknip.read_dataset` — read any supported input into a ``Dataset`` (``hacknip.structures``);
- :func:`hacknip.load_backbone` — load an installed backbone by name (``hacknip.registry``).

Example::

    import hacknip

    data = hacknip.read_dataset("matbench_phonons.json.gz")
    X = hacknip.Featurizer("chgnet@all").fit_transform([sample.atoms for sample in data.samples])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hacknip.hookspecs import hookimpl

__version__ = "0.1.0"

if TYPE_CHECKING:
    from hacknip.featurizer import Featurizer
    from hacknip.registry import load_backbone
    from hacknip.structures import read_dataset

_LAZY = {
    "Featurizer": "hacknip.featurizer",
    "read_dataset": "hacknip.structures",
    "load_backbone": "hacknip.registry",
}
"""Public names and the module each comes from, imported on first access."""

__all__ = ["Featurizer", "__version__", "hookimpl", "load_backbone", "read_dataset"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'hacknip' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
