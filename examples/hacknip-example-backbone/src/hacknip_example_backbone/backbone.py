"""A tiny deterministic backbone: the shape of a real one, in numpy.

Layer 0 is an element embedding; layer ``l`` adds to each atom the sum of its neighbours' layer ``l - 1`` features,
weighted by a smooth cosine envelope of their distance (zero at the cutoff), passed through a linear map and ``tanh``.
Neighbours come from ASE's neighbour list, which sees every periodic image, so no supercell is needed.

The weights are an ``.npz`` checkpoint (``save_weights``) or drawn from a seeded generator: never from an unseeded one,
since hacknip's feature store assumes that equal identity means equal features. The checkpoint is read with
``np.load`` and ``allow_pickle=False``: arrays only, so loading it cannot run code (the spec says
``safe_checkpoints=True``; a torch backbone would use ``torch.load(path, weights_only=True)`` or safetensors).

A structure the model cannot featurise raises :class:`hacknip.errors.BadStructureError`, which hacknip reports for
that structure's row (or skips it): here an element without an embedding row (``per_atom_features_in_batches`` checks
``supported_elements``). Any other exception is taken for a bug in the plugin and stops the run. An atom with no
neighbour within the cutoff (a lone ion, a single-atom molecule) is not bad input: no message reaches it, so its
features are its embedding passed through the layers alone (finite, like any other).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from hacknip.plugins.backbone import file_sha256, per_atom_features_in_batches
from hacknip_example_backbone.plugin import CUTOFF, INTERACTIONS, NAME, WIDTH

ELEMENTS = 118


def make_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "embedding": rng.normal(size=(ELEMENTS + 1, WIDTH)),
        "interactions": rng.normal(size=(INTERACTIONS, WIDTH, WIDTH)) / np.sqrt(WIDTH),
    }


def save_weights(path: str | Path, seed: int = 0) -> None:
    np.savez(path, **make_weights(seed))


def load(checkpoint: str | Path | None = None, seed: int = 0, batch_size: int = 64, device: str = "cpu") -> ExampleBackbone:
    """``checkpoint``: an ``.npz`` written by :func:`save_weights` (what follows the colon in
    ``--backbone example-radial:/path/weights.npz``); without one, weights drawn with ``seed``. ``device``: hacknip
    passes ``--device`` to every loader; this numpy network runs on the CPU only."""
    if device != "cpu":
        raise ValueError(f"example-radial runs on the CPU only (numpy), not on {device!r}; use --device cpu")
    if checkpoint is None:
        return ExampleBackbone(make_weights(int(seed)), name=NAME, weights_id=f"seed:{int(seed)}", batch_size=batch_size)
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"example-radial checkpoint {str(checkpoint)!r} does not exist (write one with "
                                "hacknip_example_backbone.backbone.save_weights)")
    with np.load(path, allow_pickle=False) as stored:
        weights = {key: stored[key] for key in ("embedding", "interactions")}
    return ExampleBackbone(weights, name=f"{NAME}:{checkpoint}", weights_id=file_sha256(path), batch_size=batch_size)


class ExampleBackbone:
    cutoff = CUTOFF
    needs_supercell = False

    def __init__(self, weights: dict[str, np.ndarray], name: str, weights_id: str, batch_size: int = 64) -> None:
        self.embedding = np.asarray(weights["embedding"], dtype=np.float64)
        self.interactions = np.asarray(weights["interactions"], dtype=np.float64)
        self.name = name
        self.weights_id = weights_id
        self.batch_size = batch_size
        self.layer_widths = (self.embedding.shape[1],) * (len(self.interactions) + 1)
        self.supported_elements = frozenset(range(1, len(self.embedding)))

    def identity(self) -> dict[str, Any]:
        """Everything that changes the features, and nothing that does not (not the name typed by the user)."""
        return {"name": NAME, "library": "hacknip-example-backbone", "library_version": version("hacknip-example-backbone"),
                "checkpoint_sha256": self.weights_id, "cutoff": self.cutoff, "dtype": "float64"}

    def per_atom_features(self, structures: Sequence[Atoms], layers: Sequence[int]) -> list[dict[int, np.ndarray]]:
        # Checks layers, supported_elements and empty or badly periodic structures, then runs _one_pass per batch.
        return per_atom_features_in_batches(self, structures, layers, self.batch_size, self._one_pass)

    def _one_pass(self, batch: list[Atoms], layers: list[int]) -> list[dict[int, np.ndarray]]:
        return [self._features(atoms, layers) for atoms in batch]

    def _features(self, atoms: Atoms, layers: list[int]) -> dict[int, np.ndarray]:
        """Every requested layer from one pass, stopping after the deepest."""
        receivers, senders, distances = neighbor_list("ijd", atoms, self.cutoff)
        envelope = 0.5 * (np.cos(np.pi * distances / self.cutoff) + 1.0)
        features = self.embedding[atoms.numbers]
        out = {0: features} if 0 in layers else {}
        for layer in range(1, max(layers, default=0) + 1):
            messages = np.zeros_like(features)
            np.add.at(messages, receivers, envelope[:, None] * features[senders])
            features = np.tanh(features + messages @ self.interactions[layer - 1])
            if layer in layers:
                out[layer] = features
        return {layer: out[layer].astype(np.float32) for layer in layers}
