"""CHGNet (the ``chgnet`` package) as a hacknip backbone.

Layer 0 is the output of ``atom_embedding`` (atom features before the first atom convolution); layer ``i``
(1..n_conv) is the output of ``atom_conv_layers[i - 1]``. The last layer is taken before CHGNet's readout
LayerNorm. All requested layers of a batch come from one forward pass that stops after the deepest of them, so no
energy, force or stress is computed.

Checkpoints (the pretrained ones in the chgnet wheel and local files) are read with ``torch.load(weights_only=True)``
and the network is built from the dict inside (``CHGNet.from_dict``), as ``CHGNet.from_file`` does, except that
chgnet's own loader unpickles the file (``weights_only=False``), which can run code. A file that needs unpickling
anything but tensors and plain data is refused with :class:`hacknip.errors.UntrustedFileError`.

A structure CHGNet cannot featurise raises :class:`hacknip.errors.BadStructureError`: an element outside Z = 1-94,
a structure whose bond graph chgnet cannot build. An atom with no neighbour within the 6 Å atom-graph cutoff (a lone
ion, a single-atom molecule) is featurised as chgnet does it, from its embedding passed through convolutions that
have nothing to convolve, with an :class:`IsolatedAtomsWarning` naming the structure's row unless
``on_isolated_atoms="ignore"``; ``"error"`` refuses it.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import chgnet
import numpy as np
import torch
from ase import Atoms
from chgnet.graph import CrystalGraph
from chgnet.model import CHGNet

from hacknip.errors import InputError
from hacknip.plugins.backbone import file_sha256, per_atom_features_in_batches, refusing_pickles, structure_label
from hacknip.plugins.capture import forward_capturing
from hacknip.plugins.trainable import groups_by_module
from hacknip_chgnet.graphs import GraphPool, build_graph

SPEC_NAME = "chgnet"
DEFAULT_MODEL = "0.3.0"
PRETRAINED_DIR = Path(chgnet.__file__).parent / "pretrained"
ISOLATED_ATOM_RESPONSES = ("error", "warn", "ignore")
CUDA_GRAPH_WORKERS = 8
"""Graph-building processes of a backbone on a CUDA device (docs/molecules.md, "Relaxing many molecules at once")."""


class IsolatedAtomsWarning(UserWarning):
    """A structure has atoms with no neighbour within CHGNet's atom-graph cutoff; their features come from their
    element's embedding alone."""


def pretrained_models() -> list[str]:
    """Names ``CHGNet.load(model_name=...)`` accepts: one folder of weights each inside the chgnet package."""
    return sorted(folder.name for folder in PRETRAINED_DIR.iterdir() if any(folder.glob("*.pth.tar")))


def pretrained_checkpoint(model: str) -> Path:
    """The weights file inside the chgnet package that ``CHGNet.load(model_name=model)`` reads."""
    files = sorted((PRETRAINED_DIR / model).glob("*.pth.tar"))
    if len(files) != 1:
        raise InputError(f"unknown CHGNet model {model!r}; the chgnet package ships {', '.join(pretrained_models())}")
    return files[0]


def load(
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    model: str = DEFAULT_MODEL,
    batch_size: int = 16,
    on_isolated_atoms: str = "warn",
    graph_workers: int | None = None,
) -> CHGNetBackbone:
    """CHGNet with pretrained weights from the chgnet package (``model``), or from a local checkpoint file saved
    in CHGNet's own format (``torch.save({"model": net.as_dict()}, path)``, as CHGNet's trainer writes).

    ``checkpoint`` may also name a pretrained model (``"r2scan"``), so that ``chgnet:r2scan`` works as a backbone
    name. Both are read without unpickling (:func:`read_checkpoint`).

    ``on_isolated_atoms`` ("ignore" | "warn" | "error") is what to do with an atom that has no neighbour within the
    cutoff; its features are still well defined (the embedding passed through the convolutions). ``"warn"`` (default)
    and ``"ignore"`` featurise it, with or without an :class:`IsolatedAtomsWarning`; ``"error"`` makes chgnet refuse
    the structure, which featurising raises as :class:`hacknip.errors.BadStructureError`.

    ``graph_workers``: processes that build a batch's graphs (:mod:`hacknip_chgnet.graphs`); 0 or 1 builds them in
    this process. Default: on a CUDA device, :data:`CUDA_GRAPH_WORKERS` or one fewer than the available cores if
    less, where the graphs, built on the CPU, are most of a step's time; on a CPU, 0.
    """
    if checkpoint is not None and not Path(checkpoint).is_file() and str(checkpoint) in pretrained_models():
        model, checkpoint = str(checkpoint), None
    if checkpoint is None:
        weights = pretrained_checkpoint(model)
        # What CHGNet.load(model_name=model) passes to CHGNet.from_file, without its unpickling torch.load.
        network = build_network(read_checkpoint(weights), mlp_out_bias=model == "0.2.0", version=model)
        name = SPEC_NAME if model == DEFAULT_MODEL else f"{SPEC_NAME}:{model}"
    else:
        weights = Path(checkpoint)
        if not weights.is_file():
            raise FileNotFoundError(f"CHGNet checkpoint {str(checkpoint)!r} does not exist, and it is not one of the "
                                    f"pretrained models in the chgnet package ({', '.join(pretrained_models())})")
        network = build_network(read_checkpoint(weights))
        model = None
        name = f"{SPEC_NAME}:{checkpoint}"
    return CHGNetBackbone(network.to(device), name=name, model=model, checkpoint_sha256=file_sha256(weights),
                          device=device, batch_size=batch_size, on_isolated_atoms=on_isolated_atoms,
                          graph_workers=default_graph_workers(device) if graph_workers is None else graph_workers)


def default_graph_workers(device: str) -> int:
    if not str(device).startswith("cuda"):
        return 0
    from hacknip.data.molecules import available_cores

    return max(0, min(CUDA_GRAPH_WORKERS, available_cores() - 1))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The dict saved in a CHGNet checkpoint file, read with ``torch.load(weights_only=True)``: tensors and plain
    Python data only, nothing that unpickling could run. Raises :class:`hacknip.errors.UntrustedFileError` for a file
    that holds anything else (chgnet's own ``CHGNet.from_file`` would unpickle it)."""
    with refusing_pickles(path, "CHGNet checkpoint", "Save the weights as torch.save({'model': network.as_dict()}, path)"):
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or not {
            "state_dict", "model_args"} <= set(state["model"]):
        raise InputError(f"{path} is not a CHGNet checkpoint: expected a dict with 'model': {{'state_dict': ..., "
                         f"'model_args': ...}} (torch.save({{'model': network.as_dict()}}, path))")
    return state


def build_network(state: dict[str, Any], **options: Any) -> CHGNet:
    """``CHGNet.from_dict(state["model"], **options)``, without CHGNet's printing."""
    return _quietly(CHGNet.from_dict, state["model"], **options)


class CHGNetBackbone:
    """Per-atom features of every CHGNet layer (see the module docstring for the layer numbering)."""

    needs_supercell = False
    """CHGNet's neighbour list (pymatgen) holds every periodic image within the cutoff."""

    def __init__(self, network: CHGNet, *, name: str, model: str | None, checkpoint_sha256: str,
                 device: str = "cpu", batch_size: int = 16, on_isolated_atoms: str = "warn",
                 graph_workers: int = 0) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        if on_isolated_atoms not in ISOLATED_ATOM_RESPONSES:
            raise InputError(f"on_isolated_atoms must be one of {', '.join(ISOLATED_ATOM_RESPONSES)}, "
                             f"got {on_isolated_atoms!r}")
        if graph_workers < 0:
            raise InputError(f"graph_workers must be 0 or more, got {graph_workers}")
        self.on_isolated_atoms = on_isolated_atoms
        self.graph_workers = graph_workers
        self._graph_pool: GraphPool | None = None
        self._graph_pool_lock = threading.Lock()
        # chgnet's own "warn" prints to stderr and names the structure by its place in the batch: warn here instead
        network.graph_converter.set_isolated_atom_response(self._converter_response)
        self.network = network.eval()
        self.name = name
        self.model = model
        self.checkpoint_sha256 = checkpoint_sha256
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.concurrent_batches = self.device.type == "cpu"  # a stateless forward pass; 1.26x on 2 cores (docs/benchmarks.md)
        converter = network.graph_converter
        self.cutoff = float(converter.atom_graph_cutoff)
        self.bond_graph_cutoff = float(converter.bond_graph_cutoff)
        self.layer_widths = (network.atom_fea_dim,) * (len(network.atom_conv_layers) + 1)
        # The embedding row of element Z is Z - 1.
        self.supported_elements = frozenset(range(1, network.atom_embedding.embedding.num_embeddings + 1))
        self.dtype = next(network.parameters()).dtype
        self._layer_modules = {0: network.atom_embedding}
        self._layer_modules.update({i + 1: conv for i, conv in enumerate(network.atom_conv_layers)})

    def identity(self) -> dict[str, Any]:
        return {
            "name": SPEC_NAME,
            "library": "chgnet",
            "library_version": chgnet.__version__,
            "model": self.model,
            "checkpoint_sha256": self.checkpoint_sha256,
            "atom_graph_cutoff": self.cutoff,
            "bond_graph_cutoff": self.bond_graph_cutoff,
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    def per_atom_features(self, structures: Sequence[Atoms], layers: Sequence[int]) -> list[dict[int, np.ndarray]]:
        return per_atom_features_in_batches(self, structures, layers, self.batch_size, self._batch_features,
                                            pass_start=True)

    def _batch_features(self, batch: list[Atoms], layers: list[int], start: int) -> list[dict[int, np.ndarray]]:
        graphs = self._graphs(batch, start)
        return self._one_pass(graphs, [len(atoms) for atoms in batch], layers)

    def trainable(self, layer: int) -> CHGNetTrainable:
        """The network truncated after ``layer`` for fine-tuning (:mod:`hacknip.plugins.trainable`); it shares this
        backbone's modules, so training it changes this backbone."""
        return CHGNetTrainable(self, layer)

    def calculator(self, **options: Any):
        """CHGNet's own ASE calculator on the same network (energy, forces, stress, magmoms)."""
        from chgnet.model.dynamics import CHGNetCalculator

        # CHGNetCalculator sets its isolated-atom response on the converter of the network it is given, which is
        # this backbone's: by default it would switch this backbone to chgnet's printing (or from "error" to "warn")
        options.setdefault("on_isolated_atoms", self._converter_response)
        return _quietly(CHGNetCalculator, model=self.network, use_device=str(self.device), **options)

    @property
    def _converter_response(self) -> str:
        return "error" if self.on_isolated_atoms == "error" else "ignore"

    def energies_and_forces(self, structures: Sequence[Atoms]) -> list[tuple[float, np.ndarray]]:
        """Energy (eV) and forces (eV/Å) of each structure from one forward and backward pass, without the stress
        and magnetic moments CHGNet's calculator also computes (what relaxing molecules needs; cheaper a step,
        bench/relax_cost.py).

        The forces are the gradient of the energy with respect to each graph's fractional coordinates, turned into
        Cartesian ones, rather than CHGNet's ``task="ef"``: that one keeps the graph of the gradient for training
        (``create_graph=True``), which a relaxation does not need (bench/forces_cost.py compares the two)."""
        if not structures:
            return []
        graphs = self._graphs(structures)
        for graph in graphs:
            # no gradient through the cell: forces do not need it, and without it CHGNet's volumes stay plain
            # numbers instead of warning, in every worker, about a tensor with a gradient turned into one
            graph.lattice = graph.lattice.detach()
        energies = self.network(graphs, task="e")["e"]  # eV per atom
        totals = energies * torch.tensor([len(atoms) for atoms in structures], dtype=energies.dtype,
                                         device=energies.device)
        gradients = torch.autograd.grad(totals.sum(), [graph.atom_frac_coord for graph in graphs])
        results = []
        for total, gradient, graph in zip(totals.detach(), gradients, graphs, strict=True):
            # cartesian = fractional @ lattice, so dE/dcartesian = dE/dfractional @ inverse(lattice)^T
            forces = -gradient @ torch.linalg.inv(graph.lattice).T
            results.append((float(total), forces.to("cpu", torch.float64).numpy()))
        return results

    def _graph(self, atoms: Atoms, index: int) -> CrystalGraph:
        graph = build_graph(self.network.graph_converter, atoms, index, self.on_isolated_atoms, self.name)
        if self.on_isolated_atoms == "warn":
            self._warn_of_isolated_atoms(atoms, index, graph)
        return graph.to(self.device)

    def _graphs(self, structures: Sequence[Atoms], start: int = 0) -> list[CrystalGraph]:
        """The graphs of a batch, in ``graph_workers`` processes when it has more than one structure."""
        if self.graph_workers < 2 or len(structures) < 2:
            return [self._graph(atoms, start + offset) for offset, atoms in enumerate(structures)]
        with self._graph_pool_lock:  # featurisation may run batches from several threads
            if self._graph_pool is None:
                self._graph_pool = GraphPool(self.network.graph_converter, self.graph_workers, self.on_isolated_atoms,
                                             self.name)
        graphs = self._graph_pool.graphs(structures, start)
        if self.on_isolated_atoms == "warn":
            for offset, (atoms, graph) in enumerate(zip(structures, graphs, strict=True)):
                self._warn_of_isolated_atoms(atoms, start + offset, graph)
        return [graph.to(self.device) for graph in graphs]

    def __getstate__(self) -> dict[str, Any]:
        # processes and locks do not travel; a copy starts its own
        return {key: value for key, value in self.__dict__.items() if key not in ("_graph_pool", "_graph_pool_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _graph_pool=None, _graph_pool_lock=threading.Lock())

    def _warn_of_isolated_atoms(self, atoms: Atoms, index: int, graph: CrystalGraph) -> None:
        centres = graph.atom_graph.reshape(-1, 2)[:, 0]  # (centre, neighbour) pairs; empty: one dimension
        if isolated := len(atoms) - len(torch.unique(centres)):
            warnings.warn(f"{self.name}: {structure_label(atoms, index)}: {isolated} atom(s) with no neighbour within "
                          f"the {self.cutoff:g} Å cutoff; their features come from their element's embedding alone",
                          IsolatedAtomsWarning, stacklevel=3)

    def _one_pass(self, graphs: list[CrystalGraph], sizes: list[int], layers: list[int]) -> list[dict[int, np.ndarray]]:
        with torch.no_grad():
            captured = forward_capturing(lambda: self.network(graphs, task="e"), self._layer_modules, layers)
        per_layer = {layer: torch.split(captured[layer].to("cpu", torch.float32), sizes) for layer in layers}
        return [{layer: per_layer[layer][index].numpy() for layer in layers} for index in range(len(graphs))]


def _quietly(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """CHGNet prints on every model and calculator construction; silence chgnet's own ``print`` for the call (a name
    in chgnet's modules), leaving ``sys.stdout`` and everyone else's output alone."""
    import chgnet.model.dynamics
    import chgnet.model.model

    def silent(*args: Any, **kwargs: Any) -> None:
        return None

    with mock.patch.object(chgnet.model.model, "print", silent, create=True), \
            mock.patch.object(chgnet.model.dynamics, "print", silent, create=True):
        return function(*args, **kwargs)


class CHGNetTrainable(torch.nn.Module):
    """CHGNet truncated after ``layer``, its per-atom features kept with gradients (for fine-tuning).

    Groups, by what reaches layer ``layer`` (``L``): ``embedding`` = the atom embedding, and from ``L >= 1`` the bond
    basis/embedding/weights of the atom graph, from ``L >= 2`` those of the bond graph and the angle embedding;
    ``interactions`` = ``atom_conv_layers[:L]``, ``bond_conv_layers[:L-1]`` and ``angle_layers[:L-2]`` (bond layer
    ``i`` feeds atom layer ``i + 1``, angle layer ``i`` feeds bond layer ``i + 1``); ``past_layer`` = the rest
    (later layers, readout norm and MLP, magnetic-moment head, composition model)."""

    supports_mixed_precision = False

    def __init__(self, backbone: CHGNetBackbone, layer: int) -> None:
        super().__init__()
        self.backbone_name = backbone.name
        self.layer = layer
        self.width = backbone.layer_widths[layer]
        self.network = backbone.network
        self._graph = backbone._graph
        self._module = backbone._layer_modules[layer]

    def inputs(self, structures: Sequence[Atoms]) -> list[CrystalGraph]:
        return [self._graph(atoms, index) for index, atoms in enumerate(structures)]

    def forward(self, inputs: Sequence[CrystalGraph]) -> list[torch.Tensor]:
        device = next(self.network.parameters()).device
        graphs = [graph.to(device) for graph in inputs]
        with warnings.catch_warnings():
            # chgnet makes each cell's volume a float of a lattice that requires grad (for stress); harmless here
            warnings.filterwarnings("ignore", "Converting a tensor with requires_grad=True to a scalar", UserWarning)
            captured = forward_capturing(lambda: self.network(graphs, task="e"), {self.layer: self._module},
                                         [self.layer], detach=False)
        return list(torch.split(captured[self.layer], [graph.atomic_number.shape[0] for graph in graphs]))

    def parameter_groups(self) -> dict[str, list[str]]:
        layer, net = self.layer, self.network
        embedding = ["atom_embedding"]
        if layer >= 1:
            embedding += ["bond_basis_expansion.rbf_expansion_ag", "bond_embedding", "bond_weights_ag"]
        if layer >= 2:
            embedding += ["bond_basis_expansion.rbf_expansion_bg", "angle_basis_expansion", "bond_weights_bg",
                          "angle_embedding"]
        interactions = [f"atom_conv_layers.{i}" for i in range(layer)]
        if isinstance(net.bond_conv_layers, torch.nn.ModuleList):
            interactions += [f"bond_conv_layers.{i}" for i in range(max(layer - 1, 0))]
        if isinstance(net.angle_layers, torch.nn.ModuleList):
            interactions += [f"angle_layers.{i}" for i in range(max(layer - 2, 0))]
        return groups_by_module([name for name, _ in self.named_parameters()], embedding, interactions)
