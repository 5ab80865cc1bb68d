"""Whether an optimiser in internal coordinates relaxes molecules with fewer CPU seconds than ASE's BFGS (hacknip's
default): force evaluations and CPU seconds per molecule to the same fmax, from the same MMFF94-optimised start, with
the backbone's own energy-and-forces pass.

    OMP_NUM_THREADS=1 python bench/relax_optimizers.py --backbone chgnet --n 8

Optimisers: ASE ``BFGS`` (Cartesian); geomeTRIC's TRIC (translation-rotation internal coordinates, ``pip install
geometric``); Sella in internal coordinates as hacknip runs it (``pip install 'hacknip-core[sella]'``, which brings
jax). One missing is left out. Sella compiles its functions with JAX on first use and keeps them in JAX's persistent
cache (``$JAX_COMPILATION_CACHE_DIR``): point that at an empty folder to count the compilation.
Convergence is the same for all: the largest force on an atom below ``--fmax`` (geomeTRIC's other criteria are
switched off), at most ``--max-steps`` evaluations. One process, one torch thread, ``time.process_time``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from forces_cost import DEFAULT_DATA, mmff94_conformers  # bench/ is on the path when this script runs

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def bfgs(atoms, fmax: float, max_steps: int) -> None:
    from ase.optimize import BFGS

    BFGS(atoms, logfile=None).run(fmax=fmax, steps=max_steps)


def sella(atoms, fmax: float, max_steps: int) -> None:
    """Sella as hacknip runs it (``--relax-optimizer Sella``: internal coordinates, a minimum)."""
    from hacknip.data.relaxation import SELLA, optimizer_class

    optimizer_class(SELLA)(atoms, logfile=None).run(fmax=fmax, steps=max_steps)


def tric(atoms, fmax: float, max_steps: int) -> None:
    """geomeTRIC's default coordinates (TRIC) and model Hessian, converged on the largest atomic force alone."""
    from ase import units
    from geometric.engine import Engine
    from geometric.errors import GeomOptNotConvergedError
    from geometric.internal import DelocalizedInternalCoordinates
    from geometric.molecule import Molecule
    from geometric.optimize import Optimize
    from geometric.params import OptParams

    logging.getLogger("geometric").setLevel(logging.ERROR)
    molecule = Molecule()
    molecule.elem = list(atoms.get_chemical_symbols())
    molecule.xyzs = [atoms.positions.copy()]
    molecule.build_topology()

    class AtomsEngine(Engine):
        def calc_new(self, coords, dirname):
            atoms.positions = coords.reshape(-1, 3) * units.Bohr
            return {"energy": atoms.get_potential_energy() / units.Hartree,
                    "gradient": -atoms.get_forces().ravel() / units.Hartree * units.Bohr}

    off = 1e10
    params = OptParams(convergence_gmax=fmax / units.Hartree * units.Bohr, convergence_energy=off,
                       convergence_grms=off, convergence_drms=off, convergence_dmax=off, maxiter=max_steps)
    coordinates = DelocalizedInternalCoordinates(molecule, build=True, connect=False, addcart=False)
    with tempfile.TemporaryDirectory() as folder:
        try:
            Optimize(atoms.positions.ravel() / units.Bohr, molecule, coordinates, AtomsEngine(molecule), folder, params,
                     print_info=False)
        except GeomOptNotConvergedError:  # at maxiter: reported by the fmax the caller measures
            pass


OPTIMIZERS = {"bfgs": (bfgs, None), "tric": (tric, "geometric"), "sella": (sella, "sella")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="chgnet")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--optimizers", default="bfgs,tric,sella")
    args = parser.parse_args()

    import numpy as np
    import torch

    from hacknip.data.relaxation import BackboneForces
    from hacknip.plugins.registry import load_backbone

    torch.set_num_threads(1)
    backbone = load_backbone(args.backbone)
    starts = mmff94_conformers(args.data, args.n, backbone.cutoff)

    class CountingForces(BackboneForces):
        evaluations = 0

        def calculate(self, *args, **kwargs):
            CountingForces.evaluations += 1
            super().calculate(*args, **kwargs)

    summary, energies = {}, {}
    for name in args.optimizers.split(","):
        optimizer, module = OPTIMIZERS[name]
        if module and importlib.util.find_spec(module) is None:
            print(f"{name}: {module} is not installed, left out")
            continue
        evaluations, seconds, converged, energies[name] = [], [], 0, []
        for start in starts:
            atoms = start.copy()
            atoms.calc = CountingForces(backbone)
            CountingForces.evaluations = 0
            began = time.process_time()
            optimizer(atoms, args.fmax, args.max_steps)
            seconds.append(time.process_time() - began)
            evaluations.append(CountingForces.evaluations)
            fmax = float(np.sqrt((atoms.get_forces() ** 2).sum(axis=1)).max())
            converged += fmax < args.fmax
            energies[name].append(float(atoms.get_potential_energy()))
            print(f"{name}: {len(atoms)} atoms, {evaluations[-1]} force evaluations, {seconds[-1]:.2f} CPU s, "
                  f"fmax {fmax:.3f}, energy {energies[name][-1]:.4f} eV", flush=True)
        summary[name] = (converged, statistics.mean(evaluations), statistics.mean(seconds))
    reference = summary.get("bfgs")
    print(f"\n{'optimiser':<10} converged  evaluations  CPU s/molecule  fewer CPU s than BFGS  final energy - BFGS's, "
          "mean (most above), eV")
    for name, (converged, evaluations, seconds) in summary.items():
        ratio = f"{reference[2] / seconds:.2f}x" if reference else "-"
        above = np.subtract(energies[name], energies["bfgs"]) if reference else None
        gap = f"{above.mean():+.4f} ({above.max():+.4f})" if above is not None else "-"
        print(f"{name:<10} {converged}/{len(starts):<8} {evaluations:>11.1f}  {seconds:>14.2f}  {ratio:>21}  {gap}")


if __name__ == "__main__":
    main()
