"""The example plugin's own tests: hacknip's conformance suite, plus its loading paths."""

from __future__ import annotations

import numpy as np
import pytest

from hacknip.backbone import identity_key
from hacknip.registry import load_backbone
from hacknip.testing import BackboneConformance, reference_structures
from hacknip_example_backbone.backbone import load, save_weights


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
