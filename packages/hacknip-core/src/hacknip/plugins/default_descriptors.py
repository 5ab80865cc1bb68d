"""hacknip-core's own descriptors: RDKit's molecular descriptors (:mod:`hacknip.plugins.rdkit_descriptors`), the
molecular baseline beside the NIP embeddings, registered like any plugin's. Light: RDKit is imported when a descriptor
is loaded (it comes with ``hacknip-core[molecules]``), not when ``hacknip list`` shows them.
"""

from __future__ import annotations

from hacknip.plugins.descriptor import DescriptorSpec
from hacknip.plugins.hookspecs import hookimpl
from hacknip.plugins.rdkit_descriptors import MORGAN_BITS, MORGAN_RADIUS, RDKIT_2D

DESCRIPTOR_SPECS = (
    DescriptorSpec(name="rdkit:descriptors", factory="hacknip.plugins.rdkit_descriptors:load_descriptors",
                   width=len(RDKIT_2D),
                   description="RDKit's 2-D molecular descriptors (weights, logP, TPSA, counts, topological indices, "
                               "charges, fragment counts) of a molecule read from SMILES"),
    DescriptorSpec(name="rdkit:morgan", factory="hacknip.plugins.rdkit_descriptors:load_morgan", width=MORGAN_BITS,
                   description=f"Morgan count fingerprint, radius {MORGAN_RADIUS} (ECFP4), {MORGAN_BITS} counts, of a "
                               "molecule read from SMILES"),
)


@hookimpl
def register_descriptors(register):
    for spec in DESCRIPTOR_SPECS:
        register(spec)
