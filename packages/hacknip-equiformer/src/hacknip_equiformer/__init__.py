"""fairchem backbones for hacknip. The plugin module registers them without importing torch or fairchem.

- UMA and eSEN (``fairchem.core.models.uma``, fairchem-core 2.x): :mod:`hacknip_equiformer.backbone`.
- EquiformerV2 (fairchem-core 1.x only, in its own environment): :mod:`hacknip_equiformer.equiformer_v2`.
"""

__version__ = "0.1.0"
