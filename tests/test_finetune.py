"""Fine-tuning (hacknip.finetuning, hacknip finetune): the recipe, freezing, checkpoints and resume, saving and
predicting, on a tiny real message-passing network (tests/toy_trainable.py); one real CHGNet run from the command
line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from toy_trainable import ToyTrainableBackbone

from hacknip.cli import cli
from hacknip.data.read import read_dataset
from hacknip.errors import InputError
from hacknip.finetuning.checkpoint import load_tensors
from hacknip.finetuning.model import PropertyModel, mlp_head
from hacknip.finetuning.trainer import BEST_STATE, DONE, LAST_CHECKPOINT, FinetuneOptions, FineTuner, PreparedNetwork
from hacknip.plugins.testing import TrainableConformance
from hacknip.plugins.trainable import trainable_network

FAST = FinetuneOptions(hidden=(16, 16), epochs=4, lr_backbone=1e-3, batch_size=8)


class TestToyTrainable(TrainableConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls):
        return ToyTrainableBackbone()


@pytest.fixture(scope="module")
def phonons_slice(phonons_path):
    return read_dataset(phonons_path).head(40)


def prepared(dataset, layer: int = 3, options: FinetuneOptions = FAST) -> PreparedNetwork:
    network = ToyTrainableBackbone().trainable(layer)
    return PreparedNetwork(network, network.inputs([s.atoms for s in dataset.samples]), options.frozen)


def rows(n: int) -> np.ndarray:
    return np.arange(n)[:, None]


def test_head_is_the_papers_mlp():
    head = mlp_head(256, (128, 128), seed=0)
    linears = [layer for layer in head if isinstance(layer, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(256, 128), (128, 128), (128, 1)]
    assert sum(isinstance(layer, torch.nn.SiLU) for layer in head) == 2
    for linear in linears:
        bound = np.sqrt(6 / (linear.in_features + linear.out_features))  # Xavier uniform
        weight = linear.weight.detach()
        assert float(weight.abs().max()) <= bound and float(weight.std()) > bound / 4
        assert not linear.bias.any()
    assert torch.equal(mlp_head(256, (128, 128), 0)[0].weight, head[0].weight)
    assert not torch.equal(mlp_head(256, (128, 128), 1)[0].weight, head[0].weight)
    defaults = FinetuneOptions()
    assert (defaults.hidden, defaults.epochs, defaults.lr_backbone, defaults.lr_head, defaults.weight_decay) == \
        ((128, 128), 200, 1e-5, 1e-3, 1e-4)


def test_frozen_groups_are_bit_identical_and_the_rest_trains(phonons_slice):
    shared = prepared(phonons_slice)
    before = {name: value.clone() for name, value in shared.network.named_parameters()}
    tuner = FineTuner(shared, FAST).fit(rows(30), phonons_slice.targets[:30])
    after = dict(shared.network.named_parameters())
    for name in shared.groups["embedding"] + shared.groups["past_layer"]:
        assert torch.equal(after[name], before[name]), name
    for name in shared.groups["interactions"]:
        assert not torch.equal(after[name], before[name]), name
    optimizer_lrs = sorted(group["lr"] for group in tuner._optimizer(tuner.model).param_groups)
    assert optimizer_lrs == [FAST.lr_backbone, FAST.lr_head]
    assert set(tuner.trained_state()) == {f"network.{name}" for name in shared.groups["interactions"]} | {
        f"head.{name}" for name, _ in tuner.model.head.named_parameters()}


def test_every_fit_starts_from_the_pretrained_weights(phonons_slice):
    shared = prepared(phonons_slice)
    y = phonons_slice.targets
    first = FineTuner(shared, FAST).fit(rows(30), y[:30]).predict(rows(40)[30:])
    FineTuner(shared, FAST).fit(rows(20), y[:20])  # changes the shared modules
    again = FineTuner(shared, FAST).fit(rows(30), y[:30])
    np.testing.assert_array_equal(again.predict(rows(40)[30:]), first)


def test_a_fitted_tuner_predicts_with_its_own_weights_after_another_fit(phonons_slice):
    shared = prepared(phonons_slice)
    y = phonons_slice.targets
    one = FineTuner(shared, FAST).fit(rows(30), y[:30])
    expected = one.predict(rows(40)[30:])
    FineTuner(shared, FAST).fit(rows(40)[10:], y[10:])
    np.testing.assert_array_equal(one.predict(rows(40)[30:]), expected)


def test_validation_is_carved_from_the_training_rows(phonons_slice):
    tuner = FineTuner(prepared(phonons_slice), FinetuneOptions(hidden=(8,), epochs=1, validation_fraction=0.2))
    train, validation = tuner._split(np.arange(100, 130), phonons_slice.targets[:30])
    assert len(validation) == 6 and len(train) == 24 and not set(train) & set(validation)
    tuner.fit(rows(30), phonons_slice.targets[:30])
    assert (tuner.record.n_train, tuner.record.n_validation) == (24, 6)


def test_best_validation_epoch_is_kept(phonons_slice):
    tuner = FineTuner(prepared(phonons_slice), FinetuneOptions(hidden=(8,), epochs=6, lr_head=0.05, lr_backbone=0.01))
    tuner.fit(rows(30), phonons_slice.targets[:30])
    history = tuner.record.history
    best = min(history, key=lambda entry: entry.validation)
    assert tuner.record.best_epoch == best.epoch
    validation = tuner._split(np.arange(30), phonons_slice.targets[:30])[1]
    mae = np.mean(np.abs(tuner.predict(rows(30)[validation]) - phonons_slice.targets[validation]))
    assert mae == pytest.approx(best.validation, rel=1e-5)


class Killed(Exception):
    pass


def test_resume_gives_the_uninterrupted_result(phonons_slice, tmp_path):
    y = phonons_slice.targets
    shared = prepared(phonons_slice)
    uninterrupted = FineTuner(shared, FAST).fit(rows(30), y[:30])
    expected = uninterrupted.predict(rows(40)[30:])

    def kill_after_two(entry, planned):
        if entry.epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        FineTuner(shared, FAST, checkpoints=tmp_path, on_epoch=kill_after_two).fit(rows(30), y[:30])
    (fit_folder,) = tmp_path.iterdir()
    assert (fit_folder / LAST_CHECKPOINT).is_file() and not (fit_folder / DONE).exists()
    resumed = FineTuner(shared, FAST, checkpoints=tmp_path).fit(rows(30), y[:30])
    assert resumed.record.resumed_from_epoch == 1 and len(resumed.record.history) == FAST.epochs
    np.testing.assert_array_equal(resumed.predict(rows(40)[30:]), expected)
    assert [e.train_loss for e in resumed.record.history] == [e.train_loss for e in uninterrupted.record.history]

    epochs_run = []
    finished = FineTuner(shared, FAST, checkpoints=tmp_path, on_epoch=lambda e, n: epochs_run.append(e)).fit(
        rows(30), y[:30])
    assert epochs_run == [] and (fit_folder / BEST_STATE).is_file()
    np.testing.assert_array_equal(finished.predict(rows(40)[30:]), expected)
    other_rows = FineTuner(shared, FAST, checkpoints=tmp_path).fit(rows(29), y[:29])
    assert other_rows.record.resumed_from_epoch is None and len(list(tmp_path.iterdir())) == 2


def test_checkpoints_are_safetensors_and_a_damaged_one_is_a_clear_error(phonons_slice, tmp_path):
    from safetensors.torch import load_file

    FineTuner(prepared(phonons_slice), FAST, checkpoints=tmp_path).fit(rows(30), phonons_slice.targets[:30])
    (fit_folder,) = tmp_path.iterdir()
    tensors = load_file(str(fit_folder / LAST_CHECKPOINT))  # raw tensors and a JSON header: nothing to unpickle
    assert any(name.startswith("optimizer.") for name in tensors) and any(name.startswith("best.") for name in tensors)
    (fit_folder / BEST_STATE).write_bytes(b"\x80\x04garbage")
    with pytest.raises(InputError, match="not a readable safetensors file"):
        load_tensors(fit_folder / BEST_STATE)


def test_classification_uses_cross_entropy_and_probabilities(phonons_slice):
    y = (phonons_slice.targets > np.median(phonons_slice.targets)).astype(float)
    tuner = FineTuner(prepared(phonons_slice), FAST, task="classification").fit(rows(30), y[:30])
    probabilities = tuner.predict_proba(rows(40)[30:])
    assert probabilities.shape == (10, 2) and np.allclose(probabilities.sum(axis=1), 1)
    assert set(tuner.predict(rows(40)[30:])) <= {0, 1}


def test_a_backbone_without_the_extension_cannot_be_fine_tuned():
    from toy_backbone import ToyBackbone

    with pytest.raises(InputError, match="cannot be fine-tuned"):
        trainable_network(ToyBackbone(), 1)
    with pytest.raises(InputError, match="layers 0..3"):
        trainable_network(ToyTrainableBackbone(), 4)


def test_property_model_pools_by_mean(phonons_slice):
    network = ToyTrainableBackbone().trainable(2)
    model = PropertyModel(network, (8,), seed=0)
    inputs = network.inputs([phonons_slice.samples[0].atoms])
    with torch.no_grad():
        expected = model.head(network(inputs)[0].mean(dim=0, keepdim=True)).squeeze(-1)
        assert torch.allclose(model(inputs), expected)


def invoke(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_cli_finetune_save_and_predict(toy_trainable_plugin, phonons_path, tmp_path):
    out, model = tmp_path / "run", tmp_path / "model"
    result = invoke(["finetune", "--data", str(phonons_path), "--backbone", "toy-trainable@2", "--limit", "40",
                     "--epochs", "3", "--hidden", "16,16", "--out", str(out), "--save", str(model)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["head"] == "finetune" and results["best_layer"] == 2 and results["n_samples"] == 40
    assert len(results["folds"]) == 5 and results["mae_mean"] > 0 and "dummy_mae_mean" in results
    assert [len(fold["history"]) for fold in results["finetune"]["folds"]] == [3] * 5
    assert results["finetune"]["recipe"]["hidden"] == [16, 16] and (out / "parity.png").is_file()
    page = (out / "report.html").read_text()
    assert (out / "epochs.png").is_file() and "fine-tuned end to end" in page and "Validation score per epoch" in page
    assert len((out / "finetune.log").read_text().splitlines()) == 5 * 3 + 3  # 5 folds and the final fit
    assert {p.name for p in model.iterdir()} == {"model.json", "weights.safetensors"}

    table = tmp_path / "predictions.csv"
    result = invoke(["predict", str(model), "--data", str(phonons_path), "--target", "last phdos peak",
                     "--out", str(table)])
    assert result.exit_code == 0, result.output
    import pandas as pd

    predicted = pd.read_csv(table)
    assert len(predicted) == 1265 and predicted["predicted"].notna().all()

    again = invoke(["finetune", "--data", str(phonons_path), "--backbone", "toy-trainable@2", "--limit", "40",
                    "--epochs", "3", "--hidden", "16,16", "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    rerun = json.loads((tmp_path / "again" / "results.json").read_text())
    assert rerun["mae_mean"] == results["mae_mean"]  # every fit read back from its checkpoint folder
    assert all(fold["epochs_run"] == 3 for fold in rerun["finetune"]["folds"])


def test_cli_finetune_refuses_bad_recipes_and_backbones(toy_trainable_plugin, toy_plugin, phonons_path, tmp_path):
    result = CliRunner().invoke(cli, ["finetune", "--data", str(phonons_path), "--backbone", "toy", "--limit", "20"])
    assert result.exit_code != 0 and "cannot be fine-tuned" in result.output
    result = CliRunner().invoke(cli, ["finetune", "--data", str(phonons_path), "--backbone", "toy-trainable@1-2"])
    assert result.exit_code != 0 and "toy-trainable@L" in result.output
    result = CliRunner().invoke(cli, ["finetune", "--data", str(phonons_path), "--backbone", "toy-trainable",
                                      "--freeze", "nosuch", "--limit", "20"])
    assert result.exit_code != 0 and "no parameter group 'nosuch'" in result.output


def test_saved_model_weights_are_checked(toy_trainable_plugin, phonons_path, tmp_path):
    from hacknip.workflow.saved_finetuned import WEIGHTS_FILE, load_saved

    model = tmp_path / "model"
    invoke(["finetune", "--data", str(phonons_path), "--backbone", "toy-trainable", "--limit", "20", "--epochs", "1",
            "--hidden", "8", "--out", str(tmp_path / "run"), "--save", str(model)])
    saved = load_saved(model)
    dataset = read_dataset(phonons_path).head(5)
    _, predictions = saved.predict_dataset(dataset)
    assert predictions["predicted"].shape == (5,)
    meta = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**meta, "recipe": {**meta["recipe"], "hidden": [8, 8]}}))
    with pytest.raises(InputError, match="weights.safetensors"):
        load_saved(model).predict_dataset(dataset)
    (model / "model.json").write_text(json.dumps({**meta, "target_scale": "big"}))
    with pytest.raises(InputError, match="field 'target_scale'"):
        load_saved(model)
    (model / "model.json").write_text(json.dumps(meta))
    (model / WEIGHTS_FILE).write_bytes(b"not tensors")
    with pytest.raises(InputError, match="not a readable safetensors file"):
        load_saved(model)


def test_real_chgnet_fine_tunes_from_the_command_line(phonons_path, tmp_path):
    out = tmp_path / "run"
    result = invoke(["finetune", "--data", str(phonons_path), "--backbone", "chgnet@2", "--limit", "25", "--epochs",
                     "1", "--hidden", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["backbones"][0]["identity"]["model"] == "0.3.0" and results["best_layer"] == 2
    assert results["finetune"]["groups"]["interactions"] > 0 and results["finetune"]["trained_parameters"] > 0


def test_python_api_finetune_and_load_model(toy_trainable_plugin, phonons_path, tmp_path):
    import hacknip

    result = hacknip.finetune(phonons_path, "toy-trainable@1", recipe=FinetuneOptions(hidden=(8,), epochs=2), limit=30,
                              save_to=tmp_path / "model")
    assert result.metric == "mae" and result.best_layer == 1 and result.score > 0
    assert len(result.to_dict()["finetune"]["folds"]) == 5
    model = hacknip.load_model(tmp_path / "model")
    table = model.predict_structures([sample.atoms for sample in read_dataset(phonons_path).head(3).samples])
    assert list(table.columns) == ["id", "predicted"] and len(table) == 3
    with pytest.raises(InputError, match="unknown option"):
        hacknip.finetune(phonons_path, "toy-trainable", head="mlp")


def test_a_finetuned_model_of_molecules_records_their_geometries_for_predict(toy_trainable_plugin, tmp_path):
    pytest.importorskip("rdkit")
    import pandas as pd

    smiles = ["CCO", "CCCO", "CCCCO", "CC(C)O", "CCN", "CCCN", "CC(=O)O", "CCC(=O)O", "OCCO", "CCOC"]
    table = tmp_path / "molecules.csv"
    pd.DataFrame({"smiles": smiles, "y": [float(len(s)) for s in smiles]}).to_csv(table, index=False)
    model = tmp_path / "model"
    result = invoke(["finetune", "--data", str(table), "--backbone", "toy-trainable", "--no-relax", "--conformer",
                     "mmff94", "--split", "random", "--epochs", "1", "--hidden", "8", "--workers", "1",
                     "--out", str(tmp_path / "run"), "--save", str(model)])
    assert result.exit_code == 0, result.output
    assert json.loads((model / "model.json").read_text())["geometries"] == {"conformer": "mmff94", "relaxed": False}
    result = invoke(["predict", str(model), "--data", str(table), "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    assert len(pd.read_csv(tmp_path / "p.csv")) == len(smiles)
