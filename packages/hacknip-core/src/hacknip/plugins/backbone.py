"""The ``Backbone`` protocol: what a pretrained interatomic potential must offer to be featurised.

Layer numbering is shared by every backbone: layer 0 is the output of the network's embedding (or
encoder), layer ``i`` the output of its ``i``-th message-passing / interaction block. ``layer_widths[i]``
is the width of the invariant (scalar) per-atom features at layer ``i``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from hacknip.errors import BadStructureError, UntrustedFileError

if TYPE_CHECKING:
    import numpy as np
    from ase import Atoms

PERPENDICULAR_WIDTH = "perpendicular-width"
"""Supercell rule: repeat until the distance between opposite faces is at least the cutoff (see hacknip.features.supercell)."""
LATTICE_LENGTHS = "lattice-lengths"
"""Supercell rule: repeat until every lattice vector is at least as long as the cutoff (the HackNIP paper's rule)."""
SUPERCELL_RULES = (PERPENDICULAR_WIDTH, LATTICE_LENGTHS)
STRUCTURE_LABEL_KEY = "hacknip_label"
"""``atoms.info`` key of where a structure comes from in the user's data ('row 17 (id mp-149)'): featurising a
dataset passes the backbone labelled copies, so that a warning can name the row (:func:`structure_label`)."""


@runtime_checkable
class Backbone(Protocol):
    name: str
    """Registered name, e.g. ``"chgnet"`` or ``"sevennet:7net-l3i5"``."""
    cutoff: float
    """Graph cutoff radius in Å."""
    layer_widths: tuple[int, ...]
    """Width of the invariant per-atom features of each layer; ``len`` is the number of layers."""
    needs_supercell: bool
    """True when the graph does not see every periodic image by itself (e.g. a capped neighbour list),
    so that periodic cells must be expanded to cutoff-sized supercells before featurising. Such a backbone may also set
    ``supercell_rule`` (one of ``SUPERCELL_RULES``; read with :func:`supercell_rule`, default ``"perpendicular-width"``)
    and should record it in ``identity()``, since the supercell changes the features."""
    supported_elements: frozenset[int] | None
    """Atomic numbers the model knows; ``None`` when it accepts any.

    A backbone may also set ``concurrent_batches = True`` (read with :func:`concurrent_batches`, default False) when
    ``per_atom_features`` may run in several threads at once (no shared mutable state, no global settings changed
    during a pass) and gains from it: :func:`hacknip.features.featurize.featurize` then gives each of torch's threads a batch of
    its own.

    A backbone may also have a ``device`` attribute (its torch device; featurisation picks its default budget of atoms
    per batch by it, :func:`hacknip.features.batching.default_batch_atoms`, the CPU's without one) and a method
    ``batch_cost(atoms) -> float`` for when the atom count misjudges its memory: what ``atoms`` (as the backbone sees
    them, after the cutoff supercell when ``needs_supercell``) costs a batch, in atoms of a typical crystal, e.g. its
    edges within the cutoff divided by a typical crystal's neighbours per atom. Featurisation fills batches up to a
    budget of that cost (``batch_atoms``; default cost ``len(atoms)``). It must be cheap (it runs for every structure
    before any pass) and return a positive finite number; a ``BadStructureError`` from it falls back to the atom
    count."""

    def identity(self) -> dict[str, Any]:
        """JSON-serialisable description of everything that changes the features: name, library and version,
        checkpoint hash, graph settings, dtype. Two backbones with equal identity give equal features."""

    def per_atom_features(self, structures: Sequence[Atoms], layers: Sequence[int]) -> list[dict[int, np.ndarray]]:
        """Per-atom invariant features of every requested layer, from ONE batched forward pass.

        Returns one dict per structure mapping layer -> array of shape ``(len(atoms), layer_widths[layer])``.
        Raises :class:`hacknip.errors.BadStructureError` (and nothing else) for a structure it cannot featurise: an
        element outside ``supported_elements``, a structure its graph cannot be built for. Running out of device
        memory (torch's ``OutOfMemoryError``, or a ``RuntimeError`` saying "out of memory") makes featurisation split
        the batch in halves; any other exception is taken for a bug and stops a featurisation run. An atom with no
        neighbour within the cutoff (a lone ion, a single-atom molecule) is not bad input: it gets the features the
        library gives it (its embedding, no messages); featurisation rejects the row only if they come out non-finite.
        """


@dataclass(frozen=True)
class BackboneSpec:
    """What a plugin registers: enough to list a backbone without importing its library.

    ``factory`` is a ``"module:callable"`` path; the callable takes ``checkpoint`` (a local path or ``None``
    for the spec's own weights) and keyword options, and returns a :class:`Backbone`.
    """

    name: str
    factory: str
    cutoff: float
    layer_widths: tuple[int, ...]
    needs_supercell: bool
    description: str = ""
    library: str = ""
    verified: bool = True
    """False when the loading path has not been checked against real weights in this release."""
    safe_checkpoints: bool = False
    """True when the factory loads local checkpoint files without unpickling (``torch.load(weights_only=True)`` or
    safetensors), so that a checkpoint file cannot run code when it is loaded."""
    trainable: bool = False
    """True when the loaded backbone can be fine-tuned: it has ``trainable(layer)`` (see
    :mod:`hacknip.plugins.trainable`)."""
    batched_forces: bool = False
    """True when the loaded backbone has ``energies_and_forces`` (:mod:`hacknip.data.relaxation`): molecules relax
    through it, and many at once with ``--relax-batch``."""
    supercell_rule: str = PERPENDICULAR_WIDTH
    """How far cells are repeated when ``needs_supercell`` (see :mod:`hacknip.features.supercell`)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments the factory gets for this spec, e.g. ``{"model": "7net-l3i5"}`` for a variant."""
    package: str = field(default="", compare=False)
    package_version: str = field(default="", compare=False)

    def load(self, checkpoint: str | None = None, **options: Any) -> Backbone:
        from hacknip.plugins.manager import resolve_factory

        return resolve_factory("backbone", self)(checkpoint=checkpoint, **{**self.options, **options})


def supercell_rule(backbone: Backbone) -> str:
    """The supercell rule of a backbone that needs supercells: its ``supercell_rule`` attribute, which is optional
    (default ``"perpendicular-width"``)."""
    rule = getattr(backbone, "supercell_rule", PERPENDICULAR_WIDTH)
    if rule not in SUPERCELL_RULES:
        raise ValueError(f"{backbone.name}: unknown supercell rule {rule!r}; expected one of {', '.join(SUPERCELL_RULES)}")
    return rule


def concurrent_batches(backbone: Backbone) -> bool:
    """Whether ``backbone.per_atom_features`` may be called from several threads at once (optional attribute
    ``concurrent_batches``, default False)."""
    return getattr(backbone, "concurrent_batches", False) is True


def identity_key(identity: dict[str, Any]) -> str:
    """A short stable hash of a backbone identity, used to name its folder in the feature store."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@contextlib.contextmanager
def refusing_pickles(path: str | Path, kind: str, hint: str = "") -> Iterator[None]:
    """Around ``torch.load(path, weights_only=True)``: a file that only unpickling could read (it names a class or
    function, as a checkpoint built to run code does) becomes a one-line :class:`~hacknip.errors.UntrustedFileError`
    saying what it holds; ``kind`` names what the file should have been (``"CHGNet checkpoint"``)."""
    import pickle

    try:
        yield
    except pickle.UnpicklingError as error:
        if "weights only load failed" not in str(error).lower():
            raise
        # torch says "Unsupported global: GLOBAL io.open", or "unsupported GLOBAL os.system whose module os is blocked"
        match = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", str(error), re.IGNORECASE)
        what = f"a reference to {match.group(1)}" if match else "objects other than tensors and plain data"
        raise UntrustedFileError(f"{path}: not a plain {kind}: it holds {what}, which only unpickling (running code from "
                                 f"the file) could read, and hacknip reads checkpoints with torch.load(weights_only=True)"
                                 f"{'. ' + hint if hint else ''}") from None


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe_numbers(numbers: Iterable[int]) -> str:
    """``{1, 2, 3, 5}`` -> ``"1-3, 5"``."""
    runs: list[list[int]] = []
    for number in sorted(numbers):
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)


def check_elements(structures: Sequence[Atoms], supported: frozenset[int], backbone: str) -> None:
    """Fail before a network sees an element it has no embedding for (it would index out of range, or worse,
    silently use a wrong one): :class:`~hacknip.errors.BadStructureError`."""
    for index, atoms in enumerate(structures):
        unknown = sorted(set(atoms.numbers.tolist()) - supported)
        if unknown:
            raise BadStructureError(f"{backbone} does not support the elements with atomic numbers {unknown} "
                                    f"(structure {index}, {atoms.get_chemical_formula()}); it supports Z = "
                                    f"{describe_numbers(supported)}")


def labelled_copy(atoms: Atoms, label: str) -> Atoms:
    """A copy of ``atoms`` whose :data:`STRUCTURE_LABEL_KEY` names where it comes from (the original stays as it is)."""
    copy = atoms.copy()
    copy.info[STRUCTURE_LABEL_KEY] = label
    return copy


def structure_label(atoms: Atoms, index: int) -> str:
    """How a backbone's warning names ``atoms``, the ``index``-th structure of its call: the row and id featurising a
    dataset labelled it with (:data:`STRUCTURE_LABEL_KEY`), else its position in the call; and its formula.
    (Errors need no label: featurising names the row of a structure that raises.)"""
    where = atoms.info.get(STRUCTURE_LABEL_KEY) or f"structure {index}"
    return f"{where}, {atoms.get_chemical_formula()}"


def check_structure(atoms: Atoms, index: int, backbone: str) -> None:
    """What no backbone can featurise, as :class:`~hacknip.errors.BadStructureError`: a structure without atoms, with
    non-finite positions or cell, or periodic along an axis without a cell vector of its own (a zero vector, or
    vectors of the periodic axes that are linearly dependent). ``index`` is the structure's position in the call."""
    import numpy as np

    where = f"structure {index}"
    if len(atoms) == 0:
        raise BadStructureError(f"{backbone}: {where} has no atoms")
    where = f"{where} ({atoms.get_chemical_formula()})"
    if not np.isfinite(atoms.positions).all() or not np.isfinite(atoms.cell.array).all():
        raise BadStructureError(f"{backbone}: {where} has non-finite (NaN or infinite) positions or cell")
    periodic = np.flatnonzero(atoms.pbc)
    if len(periodic) and np.linalg.matrix_rank(atoms.cell.array[periodic]) < len(periodic):
        raise BadStructureError(f"{backbone}: {where} is periodic along axes {periodic.tolist()} (pbc "
                                f"{atoms.pbc.tolist()}) but their cell vectors {atoms.cell.array[periodic].tolist()} do "
                                "not span them: give each periodic axis a cell vector, or make it non-periodic")


def per_atom_features_in_batches(
    backbone: Backbone,
    structures: Sequence[Atoms],
    layers: Sequence[int],
    batch_size: int,
    one_pass: Callable[..., list[dict[int, np.ndarray]]],
    pass_start: bool = False,
) -> list[dict[int, np.ndarray]]:
    """The body of a plugin's ``per_atom_features``: validate layers and elements, then run ``one_pass(batch,
    layers)`` (one forward pass for every requested layer) over consecutive batches. With ``pass_start``,
    ``one_pass(batch, layers, start)`` also gets the position of the batch's first structure (for messages).

    Elements outside ``supported_elements`` and structures :func:`check_structure` refuses raise
    :class:`~hacknip.errors.BadStructureError` before any pass runs; ``one_pass`` is expected to raise it too for what
    only its graph shows (a structure the library cannot build a graph for)."""
    layers = check_layers(backbone, layers)
    structures = list(structures)
    if backbone.supported_elements is not None:
        check_elements(structures, backbone.supported_elements, backbone.name)
    for index, atoms in enumerate(structures):
        check_structure(atoms, index, backbone.name)
    features: list[dict[int, np.ndarray]] = []
    for start in range(0, len(structures), batch_size):
        batch = structures[start:start + batch_size]
        features.extend(one_pass(batch, layers, start) if pass_start else one_pass(batch, layers))
    return features


def check_layers(backbone: Backbone, layers: Sequence[int]) -> list[int]:
    """Validate requested layer numbers against a backbone and return them sorted and unique."""
    n = len(backbone.layer_widths)
    bad = [layer for layer in layers if not 0 <= layer < n]
    if bad:
        raise ValueError(f"{backbone.name} has layers 0..{n - 1}; asked for {bad}")
    return sorted(set(layers))
