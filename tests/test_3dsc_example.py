"""examples/3dsc/build_table.py on the real 3DSC files: which CIFs become rows, and that the table runs."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA

from hacknip.cli import cli

DATA = SHARED_DATA / "3dsc"
SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "3dsc" / "build_table.py"


@pytest.fixture(scope="module")
def build_table():
    spec = importlib.util.spec_from_file_location("build_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def entries(build_table):
    """Index entries with their CIF text: 12 ordered superconductors, a Tc = 0 K one, doped ones, one without Tc."""
    index = build_table.read_index(DATA)
    from pymatgen.core import Composition

    ordered = [e for e in index if e["synth_doped"] == "False" and e["tc_from_ICSD_table"]
               and float(e["tc_from_ICSD_table"]) > 0
               and max(el.Z for el in Composition(e["formula_sc"])) <= 83]  # the toy backbone's elements
    picked = {"ordered": ordered[:12], "zero": [e for e in index if e["tc_from_ICSD_table"] == "0.0"][:1],
              "no_tc": [e for e in index if not e["tc_from_ICSD_table"]][:1],
              "doped": [e for e in index if e["cif"] in (
                  "cifs/Ag0.15Sn0.85Te1-MP-mp-1481-synth_doped.cif", "cifs/B2Ir0.02Mg0.98-MP-mp-763-synth_doped.cif")]}
    names = {e["cif"] for group in picked.values() for e in group}
    with tarfile.open(DATA / "3DSC_MP_final_cifs.tar.gz") as archive:
        texts = {m.name: archive.extractfile(m).read().decode() for m in archive.getmembers() if m.name in names}
    return {kind: [(e, texts[e["cif"]]) for e in group] for kind, group in picked.items()}


def test_rows_without_a_finite_log_tc_are_excluded_with_the_reason(build_table, entries):
    (zero, text), = entries["zero"]
    assert build_table.table_row(zero, text, "exclude", 128) == (None, "Tc = 0.0 K: log Tc is not finite (non-superconductor)")
    (missing, text), = entries["no_tc"]
    assert build_table.table_row(missing, text, "exclude", 128)[1] == "no Tc for this formula in 3DSC's ICSD table"


def test_doped_structures_are_excluded_or_ordered_never_turned_silently_into_their_parent(build_table, entries):
    doped = dict((Path(e["cif"]).stem.split("-")[0], (e, text)) for e, text in entries["doped"])
    row, reason = build_table.table_row(*doped["Ag0.15Sn0.85Te1"], "exclude", 128)
    assert row is None and reason.startswith("synth_doped")
    row, reason = build_table.table_row(*doped["Ag0.15Sn0.85Te1"], "approximant", 128)
    assert reason is None and "Ag" in row["cif"] and row["approximant"].startswith("7x supercell")
    row, reason = build_table.table_row(*doped["B2Ir0.02Mg0.98"], "approximant", 32)
    assert row is None and "drops Ir" in reason


def test_families_join_rows_that_share_a_formula_or_a_parent_structure(build_table):
    rows = [{"formula_sc": "A", "material_id": "mp-1"}, {"formula_sc": "B", "material_id": "mp-1"},
            {"formula_sc": "B", "material_id": "mp-2"}, {"formula_sc": "C", "material_id": "mp-3"},
            {"formula_sc": "A", "material_id": "mp-4"}]
    build_table.add_families(rows)
    assert [row["family"] for row in rows] == ["A", "A", "A", "C", "A"]


def test_the_table_runs_through_hacknip_with_a_formula_grouped_split(build_table, entries, toy_plugin, tmp_path):
    rows = [build_table.table_row(entry, text, "exclude", 128)[0] for entry, text in entries["ordered"]]
    assert all(row and math.isfinite(math.log(row["tc"])) for row in rows)
    build_table.add_families(rows)
    table = tmp_path / "3dsc_tc.csv"
    build_table._write(table, rows, build_table.TABLE_COLUMNS)
    with table.open() as stream:
        assert [row["id"] for row in csv.DictReader(stream)] == [row["id"] for row in rows]
    result = CliRunner().invoke(cli, ["run", "--data", str(table), "--id-column", "id", "--target", "tc", "--backbone",
                                      "toy@1", "--head", "ridge", "--target-transform", "ln", "--score-scale",
                                      "transformed", "--split", "group:family", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["n_samples"] == len(rows) and results["scored_on"] == "transformed"
    assert results["predictions"]["id"] == [row["id"] for row in rows]
