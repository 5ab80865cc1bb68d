"""CHGNet's graphs built in worker processes (``graph_workers``): the same features and forces as built here, the
same errors and warnings, a backbone that still copies, and the default per device."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

pytest.importorskip("chgnet")

from hacknip.errors import BadStructureError  # noqa: E402
from hacknip.plugins.registry import load_backbone  # noqa: E402


@pytest.fixture(scope="module")
def backbones():
    serial = load_backbone("chgnet", graph_workers=0)
    pooled = load_backbone("chgnet", graph_workers=2)
    yield serial, pooled
    pooled._graph_pool and pooled._graph_pool.close()


def _structures():
    crystal = bulk("NaCl", "rocksalt", a=5.7) * (2, 1, 1)
    crystal.rattle(0.05, seed=1)
    return [molecule("CH3CH2OH"), crystal, bulk("Si"), molecule("C6H6")]


def test_graphs_built_in_workers_give_the_same_features_and_forces(backbones):
    serial, pooled = backbones
    structures = _structures()
    layers = list(range(len(serial.layer_widths)))
    for one, other in zip(serial.per_atom_features(structures, layers), pooled.per_atom_features(structures, layers),
                          strict=True):
        for layer in layers:
            np.testing.assert_allclose(other[layer], one[layer], atol=1e-6)
    for (energy, forces), (energy_pooled, forces_pooled) in zip(
            serial.energies_and_forces(structures), pooled.energies_and_forces(structures), strict=True):
        assert energy_pooled == pytest.approx(energy, abs=1e-5)
        np.testing.assert_allclose(forces_pooled, forces, atol=1e-5)
    assert pooled._graph_pool is not None and pooled._graph_pool.workers == 2


def test_a_structure_a_worker_cannot_graph_is_named_and_isolated_atoms_still_warn(backbones):
    lone = Atoms("NaCl", positions=[[0, 0, 0], [15, 15, 15]], cell=[30, 30, 30], pbc=True)
    _, pooled = backbones
    with pytest.warns(UserWarning, match=r"2 atom\(s\) with no neighbour"):
        pooled.per_atom_features([bulk("Si"), lone], [0])
    refusing = load_backbone("chgnet", graph_workers=2, on_isolated_atoms="error")
    try:
        with pytest.raises(BadStructureError, match=r"chgnet: structure 1 \(ClNa\) has an atom with no neighbour"):
            refusing.energies_and_forces([bulk("Si"), lone])
    finally:
        refusing._graph_pool.close()


def test_a_backbone_with_workers_copies_without_its_processes_and_the_default_follows_the_device(backbones):
    from hacknip.data.molecules import available_cores
    from hacknip_chgnet.backbone import CUDA_GRAPH_WORKERS, default_graph_workers

    _, pooled = backbones
    pooled.energies_and_forces([bulk("Si"), bulk("Si")])
    copied = copy.deepcopy(pooled)
    assert pooled._graph_pool is not None
    assert copied._graph_pool is None and copied.graph_workers == 2 and not copied._graph_pool_lock.locked()
    assert default_graph_workers("cpu") == 0
    assert default_graph_workers("cuda:0") == max(0, min(CUDA_GRAPH_WORKERS, available_cores() - 1))
    assert load_backbone("chgnet").graph_workers == 0
    with pytest.raises(ValueError, match="graph_workers must be 0 or more"):
        load_backbone("chgnet", graph_workers=-1)


def test_a_dead_graph_worker_fails_its_batch_and_the_next_batch_gets_new_ones(backbones):
    import os
    import signal
    import time

    _, pooled = backbones
    pooled.energies_and_forces([bulk("Si"), bulk("Si")])
    pool = pooled._graph_pool
    os.kill(next(iter(pool._executor._processes)), signal.SIGKILL)
    time.sleep(1)  # the executor notices a dead process from its own thread
    with pytest.raises(RuntimeError, match="a process building chgnet graphs died"):
        pooled.energies_and_forces([bulk("Si"), bulk("Si")])
    assert len(pooled.energies_and_forces([bulk("Si"), bulk("Si")])) == 2
