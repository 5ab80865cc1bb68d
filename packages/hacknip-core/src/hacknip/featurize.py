"""Featurising a dataset with a backbone into the feature store: batched, one forward pass for every layer,
resumable, and never repeated for a structure the store already holds."""

from __future__ import annotations

import contextlib
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from hacknip.backbone import Backbone, check_layers, concurrent_batches, supercell_rule
from hacknip.pooling import atom_statistics, pool
from hacknip.store import BackboneFeatures, FeatureStore, Record, structure_hash
from hacknip.structures import BadInputError, Dataset, Sample, SkippedRow
from hacknip.supercell import cutoff_supercell

FLUSH_SECONDS = 5.0


@dataclass
class FeaturizeReport:
    features: BackboneFeatures
    keys: list[str]
    """Store key of every sample of the dataset, in order."""
    computed: int
    reused: int
    rejected: list[SkippedRow]
    seconds: float


def unsupported_elements(sample: Sample, backbone: Backbone) -> list[str]:
    if backbone.supported_elements is None:
        return []
    return sorted({chemical_symbols[z] for z in sample.atoms.numbers if z not in backbone.supported_elements})


def _reject(dataset: Dataset, sample: Sample, reason: str, on_error: str) -> SkippedRow:
    if on_error == "raise":
        raise BadInputError(dataset.source, sample.row, sample.id, reason)
    return SkippedRow(sample.row, sample.id, reason)


def _records(backbone: Backbone, samples: Sequence[Sample], keys: Sequence[str], layers: list[int]) -> list[Record]:
    inputs = [s.atoms for s in samples]
    if backbone.needs_supercell:
        inputs = [cutoff_supercell(atoms, backbone.cutoff, supercell_rule(backbone)) for atoms in inputs]
    per_atom = backbone.per_atom_features(inputs, layers)
    for features in per_atom:
        _check_finite(backbone, features)
    return [
        Record(key, len(sample.atoms), {layer: atom_statistics(features[layer]) for layer in layers})
        for key, sample, features in zip(keys, samples, per_atom)
    ]


def _check_finite(backbone: Backbone, features: dict[int, np.ndarray]) -> None:
    """A NaN embedding would poison every model trained on it, and some networks return one silently."""
    for layer, values in features.items():
        bad_atoms = int((~np.isfinite(values)).any(axis=1).sum())
        if bad_atoms:
            raise ValueError(f"non-finite features at layer {layer} for {bad_atoms} atom(s) (for example an atom with no "
                             f"neighbour within {backbone.name}'s {backbone.cutoff:g} Å cutoff)")


def featurize(
    dataset: Dataset,
    backbone: Backbone,
    store: FeatureStore,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    on_error: str = "raise",
    on_progress: Callable[[int], None] | None = None,
    name: str | None = None,
    threads: int | None = None,
) -> FeaturizeReport:
    """Make sure the store holds ``layers`` (default: all) of every sample; compute only what is missing.

    Samples the backbone cannot featurise (unknown element, a failure inside the model) raise a
    :class:`BadInputError` naming the row, or with ``on_error="skip"`` are returned in ``rejected``. ``name`` is
    the backbone name as the user typed it, recorded in the store beside the backbone's own. ``threads``: batches
    featurised at once, each on its own thread running torch on one thread (default: torch's thread count for a
    backbone that declares ``concurrent_batches``, else 1).
    """
    started = time.perf_counter()
    layers = check_layers(backbone, range(len(backbone.layer_widths)) if layers is None else layers)
    features = store.open(backbone.identity(), names=[n for n in (backbone.name, name) if n])
    keys = [structure_hash(sample.atoms) for sample in dataset.samples]
    rejected: list[SkippedRow] = []
    todo = []
    for index in features.missing(keys, layers):
        sample = dataset.samples[index]
        if unknown := unsupported_elements(sample, backbone):
            reason = f"{backbone.name} does not know element(s) {', '.join(unknown)}"
            rejected.append(_reject(dataset, sample, reason, on_error))
        else:
            todo.append(index)
    if on_progress:
        on_progress(len(dataset.samples) - len(todo))

    batches = [todo[start:start + batch_size] for start in range(0, len(todo), batch_size)]
    threads = min(batch_threads(backbone, threads), len(batches))
    pending: list[Record] = []
    computed = 0
    last_flush = time.monotonic()
    try:
        with _in_order(lambda batch: _featurize_batch(dataset, backbone, keys, batch, layers, on_error), batches,
                       threads, unconsumed=lambda result: pending.extend(result[0])) as results:
            for batch, (records, bad) in zip(batches, results):
                pending += records
                rejected += bad
                computed += len(records)
                if time.monotonic() - last_flush > FLUSH_SECONDS:
                    features.write(pending)
                    pending, last_flush = [], time.monotonic()
                if on_progress:
                    on_progress(len(batch))
    finally:
        features.write(pending)
    reused = len(keys) - len(features.missing(keys, layers)) - computed
    return FeaturizeReport(features, keys, computed, reused, rejected, time.perf_counter() - started)


def batch_threads(backbone: Backbone, threads: int | None) -> int:
    """Batches to featurise at once: ``threads`` if given, else torch's thread count when the backbone allows
    concurrent batches. On a CPU, one thread per batch used 1.9 of 2 cores where two threads inside one batch used
    1.5-1.7 (ORB, docs/benchmarks.md)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if threads > 1 and not concurrent_batches(backbone):
            raise ValueError(f"{backbone.name} does not declare concurrent_batches: its batches cannot run in several "
                             f"threads at once; use threads=1")
        return threads
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None and concurrent_batches(backbone) else 1


@contextlib.contextmanager
def _in_order(function: Callable, items: list, threads: int, unconsumed: Callable[[Any], None]) -> Iterator[Iterator]:
    """An iterator over ``function(item)`` for each item, in order, with up to ``threads`` items computed at once,
    each on its own thread; torch runs one thread each meanwhile. If the iterator is left early (an error, Ctrl-C),
    items not started are cancelled and those already running finish: their results go to ``unconsumed`` (threads
    cannot be stopped, so their work is kept rather than waited for and lost)."""
    if threads <= 1:
        yield map(function, items)
        return
    futures: deque[Future] = deque()

    def results(pool: ThreadPoolExecutor) -> Iterator:
        for item in items:
            futures.append(pool.submit(function, item))
            if len(futures) > threads:  # one queued beyond those running: no thread waits for the consumer
                yield futures.popleft().result()
        while futures:
            yield futures.popleft().result()

    with _torch_threads(1), ThreadPoolExecutor(threads, thread_name_prefix="hacknip-featurize") as pool:
        try:
            yield results(pool)
        finally:
            for future in futures:
                future.cancel()
            for future in futures:
                if not future.cancelled() and future.exception() is None:
                    unconsumed(future.result())


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _featurize_batch(dataset, backbone, keys, batch, layers, on_error) -> tuple[list[Record], list[SkippedRow]]:
    samples = [dataset.samples[i] for i in batch]
    batch_keys = [keys[i] for i in batch]
    if len(batch) > 1:
        try:
            return _records(backbone, samples, batch_keys, layers), []
        except Exception:
            pass  # one structure broke the batch: redo it one by one to name the culprit and keep the rest
    records, rejected = [], []
    for sample, key in zip(samples, batch_keys):
        try:
            records += _records(backbone, [sample], [key], layers)
        except Exception as error:
            reason = f"featurising failed in {backbone.name}: {type(error).__name__}: {error}"
            rejected.append(_reject(dataset, sample, reason, on_error))
    return records, rejected


def layer_matrix(features: BackboneFeatures, keys: Sequence[str], layers: Sequence[int],
                 pooling: tuple[str, ...]) -> np.ndarray:
    """Pooled features of ``layers`` (concatenated in that order) for the structures ``keys``."""
    blocks = []
    for layer in layers:
        stats, n_atoms = features.read(keys, layer)
        blocks.append(pool(stats, n_atoms, pooling))
    return np.concatenate(blocks, axis=1)
