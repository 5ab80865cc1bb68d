"""Batches by memory, not by count: structures grouped under a budget of atoms, largest first, and a batch that runs
out of GPU memory split in halves.

A batch closes at whichever limit comes first: its atoms would pass ``batch_atoms`` with the next structure, or it
holds ``batch_size`` structures. Sorting by cost, largest first, keeps similar sizes together (little padding, few
half-empty batches) and runs the structures most likely to exhaust memory at the start of a run, not after hours. A
structure over the budget by itself goes alone. The cost of a structure is what the backbone sees: its atoms after the
cutoff supercell for a backbone that ``needs_supercell``, or the backbone's own ``batch_cost(atoms)`` when it has one.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hacknip.errors import BadStructureError, InputError
from hacknip.features.supercell import cutoff_supercell, supercell_repeats
from hacknip.plugins.backbone import Backbone, supercell_rule

if TYPE_CHECKING:
    from ase import Atoms

CPU_BATCH_ATOMS = 1024
"""Measured (docs/benchmarks.md, ``bench/featurize_throughput.py --sweep``): CHGNet on one CPU thread featurised 580
phonons structures (4100 atoms) at 121-138 structures per CPU second with budgets of 64-1024 atoms per pass, 101 at
2048 and 76 at 4096, its peak memory 270 MB higher at 1024 and 670 MB at 4096. 1024 is the largest budget on that
plateau: bigger passes only cost time and memory on a CPU, and ordinary cells (16 of 8 atoms) never reach it: they
still go 16 at a time."""
CUDA_BATCH_ATOMS = 8192
"""Not measured (no GPU was available): a GPU gains from large passes, and CHGNet's passes held 160-270 kB per atom on
the CPU, so 8192 atoms are 1.3-2.2 GB, leaving room for models several times heavier on a 16 GB card. A batch that
runs out of memory anyway is split in halves and retried (:func:`hacknip.features.featurize.featurize`)."""


def default_batch_atoms(backbone: Backbone) -> int:
    """The atom budget for ``backbone``'s device (its optional ``device`` attribute; CPU when it has none)."""
    device = getattr(backbone, "device", None)
    return CUDA_BATCH_ATOMS if str(device).startswith("cuda") else CPU_BATCH_ATOMS


def check_batch_limits(batch_size: int, batch_atoms: float) -> None:
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    if not batch_atoms >= 1:  # also refuses NaN
        raise InputError(f"batch atoms must be at least 1, got {batch_atoms}")


def structure_cost(backbone: Backbone, atoms: Atoms) -> float:
    """What ``atoms`` costs ``backbone`` in a batch, in atoms: ``backbone.batch_cost`` of what the backbone sees when
    it has that method, else the number of atoms it sees. A :class:`BadStructureError` from ``batch_cost`` falls back
    to the atom count: the forward pass decides whether the structure is bad."""
    cost = getattr(backbone, "batch_cost", None)
    if cost is None:
        return float(_atoms_seen(backbone, atoms))
    if backbone.needs_supercell:
        atoms = cutoff_supercell(atoms, backbone.cutoff, supercell_rule(backbone))
    try:
        value = float(cost(atoms))
    except BadStructureError:
        return float(len(atoms))
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{backbone.name}.batch_cost returned {value!r} for {atoms.get_chemical_formula()}; "
                         f"expected a positive number of atoms")
    return value


def _atoms_seen(backbone: Backbone, atoms: Atoms) -> int:
    """The atoms of the backbone's input, without building a supercell to count them."""
    if not backbone.needs_supercell or not atoms.pbc.any():
        return len(atoms)
    return len(atoms) * math.prod(supercell_repeats(atoms, backbone.cutoff, supercell_rule(backbone)))


def plan_batches(indices: Sequence[int], costs: dict[int, float], batch_atoms: float, batch_size: int) -> list[list[int]]:
    """``indices`` in batches, largest cost first (ties in the given order), each closed when the next structure
    would take it past ``batch_atoms`` or when it holds ``batch_size``; a structure over the budget goes alone."""
    batches: list[list[int]] = []
    batch: list[int] = []
    total = 0.0
    for index in sorted(indices, key=lambda i: -costs[i]):
        if batch and (total + costs[index] > batch_atoms or len(batch) == batch_size):
            batches.append(batch)
            batch, total = [], 0.0
        batch.append(index)
        total += costs[index]
    if batch:
        batches.append(batch)
    return batches


def is_out_of_memory(error: BaseException) -> bool:
    """A device out of memory: torch's ``OutOfMemoryError``, or a ``RuntimeError`` that says so (older torch, other
    backends: "CUDA out of memory", "MPS backend out of memory")."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def release_cached_memory() -> None:
    """Give memory torch's allocator holds back to the GPU before a retry (cached blocks fragment after an OOM)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
