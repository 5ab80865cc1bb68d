"""Molecules: SMILES (or SDF / XYZ geometries) to 3D structures, optionally relaxed with the backbone's own potential.

SMILES → RDKit molecule → explicit hydrogens → ETKDG conformer (seeded) → optionally optimised with the MMFF94 force
field (:attr:`EmbedOptions.force_field`) → ASE ``Atoms`` → when asked (``relax_options``), geometry optimisation with
the backbone's forces (BFGS to 0.05 eV/Å, at most 200 steps by default) → a non-periodic structure ready to
featurise. By default (:func:`default_embed_options`) a conformer the backbone will relax is optimised with MMFF94
first, and one it will not is used as ETKDG made it.

Relaxed geometries are stored beside the features, one JSON file per molecule, under
``<feature store>/geometries/<backbone>-<key>/`` where the key hashes the backbone identity and the relaxation
settings, and each file name hashes the canonical SMILES with the embedding settings and the RDKit version (or
the content hash of a given 3D geometry). A molecule whose file exists is never embedded or relaxed again, so
an interrupted run resumes where it stopped. The conformers are stored the same way, relaxed after or not, under
``<feature store>/geometries/conformers-<key>/`` (so another backbone or other relaxation settings start from the same
ones, made once): BBBP's 2 038 are read back 70 times faster than they are made
(``bench/conformer_cost.py``, docs/molecules.md). A molecule RDKit cannot embed is stored as such: with a seed it fails
the same way every time, and failing can take most of a minute.

Every row that cannot be used is reported with its row and id, under one of the :data:`FAILURES` categories.
Relaxations that do not converge are kept and flagged (``Dataset.flagged``), or skipped on request.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ase import Atoms

from hacknip.data.relaxation import (
    Relaxation,
    RelaxOptions,
    calculator_of,
    check_batchable,
    molecules_per_process,
    optimizer_class,
    relax,
    relax_in_batches,
    relaxes_in_batches,
)
from hacknip.data.structures import (
    UNLABELLED,
    WARNING_KEY,
    Dataset,
    SkippedRow,
    _checked_target,
    _pick_target,
    _read_table,
    _RowCollector,
    _target_values,
    check_on_error,
    is_number,
    read_ase_file,
    the_only_numeric,
)
from hacknip.errors import InputError
from hacknip.plugins.backbone import Backbone, check_elements, identity_key, labelled_copy
from hacknip.progress import Progress, no_progress
from hacknip.store import (
    DAMAGED_FOLDER,
    GEOMETRIES_FOLDER,
    NO_GEOMETRY_KEY,
    DamagedShardWarning,
    FeatureStore,
    atomic_write,
    slug,
    structure_hash,
)

INSTALL_HINT = "pip install hacknip-core[molecules]"
NONCONVERGED_CHOICES = ("keep", "skip")
CONFORMERS_FOLDER = "conformers"
FAILED_KEY = "failed"
"""A stored record with this key is a molecule RDKit could not embed, and why (a 3D embedding failure)."""
CUDA_RELAX_BATCH = 50
"""Molecules relaxed at once by default on a CUDA device (docs/molecules.md, "Relaxing many molecules at once")."""

UNPARSEABLE = "unparseable SMILES"
EMBEDDING_FAILED = "3D embedding failed"
UNSUPPORTED_ELEMENT = "unsupported element"
RELAXATION_FAILED = "relaxation failed"
NOT_CONVERGED = "relaxation not converged"
FAILURES = (UNPARSEABLE, EMBEDDING_FAILED, UNSUPPORTED_ELEMENT, RELAXATION_FAILED, NOT_CONVERGED)
"""Every reason a molecule is rejected or flagged starts with one of these."""


FORCE_FIELDS = ("MMFF94",)
FORCE_FIELD_ITERATIONS = 2000


@dataclass(frozen=True)
class EmbedOptions:
    """RDKit ETKDG (v3) conformer generation, optionally followed by a force field's optimisation."""

    seed: int = 0
    max_attempts: int = 0
    """ETKDG's ``maxIterations`` (0: RDKit's default)."""
    random_coords_fallback: bool = True
    """Retry once from random coordinates when ETKDG fails (RDKit's advice for large, floppy molecules)."""
    largest_fragment_only: bool = False
    """Keep only the largest fragment of a multi-fragment SMILES (salts, counter-ions); default keeps all."""
    fragment_gap: float = 3.0
    """Å between the atoms of different fragments: ETKDG can place fragments on top of each other (BBBP row 2 had
    its Cl 0.73 Å from a carbon), so fragments are laid side by side along x."""
    force_field: str | None = None
    """Optimise the ETKDG conformer with this RDKit force field (``"MMFF94"``; a molecule it has no parameters for
    keeps its ETKDG geometry); None: the ETKDG conformer as it is. Given 3D geometries (SDF, xyz) are used as given."""
    geometry: bool = True
    """False: no conformer at all, for descriptors that read the SMILES (``--conformer none``): the molecule's atoms,
    hydrogens added, all at the origin (:data:`hacknip.store.NO_GEOMETRY_KEY`). Nothing is embedded, so no molecule
    fails to embed (ETKDG cannot embed 4 of ClinTox's) and none costs time; a backbone refuses such molecules."""

    def __post_init__(self) -> None:
        if self.force_field is not None and self.force_field not in FORCE_FIELDS:
            raise InputError(f"unknown force field {self.force_field!r}: use one of {', '.join(FORCE_FIELDS)}, or None "
                             "for the ETKDG conformer as it is")
        if self.force_field is not None and not self.geometry:
            raise InputError(f"a force field ({self.force_field}) optimises a conformer, and geometry=False makes none")


CONFORMERS = {"etkdg": EmbedOptions(), "mmff94": EmbedOptions(force_field="MMFF94"), "none": EmbedOptions(geometry=False)}
"""What ``--conformer`` names: RDKit's ETKDG conformer as it is, optimised with MMFF94, or no geometry at all."""


def conformer_name(options: EmbedOptions) -> str:
    """The ``--conformer`` name of ``options``' way of making a molecule's geometry."""
    return next(name for name, named in CONFORMERS.items()
                if (named.force_field, named.geometry) == (options.force_field, options.geometry))


def embed_options_for(conformer: str) -> EmbedOptions:
    """The embedding options ``--conformer NAME`` stands for (a one-line error for a name it does not know)."""
    if conformer not in CONFORMERS:
        raise InputError(f"unknown conformer {conformer!r}: use one of auto, {', '.join(CONFORMERS)}")
    return CONFORMERS[conformer]


def default_embed_options(relaxing: bool) -> EmbedOptions:
    """MMFF94 before a relaxation, which then needs half the steps; ETKDG's conformer as it is otherwise, which gave
    features as good on BBBP and ClinTox for less (docs/benchmarks.md, "Which conformer")."""
    return EmbedOptions(force_field="MMFF94" if relaxing else None)


@dataclass(frozen=True)
class MoleculeJob:
    """One molecule to make: from a canonical SMILES, or from a given 3D geometry."""

    key: str
    smiles: str | None = None
    atoms: Atoms | None = None


class MoleculeError(ValueError):
    """A molecule that cannot be made; the message starts with one of :data:`FAILURES`."""


# --- RDKit ------------------------------------------------------------------------------------------------

def _rdkit():
    try:
        from rdkit import Chem
    except ImportError:
        raise ImportError(f"reading molecules needs RDKit: {INSTALL_HINT}") from None
    return Chem


def quiet_rdkit():
    """RDKit's log silenced for one block (a scoped ``BlockLogs``, not the process-wide ``DisableLog``)."""
    from rdkit import rdBase

    return rdBase.BlockLogs()


def rdkit_version() -> str:
    from rdkit import rdBase

    return rdBase.rdkitVersion


def parse_smiles(smiles: Any, largest_fragment_only: bool = False):
    """An RDKit molecule, or a :class:`MoleculeError` naming what is wrong with the SMILES."""
    Chem = _rdkit()
    if not isinstance(smiles, str) or not smiles.strip():
        raise MoleculeError(f"{UNPARSEABLE}: empty")
    with quiet_rdkit():  # RDKit logs why it cannot parse; the row's error says it instead
        molecule = Chem.MolFromSmiles(smiles.strip())
    if molecule is None:
        raise MoleculeError(f"{UNPARSEABLE}: RDKit cannot read {smiles.strip()!r}")
    if largest_fragment_only:
        fragments = Chem.GetMolFrags(molecule, asMols=True)
        molecule = max(fragments, key=lambda fragment: fragment.GetNumAtoms())
    if any(atom.GetAtomicNum() == 0 for atom in molecule.GetAtoms()):
        raise MoleculeError(f"{UNSUPPORTED_ELEMENT}: dummy atom '*' (a placeholder, not an element)")
    return molecule


def canonical_smiles(molecule) -> str:
    return _rdkit().MolToSmiles(molecule, isomericSmiles=True)


def embed(molecule, options: EmbedOptions = EmbedOptions()) -> Atoms:
    """Hydrogens added, one seeded ETKDG conformer (optimised with ``options.force_field`` when it names one), as
    non-periodic ``Atoms``."""
    Chem = _rdkit()
    from rdkit.Chem import AllChem

    with_hydrogens = Chem.AddHs(molecule)
    parameters = AllChem.ETKDGv3()
    parameters.randomSeed = options.seed
    if options.max_attempts:
        parameters.maxIterations = options.max_attempts
    with quiet_rdkit():
        status = AllChem.EmbedMolecule(with_hydrogens, parameters)
        if status != 0 and options.random_coords_fallback:
            parameters.useRandomCoords = True
            status = AllChem.EmbedMolecule(with_hydrogens, parameters)
    if status != 0:
        raise MoleculeError(f"{EMBEDDING_FAILED}: RDKit ETKDG found no conformer (seed {options.seed})")
    if options.force_field is not None:  # MMFF94, the one name EmbedOptions accepts
        _optimise_with_mmff94(with_hydrogens)
    atoms = _to_atoms(with_hydrogens)
    fragments = Chem.GetMolFrags(with_hydrogens)
    if len(fragments) > 1:
        separate_fragments(atoms, fragments, options.fragment_gap)
    return atoms


def _optimise_with_mmff94(molecule) -> None:
    """Optimise the conformer of ``molecule`` (with hydrogens) in place; a molecule MMFF94 has no parameters for keeps
    its conformer. (:class:`EmbedOptions` checks the force field's name: MMFF94 is the only one.)"""
    from rdkit.Chem import AllChem

    with quiet_rdkit():
        if AllChem.MMFFHasAllMoleculeParams(molecule):
            AllChem.MMFFOptimizeMolecule(molecule, maxIters=FORCE_FIELD_ITERATIONS)


def separate_fragments(atoms: Atoms, fragments: Sequence[Sequence[int]], gap: float) -> None:
    """Move each fragment (a list of atom indices) along x so that it starts ``gap`` Å after the previous one ends."""
    next_start = None
    for indices in fragments:
        indices = list(indices)
        positions = atoms.positions[indices]
        shift = 0.0 if next_start is None else next_start - positions[:, 0].min()
        atoms.positions[indices] = positions + [shift, 0.0, 0.0]
        next_start = positions[:, 0].max() + shift + gap


def without_geometry(molecule) -> Atoms:
    """The atoms of ``molecule`` with its hydrogens, all at the origin and marked so (:data:`NO_GEOMETRY_KEY`)."""
    atoms = Atoms(numbers=[atom.GetAtomicNum() for atom in _rdkit().AddHs(molecule).GetAtoms()], pbc=False)
    atoms.info[NO_GEOMETRY_KEY] = True
    return atoms


def _to_atoms(molecule) -> Atoms:
    numbers = [atom.GetAtomicNum() for atom in molecule.GetAtoms()]
    positions = molecule.GetConformer().GetPositions()
    return Atoms(numbers=numbers, positions=positions, pbc=False)


# --- the geometry store -----------------------------------------------------------------------------------

class GeometryStore:
    """Stored geometries, one JSON record per molecule, in a folder of their own under ``root`` (see the module
    docstring): :func:`relaxed_geometries` for one backbone and relaxation settings, :func:`stored_conformers` for
    conformers as RDKit made them."""

    def __init__(self, root: str | Path, folder: str, identity: dict[str, Any]):
        self.path = Path(root) / GEOMETRIES_FOLDER / f"{folder}-{identity_key(identity)}"
        self.path.mkdir(parents=True, exist_ok=True)
        identity_file = self.path / "identity.json"
        if not identity_file.exists():
            text = json.dumps(identity, indent=2, sort_keys=True, default=str).encode()
            atomic_write(identity_file, lambda stream: stream.write(text))

    def _file(self, key: str) -> Path:
        return self.path / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record of ``key``, or None: absent, or damaged (then named in a warning and set aside, so that
        the molecule is relaxed again)."""
        file = self._file(key)
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
            if isinstance(record, dict):
                return record
            error: Exception = ValueError(f"a {type(record).__name__}, not a record")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exception:  # incl. UnicodeDecodeError, JSONDecodeError
            error = exception
        target = self.path / DAMAGED_FOLDER / file.name
        target.parent.mkdir(exist_ok=True)
        os.replace(file, target)
        warnings.warn(f"{file}: damaged stored geometry ({error}); moved to {target}, the molecule will be made again",
                      DamagedShardWarning, stacklevel=2)
        return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        text = json.dumps(record).encode()
        atomic_write(self._file(key), lambda stream: stream.write(text))


def relaxed_geometries(root: str | Path, backbone_identity: dict[str, Any], relax: RelaxOptions,
                       vacuum: float) -> GeometryStore:
    """The molecules relaxed with one backbone identity and one set of relaxation settings."""
    identity = {"backbone": backbone_identity, "relax": {**asdict(relax), "vacuum": vacuum}}
    return GeometryStore(root, slug(backbone_identity["name"]), identity)


def stored_conformers(root: str | Path) -> GeometryStore:
    """Conformers as RDKit made them, unrelaxed: each file's key (:func:`smiles_key`) already holds the embedding
    settings and the RDKit version, so one folder serves them all."""
    return GeometryStore(root, CONFORMERS_FOLDER, {"conformers": "RDKit ETKDG; settings and RDKit version in each key"})


def smiles_key(smiles: str, options: EmbedOptions) -> str:
    """Store key of a molecule made from SMILES: canonical SMILES, embedding settings and RDKit version. A setting
    added later is left out while it has its default, so that the molecules stored before it are still found."""
    embed = {name: value for name, value in asdict(options).items() if (name, value) != ("geometry", True)}
    text = json.dumps({"smiles": smiles, "embed": embed, "rdkit": rdkit_version()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _record(job: MoleculeJob, atoms: Atoms, relaxation: Relaxation | None = None, seconds: float = 0.0) -> dict:
    record = {
        "smiles": job.smiles,
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "cell": atoms.cell.array.tolist(),
        "pbc": atoms.pbc.tolist(),
    }
    if atoms.info.get(NO_GEOMETRY_KEY):
        record[NO_GEOMETRY_KEY] = True
    if relaxation is not None:
        record.update(converged=relaxation.converged, steps=relaxation.steps, fmax=relaxation.fmax,
                      energy_initial=relaxation.energy_initial, energy=relaxation.energy, seconds=seconds)
    return record


def record_atoms(record: dict[str, Any]) -> Atoms:
    atoms = Atoms(numbers=record["numbers"], positions=record["positions"], cell=record["cell"], pbc=record["pbc"])
    info = {"smiles": record["smiles"]} if record.get("smiles") else {}
    if record.get(NO_GEOMETRY_KEY):
        info[NO_GEOMETRY_KEY] = True
    if "converged" in record:
        info.update(relax_converged=record["converged"], relax_steps=record["steps"], relax_fmax=record["fmax"],
                    relax_energy=record["energy"])
    atoms.info.update(info)
    return atoms


# --- running jobs, serially or in worker processes ----------------------------------------------------------

@dataclass
class _Runner:
    """What a process needs to make molecules: ``calculator`` is None when nothing is relaxed; ``conformers`` holds
    the conformers (and the embedding failures) whether they are then relaxed or not, ``store`` the relaxed
    geometries."""

    embed: EmbedOptions
    relax: RelaxOptions
    calculator: Any = None
    vacuum: float = 6.0
    store: GeometryStore | None = None
    conformers: GeometryStore | None = None

    @property
    def results(self) -> GeometryStore | None:
        """Where a finished molecule's record is found: its relaxed geometry, or its conformer when none is relaxed."""
        return self.store if self.calculator is not None else self.conformers

    def conformer(self, job: MoleculeJob) -> tuple[str, dict[str, Any] | str]:
        """``("ok", record)`` of the input geometry or the conformer (stored, or made and stored), or
        ``("failed", reason)``."""
        if job.atoms is not None:
            return "ok", _record(job, job.atoms)
        if not self.embed.geometry:  # made in microseconds: nothing to store
            return "ok", _record(job, without_geometry(parse_smiles(job.smiles)))
        stored = self.conformers.get(job.key) if self.conformers is not None else None
        if stored is not None:
            return ("failed", str(stored[FAILED_KEY])) if FAILED_KEY in stored else ("ok", stored)
        try:
            record = _record(job, embed(parse_smiles(job.smiles), self.embed))
        except MoleculeError as error:  # ETKDG with a seed fails the same way every time, after up to a minute
            record = {"smiles": job.smiles, FAILED_KEY: str(error)}
        if self.conformers is not None:
            self.conformers.put(job.key, record)
        return ("failed", record[FAILED_KEY]) if FAILED_KEY in record else ("ok", record)

    def run(self, job: MoleculeJob) -> tuple[str, dict[str, Any] | str]:
        """``("ok", record)`` or ``("failed", reason)``."""
        started = time.perf_counter()
        status, conformer = self.conformer(job)
        if status == "failed" or self.calculator is None:
            return status, conformer
        atoms = _labelled(job, job.atoms if job.atoms is not None else record_atoms(conformer))
        try:
            relaxation = relax(atoms, self.calculator, self.relax, self.vacuum)
        except Exception as error:  # calculators raise anything; the row is reported, the run goes on
            return "failed", f"{RELAXATION_FAILED}: {type(error).__name__}: {_first_line(error)}"
        record = _record(job, relaxation.atoms, relaxation, time.perf_counter() - started)
        if self.store is not None:
            self.store.put(job.key, record)
        return "ok", record


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


_WORKER: _Runner | None = None


def _start_worker(backbone_ref, backbone_options, embed_options, relax_options, vacuum, store, conformers,
                  threads) -> None:
    global _WORKER
    _hold_to_threads(threads)  # first: a library reads its thread count from the environment when it loads
    calculator = None
    if backbone_ref is not None:
        if isinstance(backbone_ref, str):
            from hacknip.plugins.registry import load_backbone

            backbone_ref = load_backbone(backbone_ref, **backbone_options)
        calculator = calculator_of(backbone_ref)
    _WORKER = _Runner(embed_options, relax_options, calculator, vacuum, store, conformers)


_THREAD_COUNT_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"


def _hold_to_threads(threads: int) -> None:
    """Keep this worker process to ``threads`` threads in every pool it runs: torch's, the BLAS libraries already
    loaded (numpy's), those loaded later (scipy's own OpenBLAS, read from the environment when first imported) and, at
    one thread, JAX's (Sella's internal coordinates). Each pool otherwise takes every core: Sella on two workers ran
    1.6× slower than on one, and 3.4× faster once each worker kept to one thread (docs/molecules.md)."""
    from threadpoolctl import threadpool_limits

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    threadpool_limits(threads)
    for variable in _THREAD_COUNT_VARIABLES:
        os.environ[variable] = str(threads)
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1 and _XLA_ONE_THREAD not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_XLA_ONE_THREAD}".strip()


def _run_in_worker(job: MoleculeJob):
    return _WORKER.run(job)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a batch scheduler or container may narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_jobs(jobs: Sequence[MoleculeJob], runner: _Runner, workers: int = 1, worker_setup: tuple | None = None,
             on_progress: Callable[[int], None] | None = None,
             jobs_per_worker: int | None = None) -> dict[str, tuple[str, Any]]:
    """Results by job key; ``worker_setup`` is what :func:`_start_worker` gets in each of ``workers`` processes.
    ``jobs_per_worker``: replace the worker processes after that many jobs each (even with one worker), for work that
    keeps memory it never gives back (:func:`hacknip.data.relaxation.molecules_per_process`)."""
    results: dict[str, tuple[str, Any]] = {}
    if len(jobs) <= 1 or (workers <= 1 and jobs_per_worker is None):
        for job in jobs:
            results[job.key] = runner.run(job)
            if on_progress:
                on_progress(1)
        return results
    return _run_in_workers(jobs, max(1, workers), worker_setup, on_progress, jobs_per_worker)


class _Worker:
    """One worker process (a pool of one), replaced by a fresh one after ``jobs_per_worker`` jobs. Each worker is
    replaced on its own, so the others go on while it restarts. (Not ``max_tasks_per_child``: Python 3.11's
    ProcessPoolExecutor hangs with it.)"""

    def __init__(self, initargs: tuple, jobs_per_worker: int | None):
        self.initargs, self.jobs_per_worker = initargs, jobs_per_worker
        self.pool: ProcessPoolExecutor | None = None
        self.done = 0

    def submit(self, job: MoleculeJob):
        if self.pool is None or self.done == self.jobs_per_worker:
            self.close()
            # spawn, not fork: a forked copy of a process that has run torch's thread pool can deadlock
            self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_worker, initargs=self.initargs)
            self.done = 0
        self.done += 1
        return self.pool.submit(_run_in_worker, job)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)  # waits for the molecule it is on, which is then stored
            self.pool = None


def _run_in_workers(jobs: Sequence[MoleculeJob], workers: int, worker_setup: tuple,
                    on_progress: Callable[[int], None] | None,
                    jobs_per_worker: int | None) -> dict[str, tuple[str, Any]]:
    """Each worker is handed one molecule at a time; on Ctrl-C or SIGTERM the molecules not yet handed over are
    dropped and those being made finish and are stored, so a rerun resumes after them."""
    threads = max(1, available_cores() // workers)
    waiting = deque(jobs)
    pool = [_Worker((*worker_setup, threads), jobs_per_worker) for _ in range(min(workers, len(jobs)))]
    running: dict[Any, tuple[_Worker, str]] = {}
    results: dict[str, tuple[str, Any]] = {}

    def hand_over(worker: _Worker) -> None:
        if waiting:
            job = waiting.popleft()
            running[worker.submit(job)] = (worker, job.key)

    try:
        for worker in pool:
            hand_over(worker)
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                worker, key = running.pop(future)
                results[key] = future.result()
                hand_over(worker)
                if on_progress:
                    on_progress(1)
    finally:
        for worker in pool:
            worker.close()
    return results


def relax_jobs_in_batches(jobs: Sequence[MoleculeJob], runner: _Runner, backbone: Backbone, batch_size: int,
                          workers: int = 1, worker_setup: tuple | None = None,
                          on_progress: Callable[[int], None] | None = None) -> dict[str, tuple[str, Any]]:
    """Like :func:`run_jobs`, but the molecules are embedded first (in ``workers`` processes) and then relaxed
    ``batch_size`` at a time in this process, every step's forces for the whole batch in one pass of
    ``backbone.energies_and_forces`` (:func:`hacknip.data.relaxation.relax_in_batches`). Each relaxed molecule is
    stored as it finishes."""
    embedding = replace(runner, calculator=None, store=None)
    embed_setup = (None, {}, *worker_setup[2:5], None, worker_setup[6]) if worker_setup else None
    embedded = run_jobs(jobs, embedding, workers, embed_setup)
    results = {key: result for key, result in embedded.items() if result[0] == "failed"}
    if on_progress and results:
        on_progress(len(results))
    ready = [job for job in jobs if embedded[job.key][0] == "ok"]
    structures = [_labelled(job, record_atoms(embedded[job.key][1])) for job in ready]
    for index, outcome in relax_in_batches(structures, backbone, runner.relax, runner.vacuum, batch_size):
        job = ready[index]
        if isinstance(outcome, Exception):
            results[job.key] = ("failed", f"{RELAXATION_FAILED}: {type(outcome).__name__}: {_first_line(outcome)}")
        else:
            record = _record(job, outcome.atoms, outcome, outcome.seconds)
            if runner.store is not None:
                runner.store.put(job.key, record)
            results[job.key] = ("ok", record)
        if on_progress:
            on_progress(1)
    return results


def _labelled(job: MoleculeJob, atoms: Atoms) -> Atoms:
    """What the backbone's warnings call the molecule."""
    return labelled_copy(atoms, f"molecule {job.smiles}") if job.smiles else atoms


# --- reading inputs ---------------------------------------------------------------------------------------

@dataclass
class _Row:
    row: str
    id: str
    target: float
    job: MoleculeJob


def _smiles_column(frame, smiles_column: str | None, source: str) -> str:
    if smiles_column is not None:
        if smiles_column not in frame.columns:
            raise InputError(f"{source}: no SMILES column {smiles_column!r} (columns: {list(frame.columns)})")
        return smiles_column
    found = [column for column in frame.columns if str(column).lower() == "smiles"]
    if len(found) != 1:
        raise InputError(f"{source}: name the SMILES column with --smiles-column (columns: {list(frame.columns)})")
    return found[0]


def _table_rows(path: Path, smiles_column, target, id_column, embed_options, collector: _RowCollector):
    frame = _read_table(path)
    smiles_column = _smiles_column(frame, smiles_column, str(path))
    target = _pick_target(frame, target, {smiles_column, id_column}, str(path))
    ids = frame[id_column].astype(str) if id_column else [str(i) for i in range(len(frame))]
    rows = []
    for index, (smiles, value, sample_id) in enumerate(zip(frame[smiles_column], _target_values(frame, target), ids)):
        row = f"row {index + 2}"
        try:
            value = _row_target(value, target)
            canonical = canonical_smiles(parse_smiles(smiles, embed_options.largest_fragment_only))
        except ValueError as error:
            collector.reject(row, sample_id, str(error))
            continue
        rows.append(_Row(row, sample_id, value, MoleculeJob(smiles_key(canonical, embed_options), smiles=canonical)))
    return rows, target


def _sdf_rows(path: Path, target, id_column, embed_options, collector: _RowCollector):
    """SDF records: their own 3D coordinates (hydrogens added in place when missing), or embedded when 2D."""
    Chem = _rdkit()
    rows = []
    with quiet_rdkit():
        molecules = list(Chem.SDMolSupplier(str(path), removeHs=False))
    for index, molecule in enumerate(molecules):
        row = f"record {index + 1}"
        if molecule is None:
            collector.reject(row, str(index), f"{UNPARSEABLE}: RDKit cannot read this SDF record")
            continue
        properties = molecule.GetPropsAsDict()
        sample_id = str(properties.get(id_column) if id_column else molecule.GetProp("_Name") or index)
        if target is None:
            numeric = [k for k, v in properties.items() if is_number(v) and k != id_column]
            target = the_only_numeric(numeric, str(path), "SDF property", list(properties))
        try:
            value = _row_target(properties.get(target), target)
            job = _sdf_job(molecule, embed_options)
        except ValueError as error:
            collector.reject(row, sample_id, str(error))
            continue
        rows.append(_Row(row, sample_id, value, job))
    return rows, target


def _row_target(value: Any, target: str) -> float:
    return math.nan if target == UNLABELLED else _checked_target(value)


def _sdf_job(molecule, embed_options: EmbedOptions) -> MoleculeJob:
    Chem = _rdkit()
    if any(atom.GetAtomicNum() == 0 for atom in molecule.GetAtoms()):
        raise MoleculeError(f"{UNSUPPORTED_ELEMENT}: dummy atom '*' (a placeholder, not an element)")
    if molecule.GetNumConformers() and molecule.GetConformer().Is3D():
        atoms = _to_atoms(Chem.AddHs(molecule, addCoords=True))
        return MoleculeJob(structure_hash(atoms), atoms=atoms)
    canonical = canonical_smiles(parse_smiles(canonical_smiles(molecule), embed_options.largest_fragment_only))
    return MoleculeJob(smiles_key(canonical, embed_options), smiles=canonical)


def _xyz_rows(path: Path, target, on_error: str):
    dataset = read_ase_file(path, target, on_error)
    rows = [_Row(s.row, s.id, s.target, MoleculeJob(structure_hash(s.atoms), atoms=s.atoms)) for s in dataset.samples]
    return rows, dataset.target_name, dataset.skipped


def _read_rows(path: Path, smiles_column, target, id_column, embed_options, collector):
    name = path.name.lower()
    if name.endswith((".csv", ".parquet")):
        return _table_rows(path, smiles_column, target, id_column, embed_options, collector)
    if name.endswith(".sdf"):
        return _sdf_rows(path, target, id_column, embed_options, collector)
    if name.endswith((".xyz", ".extxyz")):
        rows, target, skipped = _xyz_rows(path, target, collector.on_error)
        collector.skipped += skipped
        return rows, target
    raise InputError(f"{path}: molecules come from a CSV/parquet table with a SMILES column, an SDF file, or an "
                     "(ext)xyz file")


# --- the whole path ---------------------------------------------------------------------------------------

def molecules_to_dataset(
    path: str | Path,
    *,
    smiles_column: str | None = None,
    target: str | None = None,
    id_column: str | None = None,
    backbone: str | Backbone | None = None,
    backbone_options: dict[str, Any] | None = None,
    embed_options: EmbedOptions | None = None,
    relax_options: RelaxOptions | None = None,
    store: FeatureStore | None = None,
    workers: int = 1,
    on_error: str = "raise",
    on_nonconverged: str = "keep",
    on_progress: Callable[[int], None] | None = None,
    limit: int | None = None,
    on_total: Callable[[int], None] | None = None,
    relax_batch: int | None = 1,
) -> Dataset:
    """Labelled molecules as 3D structures, ready to featurise: conformers made as ``embed_options`` says (default:
    :func:`default_embed_options`), relaxed with ``backbone``'s forces when ``relax_options`` is given.

    ``path``: a CSV/parquet table with a SMILES column (``smiles_column``, default the column called smiles in
    any case), an SDF file, or an (ext)xyz file. ``backbone``: a registered name (each worker process loads it
    once) or a loaded backbone, used only to relax (``relax_options=None``, the default, or ``backbone=None`` gives
    the conformers and input geometries unrelaxed: relaxing with CHGNet lowered ROC-AUC on ClinTox, see
    docs/benchmarks.md). Conformers and relaxed geometries are stored under ``store``'s folder (default: the
    default feature store's) and reused. ``on_error="skip"``
    lists unusable rows in ``Dataset.skipped`` instead of raising; non-converged relaxations are kept and listed in
    ``Dataset.flagged`` (``on_nonconverged="skip"`` moves them to ``skipped``). ``on_progress(n)`` is called
    as molecules finish, after ``on_total(n)`` has said how many there are. ``limit`` keeps only the first rows
    (before any embedding or relaxation). ``workers`` is 1 by default here (a script that spawns workers needs the
    ``if __name__ == "__main__":`` guard); the command line defaults to the available cores. ``relax_batch`` > 1
    relaxes that many molecules at once in this process, their forces in one batched pass each step (a backbone with
    ``energies_and_forces``; pays on a GPU, docs/molecules.md); ``workers`` then only make the conformers. None: 1 on
    a CPU, :data:`CUDA_RELAX_BATCH` for a backbone on a CUDA device that has ``energies_and_forces`` (1 with the
    Sella optimiser, which evaluates forces inside its step).
    """
    if on_nonconverged not in NONCONVERGED_CHOICES:
        raise InputError(f"on_nonconverged must be one of {NONCONVERGED_CHOICES}, not {on_nonconverged!r}")
    check_on_error(on_error)
    if relax_options is not None:
        optimizer_class(relax_options.optimizer)  # an unknown name, or Sella not installed: said before any work
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    embed_options = embed_options or default_embed_options(relax_options is not None and backbone is not None)
    if relax_options is not None and backbone is not None and not embed_options.geometry:
        raise InputError(f"{path}: relaxing molecules needs a geometry to start from, and geometry=False (--conformer "
                         "none) makes none: choose one or the other")
    if not embed_options.geometry:
        workers = 1  # nothing to embed: starting worker processes would cost more than the molecules
    collector = _RowCollector(str(path), on_error, labelled=target != UNLABELLED)
    rows, target = _read_rows(path, smiles_column, target, id_column, embed_options, collector)
    rows = rows[:limit] if limit else rows

    loaded = _load(backbone, backbone_options or {}) if relax_options is not None else None
    runner = _runner(loaded, embed_options, relax_options, store)
    if loaded is not None:
        rows = [row for row in rows if _elements_known(row, loaded, collector)]
    results = _results_from_store(rows, runner.results)
    todo = list({row.job.key: row.job for row in rows if row.job.key not in results}.values())
    if on_total:
        on_total(len(rows))
    if on_progress:
        on_progress(len(rows) - len(todo))
    backbone_ref = backbone if isinstance(backbone, str) and loaded is not None else loaded
    worker_setup = (backbone_ref, backbone_options or {}, embed_options, relax_options or RelaxOptions(), runner.vacuum,
                    runner.store, runner.conformers)
    optimizer = (relax_options or RelaxOptions()).optimizer
    if loaded is not None and (batch := _relax_batch(relax_batch, loaded, optimizer)) > 1:
        results.update(relax_jobs_in_batches(todo, runner, loaded, batch, workers, worker_setup, on_progress))
    else:
        per_worker = molecules_per_process(optimizer) if loaded is not None else None
        results.update(run_jobs(todo, runner, workers, worker_setup, on_progress, per_worker))
    for row in rows:
        _collect(row, results[row.job.key], relax_options, on_nonconverged, collector)
    return collector.dataset(target)


def molecules_with_progress(path: str | Path, *, conformer: str, relaxed_with: str | None,
                            relax_options: RelaxOptions | None, workers: int, progress: Progress = no_progress,
                            **options: Any) -> Dataset:
    """:func:`molecules_to_dataset` as a run and a prediction call it: the conformer named as the CLI names it
    (:data:`CONFORMERS`), relaxed with the backbone ``relaxed_with`` when ``relax_options`` is given, behind one
    progress bar that says so. ``options``: the rest of :func:`molecules_to_dataset`'s keyword arguments."""
    relaxed_with = relaxed_with if relax_options is not None else None
    embed_options = embed_options_for(conformer)
    description = (f"3D geometries ({conformer}{f', relaxed with {relaxed_with}' if relaxed_with else ''})"
                   + (f" ({workers} workers)" if workers > 1 else "")) if embed_options.geometry else "molecules (no geometry)"
    bar: list[Callable[[int], None]] = []
    return molecules_to_dataset(path, backbone=relaxed_with, embed_options=embed_options,
                                relax_options=relax_options, workers=workers,
                                on_total=lambda total: bar.append(progress(description, total)),
                                on_progress=lambda done: bar[0](done), **options)


def _relax_batch(requested: int | None, backbone: Backbone, optimizer: str) -> int:
    batched = callable(getattr(backbone, "energies_and_forces", None))
    if requested is None:
        on_cuda = str(getattr(backbone, "device", "cpu")).startswith("cuda")
        return CUDA_RELAX_BATCH if on_cuda and batched and relaxes_in_batches(optimizer) else 1
    if requested > 1 and not batched:  # said before any conformer is made
        raise InputError(f"{backbone.name} has no batched energies_and_forces, so it relaxes one molecule at a time: "
                         "leave out --relax-batch (relax_batch=1)")
    if requested > 1:
        check_batchable(optimizer)
    return requested


def _load(backbone: str | Backbone | None, options: dict[str, Any]) -> Backbone | None:
    if isinstance(backbone, str):
        from hacknip.plugins.registry import load_backbone

        return load_backbone(backbone, **options)
    return backbone


def _runner(backbone: Backbone | None, embed_options, relax_options, store: FeatureStore | None) -> _Runner:
    root = (store or FeatureStore()).local_root
    conformers = stored_conformers(root)
    if backbone is None:
        return _Runner(embed_options, relax_options or RelaxOptions(), conformers=conformers)
    vacuum = relax_options.vacuum_or(float(backbone.cutoff))
    geometry_store = relaxed_geometries(root, backbone.identity(), relax_options, vacuum)
    return _Runner(embed_options, relax_options, calculator_of(backbone), vacuum, geometry_store, conformers)


def _elements_known(row: _Row, backbone: Backbone, collector: _RowCollector) -> bool:
    if backbone.supported_elements is None:
        return True
    try:
        numbers = row.job.atoms.numbers if row.job.atoms is not None else _smiles_numbers(row.job.smiles)
        check_elements([Atoms(numbers=numbers)], backbone.supported_elements, backbone.name)
    except ValueError as error:
        collector.reject(row.row, row.id, f"{UNSUPPORTED_ELEMENT}: {error}")
        return False
    return True


def _smiles_numbers(smiles: str) -> list[int]:
    molecule = _rdkit().AddHs(parse_smiles(smiles))
    return [atom.GetAtomicNum() for atom in molecule.GetAtoms()]


def _results_from_store(rows: Sequence[_Row], store: GeometryStore | None) -> dict[str, tuple[str, Any]]:
    if store is None:
        return {}
    stored = {row.job.key: store.get(row.job.key) for row in rows}
    return {key: ("failed", str(record[FAILED_KEY])) if FAILED_KEY in record else ("ok", record)
            for key, record in stored.items() if record is not None}


def _collect(row: _Row, result: tuple[str, Any], relax_options, on_nonconverged: str,
             collector: _RowCollector) -> None:
    status, payload = result
    if status == "failed":
        collector.reject(row.row, row.id, payload)
        return
    atoms = record_atoms(payload)
    if not payload.get("converged", True):
        warning = (f"{NOT_CONVERGED}: largest force {payload['fmax']:.3g} eV/Å after {payload['steps']} steps "
                   f"(asked for {relax_options.fmax} eV/Å)")
        if on_nonconverged == "skip":
            collector.skipped.append(SkippedRow(row.row, row.id, warning))
            return
        atoms.info[WARNING_KEY] = warning
    collector.add(row.row, row.id, lambda: atoms, row.target)


def failure_counts(dataset: Dataset) -> dict[str, int]:
    """How many rows were skipped or flagged, per :data:`FAILURES` category (others under ``"other"``)."""
    counts: dict[str, int] = {}
    for entry in dataset.skipped + dataset.flagged:
        category = next((c for c in FAILURES if entry.reason.startswith(c)), "other")
        counts[category] = counts.get(category, 0) + 1
    return counts
