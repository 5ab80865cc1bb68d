"""Executors: the registry hook, local threads, and a real local Ray instance (no mocks): features equal local
featurisation, a worker killed mid-run has its batches retried, a worker with another identity is refused."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hacknip.cli import cli
from hacknip.data.read import read_dataset
from hacknip.errors import InputError
from hacknip.features.featurize import dataset_keys, featurize, layer_matrix
from hacknip.plugins.executor import BackboneRef, PortableWork
from hacknip.plugins.registry import UnknownNameError, create_executor, executor_specs
from hacknip.store import FeatureStore

TESTS = Path(__file__).parent
N_STRUCTURES = 24


@pytest.fixture(scope="module")
def phonons(phonons_path):
    dataset = read_dataset(phonons_path)
    return dataset.head(N_STRUCTURES)


@pytest.fixture(scope="module")
def local_ray():
    """A real Ray instance on this machine's two cores; workers find the tests' own modules (toy backbones)."""
    ray = pytest.importorskip("ray", reason="pip install 'hacknip-core[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning",
             runtime_env={"env_vars": {"PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1",
                                       "OMP_WAIT_POLICY": "PASSIVE"}})
    yield ray
    ray.shutdown()


def _stored(report, layer: int) -> np.ndarray:
    """Every pooled statistic the store holds for the report's structures at ``layer``, in dataset order."""
    return layer_matrix(report.features, report.keys, [layer], ("mean", "max", "std"))


def test_hacknip_core_registers_local_and_ray_like_any_plugin():
    specs = executor_specs()
    assert {"local", "ray"} <= set(specs) and specs["ray"].package == "hacknip-core"
    assert create_executor("local").name == "local"
    with pytest.raises(UnknownNameError, match="no installed plugin provides the executor 'dask'"):
        create_executor("dask")


def test_a_worker_with_another_identity_is_refused():
    work = PortableWork(BackboneRef("toy", factory="toy_backbone:load"), {"name": "toy", "library_version": "0"},
                        [0], "raise", "data.csv")
    from hacknip.features.executors import worker_computation

    with pytest.raises(InputError, match="another identity \\(.*library_version"):
        worker_computation(work)


def test_ray_features_equal_local_featurisation_with_chgnet(local_ray, phonons, tmp_path):
    from hacknip.features.executors import RayExecutor
    from hacknip.plugins.registry import load_backbone

    chgnet = load_backbone("chgnet")
    local = featurize(phonons, chgnet, FeatureStore(tmp_path / "local"), batch_size=4)
    remote = featurize(phonons, chgnet, FeatureStore(tmp_path / "ray"), batch_size=4,
                       executor=RayExecutor(workers=2), backbone_ref=BackboneRef("chgnet"))
    assert remote.computed == N_STRUCTURES and remote.features.identity == local.features.identity
    for layer in range(len(chgnet.layer_widths)):
        np.testing.assert_allclose(_stored(remote, layer), _stored(local, layer), atol=1e-6, rtol=0)


def test_a_killed_worker_has_its_batches_retried(local_ray, phonons, tmp_path):
    from hacknip.features.executors import RayExecutor

    marker = tmp_path / "died-once"
    ref = BackboneRef("dying-toy", {"marker": str(marker)}, factory="ray_toy:DyingOnce")
    from ray_toy import DyingOnce

    here = DyingOnce(marker=str(tmp_path / "never"))
    report = featurize(phonons, here, FeatureStore(tmp_path / "store"), batch_size=3,
                       executor=RayExecutor(workers=2, max_retries=2), backbone_ref=ref)
    assert marker.exists(), "a worker process exited in the middle of a batch"
    assert report.computed == N_STRUCTURES and not report.features.missing(dataset_keys(phonons), [0, 1, 2])
    expected = featurize(phonons, here, FeatureStore(tmp_path / "local"))
    np.testing.assert_array_equal(_stored(report, 2), _stored(expected, 2))


def test_featurize_command_takes_the_ray_executor(local_ray, phonons_path, tmp_path):
    result = CliRunner().invoke(cli, ["featurize", "--data", str(phonons_path), "--backbone", "chgnet", "--limit", "8",
                                      "--executor", "ray", "--workers", "2", "--store", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "chgnet: 8 computed, 0 already stored" in result.output


def test_ray_needs_its_extra_or_says_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'hacknip-core\[ray\]'"):
        create_executor("ray")


def test_the_local_executor_runs_threads_in_order_of_completion(toy_plugin, phonons, tmp_path):
    from toy_backbone import ToyBackbone

    concurrent = ToyBackbone(concurrent=True)
    threaded = featurize(phonons, concurrent, FeatureStore(tmp_path / "a"), batch_size=2, threads=2)
    serial = featurize(phonons, ToyBackbone(), FeatureStore(tmp_path / "b"), batch_size=2)
    assert threaded.computed == serial.computed == N_STRUCTURES
    np.testing.assert_array_equal(_stored(threaded, 1), _stored(serial, 1))
    assert os.environ.get("HACKNIP_HOME")


def test_a_ray_worker_with_another_identity_stops_the_run_naming_what_differs(local_ray, phonons, tmp_path):
    from toy_backbone import ToyBackbone

    from hacknip.features.executors import RayExecutor

    other = BackboneRef("toy", {"checkpoint": "elsewhere.ckpt"}, factory="toy_backbone:load")
    with pytest.raises(InputError, match=r"another identity \(checkpoint differ\)"):
        featurize(phonons, ToyBackbone(), FeatureStore(tmp_path / "s"), executor=RayExecutor(workers=1),
                  backbone_ref=other)


def test_a_third_party_executor_is_found_through_the_hook(toy_plugin, phonons, tmp_path):
    """What a Dask executor's package would do: register an ExecutorSpec; featurize then runs through it."""
    from hacknip import hookimpl
    from hacknip.plugins.executor import ExecutorSpec
    from hacknip.plugins.manager import pm

    class ExecutorPlugin:
        @hookimpl
        def register_executors(self, register):
            register(ExecutorSpec(name="counting", factory="ray_toy:CountingExecutor"))

    pm.register(ExecutorPlugin(), name="executor-test-plugin")
    try:
        executor = create_executor("counting")
        from toy_backbone import ToyBackbone

        report = featurize(phonons, ToyBackbone(), FeatureStore(tmp_path / "s"), batch_size=5, executor=executor)
    finally:
        pm.unregister(name="executor-test-plugin")
    assert report.computed == N_STRUCTURES and executor.batches == 5
