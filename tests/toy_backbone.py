"""A small, real, numpy-only backbone for testing the core without a NIP library.

Per-atom features of layer ``l`` are radial sums over neighbours within the cutoff (every periodic image, via
ASE's neighbour list) with a length scale that grows with depth, times a per-element weight — a genuine
descriptor, supercell-invariant by construction. ``calls`` counts structures passed to the network.
``fail_on=Z`` makes structures holding element Z bad input (:class:`BadStructureError`), ``bug_on=Z`` makes them
trigger a bug (``RuntimeError``); ``seconds_per_structure`` slows it down. ``concurrent=True`` declares that
featurize may run its batches in several threads at once.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from ase.neighborlist import neighbor_list

from hacknip import hookimpl
from hacknip.errors import BadStructureError
from hacknip.plugins.backbone import BackboneSpec, check_elements, check_layers

WIDTHS = (4, 6, 6)
CUTOFF = 4.0


class ToyBackbone:
    name = "toy"
    cutoff = CUTOFF
    layer_widths = WIDTHS
    supported_elements = frozenset(range(1, 84))

    def __init__(self, checkpoint=None, device="cpu", needs_supercell=False, fail_on=None, concurrent=False, bug_on=None,
                 seconds_per_structure=0.0):
        self.needs_supercell = needs_supercell
        self.fail_on, self.bug_on = fail_on, bug_on
        self.seconds_per_structure = seconds_per_structure
        self.calls = 0
        self.checkpoint = checkpoint
        self.concurrent_batches = concurrent
        self._count = threading.Lock()

    def identity(self):
        return {"name": self.name, "library": "toy", "library_version": "1", "cutoff": self.cutoff,
                "needs_supercell": self.needs_supercell, "checkpoint": self.checkpoint}

    def per_atom_features(self, structures, layers):
        layers = check_layers(self, layers)
        check_elements(structures, self.supported_elements, self.name)
        with self._count:
            self.calls += len(structures)
        return [self._one(atoms, layers) for atoms in structures]

    def _one(self, atoms, layers):
        if self.fail_on is not None and self.fail_on in atoms.numbers:
            raise BadStructureError(f"toy network cannot handle Z={self.fail_on}")
        if self.bug_on is not None and self.bug_on in atoms.numbers:
            raise RuntimeError(f"a bug in the toy network, triggered by Z={self.bug_on}")
        time.sleep(self.seconds_per_structure)
        i, d = neighbor_list("id", atoms, self.cutoff)
        out = {}
        for layer in layers:
            width = self.layer_widths[layer]
            scales = np.linspace(0.5, 2.0, width) * (layer + 1)
            per_pair = np.exp(-d[:, None] / scales[None, :])
            features = np.zeros((len(atoms), width))
            np.add.at(features, i, per_pair)
            out[layer] = (features * np.sqrt(atoms.numbers)[:, None]).astype(np.float32)
        return out


def load(checkpoint=None, **options):
    return ToyBackbone(checkpoint=checkpoint, **options)


class ToyPlugin:
    """Registers the toy backbone and a ridge-like head, as an installed plugin would."""

    @hookimpl
    def register_backbones(self, register):
        register(BackboneSpec(name="toy", factory="toy_backbone:load", cutoff=CUTOFF, layer_widths=WIDTHS,
                              needs_supercell=False, library="toy", description="radial sums (tests only)"))
