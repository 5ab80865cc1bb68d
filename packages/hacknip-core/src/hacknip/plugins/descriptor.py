"""Descriptors: hand-crafted structure-level featurisers (matminer's Magpie element statistics, density, symmetry,
...) registered like backbones and composed with them in expressions: ``chgnet@all+matminer:magpie``.

A descriptor maps one structure to one vector of fixed length. It has no layers (``@`` on a descriptor is an error)
and nothing to pool: its vector joins the backbones' features as it is, whatever ``--pooling`` says. Its vectors go to
the feature store like a backbone's, keyed by its identity and the structure's content hash, so they are computed
once. A plugin registers a :class:`DescriptorSpec` through the ``register_descriptors`` hook;
:class:`hacknip.plugins.testing.DescriptorConformance` checks an implementation (docs/plugins.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from ase import Atoms

DESCRIPTOR_KIND = "descriptor"
"""The ``kind`` a descriptor's store identity carries (backbones' carry none)."""


@runtime_checkable
class Descriptor(Protocol):
    name: str
    feature_names: tuple[str, ...]

    def identity(self) -> dict[str, Any]:
        """JSON-able: everything its values depend on (library versions, settings). The store keys its vectors by it."""

    def describe(self, atoms: Atoms) -> np.ndarray:
        """One structure's vector: ``len(feature_names)`` floats, NaN where a feature is undefined for it (each
        training fold's scaler ignores it and puts the training rows' mean there). Raises ``ValueError`` for a structure it
        cannot describe (then that row is a bad row, named to the user)."""


@dataclass(frozen=True)
class DescriptorSpec:
    """What a plugin registers for a descriptor: ``factory`` (``"module:callable"``) takes the loader's options and
    returns a :class:`Descriptor`; ``width`` is the length of its vectors (``hacknip list`` shows it without importing
    the library)."""

    name: str
    factory: str
    width: int
    description: str = ""
    package: str = field(default="", compare=False)
    package_version: str = field(default="", compare=False)

    def load(self, **options: Any) -> Descriptor:
        from hacknip.plugins.manager import resolve_factory

        return resolve_factory("descriptor", self)(**options)


def store_identity(descriptor: Descriptor) -> dict[str, Any]:
    """The identity its vectors are stored under: its own, marked as a descriptor's."""
    return {**descriptor.identity(), "name": descriptor.name, "kind": DESCRIPTOR_KIND}


def is_descriptor_identity(identity: dict[str, Any]) -> bool:
    return identity.get("kind") == DESCRIPTOR_KIND
