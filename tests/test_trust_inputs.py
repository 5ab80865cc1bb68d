"""Inputs a tester broke on purpose: every one gives one line naming the file (and row) and saying what to do."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write
from pymatgen.core import Lattice, Structure

from hacknip.data.read import read_dataset
from hacknip.data.structures import (
    UNLABELLED,
    WARNING_KEY,
    BadInputError,
    _RowCollector,
    add_warning,
    clear_duplicates_within_groups,
    closest_pair,
)
from hacknip.errors import InputError

SI = Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])
CU = Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]])
# a duplicated site: the second Si sits 0.01 Å from the first across the cell boundary (minimum image)
DUPLICATED = Structure(Lattice.cubic(5.43), ["Si", "Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25], [0.9982, 0, 0]])


def _error(error_type, call) -> str:
    with pytest.raises(error_type) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def _matbench(path, columns, rows):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt") as handle:
        json.dump({"index": list(range(len(rows))), "columns": columns, "data": rows}, handle)
    return path


# --- 1. files that cannot be read ---------------------------------------------------------------------------

def test_empty_json_file(tmp_path):
    path = tmp_path / "matbench_toy.json"
    path.write_text("")
    message = _error(InputError, lambda: read_dataset(path))
    assert str(path) in message and "empty file" in message


def test_truncated_json_gz(tmp_path):
    whole = _matbench(tmp_path / "whole.json.gz", ["structure", "y"], [[SI.as_dict(), 1.0]] * 20).read_bytes()
    path = tmp_path / "matbench_toy.json.gz"
    path.write_bytes(whole[: len(whole) // 2])
    message = _error(InputError, lambda: read_dataset(path))
    assert str(path) in message and "not a complete gzip file" in message and "download or write it again" in message
    damaged = bytearray(whole)
    damaged[len(whole) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    assert "not a complete gzip file (truncated or damaged" in _error(InputError, lambda: read_dataset(path))


def test_json_gz_that_is_not_gzip(tmp_path):
    path = tmp_path / "matbench_toy.json.gz"
    path.write_text(json.dumps({"columns": ["structure", "y"], "data": []}))
    message = _error(InputError, lambda: read_dataset(path))
    assert str(path) in message and "not a gzip file" in message and "rename it" in message


def test_gzip_named_plain_json(tmp_path):
    path = tmp_path / "matbench_toy.json"
    path.write_bytes(gzip.compress(b'{"columns": ["structure"], "data": []}'))
    assert "rename it to end in .json.gz" in _error(InputError, lambda: read_dataset(path))


def test_json_cut_short_or_not_matbench(tmp_path):
    path = tmp_path / "matbench_toy.json"
    path.write_text('{"columns": ["structure", "y"], "data": [[')
    message = _error(InputError, lambda: read_dataset(path))
    assert str(path) in message and "not valid JSON" in message
    path.write_text("[1, 2]")
    assert "not a Matbench file" in _error(InputError, lambda: read_dataset(path))


def test_latin1_csv_says_to_save_as_utf8(tmp_path):
    path = tmp_path / "table.csv"
    text = pd.DataFrame({"name": ["Sí", "Cu"], "cif": [SI.to(fmt="cif"), CU.to(fmt="cif")], "y": [1.0, 2.0]}).to_csv(
        index=False)
    path.write_bytes(text.encode("latin-1"))
    message = _error(InputError, lambda: read_dataset(path, id_column="name"))
    assert str(path) in message and "not UTF-8" in message and "save it as UTF-8" in message and "0xed" in message


def test_unreadable_tables(tmp_path):
    parquet = tmp_path / "table.parquet"
    parquet.write_bytes(b"PAR1 this is not parquet")
    message = _error(InputError, lambda: read_dataset(parquet))
    assert str(parquet) in message and "not a readable parquet file" in message
    blank = tmp_path / "blank.csv"
    blank.write_text("\n\n")
    assert "no header row" in _error(InputError, lambda: read_dataset(blank))


def test_a_malformed_row_of_a_matbench_file_is_named(tmp_path):
    path = _matbench(tmp_path / "matbench_toy.json", ["structure", "y"], [[SI.as_dict(), 1.0], [SI.as_dict()]])
    message = _error(BadInputError, lambda: read_dataset(path))
    assert "entry 1 (id mb-toy-2)" in message and "expected 2 values" in message


# --- 2. structures without targets --------------------------------------------------------------------------

def test_matbench_file_of_structures_only(tmp_path):
    path = _matbench(tmp_path / "matbench_toy.json.gz", ["structure"], [[SI.as_dict()], [CU.as_dict()]])
    message = _error(InputError, lambda: read_dataset(path))
    assert str(path) in message and "no target column" in message and "hacknip predict" in message
    dataset = read_dataset(path, target=UNLABELLED)
    assert dataset.ids == ["mb-toy-1", "mb-toy-2"] and np.isnan(dataset.targets).all()
    assert "no target column 'y'" in _error(InputError, lambda: read_dataset(path, target="y"))


def test_labelled_matbench_file_read_for_prediction(tmp_path):
    path = _matbench(tmp_path / "matbench_toy.json.gz", ["structure", "y"], [[SI.as_dict(), "not a number"]])
    assert np.isnan(read_dataset(path, target=UNLABELLED).targets).all()


def test_tables_extxyz_and_folders_of_structures_only(tmp_path):
    table = tmp_path / "table.csv"
    pd.DataFrame({"cif": [SI.to(fmt="cif"), CU.to(fmt="cif")]}).to_csv(table, index=False)
    assert "no numeric target column" in _error(InputError, lambda: read_dataset(table))
    assert np.isnan(read_dataset(table, target=UNLABELLED).targets).all()

    frames = tmp_path / "frames.extxyz"
    write(frames, [bulk("Si"), bulk("Cu")])
    assert "no numeric target info key" in _error(InputError, lambda: read_dataset(frames))
    assert len(read_dataset(frames, target=UNLABELLED).samples) == 2

    folder = tmp_path / "folder"
    folder.mkdir()
    write(folder / "si.cif", bulk("Si"))
    write(folder / "POSCAR_cu", bulk("Cu"), format="vasp")
    assert "needs a CSV of targets" in _error(InputError, lambda: read_dataset(folder))
    dataset = read_dataset(folder, target=UNLABELLED)  # prediction: every structure file, by name
    assert dataset.ids == ["POSCAR_cu", "si.cif"] and np.isnan(dataset.targets).all()
    pd.DataFrame({"file": ["si"]}).to_csv(folder / "targets.csv", index=False)
    assert read_dataset(folder, target=UNLABELLED).ids == ["si"]
    assert "no numeric target column" in _error(InputError, lambda: read_dataset(folder))


# --- 3. atoms on top of each other --------------------------------------------------------------------------

def test_duplicated_site_is_refused_naming_row_and_atoms(tmp_path):
    path = tmp_path / "table.csv"
    pd.DataFrame({"cif": [SI.to(fmt="cif"), DUPLICATED.to(fmt="cif")], "y": [1.0, 2.0]}).to_csv(path, index=False)
    message = _error(BadInputError, lambda: read_dataset(path))
    assert str(path) in message and "row 3 (id 1)" in message
    assert "atoms 0 (Si) and 2 (Si)" in message and "0.00977 Å apart" in message and "duplicated site" in message
    dataset = read_dataset(path, on_error="skip")
    assert dataset.ids == ["0"] and "duplicated site" in dataset.skipped[0].reason


def test_a_cell_in_nanometres_is_not_called_a_duplicated_site(tmp_path):
    path = tmp_path / "table.csv"
    in_nm = Structure(Lattice.cubic(0.543), ["Si"] * 8, bulk("Si", cubic=True).get_scaled_positions())
    pd.DataFrame({"cif": [in_nm.to(fmt="cif")], "y": [1.0]}).to_csv(path, index=False)
    message = _error(BadInputError, lambda: read_dataset(path))
    assert "row 2 (id 0)" in message and "0.02 Å³ per atom" in message and "in Å" in message


def test_close_atoms_in_extxyz_and_molecules(tmp_path):
    h2 = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    broken = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [0.96, 0.1, 0]])  # two H 0.1 Å apart
    for atoms, value in ((h2, 1.0), (broken, 2.0)):
        atoms.info["y"] = value
    path = tmp_path / "molecules.extxyz"
    write(path, [h2, broken])
    message = _error(BadInputError, lambda: read_dataset(path))
    assert "structure 1" in message and "atoms 1 (H) and 2 (H)" in message and "0.1 Å apart" in message
    assert read_dataset(path, on_error="skip").ids == ["0"]


def test_closest_pair_uses_the_minimum_image():
    assert closest_pair(bulk("Si")) is None and closest_pair(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])) is None
    skewed = Atoms("Cu2", cell=[[3, 0, 0], [2.9, 3, 0], [0, 0, 3]], pbc=True, positions=[[0.1, 0.1, 0.1], [6, 3, 0.1]])
    assert closest_pair(skewed) == pytest.approx((0, 1, 0.1))  # 0.1 Å from atom 0's image shifted by a + b
    tiny = Atoms("H", cell=[0.3, 5, 5], pbc=True)
    assert closest_pair(tiny)[:2] == (0, 0)  # an atom and its own image 0.3 Å away
    slab = Atoms("H2", cell=[3, 3, 0.4], pbc=[True, True, False], positions=[[0, 0, 0], [2.9, 0, 0]])
    assert closest_pair(slab)[2] == pytest.approx(0.1)


# --- 4. the same structure under two ids ---------------------------------------------------------------------

def test_identical_structures_are_kept_and_flagged(tmp_path):
    path = tmp_path / "table.csv"
    pd.DataFrame({"name": ["a", "b", "c", "d"], "cif": [SI.to(fmt="cif"), CU.to(fmt="cif"), SI.to(fmt="cif"),
                                                       SI.to(fmt="cif")], "y": [1.0, 2.0, 3.0, 4.0]}).to_csv(path, index=False)
    dataset = read_dataset(path, id_column="name")
    assert dataset.ids == ["a", "b", "c", "d"] and dataset.skipped == []
    flagged = {entry.id: entry for entry in dataset.flagged}
    assert sorted(flagged) == ["a", "c", "d"]
    assert flagged["c"].row == "row 4" and flagged["c"].reason.startswith("same structure as row 2 (id a) and 1 more")
    assert flagged["a"].reason.startswith("same structure as row 4 (id c) and 1 more")
    assert "leak" in flagged["c"].reason and "\n" not in flagged["c"].reason


def test_identical_structures_in_a_matbench_file(tmp_path):
    path = _matbench(tmp_path / "matbench_toy.json.gz", ["structure", "y"],
                     [[SI.as_dict(), 1.0], [CU.as_dict(), 2.0], [CU.as_dict(), 3.0]])
    flagged = read_dataset(path).flagged
    assert [(entry.row, entry.id) for entry in flagged] == [("entry 1", "mb-toy-2"), ("entry 2", "mb-toy-3")]
    assert flagged[1].reason.startswith("same structure as entry 1 (id mb-toy-2): identical structures")


def test_duplicate_warning_is_appended_to_an_existing_one(tmp_path):
    collector = _RowCollector("x.extxyz", "raise")
    for index in range(2):
        atoms = bulk("Cu")
        if index == 1:
            atoms.info[WARNING_KEY] = "ordered approximant of a disordered structure"
        collector.add(f"structure {index}", str(index), lambda atoms=atoms: atoms, 1.0)
    reason = collector.dataset("y", flag_duplicates=True).flagged[1].reason
    assert reason.startswith("ordered approximant of a disordered structure; same structure as structure 0 (id 0)")
    atoms = bulk("Cu")
    add_warning(atoms, "w")
    add_warning(atoms, "w")
    assert atoms.info[WARNING_KEY] == "w"


def test_copies_that_one_split_group_keeps_together_are_not_flagged():
    def flagged_ids(groups, first_warning=None):
        collector = _RowCollector("x.extxyz", "raise")
        for index, atoms in enumerate([bulk("Cu"), bulk("Si"), bulk("Cu"), bulk("Cu")]):
            if index == 0 and first_warning:
                atoms.info[WARNING_KEY] = first_warning
            collector.add(f"structure {index}", "abcd"[index], lambda atoms=atoms: atoms, 1.0)
        dataset = collector.dataset("y", flag_duplicates=True)
        clear_duplicates_within_groups(dataset.samples, groups)
        return {entry.id: entry.reason for entry in dataset.flagged}

    assert sorted(flagged_ids(["x", "y", "x", "z"])) == ["a", "c", "d"]  # d's group differs: all three can leak
    assert flagged_ids(["x", "y", "x", "x"]) == {}  # one group: no fold separates them
    assert flagged_ids(["x", "y", "x", "x"], first_warning="ordered approximant") == {"a": "ordered approximant"}


def test_a_grouped_run_flags_only_the_copies_its_groups_separate(toy_plugin, tmp_path):
    from hacknip.workflow.run import RunConfig, prepare

    others = [Structure(Lattice.cubic(5.5 + 0.1 * i), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]]) for i in range(6)]
    path = tmp_path / "table.csv"
    pd.DataFrame({"name": [f"s{i}" for i in range(10)],
                  "cif": [s.to(fmt="cif") for s in [SI, SI, CU, CU, *others]],
                  "family": ["si", "si", "cu1", "cu2"] + [f"f{i}" for i in range(6)],
                  "y": np.arange(10.0)}).to_csv(path, index=False)
    prepared = prepare(RunConfig(data=path, backbone="toy", head="ridge", id_column="name", split="group:family",
                                 store=tmp_path / "store"))
    assert sorted(entry.id for entry in prepared.dataset.flagged) == ["s2", "s3"]  # Cu's copies are in two groups


def test_molecule_collections_are_not_checked_for_duplicates():
    collector = _RowCollector("m.csv", "raise")
    for index in range(2):
        collector.add(f"row {index + 2}", str(index), lambda: Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), 1.0)
    assert collector.dataset("y").flagged == []


def test_a_table_of_molecules_without_targets_reads_for_prediction_only(tmp_path):
    path = tmp_path / "mols.csv"
    path.write_text("smiles\nCCO\nc1ccccc1\n")
    dataset = read_dataset(path, target=UNLABELLED)
    assert dataset.ids == ["0", "1"] and np.isnan(dataset.targets).all()
    with pytest.raises(InputError, match=r"mols.csv: no numeric target column .* are for hacknip predict"):
        read_dataset(path)
