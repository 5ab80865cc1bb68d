"""The feature store and featurisation: nothing computed twice, resumable, readable from another process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list
from store_files import shard_files, shard_keys
from toy_backbone import ToyBackbone

from hacknip.data.structures import BadInputError, Dataset, Sample
from hacknip.errors import BadStructureError
from hacknip.features.featurize import FeaturizeInterrupted, batch_threads, featurize, layer_matrix
from hacknip.features.pooling import atom_statistics
from hacknip.plugins.testing import BackboneConformance, assert_features_close, reference_structures
from hacknip.store import Claims, FeatureStore, structure_hash


def _dataset(n=20):
    samples = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.5 + 0.02 * i) if i % 2 else bulk("NaCl", "rocksalt", a=5.5 + 0.02 * i)
        samples.append(Sample(f"s{i}", f"row {i}", atoms, float(i)))
    return Dataset(samples, "y", "test data")


class TestToyConformance(BackboneConformance):
    """The conformance suite itself, run on the toy backbone (the real ones run it in their own test files)."""

    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls):
        return ToyBackbone()


class TestConcurrentToyConformance(BackboneConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls):
        return ToyBackbone(concurrent=True)


class _SharesState(ToyBackbone):
    """Claims concurrent batches but keeps the batch in shared state while it works, as hooks on shared modules do."""

    def per_atom_features(self, structures, layers):
        self._current = structures
        time.sleep(0.05)
        return super().per_atom_features(self._current, layers)


def test_conformance_catches_a_false_concurrent_batches_claim():
    backbone, structures = _SharesState(concurrent=True), reference_structures()
    layers = list(range(len(backbone.layer_widths)))
    one_pass = ToyBackbone().per_atom_features(structures, layers)
    with pytest.raises(AssertionError, match="concurrent batches"):
        BackboneConformance().test_concurrent_batches_claim(backbone, structures, one_pass, layers)


class _WhenAlone(ToyBackbone):
    """The toy, but for an atom with no neighbour within the cutoff it does what a network may do: divide by the
    neighbour count ("nan"), trip over an empty edge list ("bug"), or refuse the structure ("refuse")."""

    def __init__(self, outcome):
        super().__init__()
        self.outcome = outcome

    def _one(self, atoms, layers):
        out = super()._one(atoms, layers)
        alone = np.bincount(neighbor_list("i", atoms, self.cutoff), minlength=len(atoms)) == 0
        if alone.any() and self.outcome == "bug":
            raise IndexError("index 0 is out of bounds for axis 0 with size 0")
        if alone.any() and self.outcome == "refuse":
            raise BadStructureError(f"toy: atom {int(np.flatnonzero(alone)[0])} has no neighbour")
        for values in out.values():
            values[alone] = np.nan
        return out


@pytest.mark.parametrize(("outcome", "caught"), [("nan", "non-finite features at layer 0"),
                                                 ("bug", "raised IndexError"), ("refuse", None)])
def test_conformance_on_an_isolated_atom(outcome, caught):
    """Finite features or BadStructureError pass the suite's isolated-atom check; NaN or another exception fail it."""
    backbone, structures = _WhenAlone(outcome), reference_structures()
    layers = list(range(len(backbone.layer_widths)))
    one_pass = backbone.per_atom_features(structures, layers)
    check = BackboneConformance().test_isolated_atom_gets_finite_features
    if caught is None:
        check(backbone, structures, one_pass, layers)
    else:
        with pytest.raises(AssertionError, match=caught):
            check(backbone, structures, one_pass, layers)


def test_the_suite_compares_features_to_the_precision_of_their_scale():
    """A rounding error near zero is measured against the array's largest value; a real difference still fails."""
    expected = np.array([[8.16, -2.1785e-4, 2.73]], dtype=np.float32)
    summed_otherwise = expected + np.array([[4e-6, -1.25e-5, 0.0]], dtype=np.float32)  # seen on ORB's layer 15
    assert_features_close(summed_otherwise, expected, "rounding")
    with pytest.raises(AssertionError, match="leak"):
        assert_features_close(expected + np.array([[0.0, 1e-3, 0.0]], dtype=np.float32), expected, "leak")
    with pytest.raises(AssertionError, match="leak"):
        assert_features_close(expected * np.float32(1.001), expected, "leak")
    small = np.array([[1e-3, 2e-3]])  # values below 1 keep the absolute floor of 1e-5
    with pytest.raises(AssertionError, match="small"):
        assert_features_close(small + 2e-5, small, "small")


def test_concurrent_batches_store_what_one_thread_stores_in_row_order(tmp_path):
    dataset = _dataset(20)
    alone = featurize(dataset, ToyBackbone(fail_on=29), FeatureStore(tmp_path / "alone"), batch_size=3,
                      on_error="skip")
    backbone = ToyBackbone(fail_on=29, concurrent=True)
    together = featurize(dataset, backbone, FeatureStore(tmp_path / "together"), batch_size=3, on_error="skip",
                         threads=3)
    assert [r.id for r in together.rejected] == [r.id for r in alone.rejected] == [f"s{i}" for i in range(1, 20, 2)]
    assert together.computed == alone.computed == 10
    for layer in range(len(backbone.layer_widths)):
        np.testing.assert_array_equal(layer_matrix(together.features, together.keys[::2], [layer], ("mean", "max")),
                                      layer_matrix(alone.features, alone.keys[::2], [layer], ("mean", "max")))


def test_concurrent_batches_run_torch_on_one_thread_each_and_restore_it(tmp_path):
    torch = pytest.importorskip("torch")
    seen = set()

    class Recording(ToyBackbone):
        def per_atom_features(self, structures, layers):
            seen.add((threading.current_thread().name, torch.get_num_threads()))
            return super().per_atom_features(structures, layers)

    before = torch.get_num_threads()
    featurize(_dataset(12), Recording(concurrent=True), FeatureStore(tmp_path), batch_size=2, threads=2)
    assert {count for _, count in seen} == {1}
    assert all(name.startswith("hacknip-featurize") for name, _ in seen)
    assert torch.get_num_threads() == before


def test_threads_default_to_torchs_only_for_backbones_that_allow_it():
    torch = pytest.importorskip("torch")
    assert batch_threads(ToyBackbone(), None) == 1
    assert batch_threads(ToyBackbone(concurrent=True), None) == torch.get_num_threads()
    assert batch_threads(ToyBackbone(concurrent=True), 3) == 3
    assert batch_threads(ToyBackbone(), 1) == 1
    with pytest.raises(ValueError, match="toy does not declare concurrent_batches"):
        batch_threads(ToyBackbone(), 2)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        batch_threads(ToyBackbone(), 0)


def test_second_run_computes_nothing(tmp_path):
    store, backbone, dataset = FeatureStore(tmp_path), ToyBackbone(), _dataset()
    first = featurize(dataset, backbone, store, batch_size=4)
    assert (first.computed, first.reused, backbone.calls) == (20, 0, 20)
    second = featurize(dataset, ToyBackbone(), FeatureStore(tmp_path), batch_size=4)
    assert (second.computed, second.reused) == (0, 20)


def test_stored_statistics_equal_direct_computation(tmp_path):
    store, backbone, dataset = FeatureStore(tmp_path), ToyBackbone(), _dataset(6)
    report = featurize(dataset, backbone, store)
    per_atom = backbone.per_atom_features([s.atoms for s in dataset.samples], [2])
    expected = np.stack([atom_statistics(f[2])["mean"] for f in per_atom])
    np.testing.assert_allclose(layer_matrix(report.features, report.keys, [2], ("mean",)), expected, rtol=1e-6)
    both = layer_matrix(report.features, report.keys, [1, 2], ("mean", "sum", "max", "std"))
    assert both.shape == (6, 4 * (6 + 6))
    n_atoms = np.array([len(s.atoms) for s in dataset.samples])
    np.testing.assert_allclose(both[:, 6:12], both[:, :6] * n_atoms[:, None], rtol=1e-6)


def test_interrupted_run_resumes_without_recomputing(tmp_path, monkeypatch):
    import hacknip.features.featurize

    monkeypatch.setattr(hacknip.features.featurize, "FLUSH_SECONDS", 0.0)  # write a shard after every batch
    dataset = _dataset(20)
    seen = []

    def interrupt_after_three_batches(n):
        seen.append(n)
        if len(seen) == 4:  # first call reports what was already stored, then one call per batch
            raise KeyboardInterrupt

    with pytest.raises(FeaturizeInterrupted) as interrupted:
        featurize(dataset, ToyBackbone(), FeatureStore(tmp_path), batch_size=4, on_progress=interrupt_after_three_batches)
    assert (interrupted.value.computed, interrupted.value.stored, interrupted.value.total) == (12, 12, 20)
    assert "12 structures computed and stored by this run; 12 of 20" in str(interrupted.value)
    resumed_backbone = ToyBackbone()
    resumed = featurize(dataset, resumed_backbone, FeatureStore(tmp_path), batch_size=4)
    assert (resumed.reused, resumed.computed, resumed_backbone.calls) == (12, 8, 8)
    leftovers = [p.name for p in resumed.features.path.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_interrupted_concurrent_run_keeps_every_batch_it_finished(tmp_path, monkeypatch):
    import hacknip.features.featurize

    monkeypatch.setattr(hacknip.features.featurize, "FLUSH_SECONDS", 0.0)
    dataset, seen = _dataset(40), []

    def interrupt_after_three_batches(n):
        seen.append(n)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        featurize(dataset, ToyBackbone(concurrent=True), FeatureStore(tmp_path), batch_size=4, threads=2,
                  on_progress=interrupt_after_three_batches)
    resumed = featurize(dataset, ToyBackbone(concurrent=True), FeatureStore(tmp_path), batch_size=4, threads=2)
    # three batches reported, and the fourth, running beside the third, finished and was stored too; the fifth was
    # queued when the third finished: a free thread may take it up before the interrupt cancels it (then it is kept
    # too) or not (on a loaded machine, CI once); those never started were left for the resumed run
    assert resumed.reused in (16, 20) and resumed.reused + resumed.computed == 40


def test_identity_change_means_new_features(tmp_path):
    dataset = _dataset(4)
    featurize(dataset, ToyBackbone(), FeatureStore(tmp_path))
    other = featurize(dataset, ToyBackbone(checkpoint="other.pt"), FeatureStore(tmp_path))
    assert other.computed == 4
    assert len(FeatureStore(tmp_path).identities()) == 2


def test_structure_hash_sees_small_changes_and_ignores_float_noise():
    atoms = bulk("Si")
    moved = atoms.copy()
    moved.positions[1, 0] += 1e-4
    noisy = atoms.copy()
    noisy.positions += 1e-9
    assert structure_hash(atoms) != structure_hash(moved)
    assert structure_hash(atoms) == structure_hash(noisy)


def test_unsupported_element_names_the_row(tmp_path):
    dataset = _dataset(3)
    dataset.samples[1].atoms = bulk("Po", "sc", a=3.3)  # Z=84, outside the toy model's elements
    with pytest.raises(BadInputError, match=r"row 1 \(id s1\): toy does not know element\(s\) Po"):
        featurize(dataset, ToyBackbone(), FeatureStore(tmp_path))
    report = featurize(dataset, ToyBackbone(), FeatureStore(tmp_path), on_error="skip")
    assert [(r.id, r.row) for r in report.rejected] == [("s1", "row 1")]


def test_a_structure_that_breaks_the_model_is_named_and_the_batch_kept(tmp_path):
    dataset = _dataset(6)
    with pytest.raises(BadInputError, match=r"row 1 \(id s1\): toy cannot featurise it: toy network cannot handle Z=29"):
        featurize(dataset, ToyBackbone(fail_on=29), FeatureStore(tmp_path), batch_size=6)
    report = featurize(dataset, ToyBackbone(fail_on=29), FeatureStore(tmp_path), batch_size=6, on_error="skip")
    assert [r.id for r in report.rejected] == ["s1", "s3", "s5"]
    assert report.computed == 3


def test_supercell_backbones_get_cutoff_sized_cells(tmp_path):
    backbone = ToyBackbone(needs_supercell=True)
    sizes = []
    original = backbone.per_atom_features
    backbone.per_atom_features = lambda structures, layers: sizes.extend(map(len, structures)) or original(structures, layers)
    dataset = Dataset([Sample("si", "row 0", bulk("Si"), 1.0)], "y", "test")
    report = featurize(dataset, backbone, FeatureStore(tmp_path))
    assert sizes == [2 * 2 * 2 * 2]  # 2-atom primitive Si (widths 3.1 Å) repeated 2x2x2 for a 4 Å cutoff
    _, n_atoms = report.features.read(report.keys, 0)
    assert n_atoms.tolist() == [2]  # sum pooling stays per input cell


def test_featurize_uses_the_backbones_supercell_rule(tmp_path):
    backbone = ToyBackbone(needs_supercell=True)
    backbone.supercell_rule = "lattice-lengths"
    sizes = []
    original = backbone.per_atom_features
    backbone.per_atom_features = lambda structures, layers: sizes.extend(map(len, structures)) or original(structures, layers)
    skewed = Atoms("Si", cell=[[4.0, 0.0, 0.0], [3.2, 1.1, 0.0], [2.1, 0.6, 2.4]], pbc=True)
    featurize(Dataset([Sample("skewed", "row 0", skewed, 1.0)], "y", "test"), backbone, FeatureStore(tmp_path))
    assert sizes == [1 * 2 * 2]  # lattice vectors 4.0, 3.4, 3.2 Å, 4 Å cutoff (the default rule would repeat 4x4x2)


def test_features_are_readable_from_another_process_without_the_plugin(tmp_path):
    dataset = _dataset(5)
    report = featurize(dataset, ToyBackbone(), FeatureStore(tmp_path))
    expected = layer_matrix(report.features, report.keys, [1], ("mean",))
    code = (
        "import json, sys, numpy as np\n"
        "from hacknip.store import FeatureStore\n"
        "from hacknip.features.featurize import layer_matrix\n"
        f"store = FeatureStore({str(tmp_path)!r})\n"
        "(identity,) = store.find('toy')\n"
        "keys = json.loads(sys.argv[1])\n"
        "print(json.dumps(layer_matrix(store.open(identity), keys, [1], ('mean',)).tolist()))\n"
        "assert 'toy_backbone' not in sys.modules and 'torch' not in sys.modules\n"
    )
    env = {**os.environ, "HACKNIP_LOAD_PLUGINS": ""}
    result = subprocess.run([sys.executable, "-c", code, json.dumps(report.keys)], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.array(json.loads(result.stdout)), expected)


class _NaNForCopper(ToyBackbone):
    """Returns NaN for copper atoms, as a network can for an atom with no neighbour in range."""

    def _one(self, atoms, layers):
        out = super()._one(atoms, layers)
        for values in out.values():
            values[atoms.numbers == 29] = np.nan
        return out


def test_non_finite_features_are_a_named_error_not_stored(tmp_path):
    dataset = _dataset(4)
    with pytest.raises(BadInputError, match=r"row 1 \(id s1\): toy cannot featurise it: non-finite features"):
        featurize(dataset, _NaNForCopper(), FeatureStore(tmp_path), batch_size=4)
    report = featurize(dataset, _NaNForCopper(), FeatureStore(tmp_path), batch_size=4, on_error="skip")
    assert [r.id for r in report.rejected] == ["s1", "s3"] and report.computed == 2


def test_a_bug_in_a_backbone_stops_the_run_instead_of_becoming_a_bad_row(tmp_path):
    dataset = _dataset(6)
    with pytest.raises(RuntimeError, match="a bug in the toy network"):
        featurize(dataset, ToyBackbone(bug_on=29), FeatureStore(tmp_path), batch_size=3, on_error="skip")


def test_the_same_structure_twice_is_computed_once_and_rejected_twice(tmp_path):
    dataset = _dataset(4)
    dataset.samples[2].atoms = dataset.samples[0].atoms.copy()
    backbone = ToyBackbone()
    report = featurize(dataset, backbone, FeatureStore(tmp_path), batch_size=4)
    assert (report.computed, backbone.calls) == (3, 3)
    dataset.samples[3].atoms = dataset.samples[1].atoms.copy()  # Cu, which this toy network refuses
    report = featurize(dataset, ToyBackbone(fail_on=29), FeatureStore(tmp_path / "other"), on_error="skip")
    assert sorted(r.id for r in report.rejected) == ["s1", "s3"]


def _write_store(tmp_path, monkeypatch, n=12):
    """A store of ``n`` structures in shards of four."""
    import hacknip.features.featurize

    monkeypatch.setattr(hacknip.features.featurize, "FLUSH_SECONDS", 0.0)
    dataset = _dataset(n)
    report = featurize(dataset, ToyBackbone(), FeatureStore(tmp_path), batch_size=4)
    return dataset, shard_files(report.features.path)


def _damage(path, kind):
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        data = data[:len(data) // 2]
    elif kind == "zeroed":
        data = bytearray(len(data))
    elif kind == "bit-flipped":  # inside the array data of a member, as a failing disk would
        data[len(data) // 2] ^= 0x10
    elif kind == "garbage":
        data = bytearray(b"not a shard at all, " * 50)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["truncated", "zeroed", "bit-flipped", "garbage"])
def test_a_damaged_shard_is_named_set_aside_and_recomputed_on_the_same_run(tmp_path, monkeypatch, kind):
    from hacknip.store import DamagedShardWarning

    dataset, shards = _write_store(tmp_path, monkeypatch)
    _damage(shards[1], kind)
    backbone = ToyBackbone()
    with pytest.warns(DamagedShardWarning, match=rf"{shards[1].name}: damaged feature-store shard .*moved to "):
        report = featurize(dataset, backbone, FeatureStore(tmp_path), batch_size=4)
    assert (report.computed, report.reused, backbone.calls) == (4, 8, 4)
    assert not shards[1].exists() and (shards[1].parent / "damaged" / shards[1].name).exists()
    clean = featurize(dataset, ToyBackbone(), FeatureStore(tmp_path / "clean"), batch_size=4)
    np.testing.assert_array_equal(layer_matrix(report.features, report.keys, [0, 2], ("mean",)),
                                  layer_matrix(clean.features, clean.keys, [0, 2], ("mean",)))


def test_store_check_reads_every_shard_and_sets_damaged_ones_aside(tmp_path, monkeypatch):
    from hacknip.store import DamagedShardWarning

    _, shards = _write_store(tmp_path, monkeypatch)
    features = FeatureStore(tmp_path).open(ToyBackbone().identity())
    assert features.check() == (3, [])
    _damage(shards[2], "bit-flipped")
    with pytest.warns(DamagedShardWarning):
        readable, damaged = FeatureStore(tmp_path).open(ToyBackbone().identity()).check()
    assert (readable, [Path(p).name for p in damaged]) == (2, [shards[2].name])


def test_relaxed_geometries_beside_the_backbones_are_not_taken_for_a_backbone_folder(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from hacknip.cli.main import cli
    from hacknip.data.molecules import RelaxOptions, relaxed_geometries, stored_conformers

    _write_store(tmp_path, monkeypatch, n=4)
    relaxed_geometries(tmp_path, ToyBackbone().identity(), RelaxOptions(), vacuum=6.0)  # as relaxing molecules does
    stored_conformers(tmp_path)
    assert (tmp_path / "geometries").is_dir()
    backbone_folders = sorted(path.name for path in tmp_path.iterdir() if path.is_dir() and path.name != "geometries")
    assert len(backbone_folders) == 1
    assert [folder.name for folder, _ in FeatureStore(tmp_path).folders()] == backbone_folders
    for command in ("check", "compact"):
        result = CliRunner().invoke(cli, ["store", command, "--store", str(tmp_path)])
        assert result.exit_code == 0, result.output
        assert "geometries" not in result.output and "no readable identity.json" not in result.output


def test_store_files_follow_the_umask(tmp_path, monkeypatch):
    previous = os.umask(0o002)
    try:
        _, shards = _write_store(tmp_path, monkeypatch, n=4)
    finally:
        os.umask(previous)
    assert oct(shards[0].stat().st_mode & 0o777) == oct(0o664)
    assert oct((shards[0].parent / "identity.json").stat().st_mode & 0o777) == oct(0o664)


def test_a_store_path_that_is_a_file_fails_before_any_work(tmp_path):
    from hacknip.errors import InputError

    (tmp_path / "home").write_text("")
    with pytest.raises(InputError, match=r"home is a file, so the feature store .* cannot be made there"):
        FeatureStore(tmp_path / "home" / "features").check_usable()


_FEATURISER = """
import json, sys
sys.path.insert(0, {tests!r})
from ase.build import bulk
from toy_backbone import ToyBackbone
from hacknip.features.featurize import featurize
from hacknip.store import FeatureStore
from hacknip.data.structures import Dataset, Sample
samples = [Sample(f"s{{i}}", f"row {{i}}", bulk("Cu", "fcc", a=3.5 + 0.01 * i), float(i)) for i in range(24)]
backbone = ToyBackbone(seconds_per_structure=0.05)
report = featurize(Dataset(samples, "y", "test"), backbone, FeatureStore({store!r}), batch_size=2)
print(json.dumps({{"computed": report.computed, "calls": backbone.calls}}))
"""


def test_two_processes_featurising_into_one_store_split_the_work(tmp_path):
    script = _FEATURISER.format(tests=os.path.dirname(__file__), store=str(tmp_path))
    processes = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    reports = [json.loads(p.communicate(timeout=120)[0]) for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert sum(r["computed"] for r in reports) == sum(r["calls"] for r in reports) == 24
    assert all(r["computed"] > 0 for r in reports), reports  # both worked (each takes over a second alone)
    features = FeatureStore(tmp_path).open(ToyBackbone().identity())
    stored_keys = [key for shard in shard_files(features.path) for key in shard_keys(shard)]
    assert len(stored_keys) == len(set(stored_keys)) == 24
    left = list((features.path / "claims").iterdir())  # one empty lock file, whose byte-range locks died with them
    assert [path.name for path in left] == ["claims.lock"] and left[0].stat().st_size == 0
    claims = Claims(features.path / "claims")
    assert claims.take(stored_keys) == stored_keys  # nobody holds any of them any more
    claims.release(stored_keys)


def test_a_shard_another_process_writes_right_after_a_listing_is_seen(tmp_path):
    dataset = _dataset(8)
    ours = featurize(dataset.subset(range(4)), ToyBackbone(), FeatureStore(tmp_path)).features
    report = featurize(dataset.subset(range(4, 8)), ToyBackbone(), FeatureStore(tmp_path))  # as another process would
    assert len(ours) == 4
    ours.refresh()  # within the file system's timestamp tick of the write: listed again all the same
    assert len(ours) == 8 and all(ours.has(key, [0, 1, 2]) for key in report.keys)


def test_a_settled_folder_is_not_listed_again(tmp_path, monkeypatch):
    features = featurize(_dataset(4), ToyBackbone(), FeatureStore(tmp_path)).features
    old = features.path.stat().st_mtime_ns - 10_000_000_000
    os.utime(features.path, ns=(old, old))
    features.refresh()  # lists the folder once more and records its (now settled) time
    import hacknip.store.features as store_features

    listed = []
    monkeypatch.setattr(store_features, "_shard_names", lambda folder: listed.append(folder) or [])
    features.refresh()
    assert listed == []
    features.refresh(force=True)
    assert listed == [features.folder]
