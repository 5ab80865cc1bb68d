from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see hacknip.cli.main: spinning OpenMP threads stall shared cores
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # pytest -n N: the N workers share the cores rather than oversubscribe
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import pytest

TESTS = Path(__file__).parent
SHARED_DATA = TESTS.parent.parent / "shared" / "data"
PHONONS = SHARED_DATA / "matbench" / "matbench_phonons.json.gz"
sys.path.insert(0, str(TESTS))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own feature store, and the CLI relaxes molecules and fits heads in this process (a backbone
    or head registered by a test does not exist in a worker process; the tests that need workers ask for them)."""
    monkeypatch.setenv("HACKNIP_HOME", str(tmp_path / "hacknip-home"))
    monkeypatch.setenv("HACKNIP_WORKERS", "1")
    monkeypatch.setenv("HACKNIP_JOBS", "1")


@pytest.fixture
def toy_plugin():
    from toy_backbone import ToyPlugin

    from hacknip.plugins.manager import pm

    plugin = ToyPlugin()
    pm.register(plugin, name="toy-test-plugin")
    yield plugin
    pm.unregister(name="toy-test-plugin")


@pytest.fixture
def toy_head():
    """The k-nearest-neighbours head of toy_head.py: a minimal third-party head, with no random_state."""
    from toy_head import ToyHeadPlugin

    from hacknip.plugins.manager import pm

    pm.register(ToyHeadPlugin(), name="toy-head-plugin")
    yield
    pm.unregister(name="toy-head-plugin")


@pytest.fixture
def toy_trainable_plugin():
    from toy_trainable import ToyTrainablePlugin

    from hacknip.plugins.manager import pm

    plugin = ToyTrainablePlugin()
    pm.register(plugin, name="toy-trainable-test-plugin")
    yield plugin
    pm.unregister(name="toy-trainable-test-plugin")


@pytest.fixture(scope="session")
def phonons_path() -> Path:
    if not PHONONS.exists():
        pytest.fail(f"{PHONONS} is missing: the tests read the real data from ../shared/data beside the repo")
    return PHONONS


class RunsCode:
    """Unpickling this object makes the folder ``marker``: what a checkpoint built to run code could do with any
    code, harmlessly (and without leaving a file open)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def write_cif_table(source: Path, path: Path, n: int, target: str) -> Path:
    """The first ``n`` structures of a dataset as a CSV of ids (``name``), CIF text (``cif``) and ``target``."""
    import pandas as pd
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifWriter

    from hacknip.data.read import read_dataset

    dataset = read_dataset(source).head(n)
    cifs = [str(CifWriter(AseAtomsAdaptor.get_structure(sample.atoms))) for sample in dataset.samples]
    pd.DataFrame({"name": dataset.ids, "cif": cifs, target: dataset.targets}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def single_threaded_torch():
    """Torch on one thread for a module's tests (small fits run faster and reproducibly); restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
