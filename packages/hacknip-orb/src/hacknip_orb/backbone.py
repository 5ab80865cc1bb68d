"""ORB (the ``orb-models`` package) as a hacknip backbone.

Layer 0 is the node features after the GNS encoder (``model._encoder``); layer ``i`` is the node features after
``model.gnn_stacks[i - 1]`` (the last layer is what orb's heads read). All requested layers of a batch come from one
forward pass that stops after the deepest of them, so no head, energy, force or stress is computed: by default the
fused path of ``hacknip_orb.fused`` (same features, fewer multiply-adds), else orb's own regressor (``inference="orb"``).
Fine-tuning (:meth:`OrbBackbone.trainable`, :mod:`hacknip.plugins.trainable`) always runs orb's own modules, with
gradients, and the fused path follows the weights it changes.

Graphs are built with orb's ``ase_atoms_to_atom_graphs`` and batched with ``batch_graphs``. The radius and the
neighbour cap are options (default: each model's own). A capped graph (orb-v2: 20 neighbours) is not invariant under
supercell expansion, so such a backbone declares ``needs_supercell=True``; with no cap (``max_num_neighbors="inf"``,
the default of the "inf" and OMol models) hacknip takes every neighbour within the radius and needs no supercells.

Checkpoints are read by orb-models' own ``load_model``, which takes a state_dict with ``torch.load(weights_only=True)``
(no unpickling: a file that needs it is refused with :class:`hacknip.errors.UntrustedFileError`) into the architecture
its loader builds in code. A structure ORB cannot featurise raises :class:`hacknip.errors.BadStructureError`: an
element outside Z = 1-117, an OMol structure without charge and spin. An atom with no neighbour within the radius (a
lone ion, a single-atom molecule) is featurised as ORB does it: from its embedding, with no messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import math
import typing
import warnings
from collections.abc import Iterator, Sequence
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from orb_models.forcefield import pretrained
from orb_models.forcefield.atomic_system import SystemConfig, ase_atoms_to_atom_graphs
from orb_models.forcefield.base import AtomGraphs, batch_graphs
from orb_models.forcefield.calculator import ORBCalculator
from orb_models.forcefield.featurization_utilities import EdgeCreationMethod, compute_supercell_neighbors

from hacknip.errors import BadStructureError, InputError
from hacknip.features.supercell import perpendicular_widths
from hacknip.plugins.backbone import SUPERCELL_RULES, file_sha256, per_atom_features_in_batches, refusing_pickles
from hacknip.plugins.capture import forward_capturing
from hacknip.plugins.trainable import groups_by_module
from hacknip_orb.fused import FusedGNS, fusable
from hacknip_orb.plugin import DEFAULT_MODEL, MODELS, UNCAPPED, factory_name, needs_supercell

ORB_VERSION = version("orb-models")
PRECISIONS = ("float32-high", "float32-highest", "float64")
INFERENCE_PATHS = ("fused", "orb")
EDGE_METHODS = typing.get_args(EdgeCreationMethod)
ORB_MAX_PERIODIC_RADIUS = 6.0
"""Largest radius orb-models 0.5's own periodic graph builder accepts (see ``_wide_periodic_graph``)."""
ONE_HOT_CLASSES = 118
"""orb one-hot encodes atomic numbers into 118 classes (index = Z), so Z = 118 cannot be featurised."""
FIRST_NEIGHBOUR_GUESS = 128
"""Initial k of the k-nearest-neighbour query of an uncapped graph at 6 Å (scaled by (radius / 6)^3, doubled while
some atom fills all k slots)."""


class WeightsUnavailableError(FileNotFoundError):
    """The pretrained weights could not be downloaded (e.g. no network): pass a local checkpoint instead."""


def load(
    checkpoint: str | Path | None = None,
    model: str = DEFAULT_MODEL,
    device: str = "cpu",
    radius: float | None = None,
    max_num_neighbors: int | float | str | None = None,
    precision: str = "float32-high",
    edge_method: str = "knn_scipy",
    batch_size: int = 16,
    charge: float | None = None,
    spin: float | None = None,
    supercell_rule: str | None = None,
    inference: str = "fused",
) -> OrbBackbone:
    """An ORB model: orb-models' pretrained weights for ``model`` (downloaded by orb-models' own loader), or a local
    ``checkpoint`` (a state_dict of the same architecture, as orb-models publishes and as
    ``torch.save(network.state_dict(), path)`` writes), loaded through the same orb-models loader.

    - ``radius`` (Å) and ``max_num_neighbors`` set the graph; ``None`` means the model's own (see
      ``hacknip_orb.plugin.MODELS``). ``max_num_neighbors="inf"`` (or ``math.inf``) means no cap.
    - ``precision``: orb-models' ``"float32-high"`` (its default), ``"float32-highest"`` or ``"float64"``. orb sets
      torch's float32 matmul precision from it; hacknip restores torch's default dtype after loading.
    - ``edge_method``: orb's neighbour search (``"knn_scipy"``, CPU; ``"knn_brute_force"``). With a capped graph it
      decides ties between equidistant neighbours, so it is part of the identity.
    - ``charge``, ``spin``: for the OMol models, used for structures without ``atoms.info["charge"/"spin"]``.
    - ``supercell_rule``: how far a capped graph's cells are repeated (``hacknip.features.supercell``); ``None`` means the
      model's own (``"lattice-lengths"``, the paper's, for ``orb-v2-paper``; ``"perpendicular-width"`` otherwise).
    - ``inference``: ``"fused"`` (``hacknip_orb.fused``: the same node features, ~1.4x faster on CPU) where the model
      allows it, else orb-models' own forward; ``"orb"`` always runs orb-models' own forward.
    """
    if model not in MODELS:
        raise InputError(f"unknown ORB model {model!r}; hacknip-orb knows {', '.join(MODELS)}")
    spec = MODELS[model]
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if edge_method not in EDGE_METHODS:
        raise InputError(f"edge_method must be one of {', '.join(EDGE_METHODS)}, got {edge_method!r}")
    if not spec.charge_spin and (charge is not None or spin is not None):
        raise InputError(f"{model} is not conditioned on charge and spin; leave charge and spin out")
    radius = spec.radius if radius is None else float(radius)
    if not radius > 0:
        raise InputError(f"radius must be positive, got {radius}")
    cap = neighbour_cap(max_num_neighbors, default=spec.max_num_neighbors)
    supercell_rule = spec.supercell_rule if supercell_rule is None else supercell_rule
    if inference not in INFERENCE_PATHS:
        raise InputError(f"inference must be one of {', '.join(INFERENCE_PATHS)}, got {inference!r}")
    if supercell_rule not in SUPERCELL_RULES:
        raise InputError(f"supercell_rule must be one of {', '.join(SUPERCELL_RULES)}, got {supercell_rule!r}")
    loader = getattr(pretrained, spec.loader)

    if checkpoint is None:
        url = default_weights(loader)
        try:
            with _orb_precision():
                network = loader(device=device, precision=precision, compile=False)
        except OSError as error:  # requests' ConnectionError / HTTPError, cached_path's errors: all OSError
            raise WeightsUnavailableError(
                f"could not get the pretrained {model} weights from {url} ({_one_line(error)}). Without network "
                f"access, download that file elsewhere and pass its local path: --backbone "
                f"{model}:/path/to/{url.rsplit('/', 1)[-1]} (in Python: load_backbone('{model}:/path/to/file.ckpt'))"
            ) from None
        checkpoint_sha256 = _downloaded_sha256(url, network)
        name = model
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"ORB checkpoint {str(checkpoint)!r} does not exist (expected a state_dict of "
                                    f"the {model} architecture saved with torch.save)")
        # orb-models reads the state_dict with torch.load(weights_only=True)
        with refusing_pickles(path, "ORB state_dict"), _orb_precision():
            network = loader(weights_path=str(path), device=device, precision=precision, compile=False)
        checkpoint_sha256 = file_sha256(path)
        name = f"{model}:{checkpoint}"
    return OrbBackbone(network, name=name, model=model, checkpoint_sha256=checkpoint_sha256, radius=radius,
                       max_num_neighbors=cap, precision=precision, edge_method=edge_method, device=device,
                       batch_size=batch_size, charge=charge, spin=spin, supercell_rule=supercell_rule,
                       inference=inference)


# One factory per registered name (``hacknip_orb.backbone:load_orb_v2`` ...), as the plugin's specs point to.
for _name in MODELS:
    globals()[factory_name(_name)] = partial(load, model=_name)


def neighbour_cap(value: int | float | str | None, default: float) -> float:
    """``None`` -> ``default``; ``"inf"``/``"unlimited"``/``math.inf`` -> no cap; else a positive integer."""
    if value is None:
        return default
    if isinstance(value, str):
        if value.strip().lower() in {"inf", "unlimited", "uncapped"}:
            return UNCAPPED
        try:
            value = int(value)
        except ValueError:
            raise InputError(f"max_num_neighbors must be a positive integer or 'inf', got {value!r}") from None
    if isinstance(value, float) and math.isinf(value) and value > 0:
        return UNCAPPED
    if isinstance(value, bool) or not float(value).is_integer() or value < 1:
        raise InputError(f"max_num_neighbors must be a positive integer or 'inf', got {value!r}")
    return int(value)


def default_weights(loader) -> str:
    """The weights URL an orb-models pretrained loader downloads by default."""
    return inspect.signature(loader).parameters["weights_path"].default


class OrbBackbone:
    """Per-atom features of every ORB layer (see the module docstring for the layer numbering)."""

    def __init__(self, network: torch.nn.Module, *, name: str, model: str, checkpoint_sha256: str, radius: float,
                 max_num_neighbors: float, precision: str = "float32-high", edge_method: str = "knn_scipy",
                 device: str = "cpu", batch_size: int = 16, charge: float | None = None,
                 spin: float | None = None, supercell_rule: str = SUPERCELL_RULES[0], inference: str = "fused") -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.network = network.eval()
        self.name = name
        self.model = model
        self.checkpoint_sha256 = checkpoint_sha256
        self.cutoff = float(radius)
        self.max_num_neighbors = max_num_neighbors
        self.needs_supercell = needs_supercell(max_num_neighbors)
        self.supercell_rule = supercell_rule
        self.precision = precision
        self.edge_method = edge_method
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.charge_spin = MODELS[model].charge_spin
        self.charge, self.spin = charge, spin
        gns = network.model
        self.layer_widths = tuple([gns.gnn_stacks[0].latent_dim] * (len(gns.gnn_stacks) + 1))
        embedding_rows = gns.atom_emb.embeddings.num_embeddings if gns.use_embedding else ONE_HOT_CLASSES
        self.supported_elements = frozenset(range(1, min(embedding_rows, ONE_HOT_CLASSES)))
        self.dtype = next(network.parameters()).dtype
        self._layer_modules = {0: gns._encoder}
        self._layer_modules.update({i + 1: stack for i, stack in enumerate(gns.gnn_stacks)})
        with torch.no_grad():
            self._fused = FusedGNS(network) if inference == "fused" and fusable(network) else None
        self._fused_weights = self._weight_versions() if self._fused else ()
        self.inference = "fused" if self._fused else "orb"
        # the conformance suite checks the fused path under concurrent batches; orb's own path is the reference only
        self.concurrent_batches = self._fused is not None and self.device.type == "cpu"

    def identity(self) -> dict[str, Any]:
        identity = {
            "name": "orb",
            "library": "orb-models",
            "library_version": ORB_VERSION,
            "model": MODELS[self.model].weights_of or self.model,  # a preset only changes the graph settings below
            "checkpoint_sha256": self.checkpoint_sha256,
            "radius": self.cutoff,
            "max_num_neighbors": "unlimited" if math.isinf(self.max_num_neighbors) else int(self.max_num_neighbors),
            "edge_method": self.edge_method,
            "dtype": str(self.dtype).removeprefix("torch."),
            "precision": self.precision,
        }
        if self.needs_supercell:  # the supercell changes a capped graph's features; uncapped graphs get none
            identity["supercell_rule"] = self.supercell_rule
        if self.charge_spin:
            identity.update(default_charge=self.charge, default_spin=self.spin)
        return identity

    def per_atom_features(self, structures: Sequence[Atoms], layers: Sequence[int]) -> list[dict[int, np.ndarray]]:
        return per_atom_features_in_batches(self, structures, layers, self.batch_size, self._batch_features,
                                            pass_start=True)

    def _batch_features(self, batch: list[Atoms], layers: list[int], start: int) -> list[dict[int, np.ndarray]]:
        graphs = [self.graph(atoms, start + offset) for offset, atoms in enumerate(batch)]
        return self._one_pass(graphs, [len(atoms) for atoms in batch], layers)

    def trainable(self, layer: int) -> ORBTrainable:
        """The network truncated after ``layer`` for fine-tuning (:mod:`hacknip.plugins.trainable`); it shares this
        backbone's modules, so training it changes this backbone (the fused path is rebuilt from the new weights)."""
        return ORBTrainable(self, layer)

    def graph(self, atoms: Atoms, index: int = 0) -> AtomGraphs:
        """orb's graph of one structure with this backbone's radius, neighbour cap and edge method (on the CPU)."""
        atoms = self._prepared(atoms, index)
        if not math.isinf(self.max_num_neighbors):
            return self._orb_graph(atoms, int(self.max_num_neighbors))
        # No cap: a k-nearest query with k larger than any atom's number of neighbours within the radius.
        k = max(16, math.ceil(FIRST_NEIGHBOUR_GUESS * (self.cutoff / 6.0) ** 3))
        while True:
            graph = self._orb_graph(atoms, k)
            if len(atoms) == 0 or int(torch.bincount(graph.senders, minlength=len(atoms)).max()) < k:
                return graph
            k *= 2

    def calculator(self, **options: Any) -> ORBCalculator:
        """orb-models' ASE calculator on the same network, building graphs exactly as the features do."""
        return HacknipORBCalculator(self, **options)

    def _orb_graph(self, atoms: Atoms, max_num_neighbors: int) -> AtomGraphs:
        periodic = bool(atoms.pbc.any() and atoms.cell.any())
        if periodic and self.cutoff > ORB_MAX_PERIODIC_RADIUS:
            return self._wide_periodic_graph(atoms, max_num_neighbors)
        return ase_atoms_to_atom_graphs(
            atoms, SystemConfig(radius=self.cutoff, max_num_neighbors=max_num_neighbors),
            edge_method=self.edge_method, device=torch.device("cpu"),
            output_dtype=self.dtype, graph_construction_dtype=self.dtype,
        )

    def _wide_periodic_graph(self, atoms: Atoms, max_num_neighbors: int) -> AtomGraphs:
        """orb-models 0.5 refuses periodic graphs beyond 6 Å (its search over neighbouring cells is validated up to
        6 Å only). Same graph recipe, but over every periodic image that can hold a neighbour: offsets up to
        ceil(radius / perpendicular width) along each axis, which is exact (a 3x3x3 block, as orb-models <= 0.4
        used, once the cell is as wide as the radius). Nodes, features and the k-nearest search are orb's own."""
        graph = ase_atoms_to_atom_graphs(
            atoms, SystemConfig(radius=ORB_MAX_PERIODIC_RADIUS, max_num_neighbors=1),
            edge_method=self.edge_method, device=torch.device("cpu"),
            output_dtype=self.dtype, graph_construction_dtype=self.dtype,
        )
        positions, cell = graph.positions, graph.system_features["cell"].reshape(3, 3)
        reach = [max(1, math.ceil(self.cutoff / width - 1e-9)) for width in perpendicular_widths(atoms.cell.array)]
        offsets = torch.cartesian_prod(*(torch.arange(-n, n + 1, dtype=cell.dtype) for n in reach))
        supercell_positions = (positions[None, :, :] + (offsets @ cell)[:, None, :]).reshape(-1, 3)
        senders, supercell_receivers, vectors, _ = compute_supercell_neighbors(
            central_cell_positions=positions, supercell_positions=supercell_positions, radius=self.cutoff,
            max_num_neighbors=max_num_neighbors, edge_method=self.edge_method, n_workers=1,
        )
        natoms = len(positions)
        return graph._replace(
            senders=senders.long(),
            receivers=(supercell_receivers % natoms).long(),
            n_edge=torch.tensor([len(senders)]),
            edge_features={"vectors": vectors.to(self.dtype), "unit_shifts": offsets[supercell_receivers // natoms]},
            radius=self.cutoff,
            max_num_neighbors=torch.tensor([max_num_neighbors]),
        )

    def _prepared(self, atoms: Atoms, index: int) -> Atoms:
        """orb takes all-periodic or non-periodic systems, and charge/spin only together (and only uses them when
        the model is conditioned on them)."""
        if atoms.pbc.any() and not atoms.pbc.all():
            atoms = periodic_with_vacuum(atoms, vacuum=self.cutoff)
        info = atoms.info
        if self.charge_spin:
            missing = [key for key in ("charge", "spin") if key not in info]
            defaults = {"charge": self.charge, "spin": self.spin}
            unset = [key for key in missing if defaults[key] is None]
            if unset:
                raise BadStructureError(f"{self.name} is conditioned on total charge and spin: structure {index} "
                                 f"({atoms.get_chemical_formula()}) has no atoms.info{unset}; set them, or load "
                                 f"the backbone with charge=... and spin=...")
            values = {key: float(info[key]) if key in info else float(defaults[key]) for key in ("charge", "spin")}
            if any(not isinstance(info.get(key), float) for key in ("charge", "spin")):
                atoms = atoms.copy()
                atoms.info.update(values)
        elif "charge" in info or "spin" in info:
            atoms = atoms.copy()
            atoms.info.pop("charge", None)
            atoms.info.pop("spin", None)
        return atoms

    def _one_pass(self, graphs: list[AtomGraphs], sizes: list[int], layers: list[int]) -> list[dict[int, np.ndarray]]:
        if not graphs:
            return []
        batch = batch_graphs(graphs).to(self.device)
        fused = self._current_fused()
        if fused:
            captured = fused.node_features(batch, layers)
        else:
            with torch.no_grad():
                captured = forward_capturing(lambda: self.network(batch), self._layer_modules, layers,
                                             extract=lambda layer, output: output[0])  # (nodes, edges) -> nodes
        per_layer = {layer: torch.split(captured[layer].to("cpu", torch.float32), sizes) for layer in layers}
        return [{layer: per_layer[layer][index].numpy() for layer in layers} for index in range(len(graphs))]

    def _weight_versions(self) -> tuple[int, ...]:
        """In-place version counters of the GNS parameters (bumped by optimiser steps and ``load_state_dict``)."""
        return tuple(parameter._version for parameter in self.network.model.parameters())

    def _current_fused(self) -> FusedGNS | None:
        """The fused path, rebuilt if the network's weights changed since it was built (it holds transposed copies of
        the edge MLPs' weights), e.g. after fine-tuning through :meth:`trainable`."""
        if self._fused is None:
            return None
        versions = self._weight_versions()
        if versions != self._fused_weights:
            with torch.no_grad():
                self._fused = FusedGNS(self.network)
            self._fused_weights = versions
        return self._fused


class ORBTrainable(torch.nn.Module):
    """ORB truncated after ``layer``, its node features kept with gradients (for fine-tuning). It runs orb's own
    modules (never the fused path, which holds detached copies of weights), whatever the backbone's ``inference``.

    Groups, by what reaches the node features of layer ``layer`` (``L``): ``embedding`` = the atom embedding and the
    encoder's node MLP, and from ``L >= 1`` everything else that feeds the first message-passing step: the encoder's
    edge MLP (orb's "initial edge featuriser"), the edge bases and the charge/spin conditioner where the model has
    them (at ``L = 0`` the edge side of the encoder reaches no node feature); ``interactions`` = ``gnn_stacks[:L]``
    (each stack's edge update feeds its own node update, so all of a stack reaches its node output); ``past_layer`` =
    the rest (later stacks, the decoder, the heads, pair repulsion).

    ``inputs`` builds the graph of each structure as ``per_atom_features`` does (:meth:`OrbBackbone.graph`): the
    features are those of the atoms given, so a capped backbone (``needs_supercell``) is fed its supercells by the
    caller, as the featurising pipeline does."""

    supports_mixed_precision = False

    def __init__(self, backbone: OrbBackbone, layer: int) -> None:
        super().__init__()
        self.backbone_name = backbone.name
        self.layer = layer
        self.width = backbone.layer_widths[layer]
        self.network = backbone.network
        self._graph = backbone.graph
        self._module = backbone._layer_modules[layer]
        # orb's loader leaves every parameter requires_grad=False (inference); start from all trainable, as a new
        # module does, and let hacknip.plugins.trainable.freeze choose what stays frozen
        self.network.requires_grad_(True)

    def inputs(self, structures: Sequence[Atoms]) -> list[AtomGraphs]:
        return [self._graph(atoms, index) for index, atoms in enumerate(structures)]

    def forward(self, inputs: Sequence[AtomGraphs]) -> list[torch.Tensor]:
        if not inputs:
            return []
        device = next(self.network.parameters()).device
        batch = batch_graphs(list(inputs)).to(device)  # a new batch each call: orb's forward may write into it
        captured = forward_capturing(lambda: self.network(batch), {self.layer: self._module}, [self.layer],
                                     extract=lambda layer, output: output[0], detach=False)  # (nodes, edges) -> nodes
        return list(torch.split(captured[self.layer], [int(graph.n_node.sum()) for graph in inputs]))

    def parameter_groups(self) -> dict[str, list[str]]:
        gns = self.network.model
        if self.layer == 0:
            embedding = ["atom_emb", "_encoder._node_fn"]
        else:
            embedding = [name for name, _ in gns.named_children() if name not in ("gnn_stacks", "_decoder")]
        interactions = [f"gnn_stacks.{i}" for i in range(self.layer)]
        return groups_by_module([name for name, _ in self.named_parameters()], embedding, interactions, root="network.model.")


class HacknipORBCalculator(ORBCalculator):
    """``ORBCalculator`` whose graphs come from :meth:`OrbBackbone.graph` (same radius, cap or no cap, edge method,
    dtype and charge/spin defaults as the features)."""

    def __init__(self, backbone: OrbBackbone, **options: Any) -> None:
        cap = backbone.max_num_neighbors
        system_config = SystemConfig(radius=backbone.cutoff,
                                     max_num_neighbors=MODELS[backbone.model].orb_max_num_neighbors
                                     if math.isinf(cap) else int(cap))
        super().__init__(backbone.network, system_config=system_config, edge_method=backbone.edge_method,
                         device=backbone.device, **options)
        self.backbone = backbone

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        Calculator.calculate(self, atoms)
        batch = self.backbone.graph(self.atoms).to(self.device)
        self._update_results(self.model.predict(batch))


def periodic_with_vacuum(atoms: Atoms, vacuum: float) -> Atoms:
    """orb refuses partly periodic systems: make the open axes periodic with ``vacuum`` Å on each side (at least the
    graph radius, so that no edge crosses them: the graph is the same as with open axes)."""
    open_axes = [axis for axis in range(3) if not atoms.pbc[axis]]
    boxed = atoms.copy()
    boxed.center(vacuum=vacuum, axis=open_axes)
    boxed.pbc = True
    if boxed.cell.rank != 3:
        raise BadStructureError(f"{atoms.get_chemical_formula()}: a periodic axis has no cell vector (cell {atoms.cell})")
    return boxed


@contextlib.contextmanager
def _orb_precision() -> Iterator[None]:
    """orb's loaders set torch's global default dtype (and warn about it); keep the process's default dtype."""
    previous = torch.get_default_dtype()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting global torch default dtype")
            warnings.filterwarnings("ignore", message="Consider passing 'precision=float32-high'")
            yield
    finally:
        torch.set_default_dtype(previous)


def _downloaded_sha256(url: str, network: torch.nn.Module) -> str:
    """sha256 of the weights file orb-models downloaded (found in cached_path's cache without network); if it cannot
    be found, a sha256 of the loaded tensors."""
    from cached_path import find_latest_cached

    cached = find_latest_cached(url)
    if cached is not None and cached.is_file():
        return file_sha256(cached)
    digest = hashlib.sha256()
    for key, tensor in sorted(network.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return "state_dict:" + digest.hexdigest()


def _one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split())
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(error).__name__}: {text}"
