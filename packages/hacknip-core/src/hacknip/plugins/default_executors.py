"""hacknip-core's own executors, registered like any plugin's: ``local`` (this process) and ``ray`` (a Ray cluster;
Ray is imported when the executor is created, and comes with ``pip install 'hacknip-core[ray]'``)."""

from __future__ import annotations

from hacknip.plugins.executor import ExecutorSpec
from hacknip.plugins.hookspecs import hookimpl

EXECUTOR_SPECS = (
    ExecutorSpec(name="local", factory="hacknip.features.executors:LocalExecutor",
                 description="This process: batches one after another, or in threads for backbones that allow it"),
    ExecutorSpec(name="ray", factory="hacknip.features.executors:RayExecutor",
                 description="Ray actors on a local or remote cluster, each loading the backbone once (hacknip-core[ray])"),
)


@hookimpl
def register_executors(register):
    for spec in EXECUTOR_SPECS:
        register(spec)
