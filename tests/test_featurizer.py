"""hacknip.Featurizer as a scikit-learn transformer: inputs, columns, the store, and scikit-learn's machinery (clone,
pipelines, cross-validation, grid search, joblib's process workers), mostly with the toy backbone; the real CHGNet
against the command line's stored features.

``sklearn.utils.estimator_checks`` does not apply: its checks feed 2-D numeric arrays, and a Featurizer's input is a
sequence of structures (objects, CIF text, paths), as for scikit-learn's text vectorizers, which are not run through
those checks either.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted
from store_files import shard_files, stored_records

from hacknip.data.read import read_dataset
from hacknip.errors import InputError
from hacknip.features.featurize import layer_matrix
from hacknip.features.featurizer import Featurizer, cached_backbone
from hacknip.plugins.registry import UnknownNameError, load_backbone
from hacknip.store import FeatureStore, structure_hash

N = 30
TOY_WIDTH = 4 + 6 + 6


@pytest.fixture(scope="module")
def phonons(phonons_path):
    return read_dataset(phonons_path).head(N)


@pytest.fixture
def atoms(phonons):
    return [sample.atoms for sample in phonons.samples]


@pytest.fixture(autouse=True)
def fresh_backbones():
    """Each test loads its own backbones, so the toy's ``calls`` count only that test's work."""
    cached_backbone.cache_clear()
    yield
    cached_backbone.cache_clear()


def toy_calls() -> int:
    return cached_backbone("toy", "cpu").calls


def test_transform_computes_once_and_matches_the_store(toy_plugin, atoms, tmp_path):
    featurizer = Featurizer("toy@0-2", store=tmp_path / "store").fit(atoms)
    X = featurizer.transform(atoms)
    assert X.shape == (N, TOY_WIDTH) and X.dtype == np.float64
    assert toy_calls() == N
    again = featurizer.transform(atoms[::-1])
    assert toy_calls() == N, "the second transform must read the store, not compute"
    np.testing.assert_array_equal(again, X[::-1])

    features = FeatureStore(tmp_path / "store").open(load_backbone("toy").identity())
    direct = layer_matrix(features, [structure_hash(a) for a in atoms], [0, 1, 2], ("mean",))
    np.testing.assert_array_equal(X, direct)


def test_feature_names_name_every_column_in_order(toy_plugin, atoms):
    featurizer = Featurizer("toy@2,0", pooling="max+sum")
    X = featurizer.fit_transform(atoms[:5])
    names = featurizer.get_feature_names_out()
    assert len(names) == X.shape[1] == 2 * (6 + 4)
    assert names[0] == "toy:L2:max:0" and names[-1] == "toy:L0:sum:3"
    features = FeatureStore().open(load_backbone("toy").identity())
    stats, n_atoms = features.read([structure_hash(a) for a in atoms[:5]], 0)
    np.testing.assert_allclose(X[:, list(names).index("toy:L0:max:3")], stats["max"][:, 3])
    np.testing.assert_allclose(X[:, list(names).index("toy:L0:sum:1")], stats["mean"][:, 1] * n_atoms)


def test_pandas_output_and_containers(toy_plugin, atoms):
    items = atoms[:6]
    expected = Featurizer("toy@1").fit_transform(items)
    frame = Featurizer("toy@1").set_output(transform="pandas").fit_transform(pd.Series(items, index=range(10, 16)))
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == [f"toy:L1:mean:{c}" for c in range(6)]
    np.testing.assert_array_equal(frame.to_numpy(), expected)
    column = np.empty((6, 1), dtype=object)
    column[:, 0] = items
    for container in (tuple(items), column[:, 0], column, pd.DataFrame({"structure": items})):
        np.testing.assert_array_equal(Featurizer("toy@1").fit_transform(container), expected)
    assert Featurizer("toy@1").fit_transform([]).shape == (0, 6)


def test_mixed_inputs_give_the_rows_each_gives_alone(toy_plugin, atoms, tmp_path):
    import ase.io
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifWriter

    structure = AseAtomsAdaptor.get_structure(atoms[1])
    cif_text = str(CifWriter(AseAtomsAdaptor.get_structure(atoms[2])))
    cif_file = tmp_path / "three.cif"
    cif_file.write_text(str(CifWriter(AseAtomsAdaptor.get_structure(atoms[3]))))
    poscar = tmp_path / "POSCAR"
    ase.io.write(poscar, atoms[4], format="vasp")
    extxyz = tmp_path / "five.extxyz"
    ase.io.write(extxyz, atoms[5])
    items = [atoms[0], structure, cif_text, cif_file, str(poscar), extxyz]

    featurizer = Featurizer("toy@0,2").fit(items)
    mixed = featurizer.transform(items)
    alone = np.vstack([featurizer.transform([item]) for item in items])
    np.testing.assert_array_equal(mixed, alone)
    np.testing.assert_allclose(mixed[:2], featurizer.transform(atoms[:2]), rtol=1e-6)
    np.testing.assert_allclose(mixed, featurizer.transform(atoms[:6]), rtol=1e-4)  # CIF and POSCAR round to ~1e-6 Å


def test_a_bad_item_is_named_by_its_position(toy_plugin, atoms, tmp_path):
    import ase.io
    from ase import Atoms
    from pymatgen.core import Lattice, Structure

    featurizer = Featurizer("toy@0").fit(atoms)
    two_frames = tmp_path / "two.extxyz"
    ase.io.write(two_frames, atoms[:2])
    doped = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    too_close = Atoms("Cu2", positions=[[0, 0, 0], [0.1, 0, 0]], cell=[5, 5, 5], pbc=True)
    cases = [
        (5, "a int is not a structure"),
        ("no/such.cif", "no such file: no/such.cif"),
        ("data_x\n_cell_length_a oops\n", "not a valid CIF"),
        (too_close, "atoms 0 (Cu) and 1 (Cu) (counting from 0) are 0.1 Å apart"),
        (Atoms("U", cell=[5, 5, 5], pbc=True), "toy does not know element(s) U"),
        (two_frames, "holds 2 structures"),
        (doped, "disordered='approximant'"),
    ]
    for bad, message in cases:
        with pytest.raises(InputError, match=r"^X\[2\]: ") as error:
            featurizer.transform([atoms[0], atoms[1], bad, atoms[3]])
        assert message in str(error.value) and "\n" not in str(error.value)
        assert "--on-error" not in str(error.value) and "--disordered" not in str(error.value)

    for X, message in [(atoms[0], "a single structure"), (pd.DataFrame({"a": atoms[:2], "b": atoms[:2]}), "2 columns"),
                       (np.empty((2, 2), dtype=object), "shape (2, 2)"), ({1, 2}, "a set")]:
        with pytest.raises(InputError, match="^X is") as error:
            featurizer.transform(X)
        assert message in str(error.value)


def test_parameters_are_checked_by_fit_not_the_constructor(toy_plugin, atoms):
    Featurizer(backbone="nonsense", pooling="nonsense", batch_size=0, on_error="skip")  # stored as given
    cases = [
        ({"backbone": "toy"}, "toy@2 or toy@all"),
        ({"backbone": "toy@1+toy@2"}, "listed twice"),
        ({"backbone": "toy@7"}, "toy has layers 0..2"),
        ({"backbone": "toy@0", "pooling": "median"}, "unknown pooling 'median'"),
        ({"backbone": "toy@0", "on_error": "skip"}, "drop bad structures first"),
        ({"backbone": "toy@0", "disordered": "guess"}, "refuse, approximant"),
        ({"backbone": "toy@0", "batch_size": 0}, "at least 1"),
    ]
    for params, message in cases:
        with pytest.raises(InputError) as error:
            Featurizer(**params).fit(atoms)
        assert message in str(error.value)
    with pytest.raises(UnknownNameError, match="nosuch"):
        Featurizer("nosuch@1").fit(atoms)
    assert Featurizer("TOY@all").fit(atoms).layers_ == {"toy": (0, 1, 2)}


def test_clone_pickle_and_fitted_state(toy_plugin, atoms, tmp_path):
    featurizer = Featurizer("toy@1", pooling="mean+std", batch_size=4, store=tmp_path / "s")
    with pytest.raises(NotFittedError):
        featurizer.transform(atoms)
    with pytest.raises(NotFittedError):
        featurizer.get_feature_names_out()
    X = featurizer.fit_transform(atoms)
    check_is_fitted(featurizer)
    twin = clone(featurizer)
    assert twin.get_params() == featurizer.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(twin)

    payload = pickle.dumps(featurizer)
    assert len(payload) < 5_000 and b"ToyBackbone" not in payload, "a pickled Featurizer must not carry its backbone"
    np.testing.assert_array_equal(pickle.loads(payload).transform(atoms), X)


def test_pipeline_cross_validation_and_grid_search_compute_each_structure_once(toy_plugin, phonons, atoms):
    model = make_pipeline(Featurizer("toy@0"), StandardScaler(), Ridge())
    scores = cross_val_score(model, atoms, phonons.targets, cv=KFold(3), scoring="neg_mean_absolute_error")
    assert np.isfinite(scores).all() and len(scores) == 3
    assert toy_calls() == N

    grid = GridSearchCV(model, {"featurizer__backbone": ["toy@0", "toy@2", "toy@0-2"],
                                "featurizer__pooling": ["mean", "mean+max"]},
                        cv=KFold(3), scoring="neg_mean_absolute_error")
    grid.fit(atoms, phonons.targets)
    assert toy_calls() == N, "every layer is stored by the first pass; the grid reads the store"
    best = grid.best_estimator_.named_steps["featurizer"]
    assert best.backbone == grid.best_params_["featurizer__backbone"]
    assert grid.predict(atoms[:3]).shape == (3,)


def _register_toy_plugin():
    """A loky worker's initializer: the test plugin, registered in-process in the parent, registered here too (an
    installed plugin is found through its entry point in every process without this)."""
    from toy_backbone import ToyPlugin

    from hacknip.plugins.manager import pm

    if not pm.has_plugin("toy-test-plugin"):
        pm.register(ToyPlugin(), name="toy-test-plugin")


def test_joblib_process_workers(toy_plugin, phonons, atoms, tmp_path):
    from joblib import parallel_config

    store = tmp_path / "shared-store"
    model = make_pipeline(Featurizer("toy@1,2", store=store), StandardScaler(), Ridge())
    with parallel_config(backend="loky", initializer=_register_toy_plugin):
        scores = cross_val_score(model, atoms, phonons.targets, cv=KFold(3), n_jobs=2,
                                 scoring="neg_mean_absolute_error")
    assert toy_calls() == 0, "the workers computed the features, not this process"
    assert stored_records(store) == N, "folds in different processes shared the store: each structure computed once"
    sequential = cross_val_score(model, atoms, phonons.targets, cv=KFold(3), scoring="neg_mean_absolute_error")
    np.testing.assert_allclose(scores, sequential)
    assert toy_calls() == 0


@pytest.mark.slow
def test_real_chgnet_reuses_what_the_command_line_stored(phonons_path, phonons, tmp_path):
    from hacknip.cli import cli

    store = tmp_path / "store"
    result = CliRunner().invoke(cli, ["featurize", "--data", str(phonons_path), "--backbone", "chgnet", "--limit", "12",
                                      "--store", str(store)])
    assert result.exit_code == 0, result.output
    shards = shard_files(store)
    structures = [sample.atoms for sample in phonons.samples[:12]]

    featurizer = Featurizer("chgnet@all", pooling="mean+std", store=store)
    X = featurizer.fit_transform(structures)
    assert shard_files(store) == shards, "the Featurizer must reuse the command line's features"
    assert X.shape == (12, 5 * 64 * 2) and featurizer.get_feature_names_out()[64 * 2] == "chgnet:L1:mean:0"
    features = FeatureStore(store).open(cached_backbone("chgnet", "cpu").identity())
    expected = layer_matrix(features, [structure_hash(a) for a in structures], range(5), ("mean", "std"))
    np.testing.assert_array_equal(X, expected)


def test_import_hacknip_is_cheap_and_exports_load_lazily():
    probe = "import hacknip, sys; print(sorted(m for m in ('torch','sklearn','pymatgen','pandas') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"

    import hacknip.data.structures
    import hacknip.plugins.registry

    assert hacknip.Featurizer is Featurizer
    assert hacknip.read_dataset is hacknip.data.read.read_dataset
    assert hacknip.load_backbone is hacknip.plugins.registry.load_backbone
    assert {"Featurizer", "read_dataset", "load_backbone", "hookimpl", "__version__"} <= set(dir(hacknip))
    assert set(hacknip.__all__) <= set(dir(hacknip))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        hacknip.nothing  # noqa: B018
