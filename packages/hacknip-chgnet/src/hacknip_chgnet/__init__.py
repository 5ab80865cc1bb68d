"""CHGNet as a hacknip backbone. The plugin module registers it without importing torch or chgnet."""

__version__ = "0.1.0"
