"""Network inputs for a dataset: each structure's graph, built once, and what they are made of."""

from __future__ import annotations

import hashlib
from typing import Any

from hacknip.data.structures import Dataset, require_geometries
from hacknip.errors import BadStructureError
from hacknip.features.featurize import dataset_keys, reject_row
from hacknip.features.supercell import cutoff_supercell
from hacknip.plugins.backbone import check_elements, check_structure, identity_key, supercell_rule
from hacknip.progress import no_progress


def fingerprint(backbone: Any, dataset: Dataset) -> str:
    """A hash of the backbone's identity and of every structure's content, in order."""
    digest = hashlib.sha256(identity_key(backbone.identity()).encode())
    for key in dataset_keys(dataset):
        digest.update(key.encode())
    return digest.hexdigest()


def build_inputs(dataset: Dataset, backbone: Any, network: Any, on_error: str,
                 progress=no_progress) -> tuple[Dataset, list[Any]]:
    """Each structure's network input (through a cutoff supercell where the backbone needs one); a structure the
    backbone cannot take is a :class:`~hacknip.data.structures.BadInputError`, or with ``on_error="skip"`` a rejected
    row."""
    require_geometries(dataset, backbone.name)
    advance = progress(f"building {backbone.name} graphs", len(dataset.samples))
    inputs, rejected = [], []
    for sample in dataset.samples:
        atoms = sample.atoms
        try:
            check_structure(atoms, 0, backbone.name)
            if backbone.supported_elements is not None:
                check_elements([atoms], backbone.supported_elements, backbone.name)
            if backbone.needs_supercell:
                atoms = cutoff_supercell(atoms, backbone.cutoff, supercell_rule(backbone))
            inputs.extend(network.inputs([atoms]))
        except BadStructureError as error:
            rejected.append(reject_row(dataset, sample, f"{backbone.name} cannot take it: {error}", on_error))
        advance(1)
    return dataset.drop(rejected), inputs
