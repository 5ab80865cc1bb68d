"""hacknip-orb on orb-models' own architectures with random weights (no network here for the pretrained ones).

The orb-v2 architecture is built once with a fixed seed, saved as a state_dict checkpoint (the format of orb-models'
published weights) and loaded through the plugin's real path: ``load_backbone("orb-v2:/path/orb-v2.ckpt")``.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import requests
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list
from conftest import RunsCode
from orb_models.forcefield import pretrained
from orb_models.forcefield.atomic_system import SystemConfig, ase_atoms_to_atom_graphs

from hacknip.data.structures import Dataset, Sample
from hacknip.errors import BadStructureError, UntrustedFileError
from hacknip.features.featurize import featurize, layer_matrix
from hacknip.features.supercell import supercell_repeats
from hacknip.plugins.backbone import file_sha256, identity_key
from hacknip.plugins.registry import backbone_specs, load_backbone
from hacknip.plugins.testing import BackboneConformance, TrainableConformance, reference_structures
from hacknip.store import FeatureStore
from hacknip_orb import backbone as orb_backbone
from hacknip_orb.plugin import MODELS

ALL_V2_LAYERS = list(range(16))


@pytest.fixture(scope="session")
def orb_v2_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    network = pretrained.orb_v2_architecture(device="cpu")
    path = tmp_path_factory.mktemp("orb") / "orb-v2-random.ckpt"
    torch.save(network.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def capped(orb_v2_checkpoint):
    """orb-v2 as orb-models >= 0.5 runs it: 6 Å, at most 20 neighbours."""
    return load_backbone(f"orb-v2:{orb_v2_checkpoint}")


@pytest.fixture(scope="module")
def uncapped(orb_v2_checkpoint):
    return load_backbone(f"orb-v2:{orb_v2_checkpoint}", max_num_neighbors="inf")


class TestUncappedOrbV2Conformance(BackboneConformance):
    """needs_supercell is False, so the suite checks that a 2x2x2 supercell gives the same mean embedding."""

    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls, uncapped):
        assert not uncapped.needs_supercell
        return uncapped


class TestCappedOrbV2Conformance(BackboneConformance):
    spec_name = "orb-v2"  # random weights in orb-v2's architecture: hacknip list's orb-v2 row must describe it

    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls, capped):
        assert capped.needs_supercell
        return capped


class TestOrbV2Trainable(TrainableConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls, orb_v2_checkpoint):
        return load_backbone(f"orb-v2:{orb_v2_checkpoint}")  # its own copy: the suite changes requires_grad


def test_fused_path_follows_weights_changed_by_training(orb_v2_checkpoint):
    """The fused path holds copies of the edge MLPs' weights; after an optimiser step through the trainable network
    it is rebuilt, so per_atom_features still equals orb's own forward on the new weights."""
    fused, own = (load_backbone(f"orb-v2:{orb_v2_checkpoint}", inference=inference) for inference in ("fused", "orb"))
    structures = reference_structures()[:2]
    fused.per_atom_features(structures, [2])  # the fused path is built and used before training
    network = fused.trainable(2)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    sum(output.square().mean() for output in network(network.inputs(structures))).backward()
    optimizer.step()
    own.network.load_state_dict(fused.network.state_dict())
    edge_weight = "model.gnn_stacks.1._edge_mlp.mlp.NN-0.weight"
    assert not torch.equal(fused.network.state_dict()[edge_weight],
                           torch.load(orb_v2_checkpoint, weights_only=True)[edge_weight])
    for ours, theirs in zip(*(backbone.per_atom_features(structures, [1, 2]) for backbone in (fused, own))):
        for layer in (1, 2):
            np.testing.assert_allclose(ours[layer], theirs[layer], rtol=1e-5, atol=2e-5, err_msg=f"layer {layer}")


def test_capped_graph_really_is_not_supercell_invariant(capped, uncapped):
    """The reason capped ORB declares needs_supercell: the 20-neighbour cut falls inside a degenerate shell (fcc Cu:
    12 + 6 neighbours, then 2 of the 24 third neighbours), and which 2 depends on the cell the graph is built from."""
    copper = bulk("Cu", "fcc", a=3.61)
    for backbone, differs in ((capped, True), (uncapped, False)):
        (primitive,), (supercell,) = (backbone.per_atom_features([atoms], [0, 15])
                                      for atoms in (copper, copper.repeat((2, 2, 2))))
        difference = np.abs(primitive[15].mean(axis=0) - supercell[15].mean(axis=0)).max()
        assert (difference > 1e-3) == differs, difference
        np.testing.assert_allclose(primitive[0].mean(axis=0), supercell[0].mean(axis=0), atol=1e-5)  # no messages yet


def test_layers_are_the_encoder_and_each_gnn_stack(orb_v2_checkpoint):
    """Layer 15 is exactly what orb's heads read (the GNS output); layer 0 is the encoder's node output (orb's own
    forward here; the fused path's agreement with it is tested below)."""
    capped = load_backbone(f"orb-v2:{orb_v2_checkpoint}", inference="orb")
    structures = reference_structures()
    features = capped.per_atom_features(structures, [0, 15])
    batch = orb_backbone.batch_graphs([capped.graph(atoms) for atoms in structures])
    with torch.no_grad():
        gns = capped.network.model
        final = gns(batch)["node_features"]
        encoded, _ = gns._encoder(gns.featurize_nodes(batch), gns.featurize_edges(batch))
    np.testing.assert_array_equal(np.concatenate([f[15] for f in features]), final.numpy())
    np.testing.assert_array_equal(np.concatenate([f[0] for f in features]), encoded.numpy())


def test_local_checkpoint_identity(capped, uncapped, orb_v2_checkpoint):
    identity = capped.identity()
    assert capped.name == f"orb-v2:{orb_v2_checkpoint}"
    assert identity["model"] == "orb-v2" and identity["library"] == "orb-models"
    assert identity["checkpoint_sha256"] == file_sha256(orb_v2_checkpoint)
    assert (identity["radius"], identity["max_num_neighbors"]) == (6.0, 20)
    assert identity["dtype"] == "float32" and identity["library_version"] == orb_backbone.ORB_VERSION
    assert uncapped.identity()["max_num_neighbors"] == "unlimited"
    assert identity_key(identity) != identity_key(uncapped.identity())
    assert capped.supported_elements == frozenset(range(1, 118))
    assert capped.layer_widths == (256,) * 16


def test_paper_preset_has_the_papers_graph(orb_v2_checkpoint, capped):
    paper = load_backbone(f"orb-v2-paper:{orb_v2_checkpoint}")
    identity = paper.identity()
    assert (identity["radius"], identity["max_num_neighbors"]) == (10.0, 20)
    assert identity["model"] == "orb-v2" and identity["checkpoint_sha256"] == capped.identity()["checkpoint_sha256"]
    assert paper.cutoff == 10.0 and paper.needs_supercell and paper.layer_widths == capped.layer_widths
    assert identity_key(identity) != identity_key(capped.identity())
    assert identity["supercell_rule"] == paper.supercell_rule == "lattice-lengths"
    assert capped.identity()["supercell_rule"] == "perpendicular-width"
    rule_changed = load_backbone(f"orb-v2-paper:{orb_v2_checkpoint}", supercell_rule="perpendicular-width")
    assert identity_key(rule_changed.identity()) != identity_key(identity)
    # orb-models 0.5 refuses periodic graphs beyond 6 Å; hacknip builds them over every image that can hold a neighbour.
    silicon = bulk("Si", "diamond", a=5.43)
    graph = paper.graph(silicon)
    assert graph.radius == 10.0 and np.bincount(graph.senders.numpy()).tolist() == [20, 20]
    assert graph.edge_features["vectors"].norm(dim=1).max() < 10.0
    (features,) = paper.per_atom_features([silicon], [15])
    assert features[15].shape == (2, 256) and np.isfinite(features[15]).all()


@pytest.mark.parametrize("radius", [6.0, 10.0])
def test_uncapped_graph_holds_every_neighbour_within_the_radius(orb_v2_checkpoint, radius):
    backbone = load_backbone(f"orb-v2:{orb_v2_checkpoint}", max_num_neighbors="inf", radius=radius)
    for atoms in [*reference_structures(), molecule("C6H6")]:
        graph = backbone.graph(atoms)
        ours = np.array(sorted(zip(graph.senders.tolist(), graph.receivers.tolist(),
                                   graph.edge_features["vectors"].norm(dim=1).tolist())))
        first, second, distances = neighbor_list("ijd", atoms, radius)  # ase's exact periodic neighbour list
        reference = np.array(sorted(zip(first.tolist(), second.tolist(), distances.tolist())))
        assert ours.shape == reference.shape, atoms
        np.testing.assert_array_equal(ours[:, :2], reference[:, :2])
        np.testing.assert_allclose(ours[:, 2], reference[:, 2], atol=1e-4)
        if radius <= 6.0:  # orb's own builder with a cap no atom reaches gives the same graph
            theirs = ase_atoms_to_atom_graphs(atoms, SystemConfig(radius, 100_000), edge_method="knn_scipy")
            assert graph.n_edge.tolist() == theirs.n_edge.tolist()


def test_registered_specs_match_the_loaded_backbones(orb_v2_checkpoint, capped):
    specs = backbone_specs()
    orb_specs = {name: spec for name, spec in specs.items() if spec.package == "hacknip-orb"}
    assert set(orb_specs) == set(MODELS)
    assert all(spec.library == "orb-models" and not spec.verified for spec in orb_specs.values())
    assert orb_specs["orb-v2"].needs_supercell  # the default model's policy: capped at 20 -> supercells
    assert not orb_specs["orb-v3-direct-inf-omat"].needs_supercell
    for name in ("orb-v2", "orb-v2-paper"):
        loaded = capped if name == "orb-v2" else load_backbone(f"{name}:{orb_v2_checkpoint}")
        spec = orb_specs[name]
        assert (spec.cutoff, spec.layer_widths, spec.needs_supercell, spec.supercell_rule) == (
            loaded.cutoff, loaded.layer_widths, loaded.needs_supercell, loaded.supercell_rule)


def test_featurize_replays_the_papers_supercells(orb_v2_checkpoint, tmp_path):
    """The paper preset is featurised on the paper's supercells (every lattice vector >= 10 Å), which differ from the
    perpendicular-width rule (5.6x more atoms here) for a skewed cell."""
    paper = load_backbone(f"orb-v2-paper:{orb_v2_checkpoint}")
    skewed = Atoms("LiO", cell=[[4.0, 0.0, 0.0], [3.2, 1.1, 0.0], [2.1, 0.6, 2.4]],
                   scaled_positions=[[0, 0, 0], [0.4, 0.5, 0.6]], pbc=True)
    lattice_lengths, perpendicular = ((3, 3, 4), (8, 10, 5))
    assert supercell_repeats(skewed, 10.0, "lattice-lengths") == lattice_lengths
    assert supercell_repeats(skewed, 10.0, "perpendicular-width") == perpendicular
    report = featurize(Dataset([Sample("skewed", "row 0", skewed, 0.0)], "y", "test"), paper, FeatureStore(tmp_path),
                       layers=[15])
    stored = layer_matrix(report.features, report.keys, [15], ("mean",))[0]
    (expected,) = paper.per_atom_features([skewed.repeat(lattice_lengths)], [15])
    np.testing.assert_allclose(stored, expected[15].mean(axis=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [{}, {"max_num_neighbors": "inf"}, {"radius": 10.0}])
def test_fused_path_gives_orb_models_own_features(orb_v2_checkpoint, options):
    """Every layer of the fused inference path equals orb-models' own forward pass, for capped, uncapped and 10 Å
    graphs, a batch of crystals and a molecule."""
    fused, own = (load_backbone(f"orb-v2:{orb_v2_checkpoint}", inference=inference, **options)
                  for inference in ("fused", "orb"))
    assert (fused.inference, own.inference) == ("fused", "orb")
    assert fused.identity() == own.identity()  # same features: the path is not part of the store key
    structures = [*reference_structures(), bulk("Cu", "fcc", a=3.61).repeat((2, 2, 2)), molecule("C6H6")]
    for ours, theirs in zip(*(backbone.per_atom_features(structures, ALL_V2_LAYERS) for backbone in (fused, own))):
        for layer in ALL_V2_LAYERS:
            np.testing.assert_allclose(ours[layer], theirs[layer], rtol=1e-5, atol=2e-5, err_msg=f"layer {layer}")


def test_model_table_matches_orb_models_own_loaders(monkeypatch):
    """Every orb v2/v3 model of orb-models' pretrained module is registered, with the layer count, width, radius and
    neighbour cap that its loader builds (the loader runs for real; only the weight loading is skipped)."""
    offered = {name for name in pretrained.ORB_PRETRAINED_MODELS
               if not name.endswith("v1") and "v1-" not in name and not name.startswith("separate-")}
    assert offered == set(MODELS) - {"orb-v2-paper"}
    monkeypatch.setattr(pretrained, "load_model", lambda model, *args, **kwargs: model)
    for name, model in MODELS.items():
        network = getattr(pretrained, model.loader)(device="cpu", compile=False)
        gns = network.model
        assert len(gns.gnn_stacks) == model.n_message_passing, name
        assert {stack.latent_dim for stack in gns.gnn_stacks} == {model.latent_dim}, name
        assert gns.atom_emb.embeddings.num_embeddings == 119, name
        config = network.system_config
        assert config.max_num_neighbors == model.orb_max_num_neighbors, name
        assert config.radius == (6.0 if name == "orb-v2-paper" else model.radius), name
        assert (gns.conditioner is not None) == model.charge_spin, name
        assert model.needs_supercell == (model.max_num_neighbors == 20), name


def test_every_spec_factory_exists():
    for name, spec in backbone_specs().items():
        if spec.package == "hacknip-orb":
            module, _, attr = spec.factory.partition(":")
            assert module == "hacknip_orb.backbone" and callable(getattr(orb_backbone, attr)), name


def test_offline_load_by_name_says_to_pass_a_checkpoint(monkeypatch, tmp_path):
    """No network: orb-models' own loader (cached_path, requests) fails; hacknip says what to do in one line."""
    def no_network(*args, **kwargs):
        raise requests.exceptions.ConnectionError("simulated: Name or service not known")

    monkeypatch.setattr("cached_path.common.CACHE_DIRECTORY", tmp_path)  # no cached copy to fall back on
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", no_network)
    with pytest.raises(orb_backbone.WeightsUnavailableError) as raised:
        load_backbone("orb-v2")
    message = str(raised.value)
    assert isinstance(raised.value, FileNotFoundError)  # the CLI turns these into one line, not a traceback
    assert "could not get the pretrained orb-v2 weights" in message
    assert "--backbone orb-v2:/path/to/orb-v2-20241011.ckpt" in message and "\n" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_load_by_name_goes_through_orb_models_loader(monkeypatch, tmp_path, orb_v2_checkpoint, capped):
    """By name, orb-models' loader fetches its URL through cached_path; offline it falls back on a cached copy."""
    from cached_path.meta import Meta
    from cached_path.util import resource_to_filename

    url = orb_backbone.default_weights(pretrained.orb_v2)
    monkeypatch.setattr("cached_path.common.CACHE_DIRECTORY", tmp_path)
    cached = tmp_path / resource_to_filename(url)  # as if an earlier run had downloaded it
    shutil.copy(orb_v2_checkpoint, cached)
    Meta.new(url, cached).to_file()
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", lambda *args, **kwargs: (_ for _ in ()).throw(
        requests.exceptions.ConnectionError("simulated: offline")))
    by_name = load_backbone("orb-v2")
    assert by_name.name == "orb-v2"
    assert by_name.identity() == capped.identity()  # same weights file, same graph: same features in the store
    silicon = bulk("Si", "diamond", a=5.43)
    np.testing.assert_array_equal(by_name.per_atom_features([silicon], [3])[0][3],
                                  capped.per_atom_features([silicon], [3])[0][3])


def test_missing_checkpoint_and_bad_options_are_reported(tmp_path, orb_v2_checkpoint):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone(f"orb-v2:{tmp_path / 'nothing.ckpt'}")
    with pytest.raises(ValueError, match="max_num_neighbors"):
        orb_backbone.load(orb_v2_checkpoint, max_num_neighbors=0)
    with pytest.raises(ValueError, match="precision"):
        orb_backbone.load(orb_v2_checkpoint, precision="float16")
    with pytest.raises(ValueError, match="unknown ORB model"):
        orb_backbone.load(orb_v2_checkpoint, model="orb-v9")
    assert orb_backbone.neighbour_cap("inf", 20) == math.inf and orb_backbone.neighbour_cap(None, 20) == 20


def test_unsupported_element_is_a_bad_structure(capped):
    oganesson = Atoms("Og", cell=[4.0, 4.0, 4.0], pbc=True)
    with pytest.raises(BadStructureError, match=r"\[118\].*structure 1"):
        capped.per_atom_features([bulk("Cu", "fcc", a=3.61), oganesson], [0])


@pytest.mark.parametrize("preset", ["orb-v2", "orb-v2-paper"])
def test_isolated_atom_gets_finite_features(orb_v2_checkpoint, preset):
    """An atom with no neighbour within the radius (a lone ion, a salt's Li far from its anion) is featurised as orb
    does it, from its embedding with no messages: for orb's own graphs and the 10 Å graphs hacknip builds over
    periodic images."""
    backbone = load_backbone(f"{preset}:{orb_v2_checkpoint}")
    layers = list(range(len(backbone.layer_widths)))
    alone = Atoms("Li", positions=[[12.0, 12.0, 12.0]], cell=[24.0, 24.0, 24.0], pbc=True)
    salt = molecule("H2O") + Atoms("Li", positions=[[14.0, 0.0, 0.0]])  # no cell: open boundaries
    _, single, stray = backbone.per_atom_features([bulk("Si", "diamond", a=5.43), alone, salt], layers)
    for layer in layers:
        width = backbone.layer_widths[layer]
        assert single[layer].shape == (1, width) and np.isfinite(single[layer]).all(), layer
        assert stray[layer].shape == (4, width) and np.isfinite(stray[layer]).all(), layer
    (again,) = backbone.per_atom_features([alone], layers)  # its batch mates do not reach it
    for layer in layers:
        np.testing.assert_allclose(again[layer], single[layer], rtol=1e-4, atol=1e-5)


def test_missing_charge_and_spin_is_a_bad_structure(capped, monkeypatch):
    """An OMol model needs atoms.info charge and spin (or defaults given at loading): a structure without is bad input."""
    monkeypatch.setattr(capped, "charge_spin", True)
    with pytest.raises(BadStructureError, match=r"structure 3 \(H2O\) has no atoms.info\['charge', 'spin'\]"):
        capped._prepared(molecule("H2O"), 3)


def test_a_checkpoint_that_would_run_code_is_refused(capped, tmp_path, monkeypatch):
    """orb-models reads state_dicts with torch.load(weights_only=True): a file that needs unpickling is refused."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # as importing mace sets it: explicit weights_only wins
    marker = tmp_path / "marker"
    path = tmp_path / "evil.ckpt"
    torch.save({**capped.network.state_dict(), "payload": RunsCode(marker)}, path)
    with pytest.raises(UntrustedFileError, match=r"evil\.ckpt: not a plain ORB state_dict.*os\.makedirs"):
        load_backbone(f"orb-v2:{path}")
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: unpickling the file runs it
    assert marker.exists()
    assert all(spec.safe_checkpoints for spec in backbone_specs().values() if spec.package == "hacknip-orb")


def test_molecules_and_slabs(capped):
    water = molecule("H2O")
    boxed = water.copy()
    boxed.center(vacuum=capped.cutoff)
    boxed.pbc = True
    slab = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((1, 1, 2))
    slab.pbc = [True, True, False]  # orb itself refuses partly periodic systems
    free, periodic, open_slab = capped.per_atom_features([water, boxed, slab], [15])
    np.testing.assert_allclose(free[15], periodic[15], rtol=1e-4, atol=1e-4)
    assert open_slab[15].shape == (8, 256)


def test_calculator_uses_the_same_network_and_graph(capped):
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.calc = capped.calculator()
    assert atoms.calc.model is capped.network
    assert np.isfinite(atoms.get_potential_energy()) and atoms.get_forces().shape == (2, 3)


def test_plugin_module_does_not_import_torch_or_orb():
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import hacknip_orb.plugin"],
                            capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    heavy = sorted(name for name in imported if name.split(".")[0] in {"torch", "orb_models", "numpy", "ase"})
    assert not heavy, f"hacknip_orb.plugin imports {heavy}"
