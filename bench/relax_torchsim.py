"""torch-sim's batched optimisers against hacknip's relaxation: the same SevenNet network, the same start geometries,
the same stopping rule (largest atomic force below fmax), one process.

    python bench/relax_batched.py --n 50 --save-geometries bbbp50-mmff94.extxyz      # the MMFF94 starts (project venv)
    PYENV_VERSION=3.12.1 python -m venv /tmp/ts312                                    # torch-sim >= 0.4 needs Python 3.12
    /tmp/ts312/bin/pip install -c constraints.txt torch-sim-atomistic==0.6.2 ./packages/hacknip-core \\
        ./packages/hacknip-sevennet
    OMP_NUM_THREADS=1 /tmp/ts312/bin/python bench/relax_torchsim.py --geometries bbbp50-mmff94.extxyz --json ts.json
    python bench/relax_torchsim.py --geometries bbbp50-mmff94.extxyz --device cuda --arms one,batch,ts-bfgs  # on a GPU

Arms (``--arms``): ``one``, each molecule alone, ASE's BFGS over SevenNet's ``energies_and_forces`` (hacknip's path
on a CPU); ``batch``, all of them at once through :func:`hacknip.data.relaxation.relax_in_batches` (one ASE BFGS per
molecule, every step's forces in one pass); ``ts-bfgs``, ``ts-lbfgs``, ``ts-fire``: ``torch_sim.optimize`` with that
optimiser over sevenn's own torch-sim model (``sevenn.torchsim.SevenNetModel``) on a copy of the same network, all
molecules in one batch, a molecule leaving as it converges (``steps_between_swaps=1``, so that it stops on the step
it converges, as ASE does). For each arm: CPU seconds of this process (``time.process_time``; run it with one thread),
wall seconds, force evaluations (structures passed to the network), molecules converged (the largest force below
fmax, measured by the arm's own forces), and against the ``one`` arm (the first arm given): how far the final
geometries are (largest atomic distance, Å) and the final energies (mean and largest difference, eV; negative: lower
than ``one``'s), energies from SevenNet's ``energies_and_forces`` at each arm's final geometry.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

from relax_batched import Counting  # bench/ is on the path when this script runs

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def hacknip_arm(backbone, molecules, batch: bool, fmax: float, steps: int) -> tuple[list, int]:
    """Final geometries, converged flags and force evaluations of hacknip's relaxation."""
    from hacknip.data.relaxation import BackboneForces, RelaxOptions, relax, relax_in_batches

    options = RelaxOptions(fmax=fmax, steps=steps)
    counting = Counting(backbone)
    vacuum = float(backbone.cutoff)
    if batch:
        finished = dict(relax_in_batches(molecules, counting, options, vacuum, batch_size=len(molecules)))
        results = [finished[index] for index in range(len(molecules))]
    else:
        results = [relax(atoms, BackboneForces(counting), options, vacuum) for atoms in molecules]
    failed = [result for result in results if isinstance(result, Exception)]
    if failed:
        raise SystemExit(f"{len(failed)} molecules failed to relax, e.g. {failed[0]!r}")
    return [(result.atoms, result.converged) for result in results], counting.structures


def torchsim_arm(backbone, molecules, optimizer: str, fmax: float, steps: int, device: str) -> tuple[list, int]:
    """The same with ``torch_sim.optimize``: all molecules in one batch, boxed as hacknip boxes them."""
    import torch_sim as ts
    from sevenn.torchsim import SevenNetModel

    from hacknip.data.structures import boxed

    model = SevenNetModel(copy.deepcopy(backbone.network), modal=backbone.modal, device=device)
    evaluations = 0
    forward = model.forward

    def counting_forward(state, *args, **kwargs):
        nonlocal evaluations
        evaluations += int(state.n_systems)
        return forward(state, *args, **kwargs)

    model.forward = counting_forward
    start = [boxed(atoms, float(backbone.cutoff)) for atoms in molecules]
    final = ts.optimize(start, model, optimizer=ts.Optimizer[optimizer], max_steps=steps, steps_between_swaps=1,
                        convergence_fn=ts.generate_force_convergence_fn(force_tol=fmax), autobatcher=False)
    converged = (ts.system_wise_max_force(final) < fmax).tolist()
    relaxed = []
    for atoms, state_atoms in zip(molecules, final.to_atoms(), strict=True):
        copy_ = atoms.copy()
        copy_.positions = state_atoms.positions
        relaxed.append(copy_)
    return list(zip(relaxed, converged, strict=True)), evaluations


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometries", type=Path, required=True, help="start geometries (extxyz, relax_batched.py)")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--model", default="7net-0")
    parser.add_argument("--arms", default="one,batch,ts-bfgs,ts-lbfgs,ts-fire")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import ase.io
    import numpy as np
    import torch

    from hacknip.data.structures import boxed
    from hacknip.plugins.registry import load_backbone

    torch.set_num_threads(1)
    molecules = ase.io.read(args.geometries, index=f":{args.n}")
    backbone = load_backbone(f"sevennet:{args.model}", device=args.device)
    backbone.energies_and_forces(molecules[:2])  # warm-up
    sizes = [len(atoms) for atoms in molecules]
    versions = {"torch": torch.__version__, "python": sys.version.split()[0]}
    try:
        import torch_sim

        versions["torch_sim"] = torch_sim.__version__
    except ImportError:
        pass
    print(f"{len(molecules)} molecules, {min(sizes)}-{max(sizes)} atoms, SevenNet {args.model} on {args.device}, one thread, "
          f"fmax {args.fmax} eV/Å, at most {args.steps} steps, {versions}", flush=True)
    rows, reference = [], None
    for arm in args.arms.split(","):
        synchronise(args.device)
        wall, cpu = time.perf_counter(), time.process_time()
        if arm in ("one", "batch"):
            results, evaluations = hacknip_arm(backbone, molecules, arm == "batch", args.fmax, args.steps)
        else:
            results, evaluations = torchsim_arm(backbone, molecules, arm.removeprefix("ts-"), args.fmax, args.steps,
                                                args.device)
        synchronise(args.device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        final = [atoms for atoms, _ in results]
        energies = [energy for energy, _ in backbone.energies_and_forces(
            [boxed(atoms, float(backbone.cutoff)) for atoms in final])]
        row = {"arm": arm, "molecules": len(final), "converged": sum(bool(done) for _, done in results),
               "evaluations": evaluations, "evaluations_per_molecule": evaluations / len(final),
               "cpu_s": cpu, "wall_s": wall, "cpu_s_per_molecule": cpu / len(final),
               "cpu_s_per_evaluation": cpu / evaluations, "energies": energies}
        if reference is None:
            reference = (final, energies)
        differences = np.array(energies) - np.array(reference[1])
        row["energy_difference_mean"] = float(differences.mean())
        row["energy_difference_largest"] = float(differences[np.argmax(np.abs(differences))])
        row["largest_distance_from_first_arm"] = max(
            float(np.abs(atoms.positions - first.positions).max()) for atoms, first in zip(final, reference[0]))
        rows.append(row)
        print(json.dumps({key: value for key, value in row.items() if key != "energies"}), flush=True)
    base = rows[0]
    print(f"\n| arm | converged | force evaluations per molecule | CPU s per molecule | CPU s per evaluation | "
          f"fewer CPU s than {base['arm']} | final energy − {base['arm']}'s, mean (largest), eV | largest atomic "
          "distance from it, Å |\n|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['arm']} | {row['converged']}/{row['molecules']} | {row['evaluations_per_molecule']:.1f} | "
              f"{row['cpu_s_per_molecule']:.2f} | {row['cpu_s_per_evaluation']:.3f} | "
              f"{base['cpu_s'] / row['cpu_s']:.2f}× | {row['energy_difference_mean']:+.4f} "
              f"({row['energy_difference_largest']:+.4f}) | {row['largest_distance_from_first_arm']:.2f} |")
    print(f"\nmedian molecule size {statistics.median(sizes)} atoms")
    if args.json:
        args.json.write_text(json.dumps({"argv": sys.argv, "versions": versions, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
