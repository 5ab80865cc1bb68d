"""MACE as a hacknip backbone. The plugin module registers it without importing torch, e3nn or mace."""

__version__ = "0.1.0"
