"""hacknip: layer-wise embeddings from pretrained interatomic potentials, and shallow models on top.

Importing this package is cheap: heavy libraries (torch, pymatgen, plugin backbones) load only when used.
"""

__version__ = "0.1.0"

from hacknip.hookspecs import hookimpl

__all__ = ["__version__", "hookimpl"]
