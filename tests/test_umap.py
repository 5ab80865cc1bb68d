"""UMAP per layer from the feature store (hacknip.analysis.projection, the figure and `hacknip analyze umap`), on a
real small `hacknip run` of the toy backbone over matbench_phonons. The toy plugin is registered only while the run
featurises: every projection below reads the store alone."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from hacknip.analysis.projection import (
    UmapSettings,
    colour_scale,
    median_gamma,
    project_data,
    project_run,
    umap_coordinates,
)
from hacknip.errors import InputError
from hacknip.features.featurize import dataset_keys, layer_matrix
from hacknip.report.umap_figure import CLASS_COLOURS, colour_norm, umap_figure
from hacknip.store import FeatureStore

N = 60


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, phonons_path):
    """``hacknip run --backbone toy --limit 60`` into its own store: ``(run folder, store)``."""
    from toy_backbone import ToyPlugin

    from hacknip.cli import cli
    from hacknip.plugins.manager import pm

    folder = tmp_path_factory.mktemp("umap")
    run_dir, store = folder / "run", folder / "store"
    pm.register(ToyPlugin(), name="toy-umap-plugin")
    try:
        result = CliRunner().invoke(cli, ["run", "--data", str(phonons_path), "--backbone", "toy", "--head", "ridge",
                                          "--limit", str(N), "--store", str(store), "--out", str(run_dir)],
                                    catch_exceptions=False)
    finally:
        pm.unregister(name="toy-umap-plugin")
    assert result.exit_code == 0, result.output
    return run_dir, store


@pytest.fixture(scope="module")
def default_projection(toy_run):
    run_dir, store = toy_run
    return project_run(run_dir, store=store)


def _results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def test_a_run_folder_gives_its_best_and_last_layers_from_the_store_alone(toy_run, default_projection):
    from hacknip.plugins.registry import backbone_specs

    assert "toy" not in backbone_specs()  # no plugin, no model: the store is all there is
    run_dir, store = toy_run
    results = _results(run_dir)
    best = results["best_layer"]
    assert best != 2, "pick a run whose L* is not the toy's last layer (2), or this test shows nothing"
    projection = default_projection
    assert list(projection.coordinates) == [best, 2]
    assert projection.roles(best) == ["L*"] and projection.roles(2) == ["last"]
    assert projection.ids == results["predictions"]["id"]
    np.testing.assert_array_equal(projection.targets, results["predictions"]["true"])
    assert projection.task_kind == "regression" and projection.identity == results["backbones"][0]["identity"]
    for xy in projection.coordinates.values():
        assert xy.shape == (N, 2) and np.isfinite(xy).all()


def test_same_seed_same_coordinates_other_seed_or_layer_differs(toy_run, default_projection):
    run_dir, store = toy_run
    again = project_run(run_dir, store=store)
    for layer, xy in default_projection.coordinates.items():
        np.testing.assert_array_equal(again.coordinates[layer], xy)
    best, last = list(default_projection.coordinates)
    assert not np.allclose(default_projection.coordinates[best], default_projection.coordinates[last])
    other_seed = project_run(run_dir, [last], UmapSettings(seed=1), store=store)
    assert not np.allclose(other_seed.coordinates[last], default_projection.coordinates[last])


def test_the_projected_matrix_is_the_stored_layer_standardised(toy_run, default_projection, phonons_path):
    """The rows reach UMAP in the run's order: projecting the stored matrix directly gives the same picture."""
    from hacknip.data.read import read_dataset

    _, store = toy_run
    dataset = read_dataset(phonons_path).head(N)
    features = FeatureStore(store).open(default_projection.identity)
    layer = list(default_projection.coordinates)[0]
    direct = umap_coordinates(layer_matrix(features, dataset_keys(dataset), [layer], ("mean",)), UmapSettings())
    np.testing.assert_array_equal(direct, default_projection.coordinates[layer])
    shuffled = umap_coordinates(layer_matrix(features, dataset_keys(dataset)[::-1], [layer], ("mean",)), UmapSettings())
    assert not np.allclose(shuffled, default_projection.coordinates[layer])


def test_skewed_target_gets_a_power_scale_with_the_median_mid_bar(default_projection):
    projection = default_projection
    scale = projection.colour_scale
    assert scale.skew > 1 and scale.is_power and 0 < scale.gamma < 1  # phonon peaks: a long tail of high values
    assert float(colour_norm(projection)(np.median(projection.targets))) == pytest.approx(0.5)
    figure = umap_figure(projection)
    titles = [axes.get_title() for axes in figure.axes if axes.get_title()]
    best = projection.best_layer
    assert titles == [f"layer {best} (L*)", "layer 2 (last)"]
    colour_bar = [axes for axes in figure.axes if "last phdos peak" in axes.get_ylabel()]
    assert len(colour_bar) == 1 and "power scale" in colour_bar[0].get_ylabel()
    assert all(axes.get_xlabel() == "UMAP 1" and axes.get_ylabel() == "UMAP 2" for axes in figure.axes[:2])


def test_colour_scale_choice():
    rng = np.random.default_rng(0)
    assert colour_scale(rng.normal(size=500)).gamma == 1.0
    left_skewed = -rng.lognormal(sigma=1.0, size=500)
    assert colour_scale(left_skewed).gamma > 1
    assert colour_scale(left_skewed, gamma=0.5).gamma == 0.5
    assert median_gamma(np.array([0.0, 1.0, 2.0])) == pytest.approx(1.0)
    assert median_gamma(np.full(4, 3.0)) == 1.0


def test_layers_can_be_chosen_and_are_checked(toy_run):
    run_dir, store = toy_run
    projection = project_run(run_dir, [0, 1], store=store)
    assert list(projection.coordinates) == [0, 1]
    with pytest.raises(InputError, match="layer.s. 7 do not exist; the stored backbone has layers 0..2"):
        project_run(run_dir, [7], store=store)


def test_missing_features_say_which_command_stores_them(toy_run, phonons_path, tmp_path):
    run_dir, store = toy_run
    with pytest.raises(InputError, match=r"results.json: the features of toy this run used are not in the store .*"
                                         r"hacknip featurize --data .*matbench_phonons.json.gz --backbone toy"):
        project_run(run_dir, store=tmp_path / "empty")
    with pytest.raises(InputError, match=r"no features of backbone 'toy' in the store .*; store them with "
                                         r"`hacknip featurize --data "):
        project_data(phonons_path, "toy", store=tmp_path / "empty", limit=N)
    with pytest.raises(InputError, match=rf"20 of {N + 20} structures of .* have no stored layer\(s\) 0, 1, 2 of toy "
                                         rf".*`hacknip featurize --data .* --backbone toy --limit {N + 20}`"):
        project_data(phonons_path, "toy", store=store, limit=N + 20)


def test_without_a_run_folder_every_stored_layer_or_backbone_layers(toy_run, phonons_path):
    _, store = toy_run
    every = project_data(phonons_path, "toy", store=store, limit=N)
    assert list(every.coordinates) == [0, 1, 2] and every.best_layer is None and every.roles(2) == ["last"]
    chosen = project_data(phonons_path, "toy@1", store=store, limit=N, pooling="mean+std")
    assert list(chosen.coordinates) == [1] and chosen.pooling == "mean+std"
    with pytest.raises(InputError, match="one backbone"):
        project_data(phonons_path, "toy+other", store=store, limit=N)


def test_classification_is_drawn_in_two_colours_with_a_legend(toy_plugin, phonons_path, tmp_path):
    from conftest import write_cif_table

    from hacknip.cli import cli

    table = write_cif_table(phonons_path, tmp_path / "binary.csv", 40, "peak")
    frame = pd.read_csv(table)
    frame["high_peak"] = (frame["peak"] > frame["peak"].median()).astype(int)
    frame.drop(columns="peak").to_csv(table, index=False)
    stored = CliRunner().invoke(cli, ["featurize", "--data", str(table), "--backbone", "toy", "--id-column", "name"])
    assert stored.exit_code == 0, stored.output
    projection = project_data(table, "toy@1,2", id_column="name")
    assert projection.task_kind == "classification" and set(projection.targets) == {0.0, 1.0}
    figure = umap_figure(projection)
    colours = {tuple(np.round(c.get_facecolor()[0][:3], 3)) for axes in figure.axes for c in axes.collections}
    from matplotlib.colors import to_rgb

    assert colours == {tuple(np.round(to_rgb(colour), 3)) for colour in CLASS_COLOURS}
    labels = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert labels == ["high_peak = 0 (20)", "high_peak = 1 (20)"]
    assert not any("high_peak" in axes.get_ylabel() for axes in figure.axes)  # no colour bar


def test_command_writes_figure_and_table(toy_run):
    from hacknip.cli import cli

    run_dir, store = toy_run
    result = CliRunner().invoke(cli, ["analyze", "umap", str(run_dir), "--store", str(store), "--layers", "0-1",
                                      "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert (run_dir / "umap.png").stat().st_size > 20_000
    table = pd.read_csv(run_dir / "umap.csv")
    assert list(table.columns) == ["id", "target", "layer", "x", "y"]
    assert len(table) == 2 * N and sorted(set(table["layer"])) == [0, 1]
    assert table["id"].tolist()[:N] == _results(run_dir)["predictions"]["id"]
    expected = project_run(run_dir, [0, 1], UmapSettings(seed=3), store=store)
    np.testing.assert_allclose(table[table["layer"] == 1][["x", "y"]].to_numpy(), expected.coordinates[1], rtol=1e-6)
    assert "seed 3" in result.output and "umap.csv" in result.output


def test_command_errors_are_one_line(toy_run, tmp_path):
    from hacknip.cli.umap_command import umap_command

    run_dir, store = toy_run
    neither = CliRunner().invoke(umap_command, [])
    assert neither.exit_code == 2 and "give a run folder (RUN_DIR)" in neither.output
    conflicting = CliRunner().invoke(umap_command, [str(run_dir), "--target", "y", "--store", str(store)])
    assert conflicting.exit_code == 2 and "--target comes from" in conflicting.output
    empty = CliRunner().invoke(umap_command, [str(run_dir), "--store", str(tmp_path / "none"),
                                              "--out", str(tmp_path / "u.png")])
    assert empty.exit_code == 1 and "hacknip featurize --data" in empty.output
    assert len([line for line in empty.output.splitlines() if line.startswith("Error")]) == 1
    not_a_run = CliRunner().invoke(umap_command, [str(tmp_path), "--out", str(tmp_path / "u.png")])
    assert not_a_run.exit_code == 1 and "results.json: no such file" in not_a_run.output


def test_missing_umap_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)
    with pytest.raises(ImportError, match=r"pip install 'hacknip-core\[analysis\]'"):
        umap_coordinates(np.zeros((10, 3)), UmapSettings())


def test_a_molecule_run_is_projected_from_the_geometries_it_recorded(toy_plugin, phonons_path, tmp_path):
    """The run's MMFF94 conformers, unrelaxed, are made again from results.json: with the defaults instead (relaxed,
    from MMFF94) the projection would ask the toy backbone for forces it does not have, and with ETKDG's conformers
    it would miss the stored features."""
    pytest.importorskip("rdkit")
    from hacknip.cli import cli

    bbbp = phonons_path.parent.parent / "moleculenet" / "bbbp.csv"
    run_dir, store = tmp_path / "run", tmp_path / "store"
    result = CliRunner().invoke(cli, ["run", "--data", str(bbbp), "--backbone", "toy", "--head", "ridge", "--limit", "40",
                                      "--preset", "all-layers", "--conformer", "mmff94", "--split", "scaffold",
                                      "--on-error", "skip", "--workers", "1", "--jobs", "1", "--store", str(store),
                                      "--out", str(run_dir)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert _results(run_dir)["geometries"] == {"conformer": "mmff94", "relaxed": False}
    projection = project_run(run_dir, [0], store=store)
    assert list(projection.ids) == _results(run_dir)["predictions"]["id"]
