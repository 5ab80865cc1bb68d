"""Relaxing many structures at once: the same optimiser and steps as one at a time, each structure stopping on its
own criterion, the batch refilled as structures finish, failures per structure; and through molecules_to_dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.calculators.morse import MorsePotential

from hacknip.data.relaxation import BackboneForces, RelaxOptions, relax, relax_in_batches
from hacknip.data.structures import boxed
from hacknip.errors import BadStructureError, InputError


class MorseForces:
    """A backbone whose batched energies_and_forces is ASE's Morse potential; it records every pass's structures."""

    name = "morse"
    cutoff = 4.0
    layer_widths = (1,)
    needs_supercell = False
    supported_elements = frozenset({1, 6, 7, 8})

    def __init__(self, refuse: int | None = None) -> None:
        self.passes: list[list[int]] = []
        self.refuse = refuse  # a number of atoms it cannot handle

    def identity(self):
        return {"name": self.name, "library": "ase", "potential": "morse r0=1.2"}

    def per_atom_features(self, structures, layers):
        return [{0: np.ones((len(atoms), 1), dtype=np.float32)} for atoms in structures]

    def energies_and_forces(self, structures):
        self.passes.append([len(atoms) for atoms in structures])
        results = []
        for atoms in structures:
            if len(atoms) == self.refuse:
                raise RuntimeError(f"cannot handle {len(atoms)} atoms")
            atoms = atoms.copy()
            atoms.calc = MorsePotential(r0=1.2, rho0=6.0)
            results.append((atoms.get_potential_energy(), atoms.get_forces()))
        return results


def _clusters(sizes=(3, 4, 5, 6, 7), seed=0) -> list[Atoms]:
    """Loose clusters that a Morse potential pulls together in a few to a few tens of steps."""
    rng = np.random.default_rng(seed)
    return [Atoms("C" * n, positions=rng.uniform(0, 1.2 + 0.15 * n, size=(n, 3))) for n in sizes]


@pytest.mark.parametrize("optimizer", ["BFGS", "FIRE", "LBFGS"])
def test_in_batches_each_structure_takes_the_steps_it_takes_alone(optimizer):
    options = RelaxOptions(fmax=0.05, steps=150, optimizer=optimizer)
    structures = _clusters()
    alone = [relax(atoms, BackboneForces(MorseForces()), options) for atoms in structures]
    backbone = MorseForces()
    together = dict(relax_in_batches(structures, backbone, options, batch_size=3))
    assert sorted(together) == list(range(len(structures)))
    for index, one in enumerate(alone):
        batched = together[index]
        assert (batched.steps, batched.converged) == (one.steps, one.converged)
        np.testing.assert_allclose(batched.atoms.positions, one.atoms.positions, atol=1e-9)
        assert batched.energy == pytest.approx(one.energy) and batched.fmax == pytest.approx(one.fmax)
        assert batched.energy_initial == pytest.approx(one.energy_initial)
    assert len({one.steps for one in alone}) > 1, "the clusters should need different numbers of steps"
    # every evaluation was shared: passes are as many as the steps of the slowest batch-mates, not of all
    assert sum(len(sizes) for sizes in backbone.passes) == sum(one.steps + 1 for one in alone)
    assert len(backbone.passes) < sum(one.steps + 1 for one in alone) / 2
    assert max(len(sizes) for sizes in backbone.passes) == 3


def test_a_finished_structure_leaves_and_the_next_takes_its_place():
    options = RelaxOptions(fmax=0.05, steps=150)
    structures = _clusters(sizes=(3, 7, 4, 5))
    backbone = MorseForces()
    order = [index for index, _ in relax_in_batches(structures, backbone, options, batch_size=2)]
    first_pass = backbone.passes[0]
    assert first_pass == [3, 7]
    # the 3-atom cluster finishes first; the 4-atom one joins the 7-atom one still relaxing
    assert order[0] == 0
    joined = next(sizes for sizes in backbone.passes if 4 in sizes)
    assert sorted(joined) == [4, 7]
    assert all(len(sizes) == 2 for sizes in backbone.passes[: backbone.passes.index(joined) + 1])


def test_the_atom_budget_closes_a_batch_and_a_large_structure_goes_alone():
    options = RelaxOptions(fmax=0.05, steps=150)
    backbone = MorseForces()
    results = dict(relax_in_batches(_clusters(sizes=(3, 4, 9)), backbone, options, batch_size=8, batch_atoms=8))
    assert sorted(results) == [0, 1, 2]
    assert backbone.passes[0] == [3, 4]
    assert all(sum(sizes) <= 8 or sizes == [9] for sizes in backbone.passes)


def test_a_structure_whose_forces_fail_is_reported_and_the_others_relax():
    options = RelaxOptions(fmax=0.05, steps=150)
    backbone = MorseForces(refuse=5)
    results = dict(relax_in_batches(_clusters(), backbone, options, batch_size=5))
    assert isinstance(results[2], RuntimeError) and "cannot handle 5 atoms" in str(results[2])
    assert all(results[index].converged for index in (0, 1, 3, 4))


def test_a_structure_that_cannot_be_boxed_is_reported_and_the_others_relax():
    slab_without_cell = Atoms("C3", positions=[[0, 0, 0], [1.2, 0, 0], [0, 1.2, 0]], pbc=[True, False, False])
    structures = [*_clusters(sizes=(3, 4)), slab_without_cell]
    results = dict(relax_in_batches(structures, MorseForces(), RelaxOptions(fmax=0.05, steps=150), batch_size=2))
    assert isinstance(results[2], BadStructureError) and "a periodic axis has no cell vector" in str(results[2])
    assert results[0].converged and results[1].converged


def test_boxed_gives_a_molecule_a_cell_and_keeps_it_open_and_keeps_a_full_cell():
    molecule = _clusters(sizes=(4,))[0]
    box = boxed(molecule, vacuum=5.0)
    assert box.cell.rank == 3 and not box.pbc.any() and box is not molecule
    np.testing.assert_allclose(box.get_all_distances(), molecule.get_all_distances())
    np.testing.assert_allclose(box.positions.min(axis=0), 5.0)
    np.testing.assert_allclose(box.cell.lengths(), np.ptp(molecule.positions, axis=0) + 10.0)
    crystal = Atoms("C2", positions=[[0, 0, 0], [1.5, 0, 0]], cell=[3, 3, 3], pbc=True)
    assert boxed(crystal, vacuum=5.0) == crystal
    wire = Atoms("C2", positions=[[0, 0, 0], [1.5, 0, 0]], cell=[3, 0, 0], pbc=[True, False, False])
    np.testing.assert_allclose(boxed(wire, vacuum=5.0).cell.lengths(), [3.0, 10.0, 10.0])


def test_a_line_search_optimiser_or_a_backbone_without_batched_forces_is_a_one_line_error():
    with pytest.raises(InputError, match="BFGSLineSearch optimiser evaluates forces inside its step"):
        list(relax_in_batches(_clusters(sizes=(5,)), MorseForces(), RelaxOptions(optimizer="BFGSLineSearch")))

    class CalculatorOnly:
        name = "morse"

    with pytest.raises(InputError, match="morse has no batched energies_and_forces"):
        list(relax_in_batches(_clusters(sizes=(5,)), CalculatorOnly()))
    with pytest.raises(InputError, match="ase.optimize has no optimiser 'Nope'"):
        list(relax_in_batches(_clusters(sizes=(5,)), MorseForces(), RelaxOptions(optimizer="Nope")))


def test_molecules_relax_in_batches_like_one_at_a_time_and_are_stored(tmp_path):
    pytest.importorskip("rdkit")
    from hacknip.data.molecules import molecules_to_dataset
    from hacknip.store import FeatureStore

    path = tmp_path / "molecules.csv"
    pd.DataFrame({"smiles": ["CCO", "CC(=O)O", "c1ccncc1", "C1CC(", "CCN"], "y": [1.0, 0.0, 1.0, 0.0, 1.0]}).to_csv(
        path, index=False)
    options = RelaxOptions(steps=10)
    one_at_a_time = molecules_to_dataset(path, backbone=MorseForces(), relax_options=options, on_error="skip",
                                         store=FeatureStore(tmp_path / "a"))
    backbone = MorseForces()
    progress = []
    batched = molecules_to_dataset(path, backbone=backbone, relax_options=options, on_error="skip",
                                   store=FeatureStore(tmp_path / "b"), relax_batch=3, on_progress=progress.append)
    assert batched.ids == one_at_a_time.ids and len(batched.samples) == 4
    assert [entry.reason.split(":")[0] for entry in batched.skipped] == ["unparseable SMILES"]
    for one, other in zip(one_at_a_time.samples, batched.samples, strict=True):
        np.testing.assert_allclose(other.atoms.positions, one.atoms.positions, atol=1e-9)
        assert other.atoms.info["relax_steps"] == one.atoms.info["relax_steps"]
    assert max(len(sizes) for sizes in backbone.passes) == 3 and sum(progress) == 4
    again = MorseForces()
    stored = molecules_to_dataset(path, backbone=again, relax_options=options, on_error="skip",
                                  store=FeatureStore(tmp_path / "b"), relax_batch=3)
    assert again.passes == [] and stored.ids == batched.ids  # every relaxed molecule was kept as it finished


def test_chgnet_relaxes_molecules_in_batches_as_it_does_one_at_a_time():
    pytest.importorskip("chgnet")
    pytest.importorskip("rdkit")
    from hacknip.data.molecules import EmbedOptions, embed, parse_smiles
    from hacknip.plugins.registry import load_backbone

    backbone = load_backbone("chgnet")
    molecules = [embed(parse_smiles(smiles), EmbedOptions(force_field="MMFF94")) for smiles in ("CCO", "CC(=O)N")]
    options = RelaxOptions(fmax=0.05, steps=8)
    alone = [relax(atoms, BackboneForces(backbone), options, vacuum=backbone.cutoff) for atoms in molecules]
    together = dict(relax_in_batches(molecules, backbone, options, vacuum=backbone.cutoff, batch_size=2))
    for index, one in enumerate(alone):
        assert together[index].steps == one.steps
        np.testing.assert_allclose(together[index].atoms.positions, one.atoms.positions, atol=1e-4)
        assert together[index].energy == pytest.approx(one.energy, abs=1e-4)


def test_one_molecule_at_a_time_on_a_cpu_and_a_batch_on_cuda_unless_told():
    from click.testing import CliRunner

    from hacknip.cli import cli
    from hacknip.data.molecules import CUDA_RELAX_BATCH, _relax_batch

    backbone = MorseForces()
    assert _relax_batch(None, backbone, "BFGS") == 1
    backbone.device = "cuda:0"
    assert _relax_batch(None, backbone, "BFGS") == CUDA_RELAX_BATCH and _relax_batch(3, backbone, "BFGS") == 3

    class CalculatorOnly:
        name = "morse"
        device = "cuda"

    assert _relax_batch(None, CalculatorOnly(), "BFGS") == 1 and _relax_batch(1, CalculatorOnly(), "BFGS") == 1
    with pytest.raises(InputError, match="morse has no batched energies_and_forces.*leave out --relax-batch"):
        _relax_batch(3, CalculatorOnly(), "BFGS")
    help_text = " ".join(CliRunner().invoke(cli, ["run", "--help"]).output.split())
    assert f"[default: 1 on a CPU, {CUDA_RELAX_BATCH} on CUDA]" in help_text


# --- Sella: internal coordinates, one structure at a time ------------------------------------------------------

def test_sella_reaches_a_tight_fmax_in_far_fewer_steps_than_bfgs_to_the_same_minimum():
    """Hexanol's soft torsions are what Cartesian BFGS is slow on near 0.01 eV/Å (docs/molecules.md)."""
    pytest.importorskip("sella")
    pytest.importorskip("chgnet")
    pytest.importorskip("rdkit")
    from hacknip.data.molecules import EmbedOptions, embed, parse_smiles
    from hacknip.plugins.registry import load_backbone

    backbone = load_backbone("chgnet")
    molecule = embed(parse_smiles("CCCCCCO"), EmbedOptions(force_field="MMFF94"))
    bfgs, sella = (relax(molecule, BackboneForces(backbone), RelaxOptions(fmax=0.01, steps=300, optimizer=name),
                         vacuum=backbone.cutoff) for name in ("BFGS", "Sella"))
    assert bfgs.converged and sella.converged and sella.fmax < 0.01
    assert sella.steps < bfgs.steps / 2, (sella.steps, bfgs.steps)
    assert sella.energy == pytest.approx(bfgs.energy, abs=0.01) and sella.energy < sella.energy_initial
    assert not sella.atoms.pbc.any() and sella.atoms.get_chemical_symbols() == molecule.get_chemical_symbols()


def test_sella_relaxes_one_structure_at_a_time_and_says_so():
    from hacknip.data.molecules import _relax_batch

    with pytest.raises(InputError, match="Sella optimiser evaluates forces inside its step.*leave out --relax-batch"):
        list(relax_in_batches(_clusters(sizes=(5,)), MorseForces(), RelaxOptions(optimizer="Sella")))
    on_cuda = MorseForces()
    on_cuda.device = "cuda:0"
    assert _relax_batch(None, on_cuda, "Sella") == 1 and _relax_batch(1, on_cuda, "Sella") == 1
    with pytest.raises(InputError, match="relaxes one structure at a time"):
        _relax_batch(3, on_cuda, "Sella")


def test_an_optimiser_not_installed_or_not_an_optimiser_is_a_one_line_error_before_any_work(tmp_path, monkeypatch):
    import sys

    from hacknip.data.molecules import molecules_to_dataset

    monkeypatch.setitem(sys.modules, "sella", None)  # as if not installed
    with pytest.raises(InputError, match=r"needs the sella package: pip install 'hacknip-core\[sella\]'"):
        relax(_clusters(sizes=(3,))[0], BackboneForces(MorseForces()), RelaxOptions(optimizer="Sella"))
    with pytest.raises(InputError, match="ase.optimize has no optimiser 'RestartError'"):  # in ase.optimize: an error class
        relax(_clusters(sizes=(3,))[0], BackboneForces(MorseForces()), RelaxOptions(optimizer="RestartError"))
    with pytest.raises(InputError, match="ase.optimize has no optimiser 'Nope'"):  # said before the file is read
        molecules_to_dataset(tmp_path / "not-there.csv", backbone=MorseForces(), relax_options=RelaxOptions(optimizer="Nope"))


def test_an_optimiser_that_stops_above_fmax_by_its_own_test_goes_on_until_the_largest_force_is_below(monkeypatch):
    """As Sella can, judging its forces with the rigid motions projected out: relax asks again, tighter."""
    from ase.optimize import BFGS

    import hacknip.data.relaxation as relaxation

    asked = []

    class StopsEarly(BFGS):
        def run(self, fmax=0.05, steps=100):
            asked.append(fmax)
            return super().run(fmax=fmax * 3, steps=steps)

    monkeypatch.setattr(relaxation, "optimizer_class", lambda name: StopsEarly)
    options = RelaxOptions(fmax=0.01, steps=300)
    result = relax(_clusters(sizes=(6,))[0], BackboneForces(MorseForces()), options)
    assert result.converged and result.fmax < 0.01 and asked[:2] == [0.01, 0.005]
    assert len(asked) <= 3 and result.steps <= options.steps
