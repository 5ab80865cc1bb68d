"""Executors: where featurisation's batches are computed. A plugin registers an :class:`ExecutorSpec` through the
``register_executors`` hook; hacknip-core registers ``local`` (this process, threads) and ``ray`` (Ray actors on a
local or remote cluster, needs ``hacknip-core[ray]``).

An executor gets a :class:`BatchWork` — what to compute, both as a function for this process (with the backbone
already loaded) and as a picklable recipe for another process (the backbone's registered name and loader options,
and the identity a worker's copy must have) — and an iterator of batches, and yields each batch's result as it
finishes, in any order. The feature store stays with the caller: workers return records, the caller writes them, so
a killed worker or driver loses at most the batches in flight, and rerunning resumes from the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ase import Atoms

    from hacknip.data.structures import SkippedRow
    from hacknip.store import Record


@dataclass
class Batch:
    """Structures to featurise together: their positions in the dataset, rows, ids, atoms and store keys."""

    indices: list[int]
    rows: list[str]
    ids: list[str]
    atoms: list[Atoms]
    keys: list[str]


@dataclass
class BatchResult:
    indices: list[int]
    records: list[Record]
    rejected: list[SkippedRow]


@dataclass(frozen=True)
class BackboneRef:
    """How another process loads the same backbone: its registered name (with ``:checkpoint``) and loader options, or
    a ``"module:callable"`` ``factory`` taking the options (a backbone defined in your own importable module)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    factory: str | None = None


@dataclass
class BatchWork:
    """What to compute for each batch. ``compute`` runs in this process with the loaded backbone; ``ref``,
    ``identity``, ``layers``, ``on_error`` and ``source`` let a worker process rebuild the same computation
    (:meth:`portable`, :func:`hacknip.features.executors.worker_computation`). ``ref`` is None where the backbone
    cannot be loaded by name (then only ``local`` can run it)."""

    compute: Callable[[Batch], BatchResult]
    ref: BackboneRef | None
    identity: dict[str, Any]
    layers: list[int]
    on_error: str
    source: str

    def portable(self) -> PortableWork:
        from hacknip.errors import InputError

        if self.ref is None:
            raise InputError("this backbone was passed as a loaded object, so worker processes cannot load it; give "
                             "its registered name (backbone_ref=) or use the local executor")
        return PortableWork(self.ref, self.identity, self.layers, self.on_error, self.source)


@dataclass(frozen=True)
class PortableWork:
    """The picklable half of :class:`BatchWork`: a worker builds its computation from it once
    (:func:`hacknip.features.executors.worker_computation`)."""

    ref: BackboneRef
    identity: dict[str, Any]
    layers: list[int]
    on_error: str
    source: str


@runtime_checkable
class Executor(Protocol):
    name: str

    def map_batches(self, work: BatchWork, batches: Iterable[Batch],
                    unconsumed: Callable[[BatchResult], None]) -> AbstractContextManager[Iterator[BatchResult]]:
        """A context whose iterator yields one :class:`BatchResult` per batch as each finishes. Leaving it early (an
        error, Ctrl-C) stops handing out batches; batches that finish anyway go to ``unconsumed``, so that the
        caller stores their work rather than losing it."""


@dataclass(frozen=True)
class ExecutorSpec:
    """What a plugin registers for an executor: ``factory`` (``"module:callable"``) takes the options
    (``workers``, ``address``, ``gpus_per_worker``, ...) and returns an :class:`Executor`."""

    name: str
    factory: str
    description: str = ""
    package: str = field(default="", compare=False)
    package_version: str = field(default="", compare=False)

    def create(self, **options: Any) -> Executor:
        from hacknip.plugins.manager import resolve_factory

        return resolve_factory("executor", self)(**options)
