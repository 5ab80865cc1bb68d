"""Molecules from SMILES / SDF: per-row failures, seeded embedding, relaxation with the backbone's calculator, the
stores of conformers and relaxed geometries, parallel workers, scaffold folds, and no supercell for non-periodic structures."""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from ase.calculators.morse import MorsePotential

from hacknip.data.molecules import (
    EmbedOptions,
    MoleculeJob,
    RelaxOptions,
    embed,
    failure_counts,
    molecules_to_dataset,
    parse_smiles,
    relax,
)
from hacknip.data.read import read_dataset
from hacknip.data.structures import BadInputError, Dataset, Sample
from hacknip.evaluation.crossval import murcko_scaffold, scaffold_folds
from hacknip.features.featurize import featurize
from hacknip.features.supercell import cutoff_supercell
from hacknip.store import FeatureStore

pytest.importorskip("rdkit")

CALCULATIONS = {"count": 0}


class CountingMorse(MorsePotential):
    def calculate(self, *args, **kwargs):
        CALCULATIONS["count"] += 1
        super().calculate(*args, **kwargs)


class MorseBackbone:
    """A cheap backbone whose calculator is ASE's Morse potential: enough to exercise the machinery around
    relaxation (store, workers, flags); the real relaxation is tested with CHGNet below."""

    name = "morse"
    cutoff = 4.0
    layer_widths = (1,)
    needs_supercell = False
    supported_elements = frozenset({1, 6, 7, 8})

    def identity(self):
        return {"name": self.name, "library": "ase", "potential": "morse r0=1.2"}

    def per_atom_features(self, structures, layers):
        return [{0: np.ones((len(atoms), 1), dtype=np.float32)} for atoms in structures]

    def calculator(self):
        return CountingMorse(r0=1.2, rho0=6.0)


def _table(tmp_path, rows, name="molecules.csv"):
    path = tmp_path / name
    pd.DataFrame(rows, columns=["name", "SMILES", "y"]).to_csv(path, index=False)
    return path


MOLECULES = [("ethanol", "CCO", 1.0), ("acetic acid", "CC(=O)O", 0.0), ("pyridine", "c1ccncc1", 1.0)]
FEW_STEPS = RelaxOptions(steps=10)  # converges H2 (7 steps), not the others


def test_unparseable_smiles_is_reported_with_row_and_id(tmp_path):
    path = _table(tmp_path, [MOLECULES[0], ("broken", "C1CC(", 1.0), ("placeholder", "*CC", 0.0)])
    with pytest.raises(BadInputError, match=r"row 3 \(id broken\): unparseable SMILES.*--on-error skip"):
        molecules_to_dataset(path, id_column="name")
    dataset = molecules_to_dataset(path, id_column="name", on_error="skip")
    assert dataset.ids == ["ethanol"]
    assert [(s.row, s.id) for s in dataset.skipped] == [("row 3", "broken"), ("row 4", "placeholder")]
    assert failure_counts(dataset) == {"unparseable SMILES": 1, "unsupported element": 1}


def test_read_dataset_finds_the_smiles_column_and_reads_sdf(tmp_path):
    from rdkit import Chem

    dataset = read_dataset(_table(tmp_path, MOLECULES), target="y")
    assert len(dataset.samples) == 3 and dataset.samples[0].atoms.get_chemical_formula() == "C2H6O"
    assert not dataset.samples[0].atoms.pbc.any()
    sdf = tmp_path / "molecules.sdf"
    with Chem.SDWriter(str(sdf)) as writer:
        for name, smiles, y in MOLECULES:
            molecule = Chem.MolFromSmiles(smiles)
            molecule.SetProp("_Name", name)
            molecule.SetDoubleProp("y", y)
            writer.write(molecule)
    from_sdf = read_dataset(sdf)
    assert from_sdf.ids == ["ethanol", "acetic acid", "pyridine"] and list(from_sdf.targets) == [1.0, 0.0, 1.0]
    assert from_sdf.samples[2].atoms.get_chemical_formula() == "C5H5N"


def test_etkdg_embedding_is_deterministic_for_a_seed():
    paracetamol = parse_smiles("CC(=O)Nc1ccc(O)cc1")
    first, again = embed(paracetamol, EmbedOptions(seed=7)), embed(paracetamol, EmbedOptions(seed=7))
    other = embed(paracetamol, EmbedOptions(seed=8))
    assert np.array_equal(first.positions, again.positions)
    assert not np.allclose(first.positions, other.positions)


def test_chgnet_relaxation_lowers_energy_and_forces():
    from hacknip.plugins.registry import load_backbone

    ethanol = embed(parse_smiles("CCO"))
    # fmax 0.05 rather than the default 0.01 keeps this test short (about 80 BFGS steps to reach 0.01)
    relaxation = relax(ethanol, load_backbone("chgnet").calculator(), RelaxOptions(fmax=0.05))
    assert relaxation.converged and relaxation.fmax <= 0.05 and 0 < relaxation.steps <= 100
    assert relaxation.energy < relaxation.energy_initial
    assert not relaxation.atoms.pbc.any() and relaxation.atoms.cell.rank == 0  # the box used to relax is not kept


def test_geometry_store_avoids_recomputation(tmp_path):
    path, store = _table(tmp_path, MOLECULES), FeatureStore(tmp_path / "store")
    CALCULATIONS["count"] = 0
    first = molecules_to_dataset(path, backbone=MorseBackbone(), relax_options=FEW_STEPS, store=store)
    assert CALCULATIONS["count"] > 0
    CALCULATIONS["count"] = 0
    progress = []
    again = molecules_to_dataset(path, backbone=MorseBackbone(), relax_options=FEW_STEPS, store=store,
                                 on_progress=progress.append)
    assert CALCULATIONS["count"] == 0 and progress == [3]
    for one, other in zip(first.samples, again.samples):
        assert np.array_equal(one.atoms.positions, other.atoms.positions)
    changed = molecules_to_dataset(path, backbone=MorseBackbone(), relax_options=RelaxOptions(steps=11), store=store)
    assert CALCULATIONS["count"] > 0 and not np.allclose(changed.samples[0].atoms.positions,
                                                         first.samples[0].atoms.positions)


def test_conformers_are_made_once_and_read_back_after(tmp_path, monkeypatch):
    import hacknip.data.molecules as molecules

    made = []
    monkeypatch.setattr(molecules, "embed", lambda molecule, options: made.append(options) or embed(molecule, options))
    path, store = _table(tmp_path, MOLECULES), FeatureStore(tmp_path / "store")
    first = molecules_to_dataset(path, store=store)
    assert len(made) == 3
    progress = []
    again = molecules_to_dataset(path, store=store, on_progress=progress.append)
    assert len(made) == 3 and progress == [3]
    for one, other in zip(first.samples, again.samples):
        assert one.id == other.id and one.atoms == other.atoms
    other_seed = molecules_to_dataset(path, store=store, embed_options=EmbedOptions(seed=1))
    assert len(made) == 6  # other settings, other conformers
    for sample, (_, smiles, _) in zip(other_seed.samples, MOLECULES):
        np.testing.assert_array_equal(sample.atoms.positions, embed(parse_smiles(smiles), EmbedOptions(seed=1)).positions)
    assert len(list((tmp_path / "store").glob("geometries/conformers-*/*.json"))) == 6 + 1  # and identity.json


def _embedding_fails_for_pyridine(monkeypatch) -> list[str]:
    """RDKit's embedding, except that pyridine fails as a molecule ETKDG finds no conformer for; returns the canonical
    SMILES of every molecule embedding is tried on."""
    import hacknip.data.molecules as molecules

    tried = []

    def embed_but_pyridine(molecule, options):
        tried.append(molecules.canonical_smiles(molecule))
        if tried[-1] == "c1ccncc1":
            raise molecules.MoleculeError(f"{molecules.EMBEDDING_FAILED}: RDKit ETKDG found no conformer (seed 0)")
        return embed(molecule, options)

    monkeypatch.setattr(molecules, "embed", embed_but_pyridine)
    return tried


def test_a_molecule_rdkit_cannot_embed_is_stored_as_such_and_not_tried_again(tmp_path, monkeypatch):
    tried = _embedding_fails_for_pyridine(monkeypatch)
    path, store = _table(tmp_path, MOLECULES), FeatureStore(tmp_path / "store")
    for expected_tries in (3, 3):
        dataset = molecules_to_dataset(path, store=store, on_error="skip")
        assert len(tried) == expected_tries and [sample.id for sample in dataset.samples] == ["0", "1"]
        assert [(row.id, row.reason) for row in dataset.skipped] == [
            ("2", "3D embedding failed: RDKit ETKDG found no conformer (seed 0)")]


class MorseForcesBackbone(MorseBackbone):
    """Relaxes through a batched ``energies_and_forces``, as the real backbones do with ``relax_batch`` > 1."""

    def energies_and_forces(self, structures):
        results = []
        for atoms in structures:
            atoms = atoms.copy()
            atoms.calc = MorsePotential(r0=1.2, rho0=6.0)
            results.append((atoms.get_potential_energy(), atoms.get_forces()))
        return results


@pytest.mark.parametrize("relax_batch", [1, 2])
def test_relaxed_molecules_start_from_the_stored_conformers_and_their_failures(tmp_path, monkeypatch, relax_batch):
    tried = _embedding_fails_for_pyridine(monkeypatch)
    path, store = _table(tmp_path, MOLECULES), FeatureStore(tmp_path / "store")
    for relax_options in (FEW_STEPS, RelaxOptions(steps=11), RelaxOptions(steps=11, fmax=0.1)):
        dataset = molecules_to_dataset(path, backbone=MorseForcesBackbone(), relax_options=relax_options, store=store,
                                       on_error="skip", relax_batch=relax_batch)
        assert len(tried) == 3, "the second and third relaxations start from the first one's conformers"
        assert [sample.id for sample in dataset.samples] == ["0", "1"]
        assert [row.reason for row in dataset.skipped] == ["3D embedding failed: RDKit ETKDG found no conformer (seed 0)"]
    relaxed = [folder for folder in (tmp_path / "store" / "geometries").iterdir() if folder.name.startswith("morse-")]
    assert len(relaxed) == 3
    unrelaxed = molecules_to_dataset(path, store=store, on_error="skip", embed_options=EmbedOptions(force_field="MMFF94"))
    assert len(tried) == 3 and len(unrelaxed.samples) == 2  # the same conformers, unrelaxed


def test_a_damaged_stored_geometry_is_set_aside_and_relaxed_again(tmp_path):
    from hacknip.store import DamagedShardWarning

    path, store = _table(tmp_path, MOLECULES), FeatureStore(tmp_path / "store")
    first = molecules_to_dataset(path, backbone=MorseBackbone(), relax_options=FEW_STEPS, store=store)
    records = sorted((tmp_path / "store").glob("geometries/morse-*/*.json"))
    damaged = next(r for r in records if r.name != "identity.json")
    damaged.write_text(damaged.read_text()[:40])
    CALCULATIONS["count"] = 0
    with pytest.warns(DamagedShardWarning, match=rf"{damaged.name}: damaged stored geometry"):
        again = molecules_to_dataset(path, backbone=MorseBackbone(), relax_options=FEW_STEPS, store=store)
    assert CALCULATIONS["count"] > 0 and (damaged.parent / "damaged" / damaged.name).exists()
    for one, other in zip(first.samples, again.samples):
        np.testing.assert_allclose(one.atoms.positions, other.atoms.positions)


def test_nonconverged_kept_and_flagged_or_skipped_and_unknown_elements_reported(tmp_path):
    path = _table(tmp_path, [("hydrogen", "[H][H]", 0.0), *MOLECULES, ("chloroethane", "CCCl", 1.0)])
    kept = molecules_to_dataset(path, id_column="name", backbone=MorseBackbone(), relax_options=FEW_STEPS,
                                store=FeatureStore(tmp_path / "store"), on_error="skip")
    assert [s.id for s in kept.skipped] == ["chloroethane"]
    assert "unsupported element" in kept.skipped[0].reason and "[17]" in kept.skipped[0].reason
    assert kept.ids == ["hydrogen", "ethanol", "acetic acid", "pyridine"]
    assert [f.id for f in kept.flagged] == kept.ids[1:] and "after 10 steps" in kept.flagged[0].reason
    assert kept.samples[0].atoms.info["relax_converged"] and not kept.samples[1].atoms.info["relax_converged"]
    skipped = molecules_to_dataset(path, id_column="name", backbone=MorseBackbone(), relax_options=FEW_STEPS,
                                   store=FeatureStore(tmp_path / "store"), on_error="skip", on_nonconverged="skip")
    assert skipped.ids == ["hydrogen"] and skipped.flagged == []
    assert failure_counts(skipped) == {"unsupported element": 1, "relaxation not converged": 3}


def test_parallel_workers_give_the_serial_result(tmp_path):
    path = _table(tmp_path, MOLECULES)
    serial = molecules_to_dataset(path, backbone=MorseBackbone(), relax_options=FEW_STEPS,
                                  store=FeatureStore(tmp_path / "serial"))
    progress, totals = [], []
    parallel = molecules_to_dataset(path, backbone=MorseBackbone(), relax_options=FEW_STEPS, workers=2,
                                    store=FeatureStore(tmp_path / "parallel"), on_progress=progress.append,
                                    on_total=lambda n: totals.append((n, len(progress))))
    assert sum(progress) == 3 and totals == [(3, 0)], "the total is known before the first molecule is done"
    assert parallel.ids == serial.ids
    for one, other in zip(serial.samples, parallel.samples):
        np.testing.assert_allclose(one.atoms.positions, other.atoms.positions, atol=1e-8)
        assert one.atoms.info == other.atoms.info


def _thread_pools_seen_by_a_worker():
    import scipy.linalg  # noqa: F401  (Sella's: scipy's own OpenBLAS, loaded after the worker started)
    import torch
    from threadpoolctl import threadpool_info

    return ({pool["filepath"]: pool["num_threads"] for pool in threadpool_info()}, torch.get_num_threads(),
            os.environ.get("XLA_FLAGS", ""))


def test_a_worker_on_one_thread_holds_every_thread_pool_to_one(monkeypatch):
    """Sella on two workers ran 1.6× slower than on one until each worker held numpy's, scipy's and JAX's pools to
    its share of the cores, as it did torch's."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from hacknip.data.molecules import _start_worker, available_cores

    if available_cores() < 2:
        pytest.skip("on one core every pool has one thread anyway")
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/nonexistent")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    setup = (None, {}, EmbedOptions(), RelaxOptions(), 6.0, None, None, 1)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                             initargs=setup) as pool:
        pools, torch_threads, xla_flags = pool.submit(_thread_pools_seen_by_a_worker).result()
    assert len(pools) >= 2, pools  # numpy's BLAS and scipy's at least
    assert set(pools.values()) == {1}, pools
    assert torch_threads == 1
    assert xla_flags == "--xla_dump_to=/nonexistent --xla_cpu_multi_thread_eigen=false", "the user's flags are kept"


def test_the_store_keys_of_molecules_made_before_a_new_setting_are_unchanged():
    """A stored conformer or relaxed geometry is found by its key: a setting added to EmbedOptions must not change
    the keys of molecules made with its default (`geometry` once did, and 791 relaxed BBBP molecules went unfound)."""
    import hashlib
    import json

    from hacknip.data.molecules import rdkit_version, smiles_key

    before = {"seed": 0, "max_attempts": 0, "random_coords_fallback": True, "largest_fragment_only": False,
              "fragment_gap": 3.0, "force_field": "MMFF94"}  # EmbedOptions' fields when the store format was set
    text = json.dumps({"smiles": "CCO", "embed": before, "rdkit": rdkit_version()}, sort_keys=True)
    assert smiles_key("CCO", EmbedOptions(force_field="MMFF94")) == hashlib.sha256(text.encode()).hexdigest()[:32]
    assert smiles_key("CCO", EmbedOptions(geometry=False)) != smiles_key("CCO", EmbedOptions())


def test_workers_are_replaced_after_their_share_of_jobs(tmp_path, monkeypatch):
    """Sella keeps memory it never gives back (13 GB a worker after 400 BBBP molecules), so its workers are replaced
    every few molecules, each on its own, every molecule's result the serial one's."""
    import hacknip.data.molecules as molecules
    from hacknip.data.relaxation import molecules_per_process

    pools = []

    class CountedPool(molecules.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(molecules, "ProcessPoolExecutor", CountedPool)
    smiles = ["CCO", "CCN", "CCC", "OCCO", "CC(=O)O", "NCCN", "CCCO"]
    jobs = [MoleculeJob(str(index), smiles=text) for index, text in enumerate(smiles)]
    runner = molecules._Runner(EmbedOptions(), RelaxOptions())
    setup = (None, {}, EmbedOptions(), RelaxOptions(), 6.0, None, None)
    serial = molecules.run_jobs(jobs, runner)
    assert pools == []
    assert molecules.run_jobs(jobs, runner, 2, setup) == serial
    assert pools == [1, 1], "a process for each worker"
    assert molecules.run_jobs(jobs, runner, 2, setup, jobs_per_worker=2) == serial
    assert pools == [1, 1] + [1] * 4, "7 jobs, each worker replaced after 2: 4 processes"
    assert molecules.run_jobs(jobs, runner, 1, setup, jobs_per_worker=5) == serial
    assert pools == [1] * 6 + [1, 1], "one worker is replaced too"
    assert molecules_per_process("Sella") and molecules_per_process("BFGS") is None


class SlowMorse(MorsePotential):
    def calculate(self, *args, **kwargs):
        time.sleep(0.02)
        super().calculate(*args, **kwargs)


class SlowMorseBackbone(MorseBackbone):
    def calculator(self):
        return SlowMorse(r0=1.2, rho0=6.0)


def test_an_interrupt_stops_the_workers_after_the_molecules_they_are_relaxing(tmp_path):
    alkanes = [(f"C{n}", "C" * n, 1.0) for n in range(1, 41)]  # ~0.2 s each to relax

    def interrupt(done):
        if done:  # the first call counts the molecules found in the store: none
            raise KeyboardInterrupt

    store = FeatureStore(tmp_path / "store")
    with pytest.raises(KeyboardInterrupt):
        molecules_to_dataset(_table(tmp_path, alkanes), backbone=SlowMorseBackbone(), relax_options=FEW_STEPS,
                             workers=2, store=store, on_progress=interrupt)
    relaxed = [path for path in (store.local_root / "geometries").glob("morse-*/*.json") if path.name != "identity.json"]
    # the first result, the molecules in the workers' hands and the few already queued to them; not all 40
    assert 1 <= len(relaxed) <= 10


def test_scaffolds_do_not_print_rdkits_notes(capfd):
    from rdkit import Chem

    salt = "[Cl-].CN[C@H]1CC[C@@H](c2ccc(Cl)c(Cl)c2)c3ccccc13.[H+]"  # a BBBP molecule with a bare proton
    Chem.MolFromSmiles(salt)
    assert "not removing hydrogen" in capfd.readouterr().err  # RDKit notes it...
    assert murcko_scaffold(salt) == "c1ccc(C2CCCc3ccccc32)cc1"
    assert capfd.readouterr().err == ""  # ...but not once per such molecule of a scaffold split


def test_scaffold_folds_keep_each_scaffold_in_one_test_fold():
    smiles = ["c1ccccc1C", "c1ccccc1CC", "c1ccccc1O", "C1CCCCC1N", "C1CCCCC1O", "c1ccncc1C", "c1ccncc1",
              "CCO", "CCN", "C1CC1C", "c1ccc2ccccc2c1", "c1ccc2ccccc2c1O", "O=C1CCCN1", "O=C1CCCN1C"]
    folds = scaffold_folds(smiles, n_splits=4, seed=3)
    tests = [set(test.tolist()) for _, test in folds]
    assert sorted(i for test in tests for i in test) == list(range(len(smiles)))
    for train, test in folds:
        assert not set(train.tolist()) & set(test.tolist())
    for scaffold in {murcko_scaffold(s) for s in smiles}:
        members = {i for i, s in enumerate(smiles) if murcko_scaffold(s) == scaffold}
        assert sum(bool(members & test) for test in tests) == 1, scaffold
    again = scaffold_folds(smiles, n_splits=4, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    with pytest.raises(ValueError, match="molecule 1"):
        scaffold_folds(["CCO", "C1C("], n_splits=2)


class RecordingBackbone(MorseBackbone):
    needs_supercell = True

    def __init__(self):
        self.seen = []

    def per_atom_features(self, structures, layers):
        self.seen += [len(atoms) for atoms in structures]
        return super().per_atom_features(structures, layers)


def test_non_periodic_structures_get_no_supercell(tmp_path):
    ethanol = embed(parse_smiles("CCO"))
    assert cutoff_supercell(ethanol, 12.0) is ethanol
    backbone = RecordingBackbone()
    dataset = Dataset([Sample("ethanol", "row 2", ethanol, 1.0)], "y", "test")
    featurize(dataset, backbone, FeatureStore(tmp_path / "store"))
    assert backbone.seen == [len(ethanol)]


def test_missing_rdkit_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rdkit", None)
    with pytest.raises(ImportError, match=r"pip install hacknip-core\[molecules\]"):
        parse_smiles("CCO")


def test_backbone_without_calculator_says_it_cannot_relax(tmp_path):
    class NoCalculator(MorseBackbone):
        calculator = None

    with pytest.raises(ValueError, match="morse has no ASE calculator, so it cannot relax molecules"):
        molecules_to_dataset(_table(tmp_path, MOLECULES), backbone=NoCalculator(), relax_options=RelaxOptions(),
                             store=FeatureStore(tmp_path))


class NitrogenHatingMorse(CountingMorse):
    def calculate(self, atoms=None, *args, **kwargs):
        if 7 in atoms.numbers:
            raise RuntimeError("cannot handle nitrogen\nsecond line of detail")
        super().calculate(atoms, *args, **kwargs)


class NitrogenHatingBackbone(MorseBackbone):
    def calculator(self):
        return NitrogenHatingMorse(r0=1.2, rho0=6.0)


def test_relaxation_failure_is_reported_per_row_and_the_rest_kept(tmp_path):
    path = _table(tmp_path, MOLECULES)
    dataset = molecules_to_dataset(path, id_column="name", backbone=NitrogenHatingBackbone(), relax_options=FEW_STEPS,
                                   store=FeatureStore(tmp_path), on_error="skip")
    assert dataset.ids == ["ethanol", "acetic acid"]
    assert [(s.row, s.id, s.reason) for s in dataset.skipped] == [
        ("row 4", "pyridine", "relaxation failed: RuntimeError: cannot handle nitrogen")]
    with pytest.raises(BadInputError, match=r"row 4 \(id pyridine\): relaxation failed"):
        molecules_to_dataset(path, id_column="name", backbone=NitrogenHatingBackbone(), relax_options=FEW_STEPS,
                             store=FeatureStore(tmp_path))


def test_fragments_of_a_salt_do_not_overlap():
    salt = embed(parse_smiles("[Cl].CC(C)NCC(O)COc1cccc2ccccc12"))  # BBBP row 2: ETKDG put Cl 0.73 Å from a C
    chlorine = int(np.flatnonzero(salt.numbers == 17)[0])
    distances = np.delete(np.linalg.norm(salt.positions - salt.positions[chlorine], axis=1), chlorine)
    assert distances.min() >= 3.0


def test_the_command_line_relaxes_on_every_available_core_unless_told(monkeypatch, tmp_path):
    import os

    from hacknip.cli.common import run_config
    from hacknip.data.molecules import available_cores

    assert available_cores() == len(os.sched_getaffinity(0))
    assert run_config(data=tmp_path, backbone="chgnet", workers=None).workers == available_cores()
    assert run_config(data=tmp_path, backbone="chgnet", workers=1).workers == 1


# -- energy and forces without the rest of a calculator; a force-field start ---------------------------------------

def test_chgnet_energies_and_forces_are_its_calculators_for_a_molecule_and_a_crystal():
    from ase.build import bulk

    from hacknip.data.structures import boxed
    from hacknip.plugins.registry import load_backbone

    backbone = load_backbone("chgnet")
    crystal = bulk("NaCl", "rocksalt", a=5.7) * (2, 1, 1)
    crystal.rattle(0.05, seed=1)
    structures = [boxed(embed(parse_smiles("CC(=O)Nc1ccc(O)cc1")), backbone.cutoff), crystal]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # chgnet's warning about a tensor with a gradient, once in every worker
        results = backbone.energies_and_forces(structures)
    for (energy, forces), atoms in zip(results, structures, strict=True):
        atoms.calc = backbone.calculator()
        assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-4)
        np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-4)
        assert forces.shape == (len(atoms), 3) and np.abs(forces).max() > 0.01


def test_molecules_relax_through_energies_and_forces_when_the_backbone_has_it(tmp_path):
    from hacknip.data.relaxation import BackboneForces, calculator_of

    class WithForces(MorseForcesBackbone):
        passes = 0

        def energies_and_forces(self, structures):
            WithForces.passes += 1
            return super().energies_and_forces(structures)

    assert isinstance(calculator_of(WithForces()), BackboneForces)
    CALCULATIONS["count"] = 0
    with_forces = molecules_to_dataset(_table(tmp_path, MOLECULES), backbone=WithForces(), relax_options=FEW_STEPS,
                                       store=FeatureStore(tmp_path / "a"))
    assert WithForces.passes > 0 and CALCULATIONS["count"] == 0  # its calculator was never asked
    with_calculator = molecules_to_dataset(_table(tmp_path, MOLECULES), backbone=MorseBackbone(),
                                           relax_options=FEW_STEPS, store=FeatureStore(tmp_path / "b"))
    for one, other in zip(with_forces.samples, with_calculator.samples, strict=True):
        np.testing.assert_allclose(one.atoms.positions, other.atoms.positions, atol=1e-10)


def test_the_mmff94_conformer_has_a_lower_force_field_energy_than_etkdgs():
    from rdkit.Chem import AllChem

    molecule = parse_smiles("CC(=O)Nc1ccc(O)cc1")
    etkdg, mmff = embed(molecule), embed(molecule, EmbedOptions(force_field="MMFF94"))
    assert list(etkdg.numbers) == list(mmff.numbers) and not np.allclose(etkdg.positions, mmff.positions)
    with_hydrogens = AllChem.AddHs(molecule)
    AllChem.EmbedMolecule(with_hydrogens, randomSeed=0)

    def mmff_energy(positions):
        conformer = with_hydrogens.GetConformer()
        for index, position in enumerate(positions):
            conformer.SetAtomPosition(index, position.tolist())
        properties = AllChem.MMFFGetMoleculeProperties(with_hydrogens)
        return AllChem.MMFFGetMoleculeForceField(with_hydrogens, properties).CalcEnergy()

    assert mmff_energy(mmff.positions) < mmff_energy(etkdg.positions) - 1.0  # kcal/mol
    with pytest.raises(ValueError, match="unknown force field 'UFF2'"):
        EmbedOptions(force_field="UFF2")


def test_molecules_are_unrelaxed_unless_asked_and_each_conformer_relaxes_apart_in_the_store(tmp_path):
    path = _table(tmp_path, MOLECULES)
    store = FeatureStore(tmp_path / "store")
    unrelaxed = molecules_to_dataset(path, backbone=MorseBackbone(), store=store)
    stored = [folder.name.split("-")[0] for folder in (tmp_path / "store" / "geometries").iterdir()]
    assert stored == ["conformers"]  # a backbone alone does not relax
    np.testing.assert_array_equal(unrelaxed.samples[1].atoms.positions, embed(parse_smiles("CC(=O)O")).positions)
    mmff = EmbedOptions(force_field="MMFF94")
    optimised = molecules_to_dataset(path, embed_options=mmff)
    np.testing.assert_array_equal(optimised.samples[1].atoms.positions, embed(parse_smiles("CC(=O)O"), mmff).positions)

    from_mmff = molecules_to_dataset(path, backbone=MorseBackbone(), relax_options=FEW_STEPS, store=store)  # default
    again = molecules_to_dataset(path, backbone=MorseBackbone(), relax_options=FEW_STEPS, store=store, embed_options=mmff)
    np.testing.assert_array_equal(from_mmff.samples[1].atoms.positions, again.samples[1].atoms.positions)
    from_etkdg = molecules_to_dataset(path, backbone=MorseBackbone(), relax_options=FEW_STEPS, store=store,
                                      embed_options=EmbedOptions())
    assert not np.allclose(from_mmff.samples[1].atoms.positions, from_etkdg.samples[1].atoms.positions)
    records = [file for file in (tmp_path / "store").glob("geometries/morse-*/*.json") if file.name != "identity.json"]
    assert len(records) == 2 * len(from_mmff.samples)  # the ETKDG start found none of the MMFF94 ones
