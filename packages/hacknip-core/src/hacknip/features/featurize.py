"""Featurising a dataset with a backbone into the feature store: batched, one forward pass for every layer,
resumable, and never repeated for a structure the store already holds."""

from __future__ import annotations

import contextlib
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from hacknip.data.structures import BadInputError, Dataset, Sample, SkippedRow
from hacknip.errors import BadStructureError, InputError
from hacknip.features.pooling import atom_statistics, pool
from hacknip.features.store import BackboneFeatures, Claims, FeatureStore, Record, structure_hash
from hacknip.features.supercell import cutoff_supercell
from hacknip.plugins.backbone import Backbone, check_layers, concurrent_batches, supercell_rule

FLUSH_SECONDS = 5.0
CLAIM_POLL_SECONDS = 0.5


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


class FeaturizeInterrupted(KeyboardInterrupt):
    """Featurisation was interrupted (Ctrl-C, or SIGTERM through the command line); what was computed is stored."""

    def __init__(self, features: BackboneFeatures, computed: int, stored: int, total: int):
        self.features, self.computed, self.stored, self.total = features, computed, stored, total
        super().__init__(f"interrupted: {computed} structures computed and stored by this run; {stored} of {total} are "
                         f"now in {features.path}. Run the same command again to compute the rest")


def reject_row(dataset: Dataset, sample: Sample, reason: str, on_error: str) -> SkippedRow:
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
            raise BadStructureError(f"non-finite features at layer {layer} for {bad_atoms} atom(s) (for example an atom "
                                    f"with no neighbour within {backbone.name}'s {backbone.cutoff:g} Å cutoff)")


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

    Samples the backbone cannot featurise (an unknown element, a :class:`BadStructureError` from the backbone) raise
    a :class:`BadInputError` naming the row, or with ``on_error="skip"`` are returned in ``rejected``; any other
    error from the backbone propagates. ``name`` is the backbone name as the user typed it, recorded in the store
    beside the backbone's own. ``threads``: batches featurised at once, each on its own thread running torch on one
    thread (default: torch's thread count for a backbone that declares ``concurrent_batches``, else 1).
    Structures another process is computing into the same store are waited for, not computed again. An interrupt
    stores what was computed and raises :class:`FeaturizeInterrupted` saying how much.
    """
    started = time.perf_counter()
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    layers = check_layers(backbone, range(len(backbone.layer_widths)) if layers is None else layers)
    features = store.open(backbone.identity(), names=[n for n in (backbone.name, name) if n])
    keys = dataset_keys(dataset)
    rejected: list[SkippedRow] = []
    todo, seen = [], set()
    for index in features.missing(keys, layers):
        sample = dataset.samples[index]
        if unknown := unsupported_elements(sample, backbone):
            reason = f"{backbone.name} does not know element(s) {', '.join(unknown)}"
            rejected.append(reject_row(dataset, sample, reason, on_error))
        elif keys[index] not in seen:  # the same structure twice is computed once
            seen.add(keys[index])
            todo.append(index)
    if on_progress:
        on_progress(len(dataset.samples) - len(todo))

    run = _Run(dataset, backbone, features, keys, layers, on_error, on_progress, batch_threads(backbone, threads))
    try:
        with features.claims() as claims:
            waiting = run.compute(todo, batch_size, claims)
            while waiting:  # structures other processes claimed: wait for them, or take over a claim they let go
                time.sleep(CLAIM_POLL_SECONDS)
                features.refresh()
                still = [i for i in waiting if not features.has(keys[i], layers)]
                run.progress(len(waiting) - len(still))
                waiting = run.compute(still, batch_size, claims)
    except KeyboardInterrupt as interrupt:
        stored = sum(features.has(key, layers) for key in keys)
        raise FeaturizeInterrupted(features, run.computed, stored, len(keys)) from interrupt
    rejected += run.rejected
    rejected += _same_structure_rejections(dataset, keys, rejected)
    reused = len(keys) - len(features.missing(keys, layers)) - run.computed
    return FeaturizeReport(features, keys, run.computed, reused, rejected, time.perf_counter() - started)


def _same_structure_rejections(dataset: Dataset, keys: list[str], rejected: list[SkippedRow]) -> list[SkippedRow]:
    """A rejected structure's other rows (the same structure under another id) are rejected for the same reason."""
    position = {sample.row: i for i, sample in enumerate(dataset.samples)}
    reasons = {keys[position[r.row]]: r.reason for r in rejected if r.row in position}
    named = {r.row for r in rejected}
    return [SkippedRow(s.row, s.id, reasons[key]) for s, key in zip(dataset.samples, keys)
            if key in reasons and s.row not in named]


@dataclass
class _Run:
    """One featurisation: computes claimed batches, writes them to the store, and counts."""

    dataset: Dataset
    backbone: Backbone
    features: BackboneFeatures
    keys: list[str]
    layers: list[int]
    on_error: str
    on_progress: Callable[[int], None] | None
    threads: int
    computed: int = 0
    rejected: list[SkippedRow] = field(default_factory=list)

    def progress(self, n: int) -> None:
        if self.on_progress and n:
            self.on_progress(n)

    def compute(self, indices: list[int], batch_size: int, claims: Claims) -> list[int]:
        """Compute the structures at ``indices`` that no other process has claimed; returns those others hold."""
        held_elsewhere: list[int] = []

        def claimed_batches() -> Iterator[list[int]]:
            for start in range(0, len(indices), batch_size):
                batch = indices[start:start + batch_size]
                mine = set(claims.take(self.keys[i] for i in batch))
                held_elsewhere.extend(i for i in batch if self.keys[i] not in mine)
                self.features.refresh()  # a claim is only worth something while the structure is still missing
                done = [i for i in batch if self.keys[i] in mine and self.features.has(self.keys[i], self.layers)]
                claims.release(self.keys[i] for i in done)
                self.progress(len(done))
                if todo := [i for i in batch if self.keys[i] in mine and i not in done]:
                    yield todo

        pending: list[Record] = []
        finished: list[str] = []  # claimed keys whose records are in `pending` or rejected
        last_flush = time.monotonic()

        def flush() -> None:
            self.features.write(pending)
            claims.release(finished)
            pending.clear()
            finished.clear()

        threads = min(self.threads, max(1, -(-len(indices) // batch_size)))
        try:
            with _in_order(self._batch, claimed_batches(), threads,
                           unconsumed=lambda result: pending.extend(result[1])) as results:
                for batch, records, bad in results:
                    pending.extend(records)
                    finished.extend(self.keys[i] for i in batch)
                    self.rejected += bad
                    self.computed += len(records)
                    if time.monotonic() - last_flush > FLUSH_SECONDS:
                        flush()
                        last_flush = time.monotonic()
                    self.progress(len(batch))
        finally:
            flush()
        return held_elsewhere

    def _batch(self, batch: list[int]) -> tuple[list[int], list[Record], list[SkippedRow]]:
        return (batch, *_featurize_batch(self.dataset, self.backbone, self.keys, batch, self.layers, self.on_error))


def batch_threads(backbone: Backbone, threads: int | None) -> int:
    """Batches to featurise at once: ``threads`` if given, else torch's thread count when the backbone allows
    concurrent batches. On a CPU, one thread per batch used 1.9 of 2 cores where two threads inside one batch used
    1.5-1.7 (ORB, docs/benchmarks.md)."""
    if threads is not None:
        if threads < 1:
            raise InputError(f"threads must be at least 1, got {threads}")
        if threads > 1 and not concurrent_batches(backbone):
            raise InputError(f"{backbone.name} does not declare concurrent_batches: its batches cannot run in several "
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
        except BadStructureError:
            pass  # one structure broke the batch: redo it one by one to name the culprit and keep the rest
    records, rejected = [], []
    for sample, key in zip(samples, batch_keys):
        try:
            records += _records(backbone, [sample], [key], layers)
        except BadStructureError as error:
            rejected.append(reject_row(dataset, sample, f"{backbone.name} cannot featurise it: {error}", on_error))
    return records, rejected


def dataset_keys(dataset: Dataset) -> list[str]:
    """The store key (content hash) of every sample, in order."""
    return [structure_hash(sample.atoms) for sample in dataset.samples]


def layer_matrix(features: BackboneFeatures, keys: Sequence[str], layers: Sequence[int],
                 pooling: tuple[str, ...]) -> np.ndarray:
    """Pooled features of ``layers`` (concatenated in that order) for the structures ``keys``."""
    blocks = []
    for layer in layers:
        stats, n_atoms = features.read(keys, layer)
        blocks.append(pool(stats, n_atoms, pooling))
    return np.concatenate(blocks, axis=1)
