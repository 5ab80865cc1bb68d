"""One batch's computation, wherever it runs (this process, or an executor's worker): records of its structures,
and the rows it rejects. Nothing here touches the store."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hacknip.data.structures import BadInputError, SkippedRow
from hacknip.errors import BadStructureError
from hacknip.features.batching import is_out_of_memory, release_cached_memory
from hacknip.features.pooling import atom_statistics
from hacknip.features.supercell import cutoff_supercell
from hacknip.plugins.backbone import Backbone, labelled_copy, supercell_rule
from hacknip.plugins.executor import Batch, BatchResult
from hacknip.store import Record


def reject(source: str, row: str, sample_id: str, reason: str, on_error: str) -> SkippedRow:
    if on_error == "raise":
        raise BadInputError(source, row, sample_id, reason)
    return SkippedRow(row, sample_id, reason)


def _records(backbone: Backbone, batch: Batch, layers: list[int]) -> list[Record]:
    # copies that name their row to the backbone's warnings
    inputs = [labelled_copy(atoms, f"{row} (id {sample_id})")
              for atoms, row, sample_id in zip(batch.atoms, batch.rows, batch.ids)]
    if backbone.needs_supercell:
        inputs = [cutoff_supercell(atoms, backbone.cutoff, supercell_rule(backbone)) for atoms in inputs]
    per_atom = backbone.per_atom_features(inputs, layers)
    for features in per_atom:
        _check_finite(backbone, features)
    return [
        Record(key, len(atoms), {layer: atom_statistics(features[layer]) for layer in layers})
        for key, atoms, features in zip(batch.keys, batch.atoms, per_atom)
    ]


def _check_finite(backbone: Backbone, features: dict[int, np.ndarray]) -> None:
    """A NaN embedding would poison every model trained on it, and some networks return one silently."""
    for layer, values in features.items():
        bad_atoms = int((~np.isfinite(values)).any(axis=1).sum())
        if bad_atoms:
            raise BadStructureError(f"non-finite features at layer {layer} for {bad_atoms} atom(s) (for example an atom "
                                    f"with no neighbour within {backbone.name}'s {backbone.cutoff:g} Å cutoff)")


def batch_computation(backbone: Backbone, layers: list[int], on_error: str, source: str) -> Callable[[Batch], BatchResult]:
    """The computation of one batch with ``backbone``, wherever it runs (this process or an executor's worker)."""

    def compute(batch: Batch) -> BatchResult:
        return BatchResult(batch.indices, *_featurize_batch(backbone, batch, layers, on_error, source))

    return compute


def _featurize_batch(backbone: Backbone, batch: Batch, layers: list[int], on_error: str,
                     source: str) -> tuple[list[Record], list[SkippedRow]]:
    """Records of the batch's structures, and the rows rejected. One structure that breaks the batch (a
    :class:`BadStructureError`) sends it one by one to name the culprit and keep the rest; a batch out of device memory
    is split in halves, recursively, down to one structure, which is then rejected."""
    try:
        return _records(backbone, batch, layers), []
    except BadStructureError as error:
        failure, reason = "bad", f"{backbone.name} cannot featurise it: {error}"
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        failure, reason = "memory", (f"{backbone.name} ran out of device memory on this structure alone "
                                     f"({len(batch.atoms[0])} atoms): try a device with more memory, or the CPU")
    # Retried outside the except block: the exception's traceback holds the failed pass's tensors until then.
    if len(batch.indices) == 1:
        return [], [reject(source, batch.rows[0], batch.ids[0], reason, on_error)]
    if failure == "memory":
        release_cached_memory()
        half = len(batch.indices) // 2
        parts = [_part(batch, slice(0, half)), _part(batch, slice(half, None))]
    else:
        parts = [_part(batch, slice(i, i + 1)) for i in range(len(batch.indices))]
    records, rejected = [], []
    for part in parts:
        part_records, part_rejected = _featurize_batch(backbone, part, layers, on_error, source)
        records += part_records
        rejected += part_rejected
    return records, rejected


def _part(batch: Batch, positions: slice) -> Batch:
    return Batch(batch.indices[positions], batch.rows[positions], batch.ids[positions], batch.atoms[positions],
                 batch.keys[positions])


