"""Trust, as a demanding user would test it: a shared model folder never runs code, every output is strict JSON, bad
output paths and untrainable data fail before any work, a terminated run keeps what it computed, and a bug keeps
its traceback. (Damaged shards and concurrent featurisers: test_store.py; inputs: test_trust_inputs.py; plugins:
test_trust_plugins.py.)"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import RunsCode, write_cif_table
from store_files import shard_files, stored_records
from toy_backbone import WIDTHS, ToyBackbone

from hacknip import hookimpl
from hacknip.cli import cli
from hacknip.plugins.backbone import BackboneSpec, file_sha256
from hacknip.store import DamagedShardWarning


class UnpicklingToy(ToyBackbone):
    """The toy network behind a loader that unpickles its checkpoint, as the MACE loader must."""

    name = "unpickler"

    def __init__(self, checkpoint=None, **options):
        super().__init__(**options)
        with open(checkpoint, "rb") as handle:
            pickle.load(handle)  # noqa: S301 - the point of the test
        self.checkpoint = None
        self.checkpoint_sha256 = file_sha256(checkpoint)

    def identity(self):
        return {**super().identity(), "name": self.name, "checkpoint_sha256": self.checkpoint_sha256}


class UnpicklingPlugin:
    @hookimpl
    def register_backbones(self, register):
        register(BackboneSpec(name="unpickler", factory="test_trust:UnpicklingToy", cutoff=4.0, layer_widths=WIDTHS,
                              needs_supercell=False, library="pickle"))


@pytest.fixture
def unpickler_plugin():
    from hacknip.plugins.manager import pm

    pm.register(UnpicklingPlugin(), name="unpickler-test-plugin")
    yield
    pm.unregister(name="unpickler-test-plugin")


@pytest.fixture
def table(phonons_path, tmp_path):
    return write_cif_table(phonons_path, tmp_path / "structures.csv", 30, "peak")


def _invoke(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_a_model_folder_never_runs_the_code_of_a_checkpoint_it_names(unpickler_plugin, table, tmp_path):
    checkpoint, marker = tmp_path / "weights.pkl", tmp_path / "PAYLOAD-RAN"
    checkpoint.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    model = tmp_path / "model"
    # the user typed this checkpoint path: their own word
    result = _invoke("run", "--data", table, "--id-column", "name", "--backbone", f"unpickler:{checkpoint}@1",
                     "--head", "ridge", "--save", model, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output

    # someone swaps the checkpoint for a hostile one: the sha256 differs, nothing is read
    checkpoint.write_bytes(pickle.dumps(RunsCode(marker)))
    result = _invoke("predict", model, "--data", table, "--id-column", "name", "--out", tmp_path / "p.csv")
    assert result.exit_code == 1 and "is not the" in _one_error_line(result) and "nothing was loaded" in result.output
    assert not marker.exists()

    # a hostile model folder names its own payload, with the payload's sha256 in the identity
    described = json.loads((model / "model.json").read_text())
    described["backbones"][0]["identity"]["checkpoint_sha256"] = file_sha256(checkpoint)
    (model / "model.json").write_text(json.dumps(described))
    result = _invoke("predict", model, "--data", table, "--id-column", "name", "--out", tmp_path / "p.csv")
    line = _one_error_line(result)
    assert "unpickling a file can run any code" in line and "--trust-checkpoint" in line
    assert not marker.exists()

    # the user's explicit word loads it (here a benign checkpoint, the original again)
    checkpoint.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    described["backbones"][0]["identity"]["checkpoint_sha256"] = file_sha256(checkpoint)
    (model / "model.json").write_text(json.dumps(described))
    result = _invoke("predict", model, "--data", table, "--id-column", "name", "--out", tmp_path / "p.csv")
    assert result.exit_code == 1 and "--trust-checkpoint" in result.output
    result = _invoke("predict", model, "--data", table, "--id-column", "name", "--out", tmp_path / "p.csv",
                     "--trust-checkpoint")
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "p.csv")) == 30


@pytest.fixture
def saved_model(toy_plugin, table, tmp_path):
    model = tmp_path / "model"
    result = _invoke("run", "--data", table, "--id-column", "name", "--backbone", "toy@1", "--head", "lightgbm",
                     "--head-param", "n_estimators=10", "--save", model, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    return model


def _tamper_json(model, change):
    described = json.loads((model / "model.json").read_text())
    described = change(described)
    (model / "model.json").write_text(json.dumps(described))


@pytest.mark.parametrize(("change", "expected"), [
    (lambda m: [m], "model format 'list'"),
    (lambda m: {**m, "pooling": 3}, "field 'pooling' is 3, expected a pooling"),
    (lambda m: {**m, "task": "bogus"}, "field 'task' is 'bogus'"),
    (lambda m: {**m, "n_features": "6"}, "field 'n_features' is '6', expected a positive integer"),
    (lambda m: {**m, "backbones": []}, "field 'backbones' is [], expected a non-empty list"),
    (lambda m: {**m, "backbones": [{**m["backbones"][0], "layers": ["x"]}]}, "entry 0 to hold"),
    (lambda m: {**m, "head_state": {**m["head_state"], "booster": "garbage"}}, "the lightgbm head cannot be restored"),
])
def test_a_tampered_model_file_is_one_line_naming_the_field(saved_model, table, tmp_path, change, expected):
    _tamper_json(saved_model, change)
    result = _invoke("predict", saved_model, "--data", table, "--id-column", "name", "--out", tmp_path / "p.csv")
    assert result.exit_code == 1
    line = _one_error_line(result)
    assert expected in line and "model" in line


def test_damaged_or_reshaped_model_arrays_are_one_line(saved_model, table, tmp_path):
    arrays = dict(np.load(saved_model / "arrays.npz"))
    np.savez(saved_model / "arrays.npz", **{**arrays, "scaler_mean": arrays["scaler_mean"][:3]})
    result = _invoke("predict", saved_model, "--data", table, "--id-column", "name", "--out", tmp_path / "p.csv")
    assert "array 'scaler_mean' is float64 of shape (3,), expected 6 floats" in _one_error_line(result)
    (saved_model / "arrays.npz").write_bytes(b"\0" * 300)
    result = _invoke("predict", saved_model, "--data", table, "--id-column", "name", "--out", tmp_path / "p.csv")
    assert "arrays.npz: unreadable" in _one_error_line(result)
    (saved_model / "model.json").write_text("{ not json")
    result = _invoke("predict", saved_model, "--data", table, "--id-column", "name", "--out", tmp_path / "p.csv")
    assert "model.json: not valid JSON" in _one_error_line(result)


def test_outputs_are_strict_json_even_when_a_score_is_undefined(toy_plugin, table, tmp_path):
    small = tmp_path / "five.csv"
    pd.read_csv(table).head(5).to_csv(small, index=False)  # five folds of one row: R² is undefined in each
    result = _invoke("run", "--data", small, "--id-column", "name", "--backbone", "toy@1", "--head", "ridge",
                     "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    results = _strict((tmp_path / "run" / "results.json").read_text())
    assert [fold["r2"] for fold in results["folds"]] == [None] * 5


def test_untrainable_data_and_bad_output_paths_fail_before_any_work(toy_plugin, table, tmp_path):
    store = tmp_path / "hacknip-home" / "features"
    constant = tmp_path / "constant.csv"
    pd.read_csv(table).assign(peak=7.0).to_csv(constant, index=False)
    result = _invoke("run", "--data", constant, "--id-column", "name", "--backbone", "toy", "--out", tmp_path / "a")
    assert "every target (peak) is 7: there is nothing to learn" in _one_error_line(result)

    (tmp_path / "a-file").write_text("")
    result = _invoke("run", "--data", table, "--id-column", "name", "--backbone", "toy", "--out", tmp_path / "a-file")
    assert "--out" in _one_error_line(result) and "is a file" in result.output

    old = tmp_path / "old-run"
    old.mkdir()
    (old / "layers.png").write_bytes(b"an earlier run's plot")
    result = _invoke("run", "--data", table, "--id-column", "name", "--backbone", "toy", "--out", old)
    assert "already holds layers.png" in _one_error_line(result) and "--overwrite" in result.output

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("mine")
    result = _invoke("run", "--data", table, "--id-column", "name", "--backbone", "toy", "--save", tmp_path / "model",
                     "--out", tmp_path / "b", "--overwrite")
    assert "--save" in _one_error_line(result) and "notes.txt" in result.output
    assert not any(path.is_dir() for path in store.glob("*"))  # all refused before featurising (parsed rows are kept)

    result = _invoke("run", "--data", table, "--id-column", "name", "--backbone", "toy@1", "--head", "ridge",
                     "--out", old, "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in old.iterdir()) == ["parity.png", "report.html", "results.json", "run.log"]  # no layers.png


def test_a_home_that_is_a_file_is_one_line_before_any_work(toy_plugin, table, tmp_path, monkeypatch):
    (tmp_path / "home-file").write_text("")
    monkeypatch.setenv("HACKNIP_HOME", str(tmp_path / "home-file"))
    result = _invoke("run", "--data", table, "--id-column", "name", "--backbone", "toy", "--out", tmp_path / "run")
    assert "home-file is a file, so the feature store" in _one_error_line(result)
    assert not (tmp_path / "run").exists()


def test_store_check_names_damaged_shards_and_the_next_run_heals(toy_plugin, table, tmp_path):
    store = tmp_path / "store"
    assert _invoke("featurize", "--data", table, "--id-column", "name", "--backbone", "toy", "--store", store).exit_code == 0
    shard = shard_files(store)[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.warns(DamagedShardWarning, match=rf"{shard.name}: damaged feature-store shard"):
        result = _invoke("store", "check", "--store", store)
    assert result.exit_code == 1 and "1 damaged" in result.output
    assert _invoke("store", "check", "--store", store).exit_code == 0
    result = _invoke("featurize", "--data", table, "--id-column", "name", "--backbone", "toy", "--store", store)
    assert result.exit_code == 0 and "30 computed, 0 already stored" in result.output


def test_a_bug_in_a_plugin_keeps_its_traceback(toy_plugin, table, tmp_path):
    from hacknip.data.structures import cif_text_to_atoms

    element = int(cif_text_to_atoms(pd.read_csv(table)["cif"][0]).numbers[0])
    result = _invoke("featurize", "--data", table, "--id-column", "name", "--backbone", "toy",
                     "--backbone-option", f"bug_on={element}")
    assert isinstance(result.exception, RuntimeError) and "a bug in the toy network" in str(result.exception)


_CLI_WITH_TOY = """
import sys
sys.path.insert(0, {tests!r})
from toy_backbone import ToyPlugin
from hacknip.plugins.manager import pm
pm.register(ToyPlugin(), name="toy")
from hacknip.cli import main
sys.argv = ["hacknip"] + sys.argv[1:]
main()
"""


def test_sigterm_stores_the_finished_batches_and_says_so(table, tmp_path):
    script = _CLI_WITH_TOY.format(tests=os.path.dirname(__file__))
    store = tmp_path / "store"
    args = ["featurize", "--data", str(table), "--id-column", "name", "--backbone", "toy", "--store", str(store),
            "--batch-size", "2", "--backbone-option", "seconds_per_structure=0.1"]
    process = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "COLUMNS": "200"})
    # The first featurising line comes after the SIGTERM handler is installed (a fixed sleep raced slow imports on
    # CI); then 0.2 s a batch, and nothing is flushed to the store before 5 s unless interrupted.
    lines = iter(process.stdout.readline, "")
    first_line = next(line for line in lines if not line.startswith("reading "))
    assert "toy" in first_line, first_line
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    stored = stored_records(store)
    assert 0 < stored < 30
    assert f"{stored} structures computed and stored by this run; {stored} of 30" in " ".join(stderr.split())
    resumed = subprocess.run([sys.executable, "-c", script, *args[:-2]], capture_output=True, text=True, timeout=120)
    assert f"{30 - stored} computed, {stored} already stored" in resumed.stdout


def test_layers_a_backbone_lacks_are_refused_before_any_work(toy_plugin, table, tmp_path):
    for command in ("featurize", "run"):
        result = _invoke(command, "--data", table, "--id-column", "name", "--backbone", "toy@9", "--store",
                         tmp_path / "store")
        assert "toy has layers 0..2; toy@9 asks for [9]" in _one_error_line(result)
    assert not (tmp_path / "store").exists()
    for option in ("--batch-size", "--limit"):
        result = _invoke("featurize", "--data", table, "--backbone", "toy", option, "0")
        assert result.exit_code == 2 and "0 is not in the range x>=1" in result.output


def test_a_checkpoint_its_plugin_reads_without_unpickling_needs_no_trust(table, tmp_path):
    import shutil

    from hacknip_chgnet.backbone import pretrained_checkpoint

    checkpoint = tmp_path / "chgnet-weights.pth.tar"
    shutil.copy(pretrained_checkpoint("0.3.0"), checkpoint)
    model = tmp_path / "model"
    result = _invoke("run", "--data", table, "--id-column", "name", "--backbone", f"chgnet:{checkpoint}@4",
                     "--head", "ridge", "--save", model, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    result = _invoke("predict", model, "--data", table, "--id-column", "name", "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output  # CHGNet's loader is weights_only: the sha256 check suffices
    data = bytearray(checkpoint.read_bytes())
    data[-1] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    result = _invoke("predict", model, "--data", table, "--id-column", "name", "--out", tmp_path / "p.csv")
    assert "is not the" in _one_error_line(result)
