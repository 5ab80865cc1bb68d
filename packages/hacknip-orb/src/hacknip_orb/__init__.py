"""ORB (orb-models) as a hacknip backbone. The plugin module registers it without importing torch or orb_models."""

__version__ = "0.1.0"
