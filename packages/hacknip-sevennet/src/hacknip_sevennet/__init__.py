"""SevenNet as a hacknip backbone. The plugin module registers it without importing torch or sevenn."""

__version__ = "0.1.0"
