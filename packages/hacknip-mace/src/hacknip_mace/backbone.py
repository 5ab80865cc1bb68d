"""MACE (the ``mace-torch`` package) as a hacknip backbone.

Layer 0 is the node embedding: the node features entering the first interaction, i.e. the output of
``node_embedding`` (one-hot element -> linear, all scalars; plus the joint embedding of graph-level inputs for models
that have one). Layer ``i`` (1..num_interactions) is the output of ``products[i - 1]``, the product-basis block that
ends interaction ``i - 1``, keeping only its scalar (0e) channels, found from the block's irreps. In MACE-MP models
products[0] outputs the hidden irreps (e.g. 128x0e+128x1o for medium) and the last product outputs scalars only
(128x0e). With ``equivariant=True`` every channel is kept instead (e3nn layout), and the widths are the irreps'
dimensions.

Graphs are built the way mace's own ASE calculator builds them (``config_from_atoms`` -> ``AtomicData.from_config``
-> ``Batch.from_data_list``); several structures go into one batch, and all requested layers come from one forward
pass that stops after the deepest of them, so no readout, energy, force or stress is computed. ``trainable(layer)``
gives the same network truncated after a layer, with gradients, for fine-tuning (:class:`MACETrainable`).

A structure MACE cannot featurise raises :class:`hacknip.errors.BadStructureError`: an element outside the model's
``atomic_numbers``. An atom with no neighbour within ``r_max`` (a lone ion, a single-atom molecule) is featurised as
MACE does it: from its embedding, with no messages.

Loading is not safe: MACE ``.model`` files are whole pickled ``torch.nn.Module`` objects (mace, e3nn and torch
classes and functions), which only unpickling can read (see :func:`read_model`); the plugin does not declare
``safe_checkpoints``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import e3nn
import numpy as np
import torch
from ase import Atoms
from e3nn.o3 import Irreps

with contextlib.redirect_stdout(io.StringIO()):  # mace prints a notice about cuequivariance when imported
    import mace
    from mace import data as mace_data
    from mace.calculators.foundations_models import download_mace_mp_checkpoint, mace_mp_urls
    from mace.tools import torch_geometric
    from mace.tools.utils import AtomicNumberTable

from hacknip.errors import InputError
from hacknip.plugins.backbone import file_sha256, per_atom_features_in_batches
from hacknip.plugins.capture import forward_capturing, scalar_channels
from hacknip.plugins.trainable import groups_by_module
from hacknip_mace.plugin import (
    DEFAULT_MODEL,
    MACE_MP_CUTOFF,
    MACE_MP_LAYER_WIDTHS,
    PRETRAINED_MODELS,
    factory_name,
)

SPEC_NAME = "mace"
SUPPORTED_E3NN = ((0, 5, 0), (0, 5, 1))
DTYPES = {"float32": torch.float32, "float64": torch.float64}
_NAME_OF_KEY = {model.mace_key: name for name, model in PRETRAINED_MODELS.items()}


class IncompatibleE3nnError(ImportError):
    """The installed e3nn cannot read pickled MACE models."""


class MACEDownloadError(FileNotFoundError):
    """The weights of a pretrained model are not on this machine and mace-torch could not download them (typically:
    no network). A FileNotFoundError, so hacknip's command line shows it as one line."""


def check_e3nn(version: str | None = None) -> None:
    """Pickled MACE ``.model`` files hold e3nn objects; they load on e3nn 0.5.0-0.5.1 and fail on >= 0.5.2."""
    version = e3nn.__version__ if version is None else version
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if match is None or tuple(int(part) for part in match.groups()) not in SUPPORTED_E3NN:
        raise IncompatibleE3nnError(
            f"hacknip-mace needs e3nn 0.5.0 or 0.5.1 to load MACE models, but e3nn {version} is installed (pickled "
            "MACE models fail to load on e3nn >= 0.5.2). Fix: pip install e3nn==0.5.1 (mace-torch itself pins 0.4.4: "
            "install it with pip install --no-deps mace-torch==0.3.16)")


def mace_key(model: str) -> str:
    """The key mace-torch knows a pretrained model by: ``"mace-mp-0a-medium"`` -> ``"medium"``; keys pass through."""
    if model in PRETRAINED_MODELS:
        return PRETRAINED_MODELS[model].mace_key
    if model in mace_mp_urls:
        return model
    raise InputError(f"{model!r} is neither a MACE model file nor a pretrained MACE model; hacknip-mace knows "
                     f"{', '.join(PRETRAINED_MODELS)}, and mace-torch also {', '.join(sorted(mace_mp_urls))}")


def pretrained_checkpoint(model: str) -> Path:
    """The local file of a pretrained model, through mace-torch's own downloader and cache (``~/.cache/mace``)."""
    key = mace_key(model)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # mace prints download progress; keep stdout for hacknip
            return Path(download_mace_mp_checkpoint(key))
    except Exception as error:
        raise MACEDownloadError(
            f"could not get the MACE model {model!r}: mace-torch downloads it from {mace_mp_urls[key]} and that "
            f"failed ({type(error).__name__}: {error}). Without network, download the file on another machine and "
            "pass its local path instead, e.g. --backbone mace:/path/to/mace.model") from error


def read_model(path: str | Path, device: str = "cpu") -> torch.nn.Module:
    """A MACE model from a ``.model`` file."""
    check_e3nn()
    # MACE saves and ships its models as whole pickled torch.nn.Module objects (torch.save(model)), not as state
    # dicts, so they can only be read with weights_only=False, i.e. by unpickling: load only model files you trust.
    # (weights_only=True with safe_globals would have to allow dozens of mace/e3nn module classes, torch.fx's Tracer
    # and activation functions such as torch.nn.functional.silu: callables, so no safer than unpickling.)
    network = torch.load(path, map_location=device, weights_only=False)
    missing = [part for part in ("node_embedding", "interactions", "products", "atomic_numbers", "r_max")
               if not hasattr(network, part)]
    if not isinstance(network, torch.nn.Module) or missing:
        raise InputError(f"{path} does not hold a MACE model (a pickled mace.modules network, as MACE saves them); "
                         f"it holds a {type(network).__name__}"
                         + (f" without {', '.join(missing)}" if isinstance(network, torch.nn.Module) else ""))
    return network


def load(
    checkpoint: str | Path | None = None,
    model: str = DEFAULT_MODEL,
    device: str = "cpu",
    default_dtype: str = "float32",
    equivariant: bool = False,
    batch_size: int = 16,
) -> MACEBackbone:
    """A MACE model: a pretrained one by name (``model``; downloaded once by mace-torch into its cache), or a local
    ``.model`` file (``checkpoint``). ``checkpoint`` may also name a pretrained model, so ``mace:mace-mp-0b3-medium``
    and ``mace:medium-mpa-0`` (a mace-torch key) work as backbone names.

    ``default_dtype`` ("float32" | "float64") is the precision the network is converted to and run in.
    ``equivariant=True`` returns every channel of each layer (scalars and the l > 0 irreps) instead of the invariant
    scalars only; those features are not rotation-invariant.
    """
    check_e3nn()
    if default_dtype not in DTYPES:
        raise InputError(f"default_dtype must be one of {', '.join(DTYPES)}, got {default_dtype!r}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        key = str(checkpoint)
        if key not in PRETRAINED_MODELS and key not in mace_mp_urls:
            raise FileNotFoundError(
                f"MACE model file {key!r} does not exist, and it is not the name of a pretrained MACE model "
                f"({', '.join(PRETRAINED_MODELS)}; or a mace-torch key: {', '.join(sorted(mace_mp_urls))})")
        model, checkpoint = key, None
    if checkpoint is None:
        model = _NAME_OF_KEY.get(model, model)  # "medium" and "mace-mp-0a-medium" are the same weights
        path = pretrained_checkpoint(model)
        name = model if model in PRETRAINED_MODELS else f"{SPEC_NAME}:{model}"
    else:
        path, model = Path(checkpoint), None
        name = f"{SPEC_NAME}:{checkpoint}"
    network = read_model(path, device)
    network = network.to(DTYPES[default_dtype])
    backbone = MACEBackbone(network, name=name, model=model, checkpoint_sha256=file_sha256(path), device=device,
                            equivariant=equivariant, batch_size=batch_size)
    if model in PRETRAINED_MODELS and not equivariant:
        listed = (MACE_MP_CUTOFF, MACE_MP_LAYER_WIDTHS)
        if (backbone.cutoff, backbone.layer_widths) != listed:
            warnings.warn(f"{name}: the model has cutoff {backbone.cutoff:g} Å and layer widths "
                          f"{backbone.layer_widths}, hacknip-mace lists {listed[0]:g} Å and {listed[1]}; the "
                          "model's own are used", stacklevel=2)
    return backbone


def _pretrained_loader(model: str):
    def load_pretrained(checkpoint: str | Path | None = None, **options: Any) -> MACEBackbone:
        return load(checkpoint, model=model, **options)

    load_pretrained.__name__ = load_pretrained.__qualname__ = factory_name(model)
    load_pretrained.__doc__ = f"{PRETRAINED_MODELS[model].description}. Options as for :func:`load`."
    return load_pretrained


# One factory per registered pretrained model (``load_mace_mp_0a_medium`` ...): the specs in plugin.py name them.
for _model in PRETRAINED_MODELS:
    globals()[factory_name(_model)] = _pretrained_loader(_model)
del _model


class _NodeFeaturesInto:
    """Stands in for a module in :func:`forward_capturing`: its "output" is the ``node_feats`` the module receives.

    Layer 0 is read where the first interaction takes it, so that it is what the network really propagates (for
    models with a joint embedding, MACE adds it to the node embedding's output in place before the first interaction).
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def register_forward_hook(self, hook):
        def pre_hook(module, args, kwargs):
            hook(module, args, kwargs["node_feats"] if "node_feats" in kwargs else args[1])

        return self.module.register_forward_pre_hook(pre_hook, with_kwargs=True)


def layer_irreps(network: torch.nn.Module) -> dict[int, Irreps]:
    """Irreps of the node features of each layer (see the module docstring for the numbering)."""
    irreps = {0: Irreps(str(network.node_embedding.linear.irreps_out))}
    for index, product in enumerate(network.products):
        irreps[index + 1] = Irreps(str(product.linear.irreps_out))
    return irreps


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """mace's data classes create tensors in torch's default dtype (mace's own context manager does not restore it
    when an exception passes through)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class MACEBackbone:
    """Per-atom features of every MACE layer (see the module docstring for the layer numbering)."""

    needs_supercell = False
    """MACE's neighbour list (matscipy) holds every periodic image within the cutoff."""

    def __init__(self, network: torch.nn.Module, *, name: str, model: str | None, checkpoint_sha256: str,
                 device: str = "cpu", equivariant: bool = False, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.name = name
        self.model = model
        self.checkpoint_sha256 = checkpoint_sha256
        self.equivariant = bool(equivariant)
        self.batch_size = batch_size
        self.concurrent_batches = False  # graphs are built under a process-wide default dtype (_default_dtype)
        self.dtype = next(network.parameters()).dtype
        self.cutoff = float(network.r_max)
        atomic_numbers = [int(z) for z in network.atomic_numbers]
        self.supported_elements = frozenset(atomic_numbers)
        self._z_table = AtomicNumberTable(atomic_numbers)
        self._heads = list(getattr(network, "heads", None) or ["Default"])
        self.layer_irreps = layer_irreps(network)
        """Irreps of each layer's full node features; ``layer_widths`` counts their 0e channels (all of them with
        ``equivariant=True``)."""
        self._layer_modules: dict[int, Any] = {0: _NodeFeaturesInto(network.interactions[0])}
        self._layer_modules.update({index + 1: product for index, product in enumerate(network.products)})
        if self.equivariant:
            self._columns = {layer: slice(None) for layer in self.layer_irreps}
            self.layer_widths = tuple(self.layer_irreps[layer].dim for layer in sorted(self.layer_irreps))
        else:
            self._columns = {layer: scalar_channels(irreps) for layer, irreps in self.layer_irreps.items()}
            self.layer_widths = tuple(self.layer_irreps[layer].count("0e") for layer in sorted(self.layer_irreps))

    def identity(self) -> dict[str, Any]:
        return {
            "name": SPEC_NAME,
            "library": "mace-torch",
            "library_version": mace.__version__,
            "model": self.model,
            "checkpoint_sha256": self.checkpoint_sha256,
            "cutoff": self.cutoff,
            "dtype": str(self.dtype).removeprefix("torch."),
            "features": "equivariant" if self.equivariant else "invariant",
        }

    def per_atom_features(self, structures: Sequence[Atoms], layers: Sequence[int]) -> list[dict[int, np.ndarray]]:
        return per_atom_features_in_batches(self, structures, layers, self.batch_size, self._one_pass)

    def calculator(self, **options: Any):
        """mace's ASE calculator on the same network (energy, forces, stress)."""
        from mace.calculators import MACECalculator

        return MACECalculator(models=self.network, device=str(self.device),
                              default_dtype=str(self.dtype).removeprefix("torch."), **options)

    def _graph(self, atoms: Atoms):
        config = mace_data.config_from_atoms(atoms, key_specification=mace_data.KeySpecification(),
                                             head_name=self._heads[-1])
        return mace_data.AtomicData.from_config(config, z_table=self._z_table, cutoff=self.cutoff, heads=self._heads)

    def _extract(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        return output[:, self._columns[layer]].clone()

    def trainable(self, layer: int) -> MACETrainable:
        """The network truncated after ``layer`` for fine-tuning (:mod:`hacknip.plugins.trainable`); it shares this
        backbone's modules, so training it changes this backbone."""
        return MACETrainable(self, layer)

    def _graphs(self, structures: Sequence[Atoms]) -> list[Any]:
        with _default_dtype(self.dtype):
            return [self._graph(atoms) for atoms in structures]

    def _run(self, graphs: Sequence[Any], device: torch.device) -> functools.partial:
        """The network's forward pass on one batch of the graphs (new tensors: the graphs are left as they are),
        without forces, virials or stress."""
        batch = torch_geometric.Batch.from_data_list(list(graphs)).to(device).to_dict()
        return functools.partial(self.network, batch, training=False, compute_force=False, compute_virials=False,
                                 compute_stress=False)

    def _one_pass(self, structures: list[Atoms], layers: list[int]) -> list[dict[int, np.ndarray]]:
        run = self._run(self._graphs(structures), self.device)
        with torch.no_grad():
            captured = forward_capturing(run, self._layer_modules, layers, self._extract)
        sizes = [len(atoms) for atoms in structures]
        per_layer = {layer: torch.split(captured[layer].cpu(), sizes) for layer in layers}
        return [{layer: per_layer[layer][index].numpy() for layer in layers} for index in range(len(structures))]


@contextlib.contextmanager
def _geometry_without_gradient(network: torch.nn.Module) -> Iterator[None]:
    """MACE marks the positions as requiring a gradient in every forward pass (for forces); here the edge vectors and
    lengths reach the spherical harmonics and the radial embedding detached, so that a backward pass computes no
    gradient with respect to the geometry (none is needed for fine-tuning). Passes in other threads are left alone."""
    caller = threading.get_ident()

    def detach_first(module, args):
        if threading.get_ident() != caller or not args or not isinstance(args[0], torch.Tensor):
            return None
        return (args[0].detach(), *args[1:])

    handles = [module.register_forward_pre_hook(detach_first)
               for module in (getattr(network, "spherical_harmonics", None), getattr(network, "radial_embedding", None))
               if module is not None]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class MACETrainable(torch.nn.Module):
    """MACE truncated after ``layer``, its per-atom features (scalar channels, or all with ``equivariant=True``)
    kept with gradients (for fine-tuning).

    Groups, by what reaches layer ``layer`` (``L``): ``embedding`` = the node embedding (and the joint embedding of
    graph-level inputs, for models that have one), and from ``L >= 1`` the radial embedding (trainable only in models
    built with trainable Bessel weights); ``interactions`` = ``interactions[:L]`` and ``products[:L]`` (layer ``L`` is
    the output of ``products[L - 1]``, which reads ``interactions[L - 1]``); ``past_layer`` = the rest (later
    interactions and products, the readouts, the embedding readout, the pair repulsion, the atomic energies and the
    scale/shift).

    The forward pass is MACE's own, without forces, virials or stress and stopped at the layer; the geometry enters
    it without a gradient (:func:`_geometry_without_gradient`)."""

    supports_mixed_precision = False

    def __init__(self, backbone: MACEBackbone, layer: int) -> None:
        super().__init__()
        self.backbone_name = backbone.name
        self.layer = layer
        self.width = backbone.layer_widths[layer]
        self.network = backbone.network
        self._graphs = backbone._graphs
        self._run = backbone._run
        self._extract = backbone._extract
        self._module = backbone._layer_modules[layer]

    def inputs(self, structures: Sequence[Atoms]) -> list[Any]:
        return self._graphs(structures)

    def forward(self, inputs: Sequence[Any]) -> list[torch.Tensor]:
        run = self._run(inputs, next(self.network.parameters()).device)
        with _geometry_without_gradient(self.network):
            captured = forward_capturing(run, {self.layer: self._module}, [self.layer], self._extract, detach=False)
        return list(torch.split(captured[self.layer], [int(graph.positions.shape[0]) for graph in inputs]))

    def parameter_groups(self) -> dict[str, list[str]]:
        layer = self.layer
        embedding = ["node_embedding", "joint_embedding"] + (["radial_embedding"] if layer >= 1 else [])
        interactions = [f"{blocks}.{index}" for blocks in ("interactions", "products") for index in range(layer)]
        return groups_by_module([name for name, _ in self.named_parameters()], embedding, interactions)
