"""Readers, and a one-line error naming the row for every kind of bad input."""

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
from hacknip.data.structures import BadInputError, matbench_ids

GOOD_CIF = Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]]).to(fmt="cif")
BROKEN_CIF = "data_broken\n_cell_length_a 5.0\nthis is not a cif\n"


def test_matbench_file_keeps_official_ids(phonons_path):
    dataset = read_dataset(phonons_path)
    assert dataset.matbench_task == "matbench_phonons"
    assert len(dataset.samples) == 1265 and dataset.skipped == []
    assert dataset.samples[0].id == "mb-phonons-0001" and dataset.samples[-1].id == "mb-phonons-1265"
    assert dataset.target_name == "last phdos peak"
    assert np.isfinite(dataset.targets).all()


def test_matbench_id_width_follows_dataset_size():
    assert matbench_ids("matbench_jdft2d", 636)[11] == "mb-jdft2d-012"
    assert matbench_ids("matbench_mp_e_form", 132752)[3] == "mb-mp-e-form-000004"


def _matbench_file(tmp_path, rows):
    path = tmp_path / "matbench_toy.json.gz"
    with gzip.open(path, "wt") as handle:
        json.dump({"index": list(range(len(rows))), "columns": ["structure", "y"], "data": rows}, handle)
    return path


def test_matbench_non_finite_target_names_the_entry(tmp_path):
    structure = Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]]).as_dict()
    path = _matbench_file(tmp_path, [[structure, 1.0], [structure, float("nan")]])
    with pytest.raises(BadInputError, match=r"entry 1 \(id mb-toy-2\): target is nan"):
        read_dataset(path)


def test_cif_table_reads_and_names_a_broken_row(tmp_path):
    path = tmp_path / "table.csv"
    pd.DataFrame({"name": ["a", "b", "c"], "cif": [GOOD_CIF, BROKEN_CIF, GOOD_CIF], "y": [1.0, 2.0, 3.0]}).to_csv(path)
    with pytest.raises(BadInputError) as error:
        read_dataset(path, id_column="name", target="y")
    message = str(error.value)
    assert "row 3 (id b)" in message and "unreadable structure" in message and "--on-error skip" in message
    assert "\n" not in message


def test_a_cif_without_a_structure_is_named_by_what_pymatgen_says_of_it():
    from hacknip.data.structures import cif_text_to_atoms

    for text in ("garbage", BROKEN_CIF):
        with pytest.raises(ValueError, match="^not a valid CIF: ") as error:
            cif_text_to_atoms(text)
        assert "deprecated" not in str(error.value)
    with pytest.raises(ValueError, match="Invalid CIF file with no structures"):
        cif_text_to_atoms("garbage")


def test_skip_lists_every_bad_row_and_keeps_the_rest(tmp_path):
    path = tmp_path / "table.csv"
    pd.DataFrame({"cif": [GOOD_CIF, BROKEN_CIF, "", GOOD_CIF], "y": [1.0, 2.0, 3.0, float("inf")]}).to_csv(path, index=False)
    dataset = read_dataset(path, target="y", on_error="skip")
    assert [s.id for s in dataset.samples] == ["0"]
    assert [(s.row, s.id) for s in dataset.skipped] == [("row 3", "1"), ("row 4", "2"), ("row 5", "3")]
    assert "empty CIF" in dataset.skipped[1].reason and "not finite" in dataset.skipped[2].reason


def test_parquet_table(tmp_path):
    path = tmp_path / "table.parquet"
    pd.DataFrame({"cif": [GOOD_CIF, GOOD_CIF], "y": [1.0, 2.0]}).to_parquet(path)
    assert len(read_dataset(path).samples) == 2


def test_folder_of_structure_files(tmp_path):
    write(tmp_path / "si.cif", bulk("Si"))
    write(tmp_path / "POSCAR_cu", bulk("Cu"), format="vasp")
    (tmp_path / "empty.cif").write_text("")
    pd.DataFrame({"file": ["si", "POSCAR_cu", "empty.cif", "absent"], "y": [1, 2, 3, 4]}).to_csv(
        tmp_path / "targets.csv", index=False)
    dataset = read_dataset(tmp_path, on_error="skip")
    assert [s.id for s in dataset.samples] == ["si", "POSCAR_cu"]
    reasons = {s.id: s.reason for s in dataset.skipped}
    assert "empty file" in reasons["empty.cif"] and "no structure file named 'absent'" in reasons["absent"]


def test_extxyz_with_targets_in_info(tmp_path):
    frames = [bulk("Si"), bulk("Cu"), Atoms()]
    frames[0].info["energy_gap"] = 1.1
    frames[1].info["energy_gap"] = 0.0
    frames[2].info["energy_gap"] = 2.0
    write(tmp_path / "data.extxyz", frames)
    with pytest.raises(BadInputError, match=r"structure 2 .*empty structure"):
        read_dataset(tmp_path / "data.extxyz")
    assert len(read_dataset(tmp_path / "data.extxyz", on_error="skip").samples) == 2


def test_partially_occupied_structure_is_refused_clearly(tmp_path):
    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    path = _matbench_file(tmp_path, [[disordered.as_dict(), 1.0]])
    with pytest.raises(BadInputError, match="partially occupied"):
        read_dataset(path)


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(ValueError, match="empty file"):
        read_dataset(path)


def test_everything_rejected_is_an_error(tmp_path):
    path = tmp_path / "table.csv"
    pd.DataFrame({"cif": [BROKEN_CIF], "y": [1.0]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="no usable structures"):
        read_dataset(path, on_error="skip")


# -- the parsed-CIF cache ---------------------------------------------------------------------------------------

DISORDERED_CIF = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]]).to(fmt="cif")


def _no_parsing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("parsed a CIF the cache holds")

    monkeypatch.setattr("hacknip.data.structures.cif_text_to_atoms", refuse)


def _same_samples(first, second) -> None:
    assert [s.id for s in first.samples] == [s.id for s in second.samples]
    for a, b in zip(first.samples, second.samples):
        assert a.atoms == b.atoms and a.atoms.info == b.atoms.info


def test_a_cif_table_is_parsed_once_and_read_back_the_same(tmp_path, monkeypatch):
    path, cache = tmp_path / "table.csv", tmp_path / "cache" / "parsed.sqlite"
    pd.DataFrame({"cif": [GOOD_CIF, DISORDERED_CIF, BROKEN_CIF], "y": [1.0, 2.0, 3.0]}).to_csv(path, index=False)
    options = {"target": "y", "disordered": "approximant", "on_error": "skip"}
    parsed = read_dataset(path, **options)
    first = read_dataset(path, **options, parsed_cache=cache)
    _same_samples(first, parsed)
    assert "ordered approximant" in first.samples[1].atoms.info["hacknip_warning"]
    with pytest.MonkeyPatch.context() as patch:
        _no_parsing(patch)
        again = read_dataset(path, **options, parsed_cache=cache)
    _same_samples(again, first)
    assert [row.row for row in again.skipped] == ["row 4"] and "parsed a CIF" in again.skipped[0].reason  # not kept
    pd.DataFrame({"cif": [GOOD_CIF, DISORDERED_CIF], "y": [1.0, 2.0]}).to_csv(path, index=False)
    _no_parsing(monkeypatch)
    _same_samples(read_dataset(path, **options, parsed_cache=cache), first)
    with pytest.raises(BadInputError, match="parsed a CIF"):  # another disorder policy is another entry
        read_dataset(path, target="y", parsed_cache=cache)


def test_a_damaged_or_unusable_cache_only_costs_time(tmp_path):
    import sqlite3

    path, cache = tmp_path / "table.csv", tmp_path / "parsed.sqlite"
    pd.DataFrame({"cif": [GOOD_CIF], "y": [1.0]}).to_csv(path, index=False)
    expected = read_dataset(path)
    read_dataset(path, parsed_cache=cache)
    with sqlite3.connect(cache) as connection:
        assert connection.execute("UPDATE parsed SET atoms = '{\"numbers\": [14'").rowcount == 1
    _same_samples(read_dataset(path, parsed_cache=cache), expected)
    with sqlite3.connect(cache) as connection:  # parsed again and written over the damaged entry
        (text,) = connection.execute("SELECT atoms FROM parsed").fetchone()
    assert json.loads(text)["numbers"] == [14, 14]
    (tmp_path / "a file").write_text("")
    _same_samples(read_dataset(path, parsed_cache=tmp_path / "a file" / "parsed.sqlite"), expected)
    cache.write_text("not a database")
    _same_samples(read_dataset(path, parsed_cache=cache), expected)


def test_runs_keep_the_parsed_rows_beside_the_feature_store(tmp_path, monkeypatch):
    from hacknip.data.parsed_cache import PARSED_FILE
    from hacknip.workflow.run import RunConfig, load_data

    path = tmp_path / "table.csv"
    pd.DataFrame({"cif": [GOOD_CIF, DISORDERED_CIF], "y": [1.0, 2.0]}).to_csv(path, index=False)
    config = RunConfig(data=path, backbone="chgnet", target="y", disordered="approximant", store=tmp_path / "store")
    first = load_data(config)
    assert (tmp_path / "store" / PARSED_FILE).is_file()
    _no_parsing(monkeypatch)
    _same_samples(load_data(config), first)


def test_a_folder_of_structure_files_is_parsed_once_until_a_file_changes(tmp_path, monkeypatch):
    folder, cache = tmp_path / "structures", tmp_path / "parsed.sqlite"
    folder.mkdir()
    write(folder / "si.cif", bulk("Si"))
    write(folder / "POSCAR_cu", bulk("Cu"), format="vasp")
    (folder / "targets.csv").write_text("name,y\nsi,1.0\nPOSCAR_cu,2.0\n")
    first = read_dataset(folder, parsed_cache=cache)
    _same_samples(first, read_dataset(folder))
    calls = []
    monkeypatch.setattr("hacknip.data.structures.structure_file_to_atoms",
                        lambda path, disordered: calls.append(path.name) or Atoms("Cu", cell=[3, 3, 3], pbc=True))
    _same_samples(read_dataset(folder, parsed_cache=cache), first)
    assert calls == []
    write(folder / "POSCAR_cu", bulk("Cu", a=3.7), format="vasp")
    read_dataset(folder, parsed_cache=cache)
    assert calls == ["POSCAR_cu"]


def test_reading_a_table_or_folder_advances_progress_a_row_at_a_time(tmp_path):
    table, folder = tmp_path / "table.csv", tmp_path / "structures"
    pd.DataFrame({"cif": [GOOD_CIF, BROKEN_CIF, GOOD_CIF], "y": [1.0, 2.0, 3.0]}).to_csv(table, index=False)
    folder.mkdir()
    write(folder / "si.cif", bulk("Si"))
    (folder / "targets.csv").write_text("name,y\nsi,1.0\nmissing,2.0\n")
    for path, expected in ((table, ("reading table.csv", 3)), (folder, ("reading structures", 2))):
        started, advanced = [], []

        def progress(description, total, started=started, advanced=advanced):
            started.append((description, total))
            return advanced.append

        read_dataset(path, target="y", on_error="skip", progress=progress)
        assert started == [expected] and advanced == [1] * expected[1]
