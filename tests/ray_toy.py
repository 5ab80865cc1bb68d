"""A toy backbone whose worker process exits in the middle of its first batch (once per ``marker`` file), to test
that an executor retries the batches of a worker that died."""

from __future__ import annotations

import os
from pathlib import Path

from toy_backbone import ToyBackbone


class DyingOnce(ToyBackbone):
    name = "dying-toy"

    def __init__(self, marker: str, **options):
        super().__init__(**options)
        self.marker = Path(marker)

    def identity(self):
        return {**super().identity(), "name": self.name}

    def per_atom_features(self, structures, layers):
        if _in_ray_worker():
            if not self.marker.exists():
                self.marker.touch()
                os._exit(1)  # as a node running out of memory or a killed process would
        return super().per_atom_features(structures, layers)


def _in_ray_worker() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


class CountingExecutor:
    """The smallest executor: batches one after another in this process, counted (a third party's plugin in tests)."""

    name = "counting"

    def __init__(self) -> None:
        self.batches = 0

    def map_batches(self, work, batches, unconsumed):
        import contextlib

        @contextlib.contextmanager
        def results():
            def run():
                for batch in batches:
                    self.batches += 1
                    yield work.compute(batch)

            yield run()

        return results()
