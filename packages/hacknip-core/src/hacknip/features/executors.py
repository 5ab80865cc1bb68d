"""hacknip-core's executors (see :mod:`hacknip.plugins.executor`): ``local`` computes batches in this process, in
threads where the backbone allows it; ``ray`` hands them to Ray actors, each loading the backbone once."""

from __future__ import annotations

import contextlib
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from hacknip.errors import HacknipError, InputError
from hacknip.features.batch import batch_computation
from hacknip.plugins.executor import BackboneRef, Batch, BatchResult, BatchWork, PortableWork

IN_FLIGHT_PER_WORKER = 2
"""Batches handed to each worker at once: one running, one waiting, so that no worker idles between batches."""


class LocalExecutor:
    """Batches in this process: one after another, or ``workers`` at once, each on its own thread running torch on one
    thread (for backbones that declare ``concurrent_batches``; :func:`hacknip.features.featurize.batch_threads`)."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise InputError(f"workers must be at least 1, got {workers}")
        self.workers = workers or 1

    @contextlib.contextmanager
    def map_batches(self, work: BatchWork, batches: Iterable[Batch],
                    unconsumed: Callable[[BatchResult], None]) -> Iterator[Iterator[BatchResult]]:
        if self.workers <= 1:
            yield map(work.compute, batches)
            return
        futures: deque[Future] = deque()

        def results(pool: ThreadPoolExecutor) -> Iterator[BatchResult]:
            for batch in batches:
                futures.append(pool.submit(work.compute, batch))
                if len(futures) > self.workers:  # one queued beyond those running: no thread waits for the consumer
                    yield futures.popleft().result()
            while futures:
                yield futures.popleft().result()

        with torch_threads(1), ThreadPoolExecutor(self.workers, thread_name_prefix="hacknip-featurize") as pool:
            try:
                yield results(pool)
            finally:  # threads cannot be stopped: keep the work of those already running rather than lose it
                for future in futures:
                    future.cancel()
                for future in futures:
                    if not future.cancelled() and future.exception() is None:
                        unconsumed(future.result())


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
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


class RayExecutor:
    """Batches on Ray actors: ``workers`` of them (default: the cluster's CPUs, or GPUs with ``gpus_per_worker``),
    each loading the backbone once by name and refusing to work if its identity differs from the caller's. ``address``
    joins a running cluster (``"auto"``, ``"ray://head:10001"``); without it a local Ray instance is started for the
    run and stopped after it. A worker that dies is restarted and its batches retried (``max_retries`` times each)."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None, gpus_per_worker: float = 0.0,
                 cpus_per_worker: float = 1.0, max_retries: int = 3) -> None:
        try:
            import ray  # noqa: F401
        except ImportError as error:
            raise ImportError("the ray executor needs Ray: pip install 'hacknip-core[ray]'") from error
        if workers is not None and workers < 1:
            raise InputError(f"workers must be at least 1, got {workers}")
        if gpus_per_worker < 0 or cpus_per_worker <= 0:
            raise InputError("gpus_per_worker must be >= 0 and cpus_per_worker > 0")
        self.workers, self.address = workers, address
        self.gpus_per_worker, self.cpus_per_worker, self.max_retries = gpus_per_worker, cpus_per_worker, max_retries

    @contextlib.contextmanager
    def map_batches(self, work: BatchWork, batches: Iterable[Batch],
                    unconsumed: Callable[[BatchResult], None]) -> Iterator[Iterator[BatchResult]]:
        import ray

        portable = work.portable()
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, logging_level="warning")
        try:
            actor_class = self._actor_class()
            actors = [actor_class.remote(portable) for _ in range(self._worker_count())]
            in_flight: dict[Any, Any] = {}
            try:
                yield self._results(actors, iter(batches), in_flight)
            finally:
                for ref in ray.wait(list(in_flight), num_returns=len(in_flight), timeout=0)[0] if in_flight else []:
                    unconsumed(_ray_result(ref))
                for actor in actors:
                    ray.kill(actor)
        finally:
            if started_here:
                ray.shutdown()

    def _actor_class(self):
        import ray

        return ray.remote(num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker, max_restarts=-1,
                          max_task_retries=self.max_retries)(RayWorker)

    def _worker_count(self) -> int:
        if self.workers:
            return self.workers
        import ray

        resources = ray.cluster_resources()
        if self.gpus_per_worker:
            return max(1, int(resources.get("GPU", 0) // self.gpus_per_worker))
        return max(1, int(resources.get("CPU", 1) // self.cpus_per_worker))

    @staticmethod
    def _results(actors: list, batches: Iterator[Batch], in_flight: dict) -> Iterator[BatchResult]:
        """Keep every actor busy with up to :data:`IN_FLIGHT_PER_WORKER` batches; yield results as they finish."""
        import ray

        load = {id(actor): 0 for actor in actors}
        exhausted = False
        while True:
            while not exhausted:
                actor = min(actors, key=lambda a: load[id(a)])
                if load[id(actor)] >= IN_FLIGHT_PER_WORKER:
                    break
                batch = next(batches, None)
                if batch is None:
                    exhausted = True
                    break
                in_flight[actor.compute.remote(batch)] = actor
                load[id(actor)] += 1
            if not in_flight:
                return
            (done,), _ = ray.wait(list(in_flight), num_returns=1)
            load[id(in_flight.pop(done))] -= 1
            yield _ray_result(done)


def load_ref(ref: BackboneRef):
    """The backbone ``ref`` names, loaded in this process."""
    if ref.factory:
        import pkgutil

        return pkgutil.resolve_name(ref.factory)(**ref.options)
    from hacknip.plugins.registry import load_backbone

    return load_backbone(ref.name, **ref.options)


def worker_computation(work: PortableWork) -> Callable[[Batch], BatchResult]:
    """In a worker: load the backbone, refuse it if its identity differs from the caller's (another library version or
    checkpoint on this machine would give other features), and return the batch computation."""
    backbone = load_ref(work.ref)
    here = backbone.identity()
    if here != work.identity:
        differing = sorted(k for k in {*work.identity, *here} if work.identity.get(k) != here.get(k))
        raise InputError(f"a worker loaded {work.ref.name} with another identity ({', '.join(differing)} differ): "
                         f"install the same library and checkpoint on every machine of the cluster")
    return batch_computation(backbone, work.layers, work.on_error, work.source)


class RayWorker:
    """One Ray actor: loads the backbone once (checking its identity), then computes the batches it is sent."""

    def __init__(self, work: PortableWork) -> None:
        # an error the user can fix is kept and raised by the first batch, whose caller gets it as itself; raised
        # here it would only kill the actor with a traceback in text
        self.failure: Exception | None = None
        try:
            self.run = worker_computation(work)
        except (HacknipError, ImportError) as error:
            self.failure = error

    def compute(self, batch: Batch) -> BatchResult:
        if self.failure is not None:
            raise self.failure
        return self.run(batch)


def _ray_result(ref) -> BatchResult:
    """A batch's result; an error the worker raised for the user (a bad row, another identity) is raised as itself."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        cause = getattr(error, "cause", None)
        if isinstance(cause, HacknipError | ImportError):
            raise cause from None
        raise
