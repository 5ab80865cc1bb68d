"""SevenNet (the ``sevenn`` package) as a hacknip backbone.

Layer 0 is the node embedding: the output of ``onehot_to_feature_x`` (one-hot element -> linear, all scalars).
Layer ``i`` (1..n_blocks) is the node feature ``x`` after ``{i-1}_equivariant_gate``, the last module of interaction
block ``i - 1``, keeping only its scalar (0e) channels; which channels those are is read from the gate's irreps.
Several structures are batched into one torch_geometric graph; all requested layers come from one forward pass that
stops after the deepest of them, so no energy, force or stress is computed. ``trainable(layer)`` gives the same
network truncated after a layer, with gradients, for fine-tuning (:class:`SevenNetTrainable`).

Checkpoints (pretrained and local) are read with ``torch.load(weights_only=True)``, allowing numpy arrays (SevenNet
configs hold float32 shift/scale arrays) and nothing else (:func:`read_checkpoint`), then built as sevenn builds them
(:class:`SafeCheckpoint`, sevenn's ``SevenNetCheckpoint`` minus its unpickling ``torch.load(weights_only=False)``).
A file that needs unpickling anything else is refused with :class:`hacknip.errors.UntrustedFileError`.

A structure SevenNet cannot featurise raises :class:`hacknip.errors.BadStructureError`: an element outside the
model's type map. An atom with no neighbour within the cutoff (a lone ion, a single-atom molecule) is featurised as
SevenNet does it: from its embedding, with no messages.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import sevenn
import sevenn._keys as KEY
import sevenn.util
import torch
from ase import Atoms
from e3nn.o3 import Irreps
from sevenn.atom_graph_data import AtomGraphData
from sevenn.checkpoint import SevenNetCheckpoint, _config_cp_routine
from sevenn.nn.sequential import AtomGraphSequential
from sevenn.train.dataload import unlabeled_atoms_to_graph
from torch_geometric.data import Batch

from hacknip.errors import InputError
from hacknip.plugins.backbone import file_sha256, per_atom_features_in_batches, refusing_pickles
from hacknip.plugins.capture import forward_capturing, scalar_channels
from hacknip.plugins.trainable import groups_by_module

SPEC_NAME = "sevennet"
DEFAULT_MODEL = "7net-0"
EMBEDDING_MODULE = "onehot_to_feature_x"
GATE_MODULE = re.compile(r"(\d+)_equivariant_gate")
BLOCK_MODULE = re.compile(r"(\d+)_")
EDGE_MODULES = frozenset({"edge_embedding"})
"""Modules before the first interaction block that only the convolutions read (not the layer-0 node embedding)."""


def load(
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    model: str = DEFAULT_MODEL,
    modal: str | None = None,
    batch_size: int = 16,
) -> SevenNetBackbone:
    """A SevenNet model: a pretrained one shipped with sevenn (``model``), or a local checkpoint file (SevenNet's own
    ``.pth`` format). ``checkpoint`` may also name a pretrained model, so ``sevennet:7net-0_22may2024`` works.

    ``modal`` picks the fidelity of a multi-fidelity model (7net-mf-0: ``"PBE"`` or ``"R2SCAN"``, case-insensitive);
    left out, the checkpoint's own default modal is used.
    """
    if checkpoint is not None and not Path(checkpoint).is_file():
        model, checkpoint = str(checkpoint), None
    if checkpoint is None:
        path = pretrained_checkpoint(model)
        name = SPEC_NAME if model == DEFAULT_MODEL else f"{SPEC_NAME}:{model}"
    else:
        path, model = Path(checkpoint), None
        name = f"{SPEC_NAME}:{checkpoint}"
    saved = SafeCheckpoint(path)
    return SevenNetBackbone(saved.build_model(), name=name, model=model, checkpoint=path, modal=modal,
                            default_modal=saved.config.get("default_modal"), device=device, batch_size=batch_size)


def _numpy_globals() -> list[Any]:
    """What a weights-only unpickler needs to rebuild plain numpy arrays (SevenNet checkpoints hold float32 ones):
    ndarray, dtype, the dtype classes of booleans, numbers and strings, and numpy's array reconstructor, which only
    calls ``ndarray.__new__`` on a subtype that must itself be allowed (here ndarray alone). No object arrays."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct

    dtype_classes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDGUS"}
    reconstruct = [(_reconstruct, f"{module}.multiarray._reconstruct") for module in ("numpy.core", "numpy._core")]
    return [*reconstruct, np.ndarray, np.dtype, *dtype_classes]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The dict saved in a SevenNet checkpoint file, read with ``torch.load(weights_only=True)`` and numpy arrays
    allowed: nothing that unpickling could run. Raises :class:`hacknip.errors.UntrustedFileError` for a file that holds
    anything else (sevenn's own loader would unpickle it)."""
    with refusing_pickles(path, "SevenNet checkpoint"), torch.serialization.safe_globals(_numpy_globals()):
        saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or not isinstance(saved.get("model_state_dict"), dict):
        raise InputError(f"{path} is not a SevenNet checkpoint: expected a dict with 'config' and 'model_state_dict'")
    return saved


class SafeCheckpoint(SevenNetCheckpoint):
    """sevenn's ``SevenNetCheckpoint`` (config routine, ``build_model``) on a file read by :func:`read_checkpoint`
    instead of sevenn's ``torch.load(weights_only=False)``. ``_load`` fills the same fields as sevenn 0.13's."""

    def _load(self) -> None:
        assert not self._loaded
        saved = read_checkpoint(self.checkpoint_path)
        self._config_original = saved.get("config", {})
        self._model_state_dict = saved.get("model_state_dict", {})
        self._optimizer_state_dict = saved.get("optimizer_state_dict", {})
        self._scheduler_state_dict = saved.get("scheduler_state_dict", {})
        self._epoch = saved.get("epoch", None)
        self._time = saved.get("time", "Not found")
        self._hash = saved.get("hash", "Not found")
        if len(self._config_original) == 0:
            warnings.warn(f"config is not found from {self.checkpoint_path}", stacklevel=2)
            self._config = {}
        else:
            self._config = _config_cp_routine(self._config_original)
        if len(self._model_state_dict) == 0:
            warnings.warn(f"model_state_dict is not found from {self.checkpoint_path}", stacklevel=2)
        self._loaded = True


def pretrained_checkpoint(model: str) -> Path:
    """The checkpoint file sevenn resolves a pretrained name to. Never downloads: a model that is not on this
    machine (only 7net-0, 7net-0_22may2024, 7net-l3i5 and 7net-mf-0 ship in the wheel) is an error."""

    def refuse_download(path: str, url: str) -> str:
        raise FileNotFoundError(f"the SevenNet model {model!r} is not on this machine ({path}) and hacknip does not "
                                f"download weights; fetch {url} yourself and pass the file's path as checkpoint")

    with mock.patch.object(sevenn.util, "download_checkpoint", refuse_download):
        try:
            return Path(sevenn.util.pretrained_name_to_path(model))
        except ValueError:
            known = ", ".join(sevenn.util.get_available_pretrained_models())
            raise InputError(f"{model!r} is neither a SevenNet checkpoint file nor a pretrained SevenNet model "
                             f"({known})") from None


def resolve_modal(network: AtomGraphSequential, default: str | None, modal: str | None) -> str | None:
    """The modal (fidelity) to run a multi-fidelity model with, spelled as in its modal map."""
    available = list(network.modal_map or {})
    if not available:
        if modal is not None:
            raise InputError(f"modal={modal!r} given, but this SevenNet model has a single fidelity")
        return None
    wanted = modal if modal is not None else default
    if wanted is None:
        raise InputError(f"this SevenNet model is multi-fidelity and has no default: pass modal= one of {available}")
    for name in available:
        if name.lower() == wanted.lower():
            return name
    raise InputError(f"unknown modal {wanted!r} for this SevenNet model; it has {available}")


def layer_modules(network: AtomGraphSequential) -> tuple[dict[int, torch.nn.Module], dict[int, Irreps]]:
    """Module whose output is each layer, and the irreps of that output's node features."""
    children = dict(network.named_children())
    modules = {0: children[EMBEDDING_MODULE]}
    irreps = {0: Irreps(children[EMBEDDING_MODULE].irreps_out)}
    blocks = sorted({int(match.group(1)) for name in children if (match := BLOCK_MODULE.match(name))})
    gates = {int(match.group(1)): module for name, module in children.items() if (match := GATE_MODULE.fullmatch(name))}
    if sorted(gates) != blocks:
        # Every interaction block sevenn builds (interaction type "nequip") ends with a gate.
        raise InputError(f"interaction blocks {sorted(set(blocks) - set(gates))} of this SevenNet model have no "
                         "equivariant gate; hacknip reads each block's features at its gate")
    for block in blocks:
        modules[block + 1] = gates[block]
        irreps[block + 1] = Irreps(gates[block].gate.irreps_out)
    return modules, irreps


class SevenNetBackbone:
    """Per-atom invariant features of every SevenNet layer (see the module docstring for the layer numbering)."""

    needs_supercell = False
    """SevenNet's neighbour list (ASE / matscipy) holds every periodic image within the cutoff."""

    def __init__(self, network: AtomGraphSequential, *, name: str, model: str | None, checkpoint: Path,
                 modal: str | None = None, default_modal: str | None = None, device: str = "cpu",
                 batch_size: int = 16) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        network.set_is_batch_data(True)
        self.network = network.to(device).eval()
        self.name = name
        self.model = model
        self.checkpoint = checkpoint
        self.checkpoint_sha256 = file_sha256(checkpoint)
        self.modal = resolve_modal(network, default_modal, modal)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.concurrent_batches = self.device.type == "cpu"  # a stateless forward pass; 1.4x on 2 cores (docs/benchmarks.md)
        self.cutoff = float(network.cutoff)
        self.supported_elements = frozenset(int(z) for z in network.type_map)
        self.dtype = next(network.parameters()).dtype
        self._layer_modules, irreps = layer_modules(network)
        self._scalars = {layer: scalar_channels(layer_irreps) for layer, layer_irreps in irreps.items()}
        self.layer_widths = tuple(irreps[layer].count("0e") for layer in sorted(irreps))

    def identity(self) -> dict[str, Any]:
        return {
            "name": SPEC_NAME,
            "library": "sevenn",
            "library_version": sevenn.__version__,
            "model": self.model,
            "checkpoint_sha256": self.checkpoint_sha256,
            "cutoff": self.cutoff,
            "modal": self.modal,
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    def per_atom_features(self, structures: Sequence[Atoms], layers: Sequence[int]) -> list[dict[int, np.ndarray]]:
        return per_atom_features_in_batches(self, structures, layers, self.batch_size, self._one_pass)

    def calculator(self, **options: Any):
        """sevenn's ASE calculator with the same weights and modal (energy, forces, stress)."""
        from sevenn.calculator import SevenNetCalculator

        # A copy: the calculator switches the network it is given to unbatched mode. Copying takes a fraction of
        # the time that building the network again from the checkpoint would.
        return SevenNetCalculator(model=copy.deepcopy(self.network), file_type="model_instance",
                                  device=self.device, modal=self.modal, **options)

    def energies_and_forces(self, structures: Sequence[Atoms]) -> list[tuple[float, np.ndarray]]:
        """Energy (eV) and forces (eV/Å) of each structure from one pass of the whole network over the batch, as
        sevenn's calculator computes them one structure at a time (what relaxing many molecules at once needs)."""
        if not structures:
            return []
        batch = self._batch([self._graph(atoms) for atoms in structures], self.device)
        output = self.network(batch)  # not under no_grad: sevenn takes the forces as a gradient inside its forward
        energies = output[KEY.PRED_TOTAL_ENERGY].detach().to("cpu", torch.float64).reshape(-1)
        forces = torch.split(output[KEY.PRED_FORCE].detach().to("cpu", torch.float64), [len(atoms) for atoms in structures])
        return [(float(energy), force.numpy()) for energy, force in zip(energies, forces, strict=True)]

    def _graph(self, atoms: Atoms) -> AtomGraphData:
        graph = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, self.cutoff))
        if self.modal is not None:
            graph[KEY.DATA_MODALITY] = self.modal
        return graph

    def _scalar_part(self, layer: int, output: dict[str, torch.Tensor]) -> torch.Tensor:
        return output[KEY.NODE_FEATURE][:, self._scalars[layer]]

    def trainable(self, layer: int) -> SevenNetTrainable:
        """The network truncated after ``layer`` for fine-tuning (:mod:`hacknip.plugins.trainable`); it shares this
        backbone's modules, so training it changes this backbone."""
        return SevenNetTrainable(self, layer)

    @staticmethod
    def _batch(graphs: Sequence[AtomGraphData], device: torch.device) -> Batch:
        """One torch_geometric batch of the graphs (new tensors: the graphs themselves are left as they are)."""
        return Batch.from_data_list(list(graphs)).to(device)

    def _one_pass(self, structures: list[Atoms], layers: list[int]) -> list[dict[int, np.ndarray]]:
        batch = self._batch([self._graph(atoms) for atoms in structures], self.device)
        with torch.no_grad():
            captured = forward_capturing(lambda: self.network(batch), self._layer_modules, layers, self._scalar_part)
        sizes = [len(atoms) for atoms in structures]
        per_layer = {layer: torch.split(captured[layer].to("cpu", torch.float32), sizes) for layer in layers}
        return [{layer: per_layer[layer][index].numpy() for layer in layers} for index in range(len(structures))]


class SevenNetTrainable(torch.nn.Module):
    """SevenNet truncated after ``layer``, the scalar (0e) part of its per-atom features kept with gradients (for
    fine-tuning).

    Groups, by what reaches layer ``layer`` (``L``): ``embedding`` = the modules before the first interaction block
    that feed it: the element embedding (``onehot_to_feature_x``) and, from ``L >= 1``, the edge embedding (its
    trainable Bessel coefficients), which only the convolutions read; ``interactions`` = every module of blocks
    ``0..L-1`` (the output of layer ``L`` is block ``L - 1``'s gate, and each block reads only the previous block's
    node features and the embeddings), including each convolution's ``denominator``, which sevenn keeps constant
    unless trained with ``train_denominator``; ``past_layer`` = the rest (later blocks, the energy readout and its
    per-species shift and scale, and at ``L = 0`` the edge embedding).

    The forward pass runs the network's modules as ``AtomGraphSequential.forward`` does but without marking the
    edge vectors as requiring a gradient (sevenn does, for forces): no gradient with respect to the geometry is
    computed, and the pass stops at the layer, before the force module."""

    supports_mixed_precision = False

    def __init__(self, backbone: SevenNetBackbone, layer: int) -> None:
        super().__init__()
        self.backbone_name = backbone.name
        self.layer = layer
        self.width = backbone.layer_widths[layer]
        self.network = backbone.network
        self._graph = backbone._graph
        self._batch = backbone._batch
        self._scalar_part = backbone._scalar_part
        self._module = backbone._layer_modules[layer]

    def inputs(self, structures: Sequence[Atoms]) -> list[AtomGraphData]:
        return [self._graph(atoms) for atoms in structures]

    def forward(self, inputs: Sequence[AtomGraphData]) -> list[torch.Tensor]:
        batch = self._batch(inputs, next(self.network.parameters()).device)
        captured = forward_capturing(lambda: self._run(batch), {self.layer: self._module}, [self.layer],
                                     self._scalar_part, detach=False)
        return list(torch.split(captured[self.layer], [int(graph.num_nodes) for graph in inputs]))

    def _run(self, batch: Batch) -> Any:
        network = self.network
        data = network._preprocess(batch)
        if network.key_grad is not None:
            # _preprocess made the batch's edge vectors require a gradient, for forces: not needed here.
            data[network.key_grad] = data[network.key_grad].detach()
        for module in network:
            data = module(data)
        return data

    def parameter_groups(self) -> dict[str, list[str]]:
        children = [name for name, _ in self.network.named_children()]
        first_block = next(index for index, name in enumerate(children) if BLOCK_MODULE.match(name))
        embedding = [name for name in children[:first_block] if self.layer >= 1 or name not in EDGE_MODULES]
        interactions = [name for name in children
                        if (match := BLOCK_MODULE.match(name)) and int(match.group(1)) < self.layer]
        return groups_by_module([name for name, _ in self.named_parameters()], embedding, interactions)
