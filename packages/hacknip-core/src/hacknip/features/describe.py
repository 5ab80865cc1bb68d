"""Featurising with a descriptor (:mod:`hacknip.plugins.descriptor`): each structure's vector, computed once, in
worker processes, into the feature store.

A descriptor's vector is stored as layer 0 of a record whose ``mean`` statistic holds it (``std`` and ``max`` are
zeros: there are no atoms to pool over); :func:`hacknip.features.featurize.layer_matrix` reads it back as it is.
Structures a descriptor cannot describe are bad rows, named (or skipped with ``on_error="skip"``), like everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from ase import Atoms

from hacknip.data.structures import Dataset, SkippedRow
from hacknip.errors import InputError
from hacknip.features.featurize import FeaturizeReport, dataset_keys, reject_row, same_structure_rejections
from hacknip.features.pooling import STATISTICS
from hacknip.plugins.descriptor import Descriptor, store_identity
from hacknip.store import FeatureStore, Record

CHUNK = 32
"""Structures a worker describes per task: enough to hide the cost of sending them, few enough to write often."""
FLOAT32_MAX = float(np.finfo(np.float32).max)
"""The largest magnitude the feature store (float32) keeps finite."""


def describe(dataset: Dataset, descriptor: Descriptor, store: FeatureStore, on_error: str = "raise",
             on_progress: Callable[[int], None] | None = None, name: str | None = None,
             workers: int = 1) -> FeaturizeReport:
    """Make sure the store holds ``descriptor``'s vector of every sample; compute only what is missing, in
    ``workers`` processes (1: in this one). ``name`` is the descriptor's name as the user typed it."""
    started = time.perf_counter()
    features = store.open(store_identity(descriptor), names=[n for n in (descriptor.name, name) if n])
    keys = dataset_keys(dataset)
    features.verify(keys, [0])
    todo, seen = [], set()
    for index in features.missing(keys, [0]):
        if keys[index] not in seen:  # the same structure twice is described once
            seen.add(keys[index])
            todo.append(index)
    if on_progress:
        on_progress(len(dataset.samples) - len(todo))
    rejected: list[SkippedRow] = []
    computed = 0
    chunks = [todo[start:start + CHUNK] for start in range(0, len(todo), CHUNK)]
    for chunk, results in _run(descriptor, [[dataset.samples[i].atoms for i in chunk] for chunk in chunks], workers):
        records = []
        for index, result in zip(chunks[chunk], results):
            sample = dataset.samples[index]
            if isinstance(result, str):
                rejected.append(reject_row(dataset, sample, f"{descriptor.name}: {result}", on_error))
            else:
                records.append(_record(keys[index], len(sample.atoms), result))
        features.write(records)
        computed += len(records)
        if on_progress:
            on_progress(len(results))
    rejected += same_structure_rejections(dataset, keys, rejected)
    reused = len(keys) - len(features.missing(keys, [0])) - computed
    return FeaturizeReport(features, keys, computed, reused, rejected, time.perf_counter() - started)


def _run(descriptor: Descriptor, chunks: list[list[Atoms]], workers: int):
    """``(chunk number, results)`` as each chunk finishes, in worker processes when ``workers`` > 1."""
    if workers <= 1 or len(chunks) <= 1:
        for number, chunk in enumerate(chunks):
            yield number, describe_chunk(descriptor, chunk)
        return
    from joblib import Parallel, delayed

    tasks = (delayed(_numbered)(number, descriptor, chunk) for number, chunk in enumerate(chunks))
    yield from Parallel(n_jobs=min(workers, len(chunks)), backend="loky", return_as="generator_unordered")(tasks)


def _numbered(number: int, descriptor: Descriptor, chunk: list[Atoms]) -> tuple[int, list]:
    return number, describe_chunk(descriptor, chunk)


def describe_chunk(descriptor: Descriptor, structures: Sequence[Atoms]) -> list[np.ndarray | str]:
    """Each structure's vector, or why it could not be described (a bad row, not an end to the run)."""
    width = len(descriptor.feature_names)
    results: list[np.ndarray | str] = []
    for atoms in structures:
        try:
            vector = np.asarray(descriptor.describe(atoms), dtype=np.float64)
        except (ValueError, ArithmeticError, KeyError, IndexError, TypeError) as error:
            results.append(f"{type(error).__name__}: {error}")
            continue
        if vector.shape != (width,):
            raise InputError(f"descriptor {descriptor.name} returned {vector.shape} values for a structure, not the "
                             f"({width},) its feature_names promise: a fault of its plugin")
        # NaN means undefined (the scaler fills it); inf, or a value the store's float32 would make inf, is a fault
        unstorable = np.flatnonzero(np.abs(np.nan_to_num(vector, nan=0.0)) > FLOAT32_MAX)
        if len(unstorable):
            named = ", ".join(f"{descriptor.feature_names[i]} = {vector[i]:.3g}" for i in unstorable[:3])
            results.append(f"{descriptor.name} gave values beyond what the store keeps (float32, |x| < 3.4e38): "
                           f"{named}{', ...' if len(unstorable) > 3 else ''}")
            continue
        results.append(vector)
    return results


def _record(key: str, n_atoms: int, vector: np.ndarray) -> Record:
    zeros = np.zeros_like(vector)
    return Record(key, n_atoms, {0: {statistic: vector if statistic == "mean" else zeros for statistic in STATISTICS}})
