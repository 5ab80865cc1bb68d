"""hacknip run on molecules: a SMILES table in, geometries made (and relaxed) on the way, scaffold folds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hacknip.cli import cli


@pytest.fixture(scope="module")
def bbbp(phonons_path):
    path = phonons_path.parent.parent / "moleculenet" / "bbbp.csv"
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests read the real data from ../shared/data beside the repo")
    return path


def test_bbbp_slice_classifies_with_scaffold_folds(toy_plugin, bbbp, tmp_path):
    """The all-layers preset featurises the ETKDG conformers unrelaxed (the toy backbone has no forces, so a
    relaxation would have failed every row)."""
    pytest.importorskip("rdkit")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--data", str(bbbp), "--backbone", "toy", "--head", "ridge", "--limit", "120",
                                      "--preset", "all-layers", "--split", "scaffold", "--on-error", "skip",
                                      "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["task_kind"] == "classification" and results["target"] == "p_np"
    assert results["folds_source"].startswith("Bemis-Murcko scaffold folds")
    assert results["n_samples"] + len(results["skipped"]) == 120
    assert results["geometries"] == {"conformer": "etkdg", "relaxed": False}
    assert (out / "roc.png").exists()


def test_molecules_are_relaxed_by_the_first_backbone_and_reused(bbbp, tmp_path):
    """CHGNet (weights from its wheel) relaxes 4 molecules; a second run finds every geometry in the store."""
    pytest.importorskip("rdkit")
    pytest.importorskip("hacknip_chgnet")
    import pandas as pd

    table = tmp_path / "small.csv"
    frame = pd.DataFrame({"smiles": ["CCO", "CC(=O)O", "CCN", "OCCO"], "y": [1, 2, 3, 4]})
    frame.to_csv(table, index=False)
    args = ["featurize", "--data", str(table), "--backbone", "chgnet@1", "--relax-steps", "20", "--relax-fmax", "0.05"]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "4 computed" in first.output
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert again.exit_code == 0 and "0 computed, 4 already stored" in again.output
    etkdg = CliRunner().invoke(cli, [*args, "--conformer", "etkdg"], catch_exceptions=False)
    assert etkdg.exit_code == 0 and "4 computed" in etkdg.output  # another start, other geometries
    # relaxed all four at once, each step's forces in one pass: the same steps and geometries, stored the same way
    batched = CliRunner().invoke(cli, [*args, "--relax-batch", "4", "--store", str(tmp_path / "batched")],
                                 catch_exceptions=False)
    assert batched.exit_code == 0 and "4 computed" in batched.output
    one_at_a_time = _stored_geometries(tmp_path / "hacknip-home" / "features")
    together = _stored_geometries(tmp_path / "batched")
    assert together.keys() <= one_at_a_time.keys() and len(together) == 4  # the home store has etkdg's too
    for key, record in together.items():
        assert record["steps"] == one_at_a_time[key]["steps"]
        np.testing.assert_allclose(record["positions"], one_at_a_time[key]["positions"], atol=1e-4)


def _stored_geometries(store) -> dict:
    """The relaxed geometries under a store, by file name."""
    files = [file for file in store.glob("geometries/*/*.json") if file.name != "identity.json"]
    records = [(file.name, json.loads(file.read_text())) for file in files]
    return {name: record for name, record in records if "steps" in record}  # not their conformers, of the same name


def test_the_preset_decides_whether_molecules_are_relaxed_unless_told(tmp_path):
    from hacknip.workflow.run import RunConfig

    def config(**options):
        return RunConfig(data=tmp_path / "molecules.csv", backbone="chgnet", **options)

    assert config().relax and config(preset="paper").relax  # the paper relaxed its molecules with the backbone
    assert not config(preset="all-layers").relax
    assert config(preset="all-layers", relax=True).relax and not config(preset="paper", relax=False).relax
    # a conformer to relax starts from MMFF94's minimum (half the steps); one featurised as made stays ETKDG's
    assert config().conformer == "mmff94" and config(preset="all-layers").conformer == "etkdg"
    assert config(preset="all-layers", conformer="mmff94").conformer == "mmff94"
    with pytest.raises(ValueError, match="unknown conformer 'uff'.*mmff94"):
        config(conformer="uff")


def test_sella_relaxes_molecules_from_the_command_line_and_is_recorded(tmp_path):
    """``--relax-optimizer Sella``: its own stored geometries (another optimiser, another minimum), one molecule at a
    time (a batch is a one-line error), and the optimiser named where ``analyze umap`` reads how geometries were made."""
    pytest.importorskip("rdkit")
    pytest.importorskip("hacknip_chgnet")
    pytest.importorskip("sella")
    import pandas as pd

    from hacknip.analysis.projection import _recorded_geometries
    from hacknip.workflow.run import RunConfig, geometries_settings

    table = tmp_path / "small.csv"
    pd.DataFrame({"smiles": ["CCO", "CC(=O)[O-].[Na+]"], "y": [1, 2]}).to_csv(table, index=False)
    args = ["featurize", "--data", str(table), "--backbone", "chgnet@1", "--relax-fmax", "0.05",
            "--store", str(tmp_path / "store")]
    sella = CliRunner().invoke(cli, [*args, "--relax-optimizer", "Sella"], catch_exceptions=False)
    assert sella.exit_code == 0 and "2 computed" in sella.output, sella.output
    bfgs = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert bfgs.exit_code == 0 and "2 computed" in bfgs.output, bfgs.output  # not Sella's geometries
    files = [file for file in (tmp_path / "store").glob("geometries/chgnet-*/*.json") if file.name != "identity.json"]
    relaxed = [json.loads(file.read_text()) for file in files]
    assert len({file.parent for file in files}) == 2, files  # a folder each: the optimiser is part of its identity
    assert len(relaxed) == 4 and all(record["converged"] for record in relaxed)
    batch = CliRunner().invoke(cli, [*args, "--relax-optimizer", "Sella", "--relax-batch", "2"])
    assert batch.exit_code != 0 and "Sella optimiser evaluates forces inside its step" in batch.output
    unknown = CliRunner().invoke(cli, [*args, "--relax-optimizer", "Nope"])
    assert unknown.exit_code != 0 and "ase.optimize has no optimiser 'Nope'" in unknown.output

    config = RunConfig(data=table, backbone="chgnet", relax=True, relax_optimizer="Sella")
    recorded = geometries_settings(config)
    assert recorded == {"conformer": "mmff94", "relaxed": True, "fmax": 0.05, "steps": 200, "optimizer": "Sella"}
    assert _recorded_geometries({"geometries": recorded})["relax_optimizer"] == "Sella"
