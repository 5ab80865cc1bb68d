"""hacknip-mace on a MACE-MP-0-medium-like network with random weights, saved as a local ``.model`` file the way MACE
saves its models (``torch.save`` of the whole network) and loaded through the plugin's real loading path. The real
MACE-MP weights cannot be downloaded on these machines."""

from __future__ import annotations

import importlib
import subprocess
import sys
import urllib.error
import urllib.request

import e3nn
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from hacknip.data.structures import BadInputError, Dataset, Sample
from hacknip.errors import BadStructureError
from hacknip.features.featurize import featurize
from hacknip.plugins.backbone import file_sha256, identity_key
from hacknip.plugins.registry import backbone_specs, load_backbone
from hacknip.plugins.testing import BackboneConformance, TrainableConformance, reference_structures
from hacknip.store import FeatureStore
from hacknip_mace import backbone as mace_backbone
from hacknip_mace.plugin import DEFAULT_MODEL, MACE_MP_CUTOFF, MACE_MP_LAYER_WIDTHS, PRETRAINED_MODELS, factory_name

SUPPORTED = range(1, 84)  # H..Bi, as MACE-MP minus the actinides; Po (84) is outside


def mace_mp_like(hidden_irreps: str = "128x0e+128x1o", elements=SUPPORTED, seed: int = 0) -> torch.nn.Module:
    """A MACE-MP-0 architecture (r_max 6 Å, 2 interactions, correlation 3, max_ell 3, 8 Bessel functions, polynomial
    cutoff 5, 16x0e readout MLP; hidden irreps 128x0e+128x1o for medium) with random weights, in float64 as MACE-MP
    files are."""
    from e3nn import o3
    from mace import modules

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(seed)
        zs = list(elements)
        interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
        network = modules.ScaleShiftMACE(
            r_max=6.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=3, interaction_cls=interaction,
            interaction_cls_first=interaction, num_interactions=2, num_elements=len(zs),
            hidden_irreps=o3.Irreps(hidden_irreps), MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=np.linspace(-5.0, -1.0, len(zs)), avg_num_neighbors=1.0, atomic_numbers=zs,
            correlation=3, gate=torch.nn.functional.silu, atomic_inter_scale=1.0, atomic_inter_shift=0.0,
        )
        # With MACE's random init and a realistic avg_num_neighbors (~40), layer-2 features are ~1e-3; avg_num_neighbors=1
        # and a 10x embedding make every layer ~0.1-1, so that the conformance tolerances (atol 1e-5) mean something.
        with torch.no_grad():
            network.node_embedding.linear.weight.mul_(10.0)
    finally:
        torch.set_default_dtype(previous)
    return network


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mace") / "mace-mp-medium-like.model"
    torch.save(mace_mp_like(), path)  # how MACE saves and ships models: the whole pickled network
    return path


@pytest.fixture(scope="module")
def mace(model_file):
    return load_backbone(f"mace:{model_file}")


class TestMACEConformance(BackboneConformance):
    spec_name = "mace-mp-0b3-medium"  # the medium MACE-MP architecture, random weights

    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls, mace):
        return mace


class TestMACETrainable(TrainableConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls, model_file):
        return load_backbone(f"mace:{model_file}")  # its own copy: the suite changes requires_grad


def test_the_local_model(mace, model_file):
    assert mace.name == f"mace:{model_file}"
    assert mace.cutoff == 6.0 and not mace.needs_supercell
    assert mace.supported_elements == frozenset(SUPPORTED)
    assert mace.dtype == torch.float32 and next(mace.network.parameters()).dtype == torch.float32  # converted
    identity = mace.identity()
    assert identity == {"name": "mace", "library": "mace-torch", "library_version": identity["library_version"],
                        "model": None, "checkpoint_sha256": file_sha256(model_file), "cutoff": 6.0,
                        "dtype": "float32", "features": "invariant"}


def test_layers_of_the_medium_architecture(mace):
    """Embedding 128x0e; products[0] keeps the hidden irreps; the last product is scalar-only."""
    assert {layer: str(irreps) for layer, irreps in mace.layer_irreps.items()} == {
        0: "128x0e", 1: "128x0e+128x1o", 2: "128x0e"}
    assert mace.layer_widths == MACE_MP_LAYER_WIDTHS == (128, 128, 128)
    assert mace.cutoff == MACE_MP_CUTOFF


@pytest.mark.parametrize(("size", "hidden_irreps", "equivariant_widths"), [
    ("small", "128x0e", (128, 128, 128)),
    ("large", "128x0e+128x1o+128x2e", (128, 128 + 3 * 128 + 5 * 128, 128)),
])
def test_layers_of_the_small_and_large_architectures(size, hidden_irreps, equivariant_widths):
    """The widths plugin.py lists hold for L=0 and L=2 as well (built with 3 elements: widths do not depend on them)."""
    network = mace_mp_like(hidden_irreps, elements=(1, 8, 14)).float()
    scalars = mace_backbone.MACEBackbone(network, name=size, model=None, checkpoint_sha256="")
    full = mace_backbone.MACEBackbone(network, name=size, model=None, checkpoint_sha256="", equivariant=True)
    assert (scalars.cutoff, scalars.layer_widths) == (MACE_MP_CUTOFF, MACE_MP_LAYER_WIDTHS)
    assert full.layer_widths == equivariant_widths
    features = full.per_atom_features([bulk("Si", "diamond", a=5.43)], [0, 1, 2])[0]
    assert tuple(features[layer].shape[1] for layer in (0, 1, 2)) == equivariant_widths


def test_registered_specs(mace):
    specs = backbone_specs()
    for name in [*PRETRAINED_MODELS, "mace"]:
        spec = specs[name]
        assert spec.package == "hacknip-mace" and spec.library == "mace-torch"
        assert (spec.cutoff, spec.layer_widths, spec.needs_supercell) == (
            mace.cutoff, mace.layer_widths, mace.needs_supercell)
        assert not spec.verified  # no real MACE weights could be checked on these machines
        module_name, _, attribute = spec.factory.partition(":")
        assert callable(getattr(importlib.import_module(module_name), attribute))
    assert specs[DEFAULT_MODEL].factory == f"hacknip_mace.backbone:{factory_name(DEFAULT_MODEL)}"
    assert PRETRAINED_MODELS[DEFAULT_MODEL].mace_key == "medium"


def test_named_model_goes_through_maces_downloader_and_cache(model_file, tmp_path, monkeypatch):
    """A model already in mace-torch's cache loads offline by name; hacknip names and mace keys agree."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from mace.calculators.foundations_models import mace_mp_urls

    url = mace_mp_urls["medium"]
    cached = tmp_path / "mace" / "".join(c for c in url.rsplit("/", 1)[-1] if c.isalnum() or c == "_")
    cached.parent.mkdir()
    cached.write_bytes(model_file.read_bytes())
    by_name = load_backbone(DEFAULT_MODEL)
    by_key = load_backbone("mace:medium")
    assert by_name.name == by_key.name == DEFAULT_MODEL
    assert by_name.identity() == by_key.identity()
    assert by_name.identity()["model"] == DEFAULT_MODEL
    assert by_name.identity()["checkpoint_sha256"] == file_sha256(model_file)


def test_offline_load_by_name_says_to_pass_a_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing cached

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    for name in (DEFAULT_MODEL, "mace:medium-mpa-0"):
        with pytest.raises(mace_backbone.MACEDownloadError, match=r"--backbone mace:/path/to/mace\.model") as error:
            load_backbone(name)
        assert "https://github.com/ACEsuit/" in str(error.value)
    assert not list(tmp_path.rglob("*.model*"))  # no partial download left behind


def test_missing_file_or_unknown_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone(f"mace:{tmp_path / 'nothing-here.model'}")
    with pytest.raises(ValueError, match="neither a MACE model file nor a pretrained"):
        mace_backbone.load(model="mace-mp-9")


def test_a_file_without_a_mace_model_is_refused(tmp_path):
    path = tmp_path / "weights.model"
    torch.save({"node_embedding.linear.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="does not hold a MACE model"):
        load_backbone(f"mace:{path}")


@pytest.mark.parametrize("version", ["0.5.2", "0.6.0", "0.4.4"])
def test_e3nn_guard(model_file, monkeypatch, version):
    monkeypatch.setattr(e3nn, "__version__", version)
    with pytest.raises(mace_backbone.IncompatibleE3nnError, match=rf"e3nn {version} is installed.*pip install e3nn==0\.5\.1"):
        load_backbone(f"mace:{model_file}")


def test_e3nn_guard_accepts_the_versions_that_read_mace_models():
    for version in ("0.5.0", "0.5.1"):
        mace_backbone.check_e3nn(version)


def test_float64_on_request(mace, model_file):
    double = load_backbone(f"mace:{model_file}", default_dtype="float64")
    assert double.dtype == torch.float64 and double.identity()["dtype"] == "float64"
    assert identity_key(double.identity()) != identity_key(mace.identity())
    structures = reference_structures()
    layers = [0, 1, 2]
    for ours, single in zip(double.per_atom_features(structures, layers), mace.per_atom_features(structures, layers)):
        for layer in layers:
            assert ours[layer].dtype == np.float64
            np.testing.assert_allclose(ours[layer], single[layer], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="default_dtype"):
        load_backbone(f"mace:{model_file}", default_dtype="float16")


def test_equivariant_features(mace, model_file):
    full = load_backbone(f"mace:{model_file}", equivariant=True)
    assert full.layer_widths == (128, 128 + 3 * 128, 128)
    assert full.identity()["features"] == "equivariant"
    assert identity_key(full.identity()) != identity_key(mace.identity())
    structures = reference_structures()[:2]
    for vectors, scalars in zip(full.per_atom_features(structures, [1, 2]), mace.per_atom_features(structures, [1, 2])):
        assert vectors[1].shape[1] == 512
        np.testing.assert_array_equal(vectors[1][:, :128], scalars[1])  # 0e channels come first in 128x0e+128x1o
        np.testing.assert_array_equal(vectors[2], scalars[2])


def test_unsupported_element_is_reported(mace, tmp_path):
    assert 84 not in mace.supported_elements
    polonium = bulk("Po", "sc", a=3.35)
    with pytest.raises(BadStructureError, match=r"\[84\].*structure 1"):
        mace.per_atom_features([bulk("Cu", "fcc", a=3.61), polonium], [0])
    samples = [Sample("s0", "row 0", bulk("Si", "diamond", a=5.43), 1.0), Sample("s1", "row 1", polonium, 2.0)]
    dataset = Dataset(samples, "y", "test data")
    with pytest.raises(BadInputError, match=r"row 1 \(id s1\): mace:.* does not know element\(s\) Po"):
        featurize(dataset, mace, FeatureStore(tmp_path))


def test_small_batches_give_the_same_features(mace, monkeypatch):
    structures = reference_structures()
    whole = mace.per_atom_features(structures, [0, 2])
    monkeypatch.setattr(mace, "batch_size", 3)
    for big, small in zip(whole, mace.per_atom_features(structures, [0, 2])):
        for layer in (0, 2):
            np.testing.assert_allclose(small[layer], big[layer], rtol=1e-4, atol=1e-5)


def test_molecule_without_a_cell_equals_the_molecule_in_a_periodic_box(mace):
    water = molecule("H2O")
    boxed = water.copy()
    boxed.center(vacuum=mace.cutoff)
    boxed.pbc = True
    (free,), (periodic,) = (mace.per_atom_features([atoms], [2]) for atoms in (water, boxed))
    np.testing.assert_allclose(free[2], periodic[2], rtol=1e-4, atol=1e-5)


def test_no_forces_are_computed(mace, monkeypatch):
    """The pass stops at the deepest requested layer: neither the readouts nor autograd run."""
    calls = []
    monkeypatch.setattr(torch.autograd, "grad", lambda *args, **kwargs: calls.append("grad"))
    for readout in mace.network.readouts:
        monkeypatch.setattr(readout, "forward", lambda *args, **kwargs: calls.append("readout"))
    mace.per_atom_features(reference_structures()[:1], [0, 1, 2])
    assert calls == []


def test_calculator_uses_the_same_network(mace):
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.calc = mace.calculator()
    assert atoms.calc.models[0] is mace.network
    assert np.isfinite(atoms.get_potential_energy())


def test_plugin_module_does_not_import_torch_or_mace():
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import hacknip_mace.plugin"],
                            capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    heavy = sorted(name for name in imported if name.split(".")[0] in {"torch", "mace", "e3nn", "numpy"})
    assert not heavy, f"hacknip_mace.plugin imports {heavy}"


def test_isolated_atom_has_finite_features(mace):
    """An atom with no neighbour within the cutoff still gets features (the embedding passed through)."""
    (features,) = mace.per_atom_features([Atoms("Cu", cell=[20.0, 20.0, 20.0], pbc=True)], [0, 1, 2])
    assert all(np.isfinite(features[layer]).all() for layer in (0, 1, 2))
    salt = molecule("H2O") + Atoms("Li", positions=[[9.0, 0.0, 0.0]])  # a Li far from the rest, no cell
    (stray,) = mace.per_atom_features([salt], [0, 1, 2])
    assert all(stray[layer].shape == (4, mace.layer_widths[layer]) and np.isfinite(stray[layer]).all()
               for layer in (0, 1, 2))


def test_mace_models_are_not_declared_safe_to_load():
    """A .model file is a pickled nn.Module: loading it unpickles, so the specs must not claim safe checkpoints."""
    assert not any(spec.safe_checkpoints for spec in backbone_specs().values() if spec.package == "hacknip-mace")
