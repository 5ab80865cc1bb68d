"""Featurisation batches by a budget of atoms, largest first, and splits a batch that runs out of device memory."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from ase.build import bulk
from click.testing import CliRunner
from toy_backbone import ToyBackbone

from hacknip.data.structures import BadInputError, Dataset, Sample
from hacknip.errors import BadStructureError, InputError
from hacknip.features.batching import (
    CPU_BATCH_ATOMS,
    CUDA_BATCH_ATOMS,
    default_batch_atoms,
    is_out_of_memory,
    plan_batches,
    structure_cost,
)
from hacknip.features.featurize import featurize, layer_matrix
from hacknip.features.pooling import STATISTICS, atom_statistics
from hacknip.features.supercell import cutoff_supercell
from hacknip.store import FeatureStore

POOLING = ("mean", "sum", "max", "std")


def _skewed(sizes=(1, 8, 2, 64, 1, 27, 4, 2, 125, 8, 1, 16, 2, 27, 1, 4)) -> Dataset:
    """Copper cells of very different sizes (n x n x n repeats and small ones), in no order of size."""
    samples = []
    for i, size in enumerate(sizes):
        side = round(size ** (1 / 3))
        atoms = bulk("Cu", "fcc", a=3.6 + 0.01 * i).repeat((side, side, side)) if side ** 3 == size else \
            bulk("NaCl", "rocksalt", a=5.6 + 0.01 * i).repeat((size // 2, 1, 1))
        assert len(atoms) == size
        samples.append(Sample(f"s{i}", f"row {i}", atoms, float(i)))
    return Dataset(samples, "y", "skewed test data")


def _matrix(report, layers=(0, 1, 2), pooling=POOLING):
    return np.concatenate([layer_matrix(report.features, report.keys, [layer], pooling) for layer in layers], axis=1)


class _Recording(ToyBackbone):
    """Records the atoms of each structure of each pass."""

    def __init__(self, **options):
        super().__init__(**options)
        self.passes: list[list[int]] = []

    def per_atom_features(self, structures, layers):
        self.passes.append([len(atoms) for atoms in structures])
        return super().per_atom_features(structures, layers)


class _OutOfMemoryAbove(_Recording):
    """A device that holds at most ``limit`` atoms in a pass: more raises ``error`` (as torch on a full GPU does)."""

    def __init__(self, limit, error=torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                 **options):
        super().__init__(**options)
        self.limit, self.error = limit, error

    def per_atom_features(self, structures, layers):
        if sum(len(atoms) for atoms in structures) > self.limit:
            self.passes.append([len(atoms) for atoms in structures])
            raise self.error
        return super().per_atom_features(structures, layers)


def test_batches_respect_the_budget_and_the_count_largest_first_each_structure_once():
    rng = random.Random(7)
    costs = {i: float(rng.choice([1, 2, 3, 8, 20, 50, 120, 400])) for i in range(300)}
    batches = plan_batches(list(costs), costs, batch_atoms=100, batch_size=16)
    assert sorted(i for batch in batches for i in batch) == list(range(300))
    for batch in batches:
        assert len(batch) <= 16
        assert len(batch) == 1 or sum(costs[i] for i in batch) <= 100
    in_order = [costs[i] for batch in batches for i in batch]
    assert in_order == sorted(in_order, reverse=True)
    assert all(len(batch) == 1 for batch in batches if costs[batch[0]] > 100)  # over the budget: alone
    # a batch closes at whichever limit comes first: small structures fill up to the count, large ones to the budget
    assert [len(b) for b in plan_batches(range(40), dict.fromkeys(range(40), 1.0), 100, 16)] == [16, 16, 8]
    assert [len(b) for b in plan_batches(range(40), dict.fromkeys(range(40), 30.0), 100, 16)] == [3] * 13 + [1]


def test_ties_keep_the_given_order():
    costs = {5: 2.0, 1: 2.0, 3: 9.0, 0: 2.0}
    assert plan_batches([5, 1, 3, 0], costs, batch_atoms=100, batch_size=2) == [[3, 5], [1, 0]]


def test_cost_is_the_atoms_the_backbone_sees_or_its_own_estimate():
    cell = bulk("Cu", "fcc", a=3.6)
    assert structure_cost(ToyBackbone(), cell) == 1
    supercell = ToyBackbone(needs_supercell=True)
    assert structure_cost(supercell, cell) == len(cutoff_supercell(cell, supercell.cutoff)) > 1

    seen = []

    class Estimating(ToyBackbone):
        def batch_cost(self, atoms):
            seen.append(len(atoms))
            return 2.5 * len(atoms)

    assert structure_cost(Estimating(needs_supercell=True), cell) == 2.5 * len(cutoff_supercell(cell, 4.0))
    assert seen == [len(cutoff_supercell(cell, 4.0))]  # it is given the supercell


@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_a_nonsensical_cost_is_a_plugin_error(value):
    class Broken(ToyBackbone):
        def batch_cost(self, atoms):
            return value

    with pytest.raises(ValueError, match="batch_cost returned"):
        structure_cost(Broken(), bulk("Cu"))


def test_a_cost_estimate_that_finds_the_structure_bad_falls_back_to_its_atoms():
    class Picky(ToyBackbone):
        def batch_cost(self, atoms):
            raise BadStructureError("no graph")

    assert structure_cost(Picky(), bulk("NaCl", "rocksalt", a=5.6)) == 2


def test_the_default_budget_follows_the_device(tmp_path):
    assert default_batch_atoms(ToyBackbone()) == CPU_BATCH_ATOMS
    for device in ("cuda", "cuda:1", torch.device("cuda:0")):
        backbone = ToyBackbone()
        backbone.device = device
        assert default_batch_atoms(backbone) == CUDA_BATCH_ATOMS
    backbone.device = torch.device("cpu")
    assert default_batch_atoms(backbone) == CPU_BATCH_ATOMS
    with pytest.raises(InputError, match="batch atoms must be at least 1"):
        featurize(_skewed(), ToyBackbone(), FeatureStore(tmp_path), batch_atoms=0)


def test_featurize_batches_by_budget_and_stores_what_fixed_batches_store(tmp_path):
    dataset = _skewed()
    fixed = featurize(dataset, ToyBackbone(), FeatureStore(tmp_path / "fixed"), batch_size=16, batch_atoms=10 ** 9)
    backbone, progress = _Recording(), []
    budget = featurize(dataset, backbone, FeatureStore(tmp_path / "budget"), batch_size=4, batch_atoms=40,
                       on_progress=progress.append)
    assert [sum(p) <= 40 or len(p) == 1 for p in backbone.passes] == [True] * len(backbone.passes)
    assert max(map(len, backbone.passes)) == 4
    sizes = [n for p in backbone.passes for n in p]
    assert sorted(sizes) == sorted(len(s.atoms) for s in dataset.samples) and sizes == sorted(sizes, reverse=True)
    assert backbone.passes[:2] == [[125], [64]]  # the largest first, each alone
    assert budget.keys == fixed.keys and budget.computed == 16 and sum(progress) == 16
    np.testing.assert_array_equal(_matrix(budget), _matrix(fixed))


def test_rejected_rows_are_reported_in_dataset_order(tmp_path):
    dataset = _skewed()
    dataset.samples[3].atoms.numbers[0] = 30  # zinc: the toy network fails on it
    dataset.samples[14].atoms.numbers[0] = 30
    report = featurize(dataset, ToyBackbone(fail_on=30), FeatureStore(tmp_path), batch_atoms=40, on_error="skip")
    assert [r.id for r in report.rejected] == ["s3", "s14"]


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; ...)")])
def test_a_batch_out_of_memory_is_split_in_halves_and_nothing_is_lost(tmp_path, error):
    dataset = _skewed()
    plain = featurize(dataset, ToyBackbone(), FeatureStore(tmp_path / "plain"), batch_size=16, batch_atoms=10 ** 9)
    backbone, progress = _OutOfMemoryAbove(limit=130, error=error), []
    split = featurize(dataset, backbone, FeatureStore(tmp_path / "split"), batch_size=16, batch_atoms=10 ** 9,
                      on_progress=progress.append)
    assert backbone.passes[:3] == [sorted((len(s.atoms) for s in dataset.samples), reverse=True),  # 293 atoms
                                   [125, 64, 27, 27, 16, 8, 8, 4],  # 279: the first half, split again
                                   [125, 64, 27, 27]]  # 243
    assert (split.computed, split.rejected, sum(progress)) == (16, [], 16)
    np.testing.assert_array_equal(_matrix(split), _matrix(plain))
    assert backbone.calls == 16  # each structure featurised once


def test_out_of_memory_splitting_works_with_concurrent_batches(tmp_path):
    dataset = _skewed()
    plain = featurize(dataset, ToyBackbone(), FeatureStore(tmp_path / "plain"), batch_atoms=10 ** 9)
    backbone = _OutOfMemoryAbove(limit=130, concurrent=True)
    split = featurize(dataset, backbone, FeatureStore(tmp_path / "split"), batch_size=4, batch_atoms=200, threads=2)
    assert [125, 64] in backbone.passes and [125] in backbone.passes  # 189 atoms ran out of memory, then halves
    assert split.computed == 16 and split.keys == plain.keys and backbone.calls == 16
    np.testing.assert_array_equal(_matrix(split), _matrix(plain))


def test_one_structure_out_of_memory_by_itself_is_a_bad_row(tmp_path):
    dataset = _skewed()
    with pytest.raises(BadInputError, match="row 8.*out of device memory.*125 atoms"):
        featurize(dataset, _OutOfMemoryAbove(limit=100), FeatureStore(tmp_path), batch_atoms=10 ** 9)
    report = featurize(dataset, _OutOfMemoryAbove(limit=100), FeatureStore(tmp_path), batch_atoms=10 ** 9,
                       on_error="skip")
    assert [(r.id, "out of device memory" in r.reason) for r in report.rejected] == [("s8", True)]
    assert report.computed == 15
    assert report.features.has(report.keys[3], [0, 1, 2]) and not report.features.has(report.keys[8], [0])


def test_other_runtime_errors_are_not_taken_for_out_of_memory(tmp_path):
    assert not is_out_of_memory(RuntimeError("expected scalar type Float but found Double"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    bug = _OutOfMemoryAbove(limit=0, error=RuntimeError("index 3 is out of bounds"))
    with pytest.raises(RuntimeError, match="out of bounds"):
        featurize(_skewed(), bug, FeatureStore(tmp_path), on_error="skip")


def test_the_command_line_passes_batch_atoms(tmp_path, monkeypatch, toy_plugin, phonons_path):
    import hacknip.workflow.run
    from hacknip.cli.main import cli

    seen = []
    real = hacknip.workflow.run.featurize

    def recording(*args, **kwargs):
        seen.append(kwargs["batch_atoms"])
        return real(*args, **kwargs)

    monkeypatch.setattr(hacknip.workflow.run, "featurize", recording)
    common = ["featurize", "--data", str(phonons_path), "--backbone", "toy", "--limit", "5", "--store", str(tmp_path)]
    assert CliRunner().invoke(cli, [*common, "--batch-atoms", "50"], catch_exceptions=False).exit_code == 0
    assert CliRunner().invoke(cli, common, catch_exceptions=False).exit_code == 0
    assert seen == [50, None]


def test_featurizer_passes_batch_atoms(tmp_path, toy_plugin):
    from hacknip import Featurizer

    items = [s.atoms for s in _skewed().samples]
    budget = Featurizer("toy@all", pooling="mean+max", batch_atoms=30, store=tmp_path / "a").fit(items)
    assert budget.get_params()["batch_atoms"] == 30
    fixed = Featurizer("toy@all", pooling="mean+max", store=tmp_path / "b").fit(items)
    np.testing.assert_array_equal(budget.transform(items), fixed.transform(items))
    with pytest.raises(InputError, match="batch_atoms=0"):
        Featurizer("toy@all", batch_atoms=0).fit(items)


def test_chgnet_features_do_not_depend_on_the_batching(tmp_path, phonons_path):
    from hacknip.data.read import read_dataset
    from hacknip.plugins.registry import load_backbone

    dataset = read_dataset(phonons_path).head(20)
    big = dataset.samples[8].atoms.repeat((2, 2, 2))  # 64 atoms among cells of 2-12
    dataset.samples.append(Sample("big", "row 20", big, 0.0))
    backbone = load_backbone("chgnet")
    layers = list(range(len(backbone.layer_widths)))
    structures = [s.atoms for s in dataset.samples]
    # what featurize computed before batching by budget: consecutive batches of 16, in dataset order
    per_atom = [f for start in range(0, len(structures), 16)
                for f in backbone.per_atom_features(structures[start:start + 16], layers)]
    expected = np.concatenate([np.stack([np.concatenate([atom_statistics(f[layer])[s] for s in STATISTICS])
                                         for f in per_atom]) for layer in layers], axis=1)
    report = featurize(dataset, backbone, FeatureStore(tmp_path), batch_size=16, batch_atoms=40)
    np.testing.assert_allclose(_matrix(report, layers, STATISTICS), expected, rtol=0, atol=1e-6)
