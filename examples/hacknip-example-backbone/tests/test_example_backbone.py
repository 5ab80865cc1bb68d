"""The example plugin's own tests: hacknip's conformance suite, plus its loading paths."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from hacknip.errors import BadStructureError
from hacknip.plugins.backbone import identity_key
from hacknip.plugins.registry import backbone_specs, load_backbone
from hacknip.plugins.testing import BackboneConformance, reference_structures
from hacknip_example_backbone.backbone import load, make_weights, save_weights


class TestExampleBackbone(BackboneConformance):
    """Every promise of hacknip's Backbone protocol, including needs_supercell=False (a 2x2x2 supercell must give the
    same mean embedding)."""

    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls):
        return load(seed=0)


def test_checkpoint_loads_through_the_registry(tmp_path):
    path = tmp_path / "weights.npz"
    save_weights(path, seed=3)
    from_file = load_backbone(f"example-radial:{path}")
    structures = reference_structures()
    expected = load(seed=3).per_atom_features(structures, [3])
    for ours, theirs in zip(from_file.per_atom_features(structures, [3]), expected):
        np.testing.assert_array_equal(ours[3], theirs[3])
    assert from_file.identity()["checkpoint_sha256"] != load(seed=3).identity()["checkpoint_sha256"]


def test_identity_follows_the_weights():
    assert identity_key(load(seed=0).identity()) == identity_key(load(seed=0).identity())
    assert identity_key(load(seed=0).identity()) != identity_key(load(seed=1).identity())


def test_missing_checkpoint_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_weights"):
        load(tmp_path / "nothing.npz")


def test_an_isolated_atom_is_featurised_from_its_embedding():
    """A lone ion (no neighbour within the cutoff) is not bad input: no message reaches it, so each layer is the tanh
    of the one before, starting from the element's embedding."""
    backbone = load(seed=0)
    alone = Atoms("Li", positions=[[10.0, 10.0, 10.0]], cell=[20.0, 20.0, 20.0], pbc=True)
    (features,) = backbone.per_atom_features([alone], [0, 1, 2, 3])
    expected = backbone.embedding[3]
    for layer in range(4):
        np.testing.assert_allclose(features[layer][0], expected.astype(np.float32), rtol=1e-6, err_msg=f"layer {layer}")
        expected = np.tanh(expected)


def test_an_element_without_an_embedding_row_is_a_bad_structure(tmp_path):
    path = tmp_path / "light.npz"
    weights = make_weights(seed=0)
    np.savez(path, embedding=weights["embedding"][:11], interactions=weights["interactions"])  # H..Ne
    light = load(path)
    assert light.supported_elements == frozenset(range(1, 11))
    with pytest.raises(BadStructureError, match=r"\[11\].*structure 1"):
        light.per_atom_features([bulk("C", "diamond", a=3.57), bulk("Na", "bcc", a=4.23)], [0])


class RunsCode:
    """Unpickling this object creates ``marker``: what a malicious checkpoint could do with any code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    """Checkpoints are read with np.load(allow_pickle=False), as the spec's safe_checkpoints=True promises."""
    marker, path = tmp_path / "marker", tmp_path / "evil.npz"
    payload = np.empty(1, dtype=object)
    payload[0] = RunsCode(marker)
    np.savez(path, embedding=payload, interactions=np.zeros((3, 16, 16)))
    with pytest.raises(ValueError, match="allow_pickle"):
        load(path)
    assert not marker.exists()
    assert backbone_specs()["example-radial"].safe_checkpoints


def test_the_command_line_featurises_with_it(tmp_path):
    """hacknip passes --device to every loader: the example takes it (and refuses a GPU it cannot use)."""
    import pandas as pd
    from click.testing import CliRunner
    from pymatgen.io.ase import AseAtomsAdaptor

    from hacknip.cli import cli

    cells = [bulk("Cu", "fcc", a=3.6), bulk("NaCl", "rocksalt", a=5.64), bulk("Si", "diamond", a=5.43),
             bulk("Fe", "bcc", a=2.87)]
    table = tmp_path / "data.csv"
    cifs = [AseAtomsAdaptor.get_structure(a).to(fmt="cif") for a in cells]
    pd.DataFrame({"cif": cifs, "y": range(4)}).to_csv(table, index=False)
    result = CliRunner().invoke(cli, ["featurize", "--data", str(table), "--backbone", "example-radial",
                                      "--store", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    assert "example-radial: 4 computed" in result.output
    with pytest.raises(ValueError, match="CPU only"):
        load(device="cuda")
