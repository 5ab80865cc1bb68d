"""hacknip: layer-wise embeddings from pretrained interatomic potentials, and shallow models on top.

Importing this package is cheap: heavy libraries (torch, pymatgen, scikit-learn, plugin backbones) load only when
used. The library's entry points load on first access:

- :class:`hacknip.Featurizer` — structures -> embeddings, a scikit-learn transformer (``hacknip.features.featurizer``);
- :func:`hacknip.read_dataset` — read any supported input into a ``Dataset`` (``hacknip.data.read``);
- :func:`hacknip.load_backbone` — load an installed backbone by name (``hacknip.plugins.registry``);
- :func:`hacknip.load_descriptor` — load an installed descriptor by name (``matminer:magpie``);
- :func:`hacknip.run`, :func:`hacknip.tune`, :func:`hacknip.finetune`, :func:`hacknip.curve`,
  :func:`hacknip.load_model` — the whole job, as the command line's ``run``, ``tune``, ``finetune``, ``curve`` and
  ``predict`` (``hacknip.api``), with results as a :class:`hacknip.RunResult` (a dict for ``curve``).

Example::

    import hacknip

    data = hacknip.read_dataset("matbench_phonons.json.gz")
    X = hacknip.Featurizer("chgnet@all").fit_transform([sample.atoms for sample in data.samples])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hacknip.plugins.hookspecs import hookimpl

__version__ = "0.1.0"

if TYPE_CHECKING:
    from hacknip.api import curve, finetune, load_model, run, tune
    from hacknip.data.read import read_dataset
    from hacknip.features.featurizer import Featurizer
    from hacknip.plugins.registry import load_backbone, load_descriptor
    from hacknip.workflow.results import RunResult

_LAZY = {
    "Featurizer": "hacknip.features.featurizer",
    "read_dataset": "hacknip.data.read",
    "load_backbone": "hacknip.plugins.registry",
    "load_descriptor": "hacknip.plugins.registry",
    "run": "hacknip.api",
    "tune": "hacknip.api",
    "finetune": "hacknip.api",
    "curve": "hacknip.api",
    "load_model": "hacknip.api",
    "RunResult": "hacknip.workflow.results",
}
"""Public names and the module each comes from, imported on first access."""

__all__ = ["Featurizer", "RunResult", "__version__", "curve", "finetune", "hookimpl", "load_backbone",
           "load_descriptor", "load_model", "read_dataset", "run", "tune"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'hacknip' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
