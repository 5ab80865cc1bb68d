"""CHGNet's crystal graphs, built here or in worker processes.

CHGNet builds each structure's graphs (atom graph, bond graph, angles) on the CPU in Python and Cython that hold
the GIL. On a GPU that is most of a relaxation step's time (docs/molecules.md, "Relaxing many molecules at once"), so
a backbone given ``graph_workers`` builds a batch's graphs in that many processes. A graph crosses between processes as
plain arrays and is made a :class:`CrystalGraph` again on this side.
"""

from __future__ import annotations

import multiprocessing
import weakref
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch
from ase import Atoms
from chgnet.graph import CrystalGraph
from pymatgen.io.ase import AseAtomsAdaptor

from hacknip.data.structures import boxed
from hacknip.errors import BadStructureError

TENSORS = ("atomic_number", "atom_frac_coord", "atom_graph", "neighbor_image", "directed2undirected",
           "undirected2directed", "bond_graph", "lattice")
PLAIN = ("atom_graph_cutoff", "bond_graph_cutoff", "graph_id", "mp_id", "composition")


def build_graph(converter, atoms: Atoms, index: int, on_isolated_atoms: str, name: str = "chgnet") -> CrystalGraph:
    """CHGNet's graph of one structure (the ``index``-th of its batch, as errors name it, after the backbone's
    ``name``); a structure chgnet cannot make a graph of raises :class:`BadStructureError`."""
    cutoff = float(converter.atom_graph_cutoff)
    structure = AseAtomsAdaptor.get_structure(boxed(atoms, vacuum=cutoff))
    try:
        return converter(structure, graph_id=f"structure {index}")
    except RuntimeError as error:
        # chgnet's converter raises this (and writes bond_graph_error.cif) when its bond graph comes out
        # inconsistent for a structure.
        if not str(error).startswith("Failed creating bond graph"):
            raise
        cause = str(error.__cause__ or error).splitlines()[0]
        raise BadStructureError(f"{name}: chgnet could not build the bond graph of structure {index} "
                                f"({atoms.get_chemical_formula()}): {cause}") from error
    except ValueError as error:
        # on_isolated_atoms="error": chgnet refuses a structure with an atom that has no neighbour in the cutoff.
        if on_isolated_atoms != "error" or "isolated atom" not in str(error):
            raise
        raise BadStructureError(f"{name}: structure {index} ({atoms.get_chemical_formula()}) has an atom with no "
                                f"neighbour within the {cutoff:g} Å cutoff, which on_isolated_atoms='error' "
                                "refuses") from error


def to_arrays(graph: CrystalGraph) -> dict[str, Any]:
    return {**{name: getattr(graph, name).detach().numpy() for name in TENSORS},
            **{name: getattr(graph, name) for name in PLAIN}}


def from_arrays(arrays: dict[str, Any]) -> CrystalGraph:
    """The graph again, its coordinates and lattice requiring gradients as chgnet's converter makes them."""
    tensors = {name: torch.from_numpy(arrays[name]) for name in TENSORS}
    tensors["atom_frac_coord"].requires_grad_(True)
    tensors["lattice"].requires_grad_(True)
    return CrystalGraph(**tensors, **{name: arrays[name] for name in PLAIN})


_WORKER: tuple = ()


def _start_worker(converter, on_isolated_atoms: str, name: str) -> None:
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = (converter, on_isolated_atoms, name)


def _build_in_worker(numbered: list[tuple[int, Atoms]]) -> list[dict[str, Any]]:
    converter, on_isolated_atoms, name = _WORKER
    return [to_arrays(build_graph(converter, atoms, index, on_isolated_atoms, name)) for index, atoms in numbered]


class GraphPool:
    """``workers`` processes that build CHGNet graphs with ``converter``; started on first use, stopped with
    :meth:`close` or when the pool is collected."""

    def __init__(self, converter, workers: int, on_isolated_atoms: str, name: str = "chgnet") -> None:
        self.workers = workers
        self._start = (converter, on_isolated_atoms, name)
        self._executor = self._new_executor()
        self._finalizer = weakref.finalize(self, self._shutdown, self._executor)

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn, not fork: a forked copy of a process that has run torch's thread pool can deadlock
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=self._start)

    @staticmethod
    def _shutdown(executor: ProcessPoolExecutor) -> None:
        executor.shutdown(wait=True, cancel_futures=True)

    def graphs(self, structures: Sequence[Atoms], start: int = 0) -> list[CrystalGraph]:
        """Graphs of ``structures`` (numbered from ``start`` in errors), in order; the first structure that fails
        raises its error here."""
        numbered = list(enumerate(structures, start))
        chunks = [numbered[first::self.workers] for first in range(min(self.workers, len(numbered)))]
        built: dict[int, CrystalGraph] = {}
        try:
            for chunk, arrays in zip(chunks, self._executor.map(_build_in_worker, chunks), strict=True):
                built.update((index, from_arrays(graph)) for (index, _), graph in zip(chunk, arrays, strict=True))
        except BrokenProcessPool as error:  # a worker died (killed, out of memory): the next batch gets new ones
            self._finalizer.detach()
            self._shutdown(self._executor)
            self._executor = self._new_executor()
            self._finalizer = weakref.finalize(self, self._shutdown, self._executor)
            raise RuntimeError(f"a process building chgnet graphs died ({error}); the batch of structures "
                               f"{start}-{start + len(structures) - 1} has no graphs, the next batch gets new "
                               "processes") from error
        return [built[index] for index, _ in numbered]

    def close(self) -> None:
        self._finalizer()
