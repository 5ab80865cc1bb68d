"""Descriptors (hand-crafted structure-level featurisers) as plugins: hacknip-matminer's presets, the conformance
suite, composition with backbones in expressions, the store, bad rows, a run, a saved model."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.build import bulk
from click.testing import CliRunner
from test_store import _dataset

from hacknip.cli import cli
from hacknip.data.structures import BadInputError, Dataset, Sample
from hacknip.errors import InputError
from hacknip.features.describe import describe
from hacknip.features.featurize import layer_matrix
from hacknip.plugins.registry import check_backbones, descriptor_spec, load_descriptor
from hacknip.plugins.testing import DescriptorConformance
from hacknip.store import FeatureStore

PRESETS = ("magpie", "composition", "structure", "all", "sites")


class TestMatminerConformance(DescriptorConformance):
    @pytest.fixture(scope="class", params=PRESETS)
    @classmethod
    def descriptor(cls, request):
        return load_descriptor(f"matminer:{request.param}")


def test_matminer_presets_are_what_matminer_computes():
    from matminer.featurizers.composition import ElementProperty
    from pymatgen.core import Composition

    magpie = load_descriptor("matminer:magpie")
    expected = ElementProperty.from_preset("magpie", impute_nan=True).featurize(Composition("NaCl"))
    np.testing.assert_allclose(magpie.describe(bulk("NaCl", "rocksalt", a=5.64)), expected)
    everything = load_descriptor("matminer:all")
    vector = everything.describe(bulk("Cu", "fcc", a=3.61))
    named = dict(zip(everything.feature_names, vector))
    assert named["symmetry:spacegroup_num"] == 225 and named["symmetry:is_centrosymmetric"] == 1.0
    assert named["density:density"] == pytest.approx(63.546 / 6.022e23 / (3.61e-8 ** 3 / 4), rel=1e-3)


def test_a_descriptor_joins_an_expression_without_layers():
    members = check_backbones("chgnet@all+matminer:Magpie")
    assert [(m.name, m.layers) for m in members[1:]] == [("matminer:magpie", (0,))]
    with pytest.raises(InputError, match=r"matminer:magpie is a descriptor, one vector per structure, with no layers"):
        check_backbones("chgnet+matminer:magpie@1")
    assert descriptor_spec("chgnet") is None


def test_vectors_are_stored_once_and_read_back_whatever_the_pooling(tmp_path):
    dataset = _dataset(6)
    descriptor = load_descriptor("matminer:all")
    first = describe(dataset, descriptor, FeatureStore(tmp_path), workers=2)
    assert (first.computed, first.reused) == (6, 0)
    again = describe(dataset, descriptor, FeatureStore(tmp_path))
    assert (again.computed, again.reused) == (0, 6)
    X = layer_matrix(again.features, again.keys, [0], ("mean", "max", "std"))
    assert X.shape == (6, 153)
    np.testing.assert_allclose(X[1], descriptor.describe(dataset.samples[1].atoms))


def test_a_structure_a_descriptor_cannot_describe_is_a_named_bad_row(tmp_path):
    molecule = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    dataset = Dataset([Sample("cu", "row 1", bulk("Cu", "fcc", a=3.6), 1.0), Sample("water", "row 2", molecule, 2.0)],
                      "y", "molecules.csv")
    with pytest.raises(BadInputError, match=r"molecules.csv.*row 2.*need a periodic structure"):
        describe(dataset, load_descriptor("matminer:structure"), FeatureStore(tmp_path))
    report = describe(dataset, load_descriptor("matminer:structure"), FeatureStore(tmp_path), on_error="skip")
    assert [r.id for r in report.rejected] == ["water"] and report.computed == 1
    composition = describe(dataset, load_descriptor("matminer:composition"), FeatureStore(tmp_path))
    assert composition.computed == 2 and not composition.rejected  # composition needs no cell


def test_run_with_a_backbone_and_a_descriptor_then_save_and_predict(phonons_path, tmp_path):
    store, model = tmp_path / "store", tmp_path / "model"
    common = ["--store", str(store), "--jobs", "1"]
    result = CliRunner().invoke(cli, ["run", "--data", str(phonons_path), "--limit", "60", "--backbone",
                                      "chgnet@4+matminer:composition", "--head", "ridge", "--out", str(tmp_path / "run"),
                                      "--save", str(model), *common])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    saved = json.loads((model / "model.json").read_text())
    assert [b["name"] for b in saved["backbones"]] == ["chgnet", "matminer:composition"]
    assert saved["n_features"] == 64 + 146 and saved["backbones"][1]["identity"]["kind"] == "descriptor"
    assert np.isfinite(results["mae_mean"])
    assert "chgnet 4" in result.output and "matminer:composition 0" not in result.output
    table = tmp_path / "new.json.gz"
    with gzip.open(phonons_path, "rt") as source:
        data = json.load(source)
    data["data"], data["index"] = data["data"][:10], data["index"][:10]
    with gzip.open(table, "wt") as target:
        json.dump(data, target)
    result = CliRunner().invoke(cli, ["predict", str(model), "--data", str(table), "--out", str(tmp_path / "p.csv"),
                                      "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "p.csv")) == 10


def test_hacknip_list_shows_descriptors():
    result = CliRunner().invoke(cli, ["list", "--json"])
    listed = {d["name"]: d["width"] for d in json.loads(result.output)["descriptors"]}
    assert listed["matminer:all"] == 153 and listed["matminer:magpie"] == 132


def test_a_featurizer_takes_a_descriptor_in_its_expression(tmp_path):
    from hacknip import Featurizer

    structures = [bulk("Cu", "fcc", a=3.6), bulk("NaCl", "rocksalt", a=5.6), bulk("Si", "diamond", a=5.43)]
    featurizer = Featurizer("matminer:structure", store=str(tmp_path)).fit(structures)
    X = featurizer.transform(structures)
    assert X.shape == (3, 7)
    names = list(featurizer.get_feature_names_out())
    assert names[0] == "matminer:structure:density:density" and X[0, names.index(
        "matminer:structure:symmetry:spacegroup_num")] == 225


def test_a_descriptor_plugin_registering_a_bad_width_is_skipped_with_a_warning():
    import hacknip
    from hacknip.plugins.descriptor import DescriptorSpec
    from hacknip.plugins.manager import PluginWarning, pm
    from hacknip.plugins.registry import descriptor_specs

    class BadWidth:
        @hacknip.hookimpl
        def register_descriptors(self, register):
            register(DescriptorSpec(name="bad:zero", factory="nowhere:load", width=0))

    pm.register(BadWidth(), name="bad-width-test-plugin")
    try:
        with pytest.warns(PluginWarning, match=r"registered the descriptor 'bad:zero' with width 0"):
            specs = descriptor_specs()
        assert "bad:zero" not in specs and "matminer:all" in specs
    finally:
        pm.unregister(name="bad-width-test-plugin")


def test_undefined_features_are_kept_and_infinite_ones_make_a_bad_row():
    """Infinite, or finite but beyond float32 (the store's precision, where it would turn infinite)."""
    from hacknip.features.describe import describe_chunk

    class Partial:
        name = "partial"
        feature_names = ("a", "b", "c")

        def describe(self, atoms):
            return {2: [1.0, np.nan, 2.0], 1: [1.0, 2.0, 3.0], 4: [0.0, -1e39, 3e38]}.get(len(atoms),
                                                                                      [np.inf, 0.0, 0.0])

    cells = [bulk("NaCl", "rocksalt", a=5.64), bulk("Cu", "fcc", a=3.61), bulk("Si", "diamond", a=5.43) * (2, 1, 1),
             bulk("Cu", "fcc", a=3.61) * (3, 1, 1)]
    undefined, plain, too_large, infinite = describe_chunk(Partial(), cells)
    np.testing.assert_array_equal(undefined, [1.0, np.nan, 2.0])
    np.testing.assert_array_equal(plain, [1.0, 2.0, 3.0])
    assert infinite == "partial gave values beyond what the store keeps (float32, |x| < 3.4e38): a = inf"
    assert too_large.endswith(": b = -1e+39")


def test_the_scaler_puts_the_training_mean_where_a_feature_is_undefined():
    from hacknip.evaluation.crossval import make_model
    from hacknip.plugins.registry import create_head

    X = np.array([[1.0, 10.0], [3.0, np.nan], [5.0, 30.0], [7.0, 20.0]])
    model = make_model(create_head("ridge")).fit(X, np.array([1.0, 2.0, 3.0, 4.0]))
    scaled = model[0].transform(np.array([[3.0, np.nan], [3.0, 20.0]]))
    np.testing.assert_allclose(scaled, [[-0.4472135955, 0.0], [-0.4472135955, 0.0]], rtol=1e-9)
    assert np.isfinite(model.predict(X)).all()


def test_the_site_statistics_preset_is_matminers_site_stats_fingerprint():
    from hacknip_matminer.descriptors import _site_featurizer
    from matminer.featurizers.site import VoronoiFingerprint
    from matminer.featurizers.structure import SiteStatsFingerprint
    from pymatgen.io.ase import AseAtomsAdaptor

    sites = load_descriptor("matminer:sites")
    voronoi = SiteStatsFingerprint(VoronoiFingerprint(), stats=("mean", "std_dev"))
    labels = [f"voronoi:{label}" for label in voronoi.feature_labels()]
    copper = bulk("Cu", "fcc", a=3.61)
    named = dict(zip(sites.feature_names, sites.describe(copper), strict=True))
    np.testing.assert_allclose([named[label] for label in labels],
                               voronoi.featurize(AseAtomsAdaptor.get_structure(copper)))
    # pymatgen's Voronoi construction fails on primitive rock salt: the features of every site featuriser that
    # matminer cannot compute there are undefined, the rest not (which featurisers go through Voronoi neighbours
    # depends on pymatgen's version: with pymatgen 2026.10 the bond-orientation and property-difference ones do too)
    rocksalt = bulk("NaCl", "rocksalt", a=5.64)
    structure = AseAtomsAdaptor.get_structure(rocksalt)
    with pytest.raises(ValueError, match="No Voronoi neighbors"):
        voronoi.featurize(structure)
    undefined = set()
    for part in sites.parts:
        featurizer = SiteStatsFingerprint(_site_featurizer(part), stats=("mean", "std_dev"))
        try:
            featurizer.featurize(structure)
        except ValueError:
            undefined |= {f"{part}:{label}" for label in featurizer.feature_labels()}
    named = dict(zip(sites.feature_names, sites.describe(rocksalt), strict=True))
    assert set(labels) <= undefined
    assert {name for name, value in named.items() if np.isnan(value)} == undefined


def test_site_descriptors_do_not_flood_the_terminal_with_matminers_per_site_warnings():
    import warnings

    from hacknip.plugins.testing import reference_structures

    sites = load_descriptor("matminer:sites")
    rattled = reference_structures()[2]
    with warnings.catch_warnings(record=True) as raw:
        warnings.simplefilter("always")
        sites._describe(rattled)
    assert len(raw) > 10  # what matminer and pymatgen say on their own, site after site
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        sites.describe(rattled)
    assert shown == []


class _OddSizesUndefined:
    """A descriptor whose second feature is undefined (NaN) for structures with an odd number of atoms."""

    name = "test:odd-undefined"
    feature_names = ("n_atoms", "undefined_when_odd")

    def identity(self):
        return {"version": 1}

    def describe(self, atoms):
        return np.array([len(atoms), np.nan if len(atoms) % 2 else 1.0])


def test_a_run_counts_each_descriptors_undefined_values_per_feature(phonons_path, tmp_path):
    import hacknip
    from hacknip.data.read import read_dataset
    from hacknip.plugins.descriptor import DescriptorSpec
    from hacknip.plugins.manager import pm

    class OddUndefined:
        @hacknip.hookimpl
        def register_descriptors(self, register):
            register(DescriptorSpec(name="test:odd-undefined", factory="test_descriptors:_OddSizesUndefined", width=2))

    odd = sum(len(sample.atoms) % 2 for sample in read_dataset(phonons_path).head(40).samples)
    assert 0 < odd < 40
    pm.register(OddUndefined(), name="odd-undefined-test-plugin")
    try:
        result = CliRunner().invoke(cli, ["run", "--data", str(phonons_path), "--limit", "40", "--backbone",
                                          "test:odd-undefined", "--head", "ridge", "--out", str(tmp_path / "run"),
                                          "--store", str(tmp_path / "store"), "--jobs", "1", "--workers", "1"])
    finally:
        pm.unregister(name="odd-undefined-test-plugin")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["undefined_values"] == [{"descriptor": "test:odd-undefined", "values": odd, "structures": odd,
                                            "features": {"undefined_when_odd": odd}}]
    assert f"test:odd-undefined: {odd} values in {odd} structures" in " ".join(result.output.split())
    assert "none (descriptors only)" in result.output  # a descriptor has no layer to report
    assert np.isfinite(results["mae_mean"])
