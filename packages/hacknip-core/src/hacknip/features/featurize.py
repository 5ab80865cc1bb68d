"""Featurising a dataset with a backbone into the feature store: batched by a budget of atoms (largest first, see
:mod:`hacknip.features.batching`), one forward pass for every layer, resumable, and never repeated for a structure the
store already holds."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from ase.data import chemical_symbols

from hacknip.data.structures import Dataset, Sample, SkippedRow, require_geometries
from hacknip.errors import InputError, Interrupted
from hacknip.features.batch import batch_computation, reject
from hacknip.features.batching import (
    check_batch_limits,
    default_batch_atoms,
    plan_batches,
    structure_cost,
)
from hacknip.features.pooling import pool
from hacknip.plugins.backbone import Backbone, check_layers, concurrent_batches
from hacknip.plugins.descriptor import is_descriptor_identity
from hacknip.plugins.executor import BackboneRef, Batch, BatchWork, Executor
from hacknip.store import BackboneFeatures, Claims, FeatureStore, Record, structure_hash

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


class FeaturizeInterrupted(Interrupted):
    """Featurisation was interrupted (Ctrl-C, or SIGTERM through the command line); what was computed is stored."""

    def __init__(self, features: BackboneFeatures, computed: int, stored: int, total: int):
        self.features, self.computed, self.stored, self.total = features, computed, stored, total
        super().__init__(f"interrupted: {computed} structures computed and stored by this run; {stored} of {total} are "
                         f"now in {features.path}. Run the same command again to compute the rest")


def reject_row(dataset: Dataset, sample: Sample, reason: str, on_error: str) -> SkippedRow:
    return reject(dataset.source, sample.row, sample.id, reason, on_error)


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
    batch_atoms: float | None = None,
    executor: Executor | None = None,
    backbone_ref: BackboneRef | None = None,
) -> FeaturizeReport:
    """Make sure the store holds ``layers`` (default: all) of every sample; compute only what is missing.

    Batches hold at most ``batch_size`` structures and ``batch_atoms`` atoms (as the backbone sees them: after the
    cutoff supercell, or its own ``batch_cost``), whichever limit comes first, largest structures first; a structure
    over the budget goes alone. ``batch_atoms`` defaults by the backbone's device
    (:func:`hacknip.features.batching.default_batch_atoms`). A batch that runs out of device memory is split in halves
    and retried; a single structure that still does is a bad row (raised or, with ``on_error="skip"``, rejected).

    Samples the backbone cannot featurise (an unknown element, a :class:`BadStructureError` from the backbone) raise
    a :class:`BadInputError` naming the row, or with ``on_error="skip"`` are returned in ``rejected``; any other
    error from the backbone propagates. ``name`` is the backbone name as the user typed it, recorded in the store
    beside the backbone's own. ``threads``: batches featurised at once, each on its own thread running torch on one
    thread (default: torch's thread count for a backbone that declares ``concurrent_batches``, else 1).
    Structures another process is computing into the same store are waited for, not computed again. An interrupt
    stores what was computed and raises :class:`FeaturizeInterrupted` saying how much.

    ``executor`` decides where batches run (default: this process, :class:`hacknip.features.executors.LocalExecutor`
    with ``threads``); one that runs them in other processes (``ray``) loads the backbone there from ``backbone_ref``
    (its registered name and loader options) and refuses a copy whose identity differs. Records always come back
    here and are written to the store by this process.
    """
    started = time.perf_counter()
    require_geometries(dataset, backbone.name)
    batch_atoms = default_batch_atoms(backbone) if batch_atoms is None else batch_atoms
    check_batch_limits(batch_size, batch_atoms)
    layers = check_layers(backbone, range(len(backbone.layer_widths)) if layers is None else layers)
    features = store.open(backbone.identity(), names=[n for n in (backbone.name, name) if n])
    keys = dataset_keys(dataset)
    rejected: list[SkippedRow] = []
    todo, seen = [], set()
    features.verify(keys, layers)  # a damaged record found now is computed again by this run
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

    costs = {index: structure_cost(backbone, dataset.samples[index].atoms) for index in todo}
    plan = functools.partial(plan_batches, costs=costs, batch_atoms=batch_atoms, batch_size=batch_size)
    if executor is None:
        from hacknip.features.executors import LocalExecutor

        # no more threads than batches: a lone batch keeps torch's own threads
        executor = LocalExecutor(min(batch_threads(backbone, threads), max(1, len(plan(todo)))))
    work = BatchWork(batch_computation(backbone, layers, on_error, dataset.source), backbone_ref, backbone.identity(),
                     layers, on_error, dataset.source)
    run = _Run(dataset, features, keys, layers, on_progress, executor, work, plan)
    try:
        with features.claims() as claims:
            waiting = run.compute(todo, claims)
            while waiting:  # structures other processes claimed: wait for them, or take over a claim they let go
                time.sleep(CLAIM_POLL_SECONDS)
                features.refresh()
                still = [i for i in waiting if not features.has(keys[i], layers)]
                run.progress(len(waiting) - len(still))
                waiting = run.compute(still, claims)
    except KeyboardInterrupt as interrupt:
        stored = sum(features.has(key, layers) for key in keys)
        raise FeaturizeInterrupted(features, run.computed, stored, len(keys)) from interrupt
    rejected += run.rejected
    rejected += same_structure_rejections(dataset, keys, rejected)
    position = {sample.row: i for i, sample in enumerate(dataset.samples)}
    rejected.sort(key=lambda row: position.get(row.row, -1))  # batches ran largest first; report in dataset order
    reused = len(keys) - len(features.missing(keys, layers)) - run.computed
    return FeaturizeReport(features, keys, run.computed, reused, rejected, time.perf_counter() - started)


def same_structure_rejections(dataset: Dataset, keys: list[str], rejected: list[SkippedRow]) -> list[SkippedRow]:
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
    features: BackboneFeatures
    keys: list[str]
    layers: list[int]
    on_progress: Callable[[int], None] | None
    executor: Executor
    work: BatchWork
    batches: Callable[[list[int]], list[list[int]]]
    """Plans the batches of a list of dataset positions (:func:`hacknip.features.batching.plan_batches`)."""
    computed: int = 0
    rejected: list[SkippedRow] = field(default_factory=list)

    def progress(self, n: int) -> None:
        if self.on_progress and n:
            self.on_progress(n)

    def compute(self, indices: list[int], claims: Claims) -> list[int]:
        """Compute the structures at ``indices`` that no other process has claimed; returns those others hold."""
        held_elsewhere: list[int] = []
        planned = self.batches(indices)

        def claimed_batches() -> Iterator[list[int]]:
            for batch in planned:
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

        try:
            with self.executor.map_batches(self.work, map(self._batch, claimed_batches()),
                                           unconsumed=lambda result: pending.extend(result.records)) as results:
                for result in results:
                    pending.extend(result.records)
                    finished.extend(self.keys[i] for i in result.indices)
                    self.rejected += result.rejected
                    self.computed += len(result.records)
                    if time.monotonic() - last_flush > FLUSH_SECONDS:
                        flush()
                        last_flush = time.monotonic()
                    self.progress(len(result.indices))
        finally:
            flush()
        return held_elsewhere

    def _batch(self, indices: list[int]) -> Batch:
        samples = [self.dataset.samples[i] for i in indices]
        return Batch(indices, [s.row for s in samples], [s.id for s in samples], [s.atoms for s in samples],
                     [self.keys[i] for i in indices])


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


def dataset_keys(dataset: Dataset) -> list[str]:
    """The store key (content hash) of every sample, in order."""
    return [structure_hash(sample.atoms) for sample in dataset.samples]


def layer_matrix(features: BackboneFeatures, keys: Sequence[str], layers: Sequence[int],
                 pooling: tuple[str, ...]) -> np.ndarray:
    """Pooled features of ``layers`` (concatenated in that order) for the structures ``keys``; a descriptor's vectors
    as they are (it has no layers and nothing to pool, :mod:`hacknip.features.describe`)."""
    if is_descriptor_identity(features.identity):
        return features.read(keys, 0)[0]["mean"]
    blocks = []
    for layer in layers:
        stats, n_atoms = features.read(keys, layer)
        blocks.append(pool(stats, n_atoms, pooling))
    return np.concatenate(blocks, axis=1)
