"""Per-atom Jensen–Shannon divergence across depth (hacknip.analysis.jsd, hacknip analyze jsd): the divergence's
properties, the LLZO and caffeine examples, the real CHGNet end to end, and the command's files and errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from click.testing import CliRunner
from llzo import llzo_atoms, llzo_structure
from scipy.spatial.distance import jensenshannon

from hacknip.analysis.jsd import (
    JsdMap,
    atom_views,
    checked_layers,
    jensen_shannon_bits,
    jsd_across_depth,
    jsd_map,
    molecule_from_smiles,
    read_structure,
    relax_molecule,
)
from hacknip.data.molecules import RelaxOptions
from hacknip.data.structures import WARNING_KEY
from hacknip.errors import InputError

CAFFEINE = "CN1C=NC2=C1C(=O)N(C(=O)N2C)C"


def random_layers(rng, n_atoms=12, widths=(8, 16, 5, 16)) -> dict[int, np.ndarray]:
    """Features of different widths per layer, as MACE or SevenNet give."""
    return {layer: rng.normal(size=(n_atoms, width)) for layer, width in enumerate(widths)}


# --- the divergence ---------------------------------------------------------------------------------------------

def test_views_are_distributions_over_atoms():
    views = atom_views(np.random.default_rng(0).normal(size=(7, 3)))
    assert views.shape == (7, 7)
    assert np.allclose(views.sum(axis=1), 1.0) and (views > 0).all()
    assert np.allclose(np.diag(views), views.max(axis=1))  # an atom is most like itself


def test_jsd_matches_scipy_in_bits_and_is_symmetric_and_bounded():
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(9), size=5), rng.dirichlet(np.ones(9), size=5)
    expected = [jensenshannon(a, b, base=2) ** 2 for a, b in zip(p, q)]  # scipy gives the distance, its square root
    assert np.allclose(jensen_shannon_bits(p, q), expected)
    assert np.array_equal(jensen_shannon_bits(p, q), jensen_shannon_bits(q, p))
    disjoint = jensen_shannon_bits(np.array([[0.5, 0.5, 0, 0]]), np.array([[0, 0, 0.3, 0.7]]))
    assert disjoint == pytest.approx([1.0])  # the bound, reached by distributions with no common support
    assert (jensen_shannon_bits(p, q) >= 0).all() and (jensen_shannon_bits(p, q) <= 1).all()


def test_identical_layers_give_zero():
    features = np.random.default_rng(2).normal(size=(6, 4))
    matrix = jsd_across_depth({0: features, 1: features.copy(), 2: 3.0 * features})  # rescaling changes no cosine
    assert matrix.shape == (6, 2)
    assert np.allclose(matrix, 0.0, atol=1e-12)


def test_layers_of_different_widths_compare_and_permuting_atoms_permutes_rows():
    rng = np.random.default_rng(3)
    features = random_layers(rng)
    matrix = jsd_across_depth(features)
    assert matrix.shape == (12, 3) and matrix.max() > 0.01
    permutation = rng.permutation(12)
    permuted = jsd_across_depth({layer: values[permutation] for layer, values in features.items()})
    assert np.allclose(permuted, matrix[permutation])


def test_repeating_a_cell_leaves_each_atoms_jsd_unchanged():
    """A supercell repeats every atom: each copy shares its weight in a view, which leaves the divergence as it was."""
    features = random_layers(np.random.default_rng(4), n_atoms=5)
    twice = {layer: np.vstack([values, values]) for layer, values in features.items()}
    assert np.allclose(jsd_across_depth(twice), np.vstack([jsd_across_depth(features)] * 2))


def test_a_zero_feature_vector_sees_every_atom_alike():
    features = {0: np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), 1: np.array([[0.0, 0.0], [1.0, 1.0], [1.0, -1.0]])}
    matrix = jsd_across_depth(features)
    assert np.isfinite(matrix).all() and matrix[0] == pytest.approx([0.0])


@pytest.mark.parametrize(("features", "message"), [
    ({0: np.ones((3, 2))}, "at least two"),
    ({0: np.ones((3, 2)), 1: np.ones((4, 2))}, "different numbers of atoms"),
    ({0: np.ones((3, 2)), 1: np.full((3, 2), np.nan)}, "layer 1 has non-finite"),
])
def test_unusable_features_are_refused(features, message):
    with pytest.raises(InputError, match=message):
        jsd_across_depth(features)


# --- the result -------------------------------------------------------------------------------------------------

@pytest.fixture
def small_map() -> JsdMap:
    matrix = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.0], [0.0, 0.6]])
    return JsdMap(matrix, ("O", "H", "O", "H"), (0, 2, 3), "toy", "water pair")


def test_element_means_and_grouping(small_map):
    assert small_map.elements == ["H", "O"]  # by atomic number
    assert small_map.atom_order().tolist() == [1, 3, 0, 2]
    means = small_map.element_means()
    assert means["H"] == pytest.approx([0.15, 0.5]) and means["O"] == pytest.approx([0.3, 0.1])
    assert means["all"] == pytest.approx([0.225, 0.3])
    assert small_map.transitions == [(0, 2), (2, 3)] and small_map.largest() == (3, 1)


def test_csv_files(small_map, tmp_path):
    with open(small_map.to_csv(tmp_path / "jsd.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["index", "element", "jsd_0_2", "jsd_2_3"]
    assert [(row["index"], row["element"], float(row["jsd_2_3"])) for row in rows][3] == ("3", "H", 0.6)
    with open(small_map.element_csv(tmp_path / "elements.csv"), newline="") as handle:
        elements = {row["element"]: row for row in csv.DictReader(handle)}
    assert set(elements) == {"H", "O", "all"} and elements["all"]["n_atoms"] == "4"
    assert float(elements["O"]["jsd_0_2"]) == pytest.approx(0.3)


def test_figure_is_drawn(small_map, tmp_path):
    from hacknip.report.jsd_figure import jsd_figure, jsd_plot

    figure = jsd_figure(small_map)
    heat_axes = figure.axes[0]
    assert [label.get_text() for label in heat_axes.get_yticklabels()] == ["H1", "H3", "O0", "O2"]
    assert [label.get_text() for label in heat_axes.get_xticklabels()] == ["0→2", "2→3"]
    assert jsd_plot(small_map, tmp_path / "jsd.png").stat().st_size > 10_000


# --- the two examples -------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Set OLD_ERROR_HANDLING:DeprecationWarning")  # spglib, through pymatgen
def test_llzo_cell_is_ordered_cubic_garnet_with_sane_distances():
    structure = llzo_structure()
    assert structure.is_ordered and structure.composition.formula == "Li56 La24 Zr16 O96"
    assert structure.lattice.abc == pytest.approx((12.97,) * 3)
    assert structure.get_space_group_info(symprec=1e-3)[0] == "I4_1/acd"  # the tetragonal phase's Li ordering
    atoms = llzo_atoms()
    distances = atoms.get_all_distances(mic=True)
    np.fill_diagonal(distances, np.inf)
    assert distances.min() > 1.5
    lithium = np.array(atoms.get_chemical_symbols()) == "Li"
    assert distances[np.ix_(lithium, lithium)].min() > 2.3


def test_caffeine_from_smiles():
    atoms = molecule_from_smiles(CAFFEINE)
    assert len(atoms) == 24 and atoms.get_chemical_formula() == "C8H10N4O2"
    assert not atoms.pbc.any() and atoms.info["smiles"] == CAFFEINE


def test_bad_smiles_is_named():
    with pytest.raises(InputError, match="SMILES 'C1CC': unparseable SMILES"):
        molecule_from_smiles("C1CC")


def test_a_backbone_that_needs_supercells_gets_one_and_each_atom_the_mean_of_its_copies():
    from toy_backbone import ToyBackbone

    cell = Atoms("NaClO", scaled_positions=[[0, 0, 0], [0.5, 0.4, 0.5], [0.2, 0.7, 0.1]], cell=[3.5, 3.6, 3.7], pbc=True)
    plain = jsd_map(cell, ToyBackbone())
    expanded = jsd_map(cell, ToyBackbone(needs_supercell=True))
    assert plain.jsd.shape == expanded.jsd.shape == (3, 2) and plain.jsd.min() > 1e-9
    # the toy's features do not change in a supercell, so neither does the JSD
    assert np.allclose(expanded.jsd, plain.jsd, rtol=1e-6, atol=0)
    assert plain.notes == () and "8 copies of the cell (24 atoms)" in expanded.notes[0]


# --- with the real CHGNet ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chgnet():
    from hacknip.plugins.registry import load_backbone

    return load_backbone("chgnet")


def test_chgnet_caffeine_end_to_end_and_atom_order(chgnet):
    atoms = molecule_from_smiles(CAFFEINE)
    result = jsd_map(atoms, chgnet, label="caffeine")
    assert result.layers == (0, 1, 2, 3, 4) and result.jsd.shape == (24, 4)
    assert np.isfinite(result.jsd).all() and 0 < result.jsd.max() <= 1
    assert result.formula == "C8H10N4O2" and result.label == "caffeine"
    permutation = np.random.default_rng(5).permutation(len(atoms))
    permuted = jsd_map(atoms[permutation], chgnet)
    assert np.allclose(permuted.jsd, result.jsd[permutation], atol=1e-5)


def test_chgnet_llzo_symmetry_equivalent_atoms_agree(chgnet):
    """All 16 Zr of the I4_1/acd cell are one orbit: a measure of how each atom's view changes must agree on them."""
    result = jsd_map(llzo_atoms(), chgnet, layers=[0, 1, 2])
    assert result.jsd.shape == (192, 2)
    zirconium = result.jsd[np.array(result.symbols) == "Zr"]
    assert np.ptp(zirconium, axis=0) == pytest.approx([0, 0], abs=1e-4 * zirconium.max())
    assert result.jsd.max() > 1e-4


def test_relaxing_with_chgnet_moves_atoms_and_flags_an_unconverged_relaxation(chgnet):
    atoms = molecule_from_smiles(CAFFEINE)
    relaxed = relax_molecule(atoms, chgnet, RelaxOptions(steps=2))
    assert np.abs(relaxed.positions - atoms.positions).max() > 1e-3
    assert relaxed.info[WARNING_KEY].startswith("relaxation not converged") and relaxed.info["smiles"] == CAFFEINE
    assert relaxed.info["relax_steps"] == 2 and relaxed.info["relax_converged"] is False
    assert jsd_map(relaxed, chgnet, layers=[3, 4]).notes == (relaxed.info[WARNING_KEY],)


def test_layers_outside_the_backbone_are_refused(chgnet):
    with pytest.raises(InputError, match=r"layers \[7\]: chgnet has layers 0-4"):
        checked_layers(chgnet, [0, 7])
    with pytest.raises(InputError, match="pick at least two"):
        checked_layers(chgnet, [2, 2])


# --- reading a structure ----------------------------------------------------------------------------------------

def test_read_structure_files(tmp_path):
    (tmp_path / "nacl.cif").write_text(_cif(bulk("NaCl", "rocksalt", a=5.64)))
    assert read_structure(tmp_path / "nacl.cif").get_chemical_formula() == "ClNa"
    for name, text, message in [("bad.cif", "this is no CIF\n", "bad.cif: "), ("empty.vasp", "", "empty file"),
                                ("missing.cif", None, "no such file")]:
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=message):
            read_structure(tmp_path / name)


def test_a_disordered_file_is_refused_or_ordered_and_the_result_says_so(tmp_path):
    from pymatgen.core import Lattice, Structure
    from toy_backbone import ToyBackbone

    disordered = Structure(Lattice.cubic(4.2), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    path = tmp_path / "mixed.cif"
    path.write_text(disordered.to(fmt="cif"))
    with pytest.raises(InputError, match="mixed.cif: partially occupied sites.*--disordered approximant"):
        read_structure(path)
    ordered = read_structure(path, disordered="approximant")
    assert sorted(set(ordered.get_chemical_symbols())) == ["Cl", "K", "Na"]
    assert jsd_map(ordered, ToyBackbone()).notes[0].startswith("ordered approximant of a disordered structure")


def _cif(atoms: Atoms) -> str:
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(atoms).to(fmt="cif")


# --- the command ------------------------------------------------------------------------------------------------

def invoke(*arguments):
    """``hacknip analyze jsd ...``, through the top-level command group (so that its registration is tested)."""
    from hacknip.cli import cli

    return CliRunner().invoke(cli, ["analyze", "jsd", *arguments])


def test_command_writes_its_files_with_chgnet(tmp_path):
    out = tmp_path / "out"
    result = invoke("--smiles", CAFFEINE, "--backbone", "chgnet", "--no-relax", "--layers", "1-3", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "C8H10N4O2, 24 atoms" in result.output and "1→2" in result.output and "largest: atom" in result.output
    assert sorted(path.name for path in out.iterdir()) == ["jsd-elements.csv", "jsd.csv", "jsd.png", "structure.extxyz"]
    with open(out / "jsd.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 24 and list(rows[0]) == ["index", "element", "jsd_1_2", "jsd_2_3"]
    again = invoke("--smiles", CAFFEINE, "--backbone", "chgnet", "--no-relax", "--out", str(out))
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_command_with_a_structure_file_and_layers_of_different_widths(tmp_path, toy_plugin):
    (tmp_path / "nacl.cif").write_text(_cif(bulk("NaCl", "rocksalt", a=5.64)))
    result = invoke("--structure", str(tmp_path / "nacl.cif"), "-b", "toy", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "0→1" in result.output and "1→2" in result.output  # the toy backbone's widths are 4, 6, 6


@pytest.mark.parametrize(("arguments", "code", "message"), [
    (["--structure", "nowhere.cif"], 1, "nowhere.cif: no such file"),
    (["--smiles", "C1CC", "--no-relax"], 1, "unparseable SMILES"),
    (["--smiles", "CCO", "--no-relax", "--layers", "0,7"], 1, "layers [7]: toy has layers 0-2"),
    (["--smiles", "CCO", "--no-relax", "--layers", "1-x"], 2, "'1-x' is not a layer number"),
    (["--smiles", "CCO"], 1, "toy has no ASE calculator"),
    (["--smiles", "CCO", "--structure", "a.cif"], 2, "give one structure"),
    ([], 2, "give one structure"),
])
def test_command_errors_are_one_clear_line(tmp_path, toy_plugin, arguments, code, message):
    result = invoke(*arguments, "--backbone", "toy", "--out", str(tmp_path / "out"))
    assert result.exit_code == code
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_command_refuses_a_layer_expression_in_the_backbone(tmp_path):
    result = invoke("--smiles", "CCO", "--backbone", "chgnet@1-3", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "--layers" in result.output
