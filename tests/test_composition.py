"""``orb+mace`` in one environment, end to end: random-weight ORB and MACE checkpoints (built as their own tests build
them), ``hacknip run`` on a slice of Matbench phonons, features of both backbones concatenated."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner
from orb_models.forcefield import pretrained
from test_backbone_mace import mace_mp_like

from hacknip.cli import cli

ORB_WIDTH, MACE_WIDTH = 256, 128
ORB_LAYERS, MACE_LAYERS = (0, 15), (2,)
POOLING = ("mean", "std")


def test_orb_plus_mace_run_concatenates_features(phonons_path, tmp_path):
    torch.manual_seed(0)
    orb_checkpoint = tmp_path / "orb-v2-random.ckpt"
    torch.save(pretrained.orb_v2_architecture(device="cpu").state_dict(), orb_checkpoint)
    mace_checkpoint = tmp_path / "mace-random.model"
    torch.save(mace_mp_like(), mace_checkpoint)
    expression = (f"orb-v2:{orb_checkpoint}@{','.join(map(str, ORB_LAYERS))}"
                  f"+mace:{mace_checkpoint}@{','.join(map(str, MACE_LAYERS))}")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "run", "--data", str(phonons_path), "--limit", "30", "--backbone", expression, "--head", "lightgbm",
        "--head-param", "n_estimators=20", "--head-param", "n_jobs=1", "--pooling", "+".join(POOLING),
        "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    results = json.loads((out / "results.json").read_text())
    assert results["n_samples"] == 30
    assert results["n_features"] == (ORB_WIDTH * len(ORB_LAYERS) + MACE_WIDTH * len(MACE_LAYERS)) * len(POOLING)
    orb, mace = results["backbones"]
    assert (orb["identity"]["name"], orb["layers"], orb["computed"]) == ("orb", list(ORB_LAYERS), 30)
    assert (mace["layers"], mace["computed"]) == (list(MACE_LAYERS), 30)
    assert orb["identity"]["supercell_rule"] == "perpendicular-width"  # capped orb-v2 graph: supercells
    assert results["mae_mean"] > 0 and len(results["predictions"]["predicted"]) == 30
