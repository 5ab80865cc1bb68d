"""Conformance suites that any backbone or head plugin runs against itself: :class:`BackboneConformance`,
:class:`ForcesConformance` for a backbone's batched energy and forces, and :class:`HeadConformance` (at the end of
this module).

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

import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from hacknip.errors import BadStructureError
from hacknip.plugins.backbone import Backbone, concurrent_batches, identity_key
from hacknip.plugins.head import CLASSIFICATION, REGRESSION, Head, search_space_of

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


def sparse_structures(cutoff: float) -> list[Atoms]:
    """Structures whose graphs are sparse, where a model may skip modules for some inputs (e.g. bond or angle
    convolutions when no bond is short enough): a two-atom molecule in a box wider than ``cutoff`` (periodic, so every
    backbone takes it), the same molecule without periodicity, and a rock-salt cell with long (4.5 Å) bonds."""
    side = float(cutoff) + 6.0
    molecule = Atoms("H2", positions=[[side / 2, side / 2, side / 2 - 0.37], [side / 2, side / 2, side / 2 + 0.37]],
                     cell=[side] * 3, pbc=True)
    free = molecule.copy()
    free.pbc = False
    return [molecule, free, bulk("CsI", "rocksalt", a=9.0)]


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
    """Equal to float32 precision: ``RTOL`` of each value, and ``ATOL`` of the array's largest value (at least 1).
    An element near zero is a sum of terms the size of its neighbours, so its rounding error scales with them: two
    orders of summation left 1.2e-5 on -2.2e-4 beside values of 8 in ORB's 15th layer on one CPU and not another."""
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL * scale, err_msg=what)


class _OnReferenceStructures:
    @pytest.fixture(scope="class")
    @classmethod
    def structures(cls) -> list[Atoms]:
        return reference_structures()


def assert_identity_json_and_stable(plugin: Any) -> None:
    """A backbone's or descriptor's ``identity()``: JSON as it is, and the same key when asked again."""
    identity = plugin.identity()
    assert json.loads(json.dumps(identity)) == identity
    assert identity_key(identity) == identity_key(plugin.identity())


class BackboneConformance(_OnReferenceStructures):
    """Checks every promise of the Backbone protocol. Subclass it and provide a ``backbone`` fixture."""

    spec_name: str | None = None
    """The registered name whose spec (cutoff, layer widths, supercells) the backbone must match, when the fixture
    loads it from a checkpoint of that architecture (``"orb-v2"``); by default the backbone's own name."""

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

    def test_features_are_float_numpy_arrays(self, one_pass, all_layers):
        """numpy arrays of float32 or float64 (not torch tensors, not ints): the store and pooling read them as such."""
        for index, features in enumerate(one_pass):
            for layer in all_layers:
                values = features[layer]
                assert isinstance(values, np.ndarray), \
                    f"structure {index}, layer {layer}: a {type(values).__module__}.{type(values).__name__}, not a " \
                    "numpy array (call .detach().cpu().numpy() on tensors)"
                assert values.dtype in (np.float32, np.float64), \
                    f"structure {index}, layer {layer}: dtype {values.dtype}, expected float32 or float64"

    def test_spec_matches_the_loaded_model(self, backbone):
        """What ``hacknip list`` shows (the registered spec: cutoff, layer widths, supercells) is what loads."""
        from hacknip.plugins.registry import backbone_specs

        spec = backbone_specs().get(self.spec_name or backbone.name)
        if spec is None:
            pytest.skip(f"{backbone.name} is not a registered name (a checkpoint's model may differ from its spec; set "
                        f"spec_name when it is of a registered architecture)")
        loaded = (float(backbone.cutoff), tuple(backbone.layer_widths), backbone.needs_supercell,
                  callable(getattr(backbone, "energies_and_forces", None)))
        registered = (float(spec.cutoff), tuple(spec.layer_widths), spec.needs_supercell, spec.batched_forces)
        assert loaded == registered, f"{spec.name}: the spec registers (cutoff, layer_widths, needs_supercell, " \
                                     f"batched_forces) = {registered}, the loaded model has {loaded}"

    def test_sparse_structures_reach_every_layer(self, backbone, all_layers):
        """Every layer is returned for sparse graphs too: capturing layers with hooks on modules that a model skips
        for some inputs (no bond short enough for a bond convolution) must not lose or fail those layers."""
        candidates = sparse_structures(backbone.cutoff)
        usable = [atoms for atoms in candidates if backbone.supported_elements is None
                  or set(atoms.numbers.tolist()) <= backbone.supported_elements]
        if not usable:
            pytest.skip(f"{backbone.name} knows none of the sparse structures' elements (H, Cs, I)")
        for atoms in usable:
            what = f"{atoms.get_chemical_formula()} ({'periodic' if atoms.pbc.any() else 'non-periodic'})"
            try:
                (features,) = backbone.per_atom_features([atoms], all_layers)
            except BadStructureError as error:  # a model may refuse a non-periodic input, with a clear line
                _assert_one_line(error, what)
                continue
            assert sorted(features) == all_layers, f"{what}: layers {sorted(features)} of {all_layers}"
            for layer in all_layers:
                assert features[layer].shape == (len(atoms), backbone.layer_widths[layer]), f"{what}, layer {layer}"
                assert np.isfinite(features[layer]).all(), f"{what}: non-finite features at layer {layer}"

    def test_identity_is_json_and_stable(self, backbone):
        assert_identity_json_and_stable(backbone)

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


class TrainableConformance:
    """Checks the fine-tuning extension (:mod:`hacknip.plugins.trainable`) of a backbone, at every layer: its groups
    partition the parameters; after a backward pass exactly the unfrozen parameters have gradients, under the default
    freezing and with everything before the layer unfrozen; the features keep their gradients and equal those of
    ``per_atom_features``. Subclass it and provide a ``backbone`` fixture, as for :class:`BackboneConformance`."""

    @pytest.fixture(scope="class")
    @classmethod
    def structures(cls) -> list[Atoms]:
        return reference_structures()[:2]

    @pytest.fixture(scope="class")
    @classmethod
    def all_layers(cls, backbone) -> list[int]:
        return list(range(len(backbone.layer_widths)))

    def test_offers_a_trainable_network(self, backbone):
        from hacknip.plugins.trainable import TrainableNetwork, is_trainable

        assert is_trainable(backbone)
        network = backbone.trainable(len(backbone.layer_widths) - 1)
        assert isinstance(network, TrainableNetwork)
        assert network.width == backbone.layer_widths[-1]
        assert isinstance(network.supports_mixed_precision, bool)

    def test_groups_partition_the_parameters(self, backbone, all_layers):
        from hacknip.plugins.trainable import FROZEN_BY_DEFAULT, INTERACTIONS, check_groups

        for layer in all_layers:
            groups = check_groups(backbone.trainable(layer), FROZEN_BY_DEFAULT)
            assert INTERACTIONS in groups
            if layer > 0:
                assert groups[INTERACTIONS], f"layer {layer}: no interaction parameters to train"

    @pytest.mark.parametrize("frozen", ["default", "nothing"])
    def test_gradients_reach_exactly_the_unfrozen_parameters(self, backbone, structures, all_layers, frozen):
        """With nothing frozen, exactly the parameters outside ``past_layer`` get gradients: a parameter filed in
        ``past_layer`` that does reach the layer (or one filed before it that does not) fails here."""
        from hacknip.plugins.trainable import FROZEN_BY_DEFAULT, PAST_LAYER, fixed_by_library, freeze

        names = FROZEN_BY_DEFAULT if frozen == "default" else ()
        for layer in all_layers:
            network = backbone.trainable(layer)
            groups = freeze(network, names)
            try:
                for parameter in network.parameters():
                    parameter.grad = None
                outputs = network(network.inputs(structures))
                parameters = dict(network.named_parameters())
                expected = {name for group, members in groups.items() if group not in (*names, PAST_LAYER)
                            for name in members if not fixed_by_library(parameters[name])}
                if not expected:
                    assert not any(output.requires_grad for output in outputs)
                    continue
                sum(output.square().mean() for output in outputs).backward()
                with_grad = {name for name, parameter in network.named_parameters() if parameter.grad is not None}
                assert with_grad == expected, (f"layer {layer}, frozen {names}: no gradient for "
                                               f"{sorted(expected - with_grad)[:5]}, unexpected gradient for "
                                               f"{sorted(with_grad - expected)[:5]}")
            finally:
                for parameter in network.parameters():
                    parameter.requires_grad_(not fixed_by_library(parameter))
                    parameter.grad = None

    def test_features_equal_per_atom_features(self, backbone, structures, all_layers):
        import torch

        expected = backbone.per_atom_features(structures, all_layers)
        for layer in all_layers:
            network = backbone.trainable(layer)
            with torch.no_grad():
                outputs = network(network.inputs(structures))
            assert len(outputs) == len(structures)
            for index, (output, atoms) in enumerate(zip(outputs, structures)):
                assert tuple(output.shape) == (len(atoms), backbone.layer_widths[layer])
                assert_features_close(output.detach().cpu().double().numpy(), expected[index][layer],
                                      f"layer {layer}, structure {index}: trainable network vs per_atom_features")


class ForcesConformance:
    """Checks a backbone's ``energies_and_forces`` (the batched energy and forces that relaxing molecules in batches
    uses; :mod:`hacknip.data.relaxation`): one energy (float, eV) and an ``(atoms, 3)`` float64 force array (eV/Å)
    per structure, the same in a batch as one at a time, the forces minus the energy's gradient (central finite
    differences) and summing to zero, a molecule without a cell handled, and the same numbers as the backbone's own
    ``calculator()`` when it has one. Subclass it and provide a ``backbone`` fixture, as for
    :class:`BackboneConformance`; override ``structures`` for elements your model knows."""

    energy_tolerance = 1e-4
    """eV: float32 networks sum per-atom energies in another order in a batch."""
    force_tolerance = 1e-4
    """eV/Å, between a batch and one at a time, and against the calculator."""
    finite_difference_step = 0.01
    """Å; central differences of a float32 energy are good to a few meV/Å at this step."""
    finite_difference_tolerance = 0.02
    """eV/Å, plus 5 % of the force."""

    @pytest.fixture(scope="class")
    @classmethod
    def structures(cls) -> list[Atoms]:
        from ase.build import molecule

        crystals = reference_structures()
        return [crystals[2], crystals[3], molecule("H2O"), molecule("CH3CH2OH")]

    @pytest.fixture(scope="class")
    @classmethod
    def batched(cls, backbone, structures) -> list[tuple[float, np.ndarray]]:
        return backbone.energies_and_forces(structures)

    def test_one_energy_and_force_array_per_structure(self, backbone, structures, batched):
        assert callable(getattr(backbone, "energies_and_forces", None))
        assert len(batched) == len(structures)
        for (energy, forces), atoms in zip(batched, structures, strict=True):
            assert isinstance(energy, float) and np.isfinite(energy)
            assert isinstance(forces, np.ndarray) and forces.dtype == np.float64 and forces.shape == (len(atoms), 3)
            assert np.isfinite(forces).all()
        assert backbone.energies_and_forces([]) == []

    def test_batch_equals_one_by_one(self, backbone, structures, batched):
        for (energy, forces), atoms in zip(batched, structures, strict=True):
            ((alone_energy, alone_forces),) = backbone.energies_and_forces([atoms])
            assert energy == pytest.approx(alone_energy, abs=self.energy_tolerance)
            np.testing.assert_allclose(forces, alone_forces, atol=self.force_tolerance)

    def test_forces_sum_to_zero(self, batched):
        for _, forces in batched:
            np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-3)

    def test_forces_are_minus_the_gradient_of_the_energy(self, backbone, structures, batched):
        step = self.finite_difference_step
        for index in (0, len(structures) - 1):  # a rattled crystal and a molecule
            atoms, (_, forces) = structures[index], batched[index]
            atom = int(np.argmax(np.linalg.norm(forces, axis=1)))
            displaced = []
            for axis in range(3):
                for sign in (1, -1):
                    copy = atoms.copy()
                    copy.positions[atom, axis] += sign * step
                    displaced.append(copy)
            energies = [energy for energy, _ in backbone.energies_and_forces(displaced)]
            numeric = -(np.array(energies[0::2]) - np.array(energies[1::2])) / (2 * step)
            np.testing.assert_allclose(forces[atom], numeric, atol=self.finite_difference_tolerance, rtol=0.05,
                                       err_msg=f"structure {index}, atom {atom}")

    def test_same_as_its_calculator(self, backbone, structures, batched):
        if not callable(getattr(backbone, "calculator", None)):
            pytest.skip(f"{backbone.name} has no ASE calculator")
        from hacknip.data.structures import boxed

        for (energy, forces), atoms in zip(batched, structures, strict=True):
            copy = boxed(atoms, float(backbone.cutoff))  # some calculators need a cell even for a molecule
            copy.calc = backbone.calculator()
            assert energy == pytest.approx(copy.get_potential_energy(), abs=self.energy_tolerance)
            np.testing.assert_allclose(forces, copy.get_forces(), atol=self.force_tolerance)


# ---------------------------------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------------------------------

HEAD_TASKS = (REGRESSION, CLASSIFICATION)
NUMERIC_KINDS = "biuf"
"""Array dtype kinds a head's saved state may use: bool, int, unsigned, float (never object, which needs pickle)."""


class DescriptorConformance(_OnReferenceStructures):
    """Checks every promise of the Descriptor protocol (:mod:`hacknip.plugins.descriptor`). Subclass it and provide a
    ``descriptor`` fixture; set ``spec_name`` when the registered name differs from ``descriptor.name``."""

    spec_name: str | None = None

    @pytest.fixture(scope="class")
    @classmethod
    def vectors(cls, descriptor, structures) -> list[np.ndarray]:
        return [np.asarray(descriptor.describe(atoms)) for atoms in structures]

    def test_satisfies_protocol(self, descriptor):
        from hacknip.plugins.descriptor import Descriptor

        assert isinstance(descriptor, Descriptor)
        assert isinstance(descriptor.name, str) and descriptor.name and "@" not in descriptor.name
        names = descriptor.feature_names
        assert len(names) >= 1 and all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names)

    def test_spec_width_matches(self, descriptor):
        from hacknip.plugins.registry import descriptor_spec

        spec = descriptor_spec(self.spec_name or descriptor.name)
        assert spec is not None, f"{self.spec_name or descriptor.name} is not a registered descriptor"
        assert spec.width == len(descriptor.feature_names)

    def test_identity_is_json_and_stable(self, descriptor):
        assert_identity_json_and_stable(descriptor)

    def test_vectors_are_floats_of_the_promised_length(self, descriptor, vectors):
        for vector in vectors:
            assert vector.shape == (len(descriptor.feature_names),)
            assert np.issubdtype(vector.dtype, np.floating)
            assert not np.isinf(vector).any()

    def test_mostly_defined_on_common_crystals(self, vectors):
        assert np.mean([np.isfinite(vector).mean() for vector in vectors]) > 0.9

    def test_deterministic(self, descriptor, structures, vectors):
        again = [np.asarray(descriptor.describe(atoms)) for atoms in structures]
        for first, second in zip(vectors, again):
            np.testing.assert_array_equal(first, second)

    def test_different_structures_differ(self, vectors):
        assert not np.array_equal(np.nan_to_num(vectors[0]), np.nan_to_num(vectors[1]))

    def test_same_structure_any_atom_order(self, descriptor, structures):
        atoms = structures[3]
        reordered = atoms[[2, 0, 1]]
        np.testing.assert_allclose(descriptor.describe(reordered), descriptor.describe(atoms), rtol=1e-9, atol=1e-9)


def easy_regression(seed: int = 0, n_train: int = 200, n_test: int = 100, n_features: int = 8):
    """``(X_train, y_train, X_test, y_test)``: standardised features (as hacknip gives heads), a smooth target of three
    of them and a little noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_train + n_test, n_features))
    y = X[:, 0] - 0.5 * X[:, 1] + 0.5 * np.tanh(X[:, 2]) + 0.1 * rng.normal(size=len(X))
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def easy_classification(seed: int = 0, n_train: int = 200, n_test: int = 100, n_features: int = 8):
    """Like :func:`easy_regression`, with 0/1 labels (hacknip's classification targets) from a noisy linear rule."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_train + n_test, n_features))
    y = (X[:, 0] - 0.5 * X[:, 1] + 0.3 * rng.normal(size=len(X)) > 0).astype(np.int64)
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


class EndOfRangeTrial:
    """Stands in for an Optuna trial, answering the low (or high) end of every range and the first (or last) choice;
    ``asked`` records the answers, to replay them through ``optuna.trial.FixedTrial``."""

    def __init__(self, end: str):
        self.end = end
        self.asked: dict[str, Any] = {}

    def _answer(self, name: str, values):
        self.asked[name] = values[0] if self.end == "low" else values[-1]
        return self.asked[name]

    def suggest_int(self, name, low, high, step=1, log=False):
        return self._answer(name, (low, high))

    def suggest_float(self, name, low, high, *, step=None, log=False):
        return self._answer(name, (low, high))

    def suggest_categorical(self, name, choices):
        return self._answer(name, list(choices))


def same_params(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Equal hyperparameter dicts, comparing arrays by value."""
    if first.keys() != second.keys():
        return False
    return all(np.array_equal(a, b) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else a == b
               for a, b in ((first[key], second[key]) for key in first))


def _saved_and_loaded(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` written with ``np.savez`` and read back with ``allow_pickle=False``, as a saved model is."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as loaded:
        return {name: loaded[name] for name in loaded.files}


class HeadConformance:
    """Checks every promise of the :class:`hacknip.plugins.head.Head` protocol, and what hacknip relies on besides:
    scikit-learn's ``clone``, ``get_params``/``set_params`` and estimator type, shapes and dtypes, determinism with
    the head's seed, learning an easy problem, probabilities for classification, ``get_state``/``from_state`` without
    pickle and ``search_space(trial)`` (each when the head offers it).

    Subclass it and provide a ``head`` fixture: an unfitted head as hacknip creates it for regression (the user's
    hyperparameters, no ``task``), with settings that fit in a fraction of a second (few trees, few epochs)::

        import pytest
        from hacknip.plugins.testing import HeadConformance

        class TestMyHead(HeadConformance):
            @pytest.fixture(scope="class")
            @classmethod
            def head(cls):
                return MyHead(n_estimators=20)

    For classification the suite does what hacknip does: ``clone(head).set_params(task="classification")``. Tests for
    a task the head's ``task_kinds`` leave out are skipped. Override ``regression_data`` or ``classification_data``
    (``(X_train, y_train, X_test, y_test)``) to test on other data.
    """

    mean_error_ratio = 0.5
    """On the easy regression problem the head's mean absolute error must be below this fraction of the mean
    predictor's."""

    min_roc_auc = 0.85
    """On the easy classification problem the ROC AUC of ``predict_proba`` must be above this."""

    @pytest.fixture(scope="class")
    @classmethod
    def regression_data(cls):
        return easy_regression()

    @pytest.fixture(scope="class")
    @classmethod
    def classification_data(cls):
        return easy_classification()

    @pytest.fixture(scope="class")
    @classmethod
    def regressor(cls, head):
        from sklearn.base import clone

        if REGRESSION not in type(head).task_kinds:
            pytest.skip(f"{type(head).__name__} does not declare regression")
        return clone(head)

    @pytest.fixture(scope="class")
    @classmethod
    def classifier(cls, head):
        from sklearn.base import clone

        if CLASSIFICATION not in type(head).task_kinds:
            pytest.skip(f"{type(head).__name__} does not declare classification")
        return clone(head).set_params(task=CLASSIFICATION)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted_regressor(cls, regressor, regression_data):
        return _fitted(regressor, regression_data)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted_classifier(cls, classifier, classification_data):
        return _fitted(classifier, classification_data)

    @pytest.fixture(params=HEAD_TASKS)
    def task(self, request):
        return request.param

    @pytest.fixture
    def fitted(self, request, task):
        """The fitted head and its data, for each task the head declares."""
        if task == REGRESSION:
            return request.getfixturevalue("fitted_regressor"), request.getfixturevalue("regression_data")
        return request.getfixturevalue("fitted_classifier"), request.getfixturevalue("classification_data")

    # -- the protocol and scikit-learn's conventions ------------------------------------------------------------------

    def test_satisfies_protocol(self, head):
        assert isinstance(head, Head), f"{type(head).__name__} lacks a member of hacknip.plugins.head.Head"
        kinds = type(head).task_kinds
        assert isinstance(kinds, frozenset) and kinds and kinds <= set(HEAD_TASKS), \
            f"task_kinds must be a non-empty frozenset of {HEAD_TASKS}, got {kinds!r}"

    def test_regressor_is_a_scikit_learn_regressor_without_probabilities(self, regressor):
        from sklearn.base import is_regressor

        assert is_regressor(regressor), "scikit-learn's tags must say regressor (estimator_type='regressor')"
        assert not hasattr(regressor, "predict_proba"), \
            "a regressor must have no predict_proba (scikit-learn's available_if idiom), or scorers take it for a classifier"

    def test_classifier_is_a_scikit_learn_classifier_with_probabilities(self, classifier):
        from sklearn.base import is_classifier

        assert is_classifier(classifier), "with task='classification', scikit-learn's tags must say classifier"
        assert hasattr(classifier, "predict_proba"), "hacknip scores classification with predict_proba(X)[:, 1]"

    def test_clone_and_params_round_trip(self, head):
        from sklearn.base import clone

        params = head.get_params()
        assert same_params(clone(head).get_params(), params)
        assert same_params(type(head)(**head.get_params(deep=False)).get_params(), params)
        fresh = clone(head)
        assert fresh.set_params(**head.get_params(deep=False)) is fresh, "set_params must return the head"
        assert same_params(fresh.get_params(), params)

    # -- fitting and predicting --------------------------------------------------------------------------------------

    def test_regression_predictions_are_finite_floats_one_per_row(self, fitted_regressor, regression_data):
        X_test = regression_data[2]
        predictions = fitted_regressor.predict(X_test)
        assert isinstance(predictions, np.ndarray) and predictions.shape == (len(X_test),), \
            f"predict must return an array of shape ({len(X_test)},), got {type(predictions).__name__} " \
            f"{getattr(predictions, 'shape', '')}"
        assert np.issubdtype(predictions.dtype, np.floating), f"regression predictions are {predictions.dtype}"
        assert np.isfinite(predictions).all()

    def test_regression_beats_the_mean(self, fitted_regressor, regression_data):
        _, y_train, X_test, y_test = regression_data
        mean_error = np.abs(y_test - y_train.mean()).mean()
        error = np.abs(y_test - fitted_regressor.predict(X_test)).mean()
        assert error < self.mean_error_ratio * mean_error, \
            f"MAE {error:.3f} on an easy problem; predicting the mean gives {mean_error:.3f}"

    def test_classification_gives_labels_and_probabilities(self, fitted_classifier, classification_data):
        from sklearn.metrics import roc_auc_score

        _, y_train, X_test, y_test = classification_data
        probabilities = fitted_classifier.predict_proba(X_test)
        assert isinstance(probabilities, np.ndarray) and probabilities.shape == (len(X_test), 2), \
            f"predict_proba must return shape ({len(X_test)}, 2), got {getattr(probabilities, 'shape', None)}"
        assert np.issubdtype(probabilities.dtype, np.floating)
        assert ((probabilities >= 0) & (probabilities <= 1)).all(), "probabilities outside [0, 1]"
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6, err_msg="rows must sum to 1")
        labels = fitted_classifier.predict(X_test)
        assert labels.shape == (len(X_test),) and set(np.unique(labels).tolist()) <= set(np.unique(y_train).tolist())
        clear = np.abs(probabilities[:, 1] - 0.5) > 1e-9
        np.testing.assert_array_equal(labels[clear], np.where(probabilities[clear, 1] > 0.5, 1, 0),
                                      err_msg="predict must give the more probable class")
        auc = roc_auc_score(y_test, probabilities[:, 1])
        assert auc > self.min_roc_auc, f"ROC AUC {auc:.3f} on an easy problem"

    def test_rejects_a_different_feature_count(self, fitted):
        head, (_, _, X_test, _) = fitted
        with pytest.raises(ValueError):
            head.predict(X_test[:, :-1])

    def test_deterministic_with_its_seed_and_no_state_kept_between_fits(self, fitted, task):
        """Fitting a clone, even one fitted on other data before, gives the same predictions: hacknip's results are
        reproducible, and each cross-validation fold starts afresh."""
        from sklearn.base import clone

        head, (X_train, y_train, X_test, _) = fitted
        other = easy_regression(seed=1) if task == REGRESSION else easy_classification(seed=1)
        again = clone(head).fit(other[0][:, :-1], other[1]).fit(X_train, y_train)
        np.testing.assert_array_equal(again.predict(X_test), head.predict(X_test))
        if task == CLASSIFICATION:
            np.testing.assert_array_equal(again.predict_proba(X_test), head.predict_proba(X_test))

    # -- saving without pickle ---------------------------------------------------------------------------------------

    def test_state_round_trip_without_pickle(self, fitted, task):
        """``get_state()`` gives JSON-able metadata and numeric arrays; ``from_state(params, meta, arrays)`` after a
        trip through JSON and ``np.savez``/``np.load(allow_pickle=False)`` predicts exactly as the fitted head."""
        head, (_, _, X_test, _) = fitted
        if not hasattr(head, "get_state"):
            pytest.skip(f"{type(head).__name__} has no get_state/from_state: hacknip run --save refuses it")
        assert hasattr(type(head), "from_state"), "a head with get_state needs the from_state classmethod too"
        meta, arrays = head.get_state()
        meta = json.loads(json.dumps(meta))  # TypeError here: the metadata is not JSON
        for name, value in arrays.items():
            assert isinstance(name, str) and isinstance(value, np.ndarray), f"state array {name!r}: {type(value)}"
            assert value.dtype.kind in NUMERIC_KINDS, f"state array {name!r} has dtype {value.dtype} (not numeric)"
        params = json.loads(json.dumps(head.get_params(deep=False)))  # as model.json keeps them
        restored = type(head).from_state(params, meta, _saved_and_loaded(arrays))
        np.testing.assert_array_equal(restored.predict(X_test), head.predict(X_test))
        if task == CLASSIFICATION:
            np.testing.assert_array_equal(restored.predict_proba(X_test), head.predict_proba(X_test))

    # -- tuning ------------------------------------------------------------------------------------------------------

    @pytest.mark.parametrize("end", ["low", "high"])
    def test_search_space_gives_hyperparameters_the_head_accepts(self, head, end):
        """``search_space(trial)`` answers with constructor arguments (JSON-able: tuning writes them down), also at the
        ends of its ranges; Optuna accepts the same calls (replayed through ``optuna.trial.FixedTrial``)."""
        from sklearn.base import clone

        space = search_space_of(type(head), head.get_params(deep=False))
        if space is None:
            pytest.skip(f"{type(head).__name__} declares no search_space: hacknip tune refuses it")
        trial = EndOfRangeTrial(end)
        params = space(trial)
        assert isinstance(params, dict)
        unknown = set(params) - set(head.get_params(deep=False))
        assert not unknown, f"search_space gives {sorted(unknown)}, which are not hyperparameters of the head"
        json.dumps(params)
        type(head)(**params)
        clone(head).set_params(**params)
        try:
            import optuna
        except ImportError:
            return
        assert same_params(space(optuna.trial.FixedTrial(trial.asked)), params)

    def test_search_space_low_end_fits(self, head, regression_data, classification_data):
        """The cheapest corner of the search space (on top of the ``head`` fixture's settings) fits and predicts."""
        from sklearn.base import clone

        space = search_space_of(type(head), head.get_params(deep=False))
        if space is None:
            pytest.skip(f"{type(head).__name__} declares no search_space")
        tuned = clone(head).set_params(**space(EndOfRangeTrial("low")))
        if REGRESSION not in type(head).task_kinds:
            tuned.set_params(task=CLASSIFICATION)
        X_train, y_train, X_test, _ = regression_data if REGRESSION in type(head).task_kinds else classification_data
        assert np.isfinite(tuned.fit(X_train, y_train).predict(X_test).astype(np.float64)).all()


def _fitted(head, data):
    X_train, y_train, _, _ = data
    returned = head.fit(X_train, y_train)
    assert returned is head, f"fit must return the head itself (scikit-learn's convention), got {type(returned).__name__}"
    return head
