"""Where one CHGNet force evaluation of a molecule spends its CPU time: the phases of ``energies_and_forces``, the
call each relaxation step makes, timed on the real code path (wrappers around the functions it calls, not a copy).

    OMP_NUM_THREADS=1 python bench/chgnet_forces_profile.py --n 12 --repeats 5

MMFF94-optimised BBBP conformers, boxed as a relaxation boxes them, one torch thread, CPU time
(``time.process_time``). Each phase's time excludes the phases timed inside it. Prints CPU seconds per evaluation
and the share of each phase, overall and for the smallest and largest third of the molecules.
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

from forces_cost import DEFAULT_DATA, mmff94_conformers  # bench/ is on the path when this script runs

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class PhaseClock:
    """CPU seconds per phase, each excluding the phases that ran inside it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[str] = []

    @contextmanager
    def phase(self, name: str):
        started = time.process_time()
        self._stack.append(name)
        try:
            yield
        finally:
            self._stack.pop()
            elapsed = time.process_time() - started
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            if self._stack:
                parent = self._stack[-1]
                self.seconds[parent] = self.seconds.get(parent, 0.0) - elapsed

    def timed(self, name: str, function):
        def wrapper(*args, **kwargs):
            with self.phase(name):
                return function(*args, **kwargs)
        return wrapper


def instrumented(backbone, clock: PhaseClock) -> ExitStack:
    """Patch the functions ``energies_and_forces`` reaches so that each reports its time to ``clock``."""
    import torch
    from chgnet.model import model as chgnet_model
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    converter = backbone.network.graph_converter
    patches = [
        mock.patch.object(AseAtomsAdaptor, "get_structure",
                          clock.timed("ASE atoms to pymatgen structure", AseAtomsAdaptor.get_structure)),
        mock.patch.object(Structure, "get_neighbor_list",
                          clock.timed("neighbour list (pymatgen)", Structure.get_neighbor_list)),
        mock.patch.object(converter, "forward",
                          clock.timed("graph: the rest of CHGNet's converter (bond graph)", converter.forward)),
        mock.patch.object(chgnet_model.BatchedGraph, "from_graphs",
                          clock.timed("batching: bond vectors and angles from coordinates",
                                      chgnet_model.BatchedGraph.from_graphs)),
        mock.patch.object(backbone.network, "forward",
                          clock.timed("network forward (message passing, readout)", backbone.network.forward)),
        mock.patch.object(torch.autograd, "grad", clock.timed("backward (forces by autograd)", torch.autograd.grad)),
    ]
    stack = ExitStack()
    for patch in patches:
        stack.enter_context(patch)
    return stack


def profile(backbone, molecules, repeats: int) -> dict[str, float]:
    """Mean CPU seconds per evaluation of each phase over ``molecules``, ``repeats`` times each."""
    clock = PhaseClock()
    with instrumented(backbone, clock):
        backbone.energies_and_forces([molecules[0]])  # the first call pays for lazy set-up
        clock.seconds.clear()
        for _ in range(repeats):
            for atoms in molecules:
                with clock.phase("other (hacknip's own steps, tensor copies)"):
                    backbone.energies_and_forces([atoms])
    return {name: seconds / (repeats * len(molecules)) for name, seconds in clock.seconds.items()}


def print_table(columns: dict[str, dict[str, float]]) -> None:
    print("\n| phase | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    totals = {label: sum(phases.values()) for label, phases in columns.items()}
    first = next(iter(columns.values()))
    names = sorted(first, key=lambda name: -first[name])  # the first column's largest phase first
    for name in names:
        cells = [f"{phases[name]:.4f} s ({100 * phases[name] / totals[label]:.0f} %)" for label, phases in columns.items()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| **one evaluation** | " + " | ".join(f"**{total:.4f} s**" for total in totals.values()) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    from hacknip.plugins.registry import load_backbone

    torch.set_num_threads(1)
    backbone = load_backbone("chgnet")
    molecules = sorted(mmff94_conformers(args.data, args.n, backbone.cutoff), key=len)
    third = max(1, len(molecules) // 3)
    groups = {f"all {len(molecules)} ({len(molecules[0])}-{len(molecules[-1])} atoms)": molecules,
              f"smallest {third} ({len(molecules[0])}-{len(molecules[third - 1])} atoms)": molecules[:third],
              f"largest {third} ({len(molecules[-third])}-{len(molecules[-1])} atoms)": molecules[-third:]}
    print(f"CHGNet {backbone.identity()['model']}, {args.repeats} repeats, one torch thread, CPU s per evaluation")
    print_table({label: profile(backbone, group, args.repeats) for label, group in groups.items()})


if __name__ == "__main__":
    main()
