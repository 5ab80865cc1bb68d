"""Ordered approximants of partially occupied structures (hacknip.data.disorder)."""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

from hacknip.data.disorder import ordered_approximant


def _rocksalt(occupancy):
    return Structure(Lattice.cubic(6.0), [occupancy, "Te"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_an_ordered_structure_comes_back_unchanged():
    structure = _rocksalt("Sn")
    approximant = ordered_approximant(structure)
    assert approximant.multiplicity == 1 and approximant.composition_error == 0.0
    assert approximant.structure == structure


def test_occupancies_become_whole_atoms_in_the_smallest_supercell_that_holds_them():
    approximant = ordered_approximant(_rocksalt({"Sn": 0.75, "Ag": 0.25}))
    assert approximant.multiplicity == 4 and sorted(approximant.scaling) == [1, 2, 2]
    assert approximant.structure.is_ordered
    assert approximant.structure.composition.as_dict() == {"Sn": 3.0, "Ag": 1.0, "Te": 4.0}
    assert approximant.composition_error == 0.0 and not approximant.dropped
    # Ag and Sn only ever sit where the disordered site was; Te keeps its sites
    for site in approximant.structure:
        frac = site.frac_coords * approximant.scaling % 1
        assert (frac.round(6) % 1 == 0).all() == (site.specie.symbol in ("Sn", "Ag"))


def test_vacancies_become_missing_atoms():
    approximant = ordered_approximant(_rocksalt({"Sn": 0.5}))
    assert approximant.structure.composition.as_dict() == {"Sn": 1.0, "Te": 2.0}


def test_a_dopant_too_dilute_for_max_atoms_is_reported_dropped():
    structure = _rocksalt({"Mg": 0.98, "Ir": 0.02})
    small = ordered_approximant(structure, max_atoms=40)  # 20 Mg/Ir sites hold 0.4 Ir atoms
    assert small.dropped == ["Ir"] and small.multiplicity == 1
    assert "dropped Ir" in small.describe()
    large = ordered_approximant(structure, max_atoms=128)
    assert not large.dropped and large.structure.composition["Ir"] == 1
    assert large.composition_error <= 0.005


def test_the_decoration_is_seeded():
    structure = _rocksalt({"Sn": 0.5, "Ag": 0.5})
    one, again, other = (ordered_approximant(structure, seed=seed).structure for seed in (1, 1, 2))
    assert one == again
    assert len(one) == len(other)


@pytest.mark.parametrize("tolerance", [0.0, 0.05])
def test_tolerance_trades_size_for_composition(tolerance):
    approximant = ordered_approximant(_rocksalt({"Sn": 0.9, "Ag": 0.1}), tolerance=tolerance)
    assert approximant.composition_error <= max(tolerance, 1e-12)
    assert not approximant.dropped


def _table_with_a_disordered_row(tmp_path):
    import pandas as pd

    rows = [{"cif": Structure(Lattice.cubic(3.5 + 0.03 * i), ["Cu"], [[0, 0, 0]]).to(fmt="cif"), "y": 1.0 + i}
            for i in range(11)]
    rows.append({"cif": _rocksalt({"Sn": 0.75, "Ag": 0.25}).to(fmt="cif"), "y": 3.0})
    table = tmp_path / "data.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


def test_runs_refuse_a_disordered_row_unless_asked_to_order_it(toy_plugin, tmp_path):
    import json

    from click.testing import CliRunner

    from hacknip.cli import cli

    table = _table_with_a_disordered_row(tmp_path)
    base = ["run", "--data", str(table), "--backbone", "toy@1", "--head", "ridge", "--target", "y"]
    refused = CliRunner().invoke(cli, base)
    assert refused.exit_code == 1
    message = " ".join(refused.output.split())
    assert "row 13 (id 11): unreadable structure (partially occupied sites" in message
    assert "pass --disordered approximant" in message

    ordered = CliRunner().invoke(cli, [*base, "--disordered", "approximant", "--out", str(tmp_path / "out"),
                                       "--save", str(tmp_path / "model")])
    assert ordered.exit_code == 0, ordered.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["n_samples"] == 12 and results["disordered"] == "approximant"
    (flag,) = results["flagged"]
    assert flag["id"] == "11" and flag["reason"].startswith("ordered approximant of a disordered structure: 4x supercell")

    predicted = CliRunner().invoke(cli, ["predict", str(tmp_path / "model"), "--data", str(table),
                                         "--out", str(tmp_path / "p.csv")])
    assert predicted.exit_code == 0, predicted.output  # the model remembers how it read disordered rows
