"""EquiformerV2 (fairchem-core 1.x) as a hacknip backbone: the "eqV2 M" model the HackNIP paper used.

Not verified against real weights: EquiformerV2 was removed from fairchem-core in 2.0, and fairchem-core 1.x needs
torch~=2.4 and numpy<2, so it runs in its own environment (see the package README; ``hacknip run`` in the main
environment reads the features it stores). There, this adapter was tested with fairchem-core 1.10.0 / torch 2.4.1 on
a random-weight EquiformerV2 saved in fairchem 1.x's checkpoint format (``tests/test_backbone_equiformer_v2.py``,
hacknip's conformance suite), and features it stored were read by ``hacknip run`` in the main environment. The eqV2 M
weights themselves could not be downloaded there.

Loading: ``fairchem.core.models.model_registry.model_name_to_local_file`` for a fairchem 1.x model name (download),
or a local checkpoint file, then fairchem's own ``OCPCalculator(checkpoint_path=...)`` (which builds the trainer,
the model with an on-the-fly graph, and loads the weights). Batches are built as OCPCalculator builds them
(``AtomsToGraphs`` + ``data_list_collater(..., otf_graph=True)``).

Layers: layer 0 is what enters the first transformer block (atom embedding + edge-degree embedding), layer ``i`` the
output of ``blocks[i - 1]``. A block returns an ``SO3_Embedding``; its ``.embedding`` is (atoms, Σ(lmax+1)², channels)
and the invariant features are the l=0 rows (one per resolution; eqV2 models have one). They are copied when the hook
fires, because the next block rewrites the same object.

Supercells: EquiformerV2 caps the neighbour list (max_neighbors 20 in the OC20/OMat24 configs) and by default
enforces the cap strictly (``enforce_max_neighbors_strictly=True``), choosing arbitrarily among equidistant
neighbours, so a supercell need not give the same graph as its cell. The backbone therefore declares
``needs_supercell=True`` in that case, and hacknip expands cells to cutoff-sized supercells, as the paper did
(on the random test model, a 2x2x2 supercell moves the mean embedding by 1e-3 to 2e-2).

Each forward pass runs with a fixed random seed: EquiformerV2 draws a random roll for every edge's local frame.

Bad structures raise :class:`hacknip.errors.BadStructureError`: an element outside the embedding table. An atom with
no neighbour within the cutoff (a lone ion, a single-atom molecule) is featurised as EquiformerV2 does it: from its
embedding, with no messages. Checkpoints are loaded by fairchem 1.x (``torch.load(weights_only=False)`` and a config
naming registry classes): not safely.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from hacknip.errors import InputError
from hacknip.plugins.backbone import file_sha256, per_atom_features_in_batches
from hacknip.plugins.capture import forward_capturing
from hacknip_equiformer._common import InputOf, fixed_rng
from hacknip_equiformer.models import EQV2_DEFAULT_MODEL, EQV2_SPEC_NAME, require_fairchem1


def load(
    checkpoint: str | Path | None = None,
    model: str = EQV2_DEFAULT_MODEL,
    device: str = "cpu",
    batch_size: int = 16,
    local_cache: str | Path | None = None,
    **options: Any,
) -> EquiformerV2Backbone:
    """EquiformerV2 from a local fairchem 1.x checkpoint (``equiformer-v2:/path/eqV2_86M_omat_mp_salex.pt``) or a
    fairchem 1.x model name (``equiformer-v2:EquiformerV2-31M-OMAT24-MP-sAlex``; default: eqV2 M, downloaded into
    ``local_cache``, by default ``~/.cache/fairchem``).

    Raises :class:`hacknip_equiformer.models.BackboneUnavailableError` (a ``LookupError``) unless fairchem-core 1.x
    is installed, so that ``hacknip run`` falls back to features stored by the EquiformerV2 environment.
    """
    name = EQV2_SPEC_NAME if checkpoint is None else f"{EQV2_SPEC_NAME}:{checkpoint}"
    require_fairchem1(name)  # first: in the main environment this is the answer, whatever the options
    if options:
        raise TypeError(f"{EQV2_SPEC_NAME} takes no option(s) {sorted(options)}")

    import torch
    from fairchem.core.common.relaxation.ase_utils import OCPCalculator
    from fairchem.core.models.model_registry import available_pretrained_models, model_name_to_local_file

    if checkpoint is not None and not Path(checkpoint).is_file() and str(checkpoint) in available_pretrained_models:
        model, checkpoint = str(checkpoint), None
    if checkpoint is None:
        if model not in available_pretrained_models:
            raise InputError(f"unknown fairchem 1.x model {model!r}; known: {', '.join(available_pretrained_models)}")
        cache = Path(local_cache) if local_cache is not None else Path.home() / ".cache" / "fairchem"
        weights = Path(model_name_to_local_file(model_name=model, local_cache=str(cache)))
        model_label: str | None = model
    else:
        weights = Path(checkpoint)
        if not weights.is_file():
            raise FileNotFoundError(f"EquiformerV2 checkpoint {str(checkpoint)!r} does not exist, and it is not a "
                                    f"fairchem 1.x model name ({', '.join(available_pretrained_models)})")
        model_label = None
    with _quiet_fairchem():
        calculator = OCPCalculator(checkpoint_path=str(weights), cpu=torch.device(device).type == "cpu", seed=0)
    return EquiformerV2Backbone(calculator, name=name, model=model_label, checkpoint_sha256=file_sha256(weights),
                                batch_size=batch_size)


@contextlib.contextmanager
def _quiet_fairchem():
    """OCPCalculator prints its whole config and sets the root logger to INFO with its own handler (fairchem 1.x's
    ``setup_logging``): keep that out of hacknip's output, and leave the root logger as it was."""
    root = logging.getLogger()
    level, handlers, disabled = root.level, list(root.handlers), root.manager.disable
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            logging.disable(logging.INFO)
            yield
    finally:
        logging.disable(disabled)
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def _unwrap(model: Any) -> Any:
    """The network under fairchem 1.x's data-parallel wrappers."""
    while not hasattr(model, "backbone") and not hasattr(model, "blocks") and hasattr(model, "module"):
        model = model.module
    return model


class EquiformerV2Backbone:
    """Per-atom invariant features of every EquiformerV2 layer (see the module docstring)."""

    def __init__(self, calculator: Any, *, name: str, model: str | None, checkpoint_sha256: str,
                 batch_size: int = 16) -> None:
        import torch

        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.calculator_ = calculator
        self.trainer = calculator.trainer
        self.model_ = _unwrap(self.trainer.model)
        # Hydra checkpoints (OMat24 eqV2) hold the blocks in .backbone; older ones on the model itself.
        self.network = getattr(self.model_, "backbone", self.model_)
        self.name = name
        self.model = model
        self.checkpoint_sha256 = checkpoint_sha256
        self.batch_size = batch_size
        self.concurrent_batches = False  # each pass seeds the process-wide random generator (_common.fixed_rng)
        self.device = self.trainer.device
        net = self.network
        self.cutoff = float(getattr(net, "cutoff", getattr(net, "max_radius", 0.0)))
        self.max_neighbors = int(net.max_neighbors)
        self.enforce_max_neighbors_strictly = bool(getattr(net, "enforce_max_neighbors_strictly", True))
        lmax_list = list(net.lmax_list)
        self._l0_rows = [sum((lmax + 1) ** 2 for lmax in lmax_list[:i]) for i in range(len(lmax_list))]
        self.layer_widths = (int(net.sphere_channels) * len(lmax_list),) * (len(net.blocks) + 1)
        self.supported_elements = frozenset(range(1, int(net.max_num_elements)))
        self.needs_supercell = self.enforce_max_neighbors_strictly and self.max_neighbors > 0
        self.dtype = next(net.parameters()).dtype
        self._torch = torch

    def identity(self) -> dict[str, Any]:
        import fairchem.core

        return {
            "name": self.name,
            "library": "fairchem-core",
            "library_version": fairchem.core.__version__,
            "model": self.model,
            "architecture": type(self.network).__name__,
            "checkpoint_sha256": self.checkpoint_sha256,
            "cutoff": self.cutoff,
            "max_neighbors": self.max_neighbors,
            "enforce_max_neighbors_strictly": self.enforce_max_neighbors_strictly,
            "dtype": str(self.dtype).removeprefix("torch."),
            "layers": "input of blocks[0], outputs of blocks[i]; l=0 coefficients",
        }

    def per_atom_features(self, structures: Sequence[Atoms], layers: Sequence[int]) -> list[dict[int, np.ndarray]]:
        return per_atom_features_in_batches(self, structures, layers, self.batch_size, self._one_pass)

    def calculator(self, **options: Any):
        """fairchem 1.x's OCPCalculator on the same network."""
        return self.calculator_

    def _graph_input(self, atoms: Atoms) -> Atoms:
        """A clean copy; a structure without a full cell is boxed with vacuum >= the cutoff and made periodic
        (images then lie beyond the cutoff), as OCP models expect a cell."""
        clean = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        if clean.cell.rank < 3 or not clean.pbc.all():
            open_axes = [axis for axis in range(3) if not clean.pbc[axis] or clean.cell.rank < 3]
            clean.center(vacuum=self.cutoff + 1.0, axis=open_axes)
            clean.pbc = True
        return clean

    def _extract(self, layer: int, output: Any):
        embedding = output.embedding
        rows = [embedding[:, row, :] for row in self._l0_rows]
        scalars = rows[0] if len(rows) == 1 else self._torch.cat(rows, dim=1)
        return scalars.to(self._torch.float32).clone()

    def _one_pass(self, structures: list[Atoms], layers: list[int]) -> list[dict[int, np.ndarray]]:
        from fairchem.core.datasets import data_list_collater

        torch = self._torch
        data = [self.calculator_.a2g.convert(self._graph_input(atoms)) for atoms in structures]
        batch = data_list_collater(data, otf_graph=True).to(self.device)
        self.model_.eval()
        modules = {0: InputOf(self.network.blocks[0])}
        modules.update({i + 1: block for i, block in enumerate(self.network.blocks)})
        with torch.no_grad(), fixed_rng(self.device):
            captured = forward_capturing(lambda: self.model_(batch), modules, layers, extract=self._extract)
        sizes = [len(atoms) for atoms in structures]
        per_layer = {layer: torch.split(captured[layer].cpu(), sizes) for layer in layers}
        return [{layer: per_layer[layer][index].numpy() for layer in layers} for index in range(len(structures))]
