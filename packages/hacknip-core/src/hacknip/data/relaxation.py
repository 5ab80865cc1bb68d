"""Geometry optimisation with a backbone's forces: one structure at a time through an ASE calculator, or many at once.

:func:`relax` runs an ASE optimiser on one structure. :func:`relax_in_batches` runs one ASE optimiser per structure
in lockstep: each round evaluates every unfinished structure's energy and forces in one batched pass of the
backbone's ``energies_and_forces``, then moves each structure one step with its own optimiser. A structure leaves
the batch as soon as it meets its own criterion (or runs out of steps) and the next one waiting takes its place, so
the batch stays full. The optimiser, its state and its steps are the same as one at a time; only the force
evaluations are shared, which pays where a batched pass costs little more than a single one (a GPU;
docs/molecules.md, "Relaxing many molecules at once").
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.calculators.singlepoint import SinglePointCalculator

from hacknip.data.structures import boxed
from hacknip.errors import BadStructureError, InputError

DEFAULT_OPTIMIZER = "BFGS"


@dataclass(frozen=True)
class RelaxOptions:
    """Geometry optimisation with the backbone's forces, from the conformer :class:`EmbedOptions` made."""

    fmax: float = 0.05
    """Convergence threshold on the largest atomic force, eV/Å (0.05: see docs/molecules.md, "Relaxing faster")."""
    steps: int = 200
    optimizer: str = DEFAULT_OPTIMIZER
    """Any optimiser class in ``ase.optimize`` (``BFGS``, ``LBFGS``, ``FIRE``, ``BFGSLineSearch``...), or ``Sella``
    (:data:`SELLA`: internal coordinates, far fewer steps to a tight fmax; ``pip install 'hacknip-core[sella]'``). In
    batches, one whose step needs the forces at the current positions only (not a line search, not Sella)."""
    vacuum: float | None = None
    """Empty space around a molecule in the box given to calculators that need a cell (default: the backbone's
    cutoff, so no atom sees a periodic image)."""

    def vacuum_or(self, default: float) -> float:
        """The vacuum to box a molecule in: this option's, or ``default`` (the backbone's cutoff) when unset."""
        return self.vacuum if self.vacuum is not None else default


@dataclass
class Relaxation:
    atoms: Atoms
    converged: bool
    steps: int
    fmax: float
    """Largest atomic force at the end, eV/Å."""
    energy_initial: float
    energy: float
    seconds: float = 0.0
    """Wall-clock seconds from the first force evaluation to the last (in batches: shared with the batch)."""


SELLA = "Sella"
"""Sella's minimiser in internal coordinates (bonds, angles, dihedrals), an ASE optimiser from the ``sella`` package:
to 0.01 eV/Å it took 4.4× fewer CPU seconds than BFGS from the same start on 50 BBBP molecules (docs/molecules.md,
"Relaxing in internal coordinates"). It evaluates forces inside its step, so it relaxes one structure at a time."""


def optimizer_class(name: str):
    """The optimiser ``name`` names (:attr:`RelaxOptions.optimizer`): called as ``optimizer_class(atoms, logfile=None)``."""
    if name == SELLA:
        return _sella()
    import ase.optimize

    found = getattr(ase.optimize, name, None)
    if not (isinstance(found, type) and issubclass(found, ase.optimize.optimize.Optimizer)):
        raise InputError(f"ase.optimize has no optimiser {name!r}: use BFGS, LBFGS, FIRE or another of its optimiser "
                         f"classes, or {SELLA}")
    return found


MOLECULES_PER_SELLA_PROCESS = 25


def molecules_per_process(optimizer: str) -> int | None:
    """How many molecules one process may relax with ``optimizer`` before it is replaced by a fresh one (None: no
    limit). Sella's JAX code keeps memory it never gives back (``jax.clear_caches`` does not help): one process grew
    from 0.6 to 3.5 GB over 18 BBBP molecules, two workers to 11 and 13 GB over 805 (the machine then swapped), while
    BFGS stayed at 0.7-0.85 GB. So its workers are replaced every :data:`MOLECULES_PER_SELLA_PROCESS` molecules."""
    return MOLECULES_PER_SELLA_PROCESS if optimizer == SELLA else None


def _sella():
    try:
        from sella import Sella
    except ImportError as error:
        raise InputError(f"the {SELLA} optimiser needs the sella package: pip install 'hacknip-core[sella]'") from error
    # order 0: a minimum, not a saddle point. A salt's ions, not bonded, are joined by Sella's own welding bonds.
    return functools.partial(Sella, internal=True, order=0)


def largest_force(forces: np.ndarray) -> float:
    return float(np.linalg.norm(forces, axis=1).max()) if len(forces) else 0.0


def relax(atoms: Atoms, calculator, options: RelaxOptions = RelaxOptions(), vacuum: float = 6.0) -> Relaxation:
    """Optimise ``atoms`` with ``calculator``; the returned structure keeps the input's cell and periodicity."""
    optimizer_type = optimizer_class(options.optimizer)
    started = time.perf_counter()
    working = boxed(atoms, options.vacuum_or(vacuum))
    working.calc = calculator
    energy_initial = float(working.get_potential_energy())
    optimizer = optimizer_type(working, logfile=None)
    fmax = _run_until_converged(optimizer, working, options)
    relaxed = atoms.copy()
    relaxed.positions = working.positions
    return Relaxation(relaxed, fmax < options.fmax, int(optimizer.nsteps), fmax, energy_initial,
                      float(working.get_potential_energy()), time.perf_counter() - started)


def _run_until_converged(optimizer, working: Atoms, options: RelaxOptions) -> float:
    """Run ``optimizer`` until the largest atomic force is below ``options.fmax`` or the steps are spent, judging
    every optimiser alike; the largest force at the end. Sella tests its own convergence on forces with the rigid
    motions projected out, which can stop it a little above the threshold (0.0109 against 0.01 eV/Å on one BBBP
    molecule of 50): it then goes on with its own threshold halved, at most twice."""
    threshold = options.fmax
    for _ in range(3):
        optimizer.run(fmax=threshold, steps=options.steps - optimizer.nsteps)
        fmax = largest_force(working.get_forces())
        if fmax < options.fmax or optimizer.nsteps >= options.steps:
            break
        threshold /= 2
    return fmax


def calculator_of(backbone):
    """What relaxes structures one at a time with ``backbone``: its ``energies_and_forces`` when it has one (energy
    and forces only), else its own ASE calculator."""
    if callable(getattr(backbone, "energies_and_forces", None)):
        return BackboneForces(backbone)
    if not callable(getattr(backbone, "calculator", None)):
        raise InputError(f"{backbone.name} has no ASE calculator, so it cannot relax molecules; relax with another "
                         "backbone or leave relaxation out")
    return backbone.calculator()


class BackboneForces(Calculator):
    """An ASE calculator of energy and forces through the backbone's ``energies_and_forces``."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def calculate(self, atoms=None, properties=None, system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        ((energy, forces),) = self.backbone.energies_and_forces([self.atoms])
        self.results = {"energy": energy, "forces": np.asarray(forces, dtype=np.float64)}


# --- many at once -------------------------------------------------------------------------------------------

def relaxes_in_batches(optimizer: str) -> bool:
    """Whether ``optimizer`` can relax structures in batches (Sella evaluates forces inside its step)."""
    return optimizer != SELLA


def check_batchable(optimizer: str) -> None:
    """An :class:`~hacknip.errors.InputError` unless ``optimizer`` can relax structures in batches."""
    optimizer_class(optimizer)
    if not relaxes_in_batches(optimizer):
        raise InputError(f"the {SELLA} optimiser evaluates forces inside its step, so it relaxes one structure at a "
                         "time: leave out --relax-batch (relax_batch=1), or relax in batches with BFGS")


class _Walker:
    """One structure on its way down: its boxed working copy, its own optimiser, its steps so far."""

    def __init__(self, index: int, atoms: Atoms, working: Atoms, optimizer_name: str) -> None:
        self.index = index
        self.atoms = atoms
        self.working = working
        self.optimizer = optimizer_class(optimizer_name)(working, logfile=None)
        self.steps = 0
        self.energy_initial: float | None = None
        self.started = time.perf_counter()

    def take(self, energy: float, forces: np.ndarray) -> float:
        """Hand the optimiser this pass's energy and forces at the current positions; the largest force."""
        self.working.calc = SinglePointCalculator(self.working, energy=energy, forces=np.asarray(forces, np.float64))
        if self.energy_initial is None:
            self.energy_initial = float(energy)
        return largest_force(forces)

    def step(self, optimizer_name: str) -> None:
        try:
            self.optimizer.step()
        except PropertyNotImplementedError as error:  # it asked for forces at positions other than the current ones
            raise InputError(f"the {optimizer_name} optimiser evaluates forces inside its step (a line search), so it "
                             "cannot relax in batches: use BFGS, LBFGS or FIRE, or relax one structure at a time "
                             "(batch size 1)") from error
        self.steps += 1

    def result(self, energy: float, fmax: float, converged: bool) -> Relaxation:
        relaxed = self.atoms.copy()
        relaxed.positions = self.working.positions
        return Relaxation(relaxed, converged, self.steps, fmax, float(self.energy_initial), float(energy),
                          time.perf_counter() - self.started)


def relax_in_batches(structures: Sequence[Atoms], backbone, options: RelaxOptions = RelaxOptions(),
                     vacuum: float = 6.0, batch_size: int = 32, batch_atoms: int | None = None,
                     size_of: Callable[[Atoms], int] = len) -> Iterator[tuple[int, Relaxation | Exception]]:
    """Relax ``structures`` with ``backbone.energies_and_forces``, at most ``batch_size`` structures (and
    ``batch_atoms`` atoms, as ``size_of`` counts them; a larger structure goes alone) in each batched pass.

    Yields ``(index, Relaxation)`` as each structure finishes, in the order they finish, or ``(index, error)`` for a
    structure whose forces the backbone could not compute (found by evaluating the failing batch's structures one
    at a time); the others go on. A relaxation stops when the largest force is below ``options.fmax`` or after
    ``options.steps`` steps, exactly as :func:`relax` does with the same optimiser."""
    if not callable(getattr(backbone, "energies_and_forces", None)):
        raise InputError(f"{getattr(backbone, 'name', backbone)} has no batched energies_and_forces, so it relaxes one "
                         "structure at a time (batch size 1)")
    check_batchable(options.optimizer)
    box_vacuum = options.vacuum_or(vacuum)
    waiting = deque(enumerate(structures))
    active: list[_Walker] = []
    while waiting or active:
        admitted, refused = _admit(waiting, active, options.optimizer, box_vacuum, batch_size, batch_atoms, size_of)
        yield from refused
        active += admitted
        evaluated, failed = _evaluate(backbone, active)
        for walker, error in failed:
            yield walker.index, error
        active = []
        for walker, (energy, forces) in evaluated:
            fmax = walker.take(energy, forces)
            if fmax < options.fmax or walker.steps >= options.steps:
                yield walker.index, walker.result(energy, fmax, converged=fmax < options.fmax)
            else:
                walker.step(options.optimizer)
                active.append(walker)


def _admit(waiting: deque, active: list[_Walker], optimizer: str, vacuum: float, batch_size: int,
           batch_atoms: int | None, size_of: Callable[[Atoms], int]) -> tuple[list[_Walker], list[tuple[int, Exception]]]:
    """The waiting structures that fit beside ``active``, and those that cannot be boxed, with their errors."""
    atoms_in = sum(size_of(walker.working) for walker in active)
    admitted: list[_Walker] = []
    refused: list[tuple[int, Exception]] = []
    while waiting and len(active) + len(admitted) < batch_size:
        index, atoms = waiting[0]
        try:
            working = boxed(atoms, vacuum)
        except BadStructureError as error:
            waiting.popleft()
            refused.append((index, error))
            continue
        size = size_of(working)
        if batch_atoms is not None and active + admitted and atoms_in + size > batch_atoms:
            break
        waiting.popleft()
        admitted.append(_Walker(index, atoms, working, optimizer))
        atoms_in += size
    return admitted, refused


def _evaluate(backbone, walkers: list[_Walker]):
    """``([(walker, (energy, forces))], [(walker, error)])``: one batched pass, or one pass each when it fails."""
    try:
        results = backbone.energies_and_forces([walker.working for walker in walkers])
        return list(zip(walkers, results, strict=True)), []
    except Exception as error:  # noqa: BLE001  backbones raise anything: find which structure it was
        if len(walkers) == 1:
            return [], [(walkers[0], error)]
    evaluated, failed = [], []
    for walker in walkers:
        one_evaluated, one_failed = _evaluate(backbone, [walker])
        evaluated += one_evaluated
        failed += one_failed
    return evaluated, failed
