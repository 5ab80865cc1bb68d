"""A conformance suite that any backbone plugin runs against itself.

Use it from your plugin's tests by subclassing and providing a ``backbone`` fixture::

    import pytest
    from hacknip.plugins.testing import BackboneConformance

    class TestMyBackbone(BackboneConformance):
        @pytest.fixture(scope="class")
        @classmethod
        def backbone(cls):
            return MyBackbone(checkpoint="tests/data/tiny.pt")

Override the ``structures`` fixture to test on elements your model knows. Each check is a separate test, so a
failure names exactly which promise of the :class:`hacknip.plugins.backbone.Backbone` protocol is broken.

Among them: an element outside ``supported_elements`` must raise :class:`hacknip.errors.BadStructureError` with a
one-line message, not features and not any other exception, which hacknip would take for a bug. An atom with no
neighbour within the cutoff (a lone ion, a single-atom molecule) is not bad input: it must get finite features of the
right shape (what the library gives it, e.g. its embedding with no messages), or at worst ``BadStructureError``.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from hacknip.errors import BadStructureError
from hacknip.plugins.backbone import Backbone, concurrent_batches, identity_key

RTOL = 1e-4
ATOL = 1e-5


def reference_structures() -> list[Atoms]:
    """Small periodic crystals of common elements, one of them a skewed triclinic cell."""
    rattled = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    rattled.rattle(stdev=0.05, seed=0)
    triclinic = Atoms(
        "LiO2",
        cell=[[3.1, 0.0, 0.0], [1.2, 3.3, 0.0], [0.7, 0.9, 3.6]],
        scaled_positions=[[0.0, 0.0, 0.0], [0.31, 0.27, 0.44], [0.68, 0.71, 0.58]],
        pbc=True,
    )
    return [bulk("Si", "diamond", a=5.43), bulk("Cu", "fcc", a=3.61), rattled, triclinic]


def isolated_atom(element: int, cutoff: float) -> Atoms:
    """One atom alone in a periodic box wider than ``cutoff``: no neighbour within the cutoff, not even its own
    periodic images (a lone ion or a noble-gas atom, as a chemist may featurise one)."""
    side = float(cutoff) + 3.0
    return Atoms(numbers=[element], positions=[[side / 2] * 3], cell=[side] * 3, pbc=True)


def _assert_one_line(error: BadStructureError, what: str) -> None:
    message = str(error)
    assert message.strip() and "\n" not in message.strip(), f"{what}: the message should be one line: {message!r}"


def assert_bad_structure(backbone: Backbone, batch: list[Atoms], layers: list[int], what: str) -> BadStructureError:
    try:
        features = backbone.per_atom_features(batch, layers)
    except BadStructureError as error:
        _assert_one_line(error, what)
        return error
    except Exception as error:
        raise AssertionError(f"{what}: {backbone.name} raised {type(error).__name__} ({error}), not "
                             "hacknip.errors.BadStructureError; hacknip takes any other exception for a bug") from error
    raise AssertionError(f"{what}: {backbone.name} returned features ({len(features)} structures) instead of raising "
                         "hacknip.errors.BadStructureError")


def assert_features_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=what)


class BackboneConformance:
    """Checks every promise of the Backbone protocol. Subclass it and provide a ``backbone`` fixture."""

    @pytest.fixture(scope="class")
    @classmethod
    def structures(cls) -> list[Atoms]:
        return reference_structures()

    @pytest.fixture(scope="class")
    @classmethod
    def all_layers(cls, backbone) -> list[int]:
        return list(range(len(backbone.layer_widths)))

    @pytest.fixture(scope="class")
    @classmethod
    def one_pass(cls, backbone, structures, all_layers):
        return backbone.per_atom_features(structures, all_layers)

    def test_satisfies_protocol(self, backbone):
        assert isinstance(backbone, Backbone)
        assert isinstance(backbone.name, str) and backbone.name
        assert backbone.cutoff > 0
        assert len(backbone.layer_widths) >= 1 and all(w > 0 for w in backbone.layer_widths)
        assert isinstance(backbone.needs_supercell, bool)
        if backbone.supported_elements is not None:
            assert all(1 <= z <= 118 for z in backbone.supported_elements)

    def test_identity_is_json_and_stable(self, backbone):
        identity = backbone.identity()
        assert json.loads(json.dumps(identity)) == identity
        assert identity_key(identity) == identity_key(backbone.identity())

    def test_layer_widths_match_features(self, backbone, structures, one_pass, all_layers):
        assert len(one_pass) == len(structures)
        for atoms, features in zip(structures, one_pass):
            assert sorted(features) == all_layers
            for layer in all_layers:
                assert features[layer].shape == (len(atoms), backbone.layer_widths[layer])
                assert np.isfinite(features[layer]).all()

    def test_one_pass_equals_truncated_runs(self, backbone, structures, one_pass, all_layers):
        for layer in all_layers:
            truncated = backbone.per_atom_features(structures, [layer])
            for index, features in enumerate(truncated):
                assert list(features) == [layer]
                assert_features_close(features[layer], one_pass[index][layer], f"layer {layer}, structure {index}")

    def test_deterministic(self, backbone, structures, one_pass, all_layers):
        again = backbone.per_atom_features(structures, all_layers)
        for first, second in zip(one_pass, again):
            for layer in all_layers:
                np.testing.assert_array_equal(first[layer], second[layer])

    def test_batch_equals_one_by_one(self, backbone, structures, one_pass, all_layers):
        for index, atoms in enumerate(structures):
            (single,) = backbone.per_atom_features([atoms], all_layers)
            for layer in all_layers:
                assert_features_close(single[layer], one_pass[index][layer], f"layer {layer}, structure {index}")

    def test_concurrent_batches_claim(self, backbone, structures, one_pass, all_layers):
        """A backbone that lets featurize run its batches in several threads at once must give each the features it
        gives alone (hooks on shared modules that capture every thread's pass, for one, would mix them up)."""
        if not concurrent_batches(backbone):
            pytest.skip(f"{backbone.name} does not declare concurrent_batches")
        order = [index for _ in range(3) for index in range(len(structures))]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda index: backbone.per_atom_features([structures[index]], all_layers), order))
        for index, (features,) in zip(order, results):
            for layer in all_layers:
                assert_features_close(features[layer], one_pass[index][layer],
                                      f"concurrent batches, layer {layer}, structure {index}")

    def test_supercell_claim(self, backbone, structures, one_pass, all_layers):
        """A backbone that says it needs no supercell must give the same mean embedding for a 2x2x2 supercell."""
        if backbone.needs_supercell:
            pytest.skip(f"{backbone.name} declares that it needs cutoff-sized supercells")
        supercells = [atoms.repeat((2, 2, 2)) for atoms in structures]
        for index, features in enumerate(backbone.per_atom_features(supercells, all_layers)):
            for layer in all_layers:
                assert_features_close(
                    features[layer].mean(axis=0), one_pass[index][layer].mean(axis=0),
                    f"supercell invariance, layer {layer}, structure {index}",
                )

    def test_empty_batch(self, backbone, all_layers):
        assert backbone.per_atom_features([], all_layers) == []

    def test_isolated_atom_gets_finite_features(self, backbone, structures, one_pass, all_layers):
        """An atom with no neighbour within the cutoff, alone in a periodic box wider than it, in a batch after a good
        structure: finite features of the right shape (the good structure's unchanged), or BadStructureError with a
        one-line message; never another exception, which hacknip would take for a bug."""
        alone = isolated_atom(int(structures[0].numbers[0]), backbone.cutoff)
        what = f"{alone.get_chemical_formula()} alone in a {alone.cell[0, 0]:g} Å periodic box"
        try:
            features = backbone.per_atom_features([structures[0], alone], all_layers)
        except BadStructureError as error:
            _assert_one_line(error, what)
            return
        except Exception as error:
            raise AssertionError(f"{what}: {backbone.name} raised {type(error).__name__} ({error}); an isolated atom "
                                 "must get finite features or hacknip.errors.BadStructureError, and hacknip takes any "
                                 "other exception for a bug") from error
        assert len(features) == 2, f"{what}: {len(features)} results for 2 structures"
        for layer in all_layers:
            values = features[1][layer]
            assert values.shape == (1, backbone.layer_widths[layer]), f"{what}: layer {layer} has shape {values.shape}"
            assert np.isfinite(values).all(), f"{what}: non-finite features at layer {layer}"
            assert_features_close(features[0][layer], one_pass[0][layer],
                                  f"{what}: layer {layer} of structure 0 in the same batch")

    def test_unknown_element_is_a_bad_structure(self, backbone, structures, all_layers):
        if backbone.supported_elements is None:
            pytest.skip(f"{backbone.name} accepts any element")
        unknown = next((z for z in range(1, 119) if z not in backbone.supported_elements), None)
        if unknown is None:
            pytest.skip(f"{backbone.name} supports every element")
        side = min(3.0, 0.6 * float(backbone.cutoff))  # neighbours within the cutoff: only the element is wrong
        crystal = Atoms(numbers=[unknown], cell=[side] * 3, pbc=True)
        assert_bad_structure(backbone, [structures[0], crystal], all_layers, f"element Z = {unknown}")

    def test_rejects_unknown_layer(self, backbone, structures):
        with pytest.raises(ValueError, match="layer"):
            backbone.per_atom_features(structures[:1], [len(backbone.layer_widths)])
