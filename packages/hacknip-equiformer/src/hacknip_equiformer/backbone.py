"""UMA and eSEN (fairchem-core 2.x, ``fairchem.core.models.uma``) as hacknip backbones.

Layers: layer 0 is what enters the first block (atom embedding + charge/spin/task embedding + edge-degree
embedding), layer ``i`` the output of ``backbone.blocks[i - 1]``. Each is an (atoms, (lmax+1)², channels) array of
spherical-harmonic coefficients; the invariant features are its l=0 row, ``[:, 0, :]``. In charge-balanced
checkpoints (UMA 1.2) channels 0-2 of a block output are taken before fairchem re-balances them.

Loading goes through fairchem's own loaders: ``pretrained_mlip.pretrained_checkpoint_path_from_name`` (Hugging Face
download, or its cache) for a model name, then ``load_predict_unit`` on the checkpoint file. The inference settings
keep the mixture of linear experts unmerged (``merge_mole=False``), so one batch may mix compositions, and use
fairchem's internal graph generation, with the cutoff and neighbour cap stored in the checkpoint.

Graph and supercells: fairchem's radius graph sees every periodic image within the cutoff. Its neighbour cap
(``max_neighbors``) is applied non-strictly: an atom keeps every neighbour up to the capped distance plus 0.01 Å, so
degenerate shells are never cut and the graph of a supercell is the graph of the cell, repeated. The per-system
expert mixing uses the mean composition, which is size-intensive. Hence ``needs_supercell=False`` (the conformance
suite checks it, including with a tight cap), with one exception: UMA-S 1.2 (``model_id == "UMA-S-1.2"``), whose
composition embedding divides by n+1 instead of n (fairchem's ``include_self`` bug, kept for that checkpoint), so
its features depend on the cell size; it declares ``needs_supercell=True``.

Bad structures raise :class:`hacknip.errors.BadStructureError`: an element outside the embedding table, and
charge/spin values in ``atoms.info`` that fairchem's ``validate_atoms_data`` rejects. An atom with no neighbour within
the cutoff (a lone ion, a single-atom molecule) is featurised as fairchem does it: from its embedding, with no messages.

Checkpoints are not loaded safely: fairchem's ``MLIPPredictUnit`` reads the file with ``torch.load(weights_only=False)``
itself, and the checkpoint's ``model_config`` names the classes hydra instantiates (``_target_``, any importable
callable), so even a weights-only read would let the file choose code to run. ``safe_checkpoints`` is not declared.

Determinism: fairchem draws a random roll angle for every edge's local frame in each forward pass, inference
included. The l=0 features are invariant to it up to float rounding (~1e-7); each pass here runs with a fixed seed
(the caller's random state is restored), so equal inputs give bit-identical features.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hacknip_equiformer.models import (
    DEFAULT_MODEL,
    FAIRCHEM2_MODELS,
    UMA_TASKS,
    BackboneUnavailableError,
    require_fairchem2,
)

require_fairchem2()

import fairchem.core  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import Atoms  # noqa: E402
from fairchem.core.calculate import pretrained_mlip  # noqa: E402
from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch  # noqa: E402
from fairchem.core.units.mlip_unit import load_predict_unit  # noqa: E402
from fairchem.core.units.mlip_unit.api.inference import InferenceSettings  # noqa: E402

from hacknip.errors import BadStructureError, InputError  # noqa: E402
from hacknip.plugins.backbone import file_sha256, per_atom_features_in_batches  # noqa: E402
from hacknip.plugins.capture import forward_capturing  # noqa: E402
from hacknip_equiformer._common import InputOf, fixed_rng, split_checkpoint  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64}
UMA_1P2_MODEL_ID = "UMA-S-1.2"


class WeightsUnavailableError(BackboneUnavailableError):
    """A pretrained checkpoint could not be fetched (no network, or no access to the gated Hugging Face repo)."""


def inference_settings(dtype: str = "float32", execution_mode: str | None = "general") -> InferenceSettings:
    """fairchem's "batch" preset in full precision: unmerged experts (mixed compositions in one batch), no compile,
    internal graph generation (version 2), no activation checkpointing (inference only, nothing is kept for backward).
    """
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return InferenceSettings(
        tf32=False,
        activation_checkpointing=False,
        merge_mole=False,
        compile=False,
        external_graph_gen=False,
        internal_graph_gen_version=2,
        base_precision_dtype=DTYPES[dtype],
        execution_mode=execution_mode,
    )


def pretrained_checkpoint(model: str) -> Path:
    """The local file of a fairchem pretrained model: fairchem's own download (or Hugging Face cache)."""
    if model not in pretrained_mlip.available_models:
        raise InputError(f"unknown fairchem model {model!r}; fairchem-core {fairchem.core.__version__} knows "
                         f"{', '.join(pretrained_mlip.available_models)}")
    try:
        return Path(pretrained_mlip.pretrained_checkpoint_path_from_name(model))
    except Exception as error:  # huggingface_hub raises several types (offline, gated repo, HTTP)
        raise WeightsUnavailableError(
            f"could not get the weights of {model!r} from Hugging Face ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no message'}). The fairchem repositories are gated: "
            f"request access on huggingface.co and log in (hf auth login), on a machine with network. Without "
            f"network, pass a local copy of the checkpoint: --backbone {model}:/path/to/{model}.pt") from error


def load(
    checkpoint: str | Path | None = None,
    model: str = DEFAULT_MODEL,
    task_name: str | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    dtype: str = "float32",
    execution_mode: str | None = "general",
    spec_name: str | None = None,
) -> FairchemBackbone:
    """A UMA or eSEN backbone from fairchem's pretrained ``model`` (downloaded by fairchem, or read from its cache),
    or from a local inference checkpoint (the ``.pt`` files fairchem publishes and its trainer writes).

    ``checkpoint`` is what follows the backbone name's colon: a path, a task name (``uma-s-1p1:omol``), both
    (``uma-s-1p1:/models/uma-s-1p1.pt:omol``), or another fairchem model name. ``task_name`` is the UMA task
    (omat, omol, oc20, odac, omc, ...); by default ``omat``, or the only task of a single-task model (eSEN OMol25).
    """
    spec_name = spec_name or model
    path, task_from_name = split_checkpoint(checkpoint, UMA_TASKS)
    if task_from_name is not None:
        if task_name is not None and task_name != task_from_name:
            raise InputError(f"task given twice: {task_from_name!r} in the name and task_name={task_name!r}")
        task_name = task_from_name
    if path is not None and not Path(path).is_file() and path in pretrained_mlip.available_models:
        model, path = path, None
    name = spec_name if checkpoint is None else f"{spec_name}:{checkpoint}"
    if path is None:
        weights = pretrained_checkpoint(model)
        model_label: str | None = model
    else:
        weights = Path(path)
        if not weights.is_file():
            raise FileNotFoundError(f"fairchem checkpoint {str(path)!r} does not exist, and it is not one of "
                                    f"fairchem's pretrained models ({', '.join(pretrained_mlip.available_models)})")
        model_label = None
    settings = inference_settings(dtype, execution_mode)
    predict_unit = load_predict_unit(str(weights), inference_settings=settings, device=device)
    backbone = FairchemBackbone(predict_unit, name=name, model=model_label, checkpoint_sha256=file_sha256(weights),
                                task_name=task_name, device=device, batch_size=batch_size, dtype=dtype)
    if model_label in FAIRCHEM2_MODELS:
        _compare_with_registry(backbone, model_label)
    return backbone


def _compare_with_registry(backbone: FairchemBackbone, model: str) -> None:
    registered = FAIRCHEM2_MODELS[model]
    if (registered.cutoff, registered.layer_widths) != (backbone.cutoff, backbone.layer_widths):
        warnings.warn(f"hacknip-equiformer registers {model} with cutoff {registered.cutoff} Å and layer widths "
                      f"{registered.layer_widths}, but the checkpoint says {backbone.cutoff} Å and "
                      f"{backbone.layer_widths}; the checkpoint is used. Please report this.", stacklevel=3)


class FairchemBackbone:
    """Per-atom invariant features of every layer of a UMA / eSEN network (see the module docstring)."""

    def __init__(self, predict_unit: Any, *, name: str, model: str | None, checkpoint_sha256: str,
                 task_name: str | None = None, device: str = "cpu", batch_size: int = 16,
                 dtype: str = "float32") -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.predict_unit = predict_unit
        self.name = name
        self.model = model
        self.checkpoint_sha256 = checkpoint_sha256
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.concurrent_batches = False  # each pass seeds the process-wide random generator (_common.fixed_rng)
        self.dtype = DTYPES[dtype]
        self.task_name = self._resolve_task(task_name, list(predict_unit.dataset_to_tasks))
        net = self._network
        self.cutoff = float(net.cutoff)
        self.max_neighbors = int(net.max_neighbors)
        self.enforce_max_neighbors_strictly = bool(getattr(net, "enforce_max_neighbors_strictly", False))
        self.graph_generation_version = int(net.radius_pbc_version)
        self.layer_widths = (int(net.sphere_channels),) * (len(net.blocks) + 1)
        # The atom embedding is indexed by atomic number.
        self.supported_elements = frozenset(range(1, int(net.max_num_elements)))
        self.model_id = getattr(predict_unit.model.module, "model_id", None)
        composition_bug = (self.model_id == UMA_1P2_MODEL_ID and getattr(net, "num_experts", 0) > 0
                           and getattr(net, "use_composition_embedding", False))
        self.needs_supercell = composition_bug or (self.enforce_max_neighbors_strictly and self.max_neighbors > 0)
        self._prepared = False

    @property
    def _network(self):
        return self.predict_unit.model.module.backbone

    @staticmethod
    def _resolve_task(task_name: str | None, tasks: list[str]) -> str:
        if task_name is None:
            if "omat" in tasks:
                return "omat"
            if len(tasks) == 1:
                return tasks[0]
            raise InputError(f"this model has several tasks, {tasks}: choose one (task_name=..., or NAME:TASK)")
        if task_name not in tasks:
            raise InputError(f"task {task_name!r} is not in this model; it has {tasks}")
        return task_name

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "library": "fairchem-core",
            "library_version": fairchem.core.__version__,
            "model": self.model,
            "model_id": self.model_id,
            "checkpoint_sha256": self.checkpoint_sha256,
            "task_name": self.task_name,
            "cutoff": self.cutoff,
            "max_neighbors": self.max_neighbors,
            "enforce_max_neighbors_strictly": self.enforce_max_neighbors_strictly,
            "graph_generation_version": self.graph_generation_version,
            "dtype": str(self.dtype).removeprefix("torch."),
            "layers": "input of blocks[0], outputs of blocks[i]; l=0 coefficients",
        }

    def per_atom_features(self, structures: Sequence[Atoms], layers: Sequence[int]) -> list[dict[int, np.ndarray]]:
        return per_atom_features_in_batches(self, structures, layers, self.batch_size, self._one_pass,
                                            pass_start=True)

    def calculator(self, **options: Any):
        """fairchem's ASE calculator on the same predict unit and task (energy, forces, stress)."""
        from fairchem.core import FAIRChemCalculator

        return FAIRChemCalculator(self.predict_unit, task_name=self.task_name, **options)

    def _atomic_data(self, atoms: Atoms, index: int) -> AtomicData:
        # A clean copy: only what the network reads, so that batches never mix optional keys (energies, ...).
        info = {"charge": atoms.info.get("charge", 0),
                "spin": atoms.info.get("spin", 1 if self.task_name == "omol" else 0)}
        clean = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc, info=info)
        if clean.pbc.any() and not clean.pbc.all() and clean.cell.rank < 3:
            # A slab without a vector along its open axis: fairchem wants a cell; a box, still open there.
            clean.center(vacuum=self.cutoff + 1.0, axis=[axis for axis in range(3) if not clean.pbc[axis]])
        try:
            self.predict_unit.validate_atoms_data(clean, self.task_name)  # charge/spin ranges, as FAIRChemCalculator
        except (TypeError, ValueError) as error:
            raise BadStructureError(f"{self.name}: structure {index} ({atoms.get_chemical_formula()}): "
                                    f"{str(error).splitlines()[0]}") from error
        return AtomicData.from_ase(clean, task_name=self.task_name, r_edges=False, r_data_keys=["spin", "charge"],
                                   radius=self.cutoff, target_dtype=self.dtype)

    def _prepare(self, batch: AtomicData) -> None:
        """What fairchem's predict unit does before its first prediction (no MOLE merge, no compile)."""
        model = self.predict_unit.model
        model.module.prepare_for_inference(batch.clone(), self.predict_unit.inference_settings)
        model.requires_grad_(False)
        model.to(self.dtype)
        self.predict_unit.move_to_device()
        model.eval()
        self._prepared = True

    def _one_pass(self, structures: list[Atoms], layers: list[int], start: int) -> list[dict[int, np.ndarray]]:
        data = [self._atomic_data(atoms, start + offset) for offset, atoms in enumerate(structures)]
        batch = atomicdata_list_to_batch(data).to(self.device)
        for key, value in batch:
            if torch.is_tensor(value) and value.is_floating_point():
                batch[key] = value.to(self.dtype)
        if not self._prepared:
            self._prepare(batch)
        net = self._network
        modules = {0: InputOf(net.blocks[0])}
        modules.update({i + 1: block for i, block in enumerate(net.blocks)})
        with torch.inference_mode(), fixed_rng(self.device):
            captured = forward_capturing(lambda: net(batch), modules, layers,
                                         extract=lambda layer, output: output[:, 0, :].to(torch.float32).clone())
        sizes = [len(atoms) for atoms in structures]
        per_layer = {layer: torch.split(captured[layer].cpu(), sizes) for layer in layers}
        return [{layer: per_layer[layer][index].numpy() for layer in layers} for index in range(len(structures))]
