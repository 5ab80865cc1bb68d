"""Featurisation throughput: hacknip (batched, every layer from one forward pass, no needless supercell) versus
the paper's protocol (the network re-run truncated at each layer L, one structure at a time, on supercells
whose lattice vectors exceed the cutoff), same backbone, same process, same structures.

    python bench/featurize_throughput.py --backbone chgnet --n 200
    python bench/featurize_throughput.py --backbone orb-v2-paper:orb-v2-random.ckpt --paper-option inference=orb
    python bench/featurize_throughput.py --backbone orb-v2-paper:orb-v2-random.ckpt --ours-only --threads 1
    python bench/featurize_throughput.py --backbone chgnet --batching --n 300 --supercells 3,4
    python bench/featurize_throughput.py --backbone chgnet --option batch_size=100000 --sweep 128,1024,4096 --n 580

A backbone that needs supercells (a capped neighbour graph is not supercell-invariant) is compared on identical
inputs: the paper's protocol gets the same supercells as hacknip, built by the backbone's own rule (``orb-v2-paper``'s
is the paper's). ``--option``/``--paper-option KEY=VALUE`` are load options of hacknip's / the paper protocol's
backbone (e.g. ORB's ``inference=orb``: orb-models' own forward pass); both must have the same identity.

Prints structures/second for both, their ratio, and how far apart the two protocols' mean embeddings are: they
must agree as ``numpy.allclose(ours, paper, rtol=1e-5, atol=1e-5)`` (float32 networks summing over 8x more atoms in
a supercell differ from the primitive cell in the last digits). ``--json FILE`` also writes the numbers.

``--batching`` compares instead how hacknip forms its batches, on a size-skewed set: the ``--n`` structures plus
supercells (``--supercells 3,4``: 3x3x3 and 4x4x4 repeats) of ``--large`` of them, spread through the data.
``fixed`` is featurisation as it batched before issue 15, ``--batch-size`` consecutive structures in dataset order;
``budget`` is today's, largest first with at most ``--batch-size`` structures and ``--batch-atoms`` atoms per batch.
``--together`` puts the supercells in a row (as a dataset that lists its large cells together) instead.
Both run with the same threads, alternating ``--repeats`` times, into fresh stores; it prints each one's structures per
second (the best of its repeats, and per CPU second) and their ratio, and checks that their features agree.

``--sweep B1,B2,...`` times featurisation of the ``--n`` structures with budgets of B1, B2, ... atoms per batch and no
limit on the count (give the backbone a large batch size of its own too, ``--option batch_size=100000``, or it splits
the passes itself), ``--threads`` (default 1) batches at once, ``--repeats`` times each: how the default budget was chosen.
On a GPU (``--option device=cuda``) it also reports each budget's peak of allocated GPU memory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

import hacknip.features.featurize
from hacknip.data.read import read_dataset
from hacknip.data.structures import Dataset, Sample
from hacknip.features.batching import default_batch_atoms, plan_batches, structure_cost
from hacknip.features.featurize import batch_threads, featurize, layer_matrix
from hacknip.features.supercell import cutoff_supercell
from hacknip.plugins.backbone import LATTICE_LENGTHS, supercell_rule
from hacknip.plugins.registry import load_backbone
from hacknip.store import FeatureStore

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matbench" / "matbench_phonons.json.gz"
TOLERANCE = 1e-5


def paper_supercell(atoms, cutoff):
    """The paper's expansion: repeat until every lattice vector is longer than the cutoff."""
    lengths = atoms.cell.lengths()
    return atoms.repeat([max(1, math.ceil(cutoff / length)) for length in lengths])


def paper_inputs(backbone, structures):
    """The paper's supercells, or for a backbone that needs supercells, the very cells hacknip featurises."""
    if not backbone.needs_supercell:
        return [paper_supercell(atoms, backbone.cutoff) for atoms in structures]
    rule = supercell_rule(backbone)
    cells = [cutoff_supercell(atoms, backbone.cutoff, rule) for atoms in structures]
    if rule == LATTICE_LENGTHS:
        assert all(len(cell) == len(paper_supercell(atoms, backbone.cutoff)) for cell, atoms in zip(cells, structures))
    return cells


def paper_protocol(backbone, cells, layers):
    """One structure at a time, the network re-run (truncated) for each layer: mean embeddings (layer, n, width)."""
    out = {layer: [] for layer in layers}
    for layer in layers:
        for cell in cells:
            (features,) = backbone.per_atom_features([cell], [layer])
            out[layer].append(features[layer].astype(np.float64).mean(axis=0))
    return {layer: np.stack(rows) for layer, rows in out.items()}


def load_options(pairs):
    options = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)  # numbers and true/false as the CLI's --backbone-option reads them
        except json.JSONDecodeError:
            options[key] = value
    return options


class Timing:
    """Wall-clock and CPU seconds (this process, all threads) of one protocol. On a shared machine the CPU seconds are
    the fairer measure: other jobs stretch the wall clock of whichever protocol runs while they do."""

    def __init__(self, wall: float, cpu: float) -> None:
        self.wall, self.cpu = wall, cpu


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    return value, Timing(time.perf_counter() - wall, time.process_time() - cpu)


def size_skewed(dataset, large, repeats, together=False):
    """``dataset`` with supercells (each of ``repeats``, cubed) of ``large`` of its structures of at least 8 atoms,
    spread evenly through it, or ``together`` in the middle (as a dataset that lists its large cells in a row)."""
    cells = [sample for sample in dataset.samples if len(sample.atoms) >= 8][:large]
    extra = [Sample(f"{cell.id}-{n}x{n}x{n}", f"{cell.row} repeated {n}x{n}x{n}", cell.atoms.repeat((n, n, n)), cell.target)
             for n in repeats for cell in cells]
    samples = list(dataset.samples)
    if together:
        samples[len(samples) // 2:len(samples) // 2] = extra
    for k, sample in enumerate([] if together else extra):
        samples.insert((k + 1) * len(samples) // (len(extra) + 1), sample)
    return Dataset(samples, dataset.target_name, f"{dataset.source} + {len(extra)} supercells")


def fixed_count(indices, costs, batch_atoms, batch_size):
    """Featurisation's batches before issue 15: ``batch_size`` consecutive structures, whatever their size."""
    return [list(indices[start:start + batch_size]) for start in range(0, len(indices), batch_size)]


def compare_batching(args, backbone):
    """Fixed-count batches against the budget of atoms on a size-skewed set: structures/s of each, and their ratio."""
    from unittest import mock

    dataset = size_skewed(read_dataset(args.data).head(args.n), args.large,
                          [int(n) for n in args.supercells.split(",") if n.strip()], args.together)
    sizes = [len(sample.atoms) for sample in dataset.samples]
    budget = args.batch_atoms or default_batch_atoms(backbone)
    costs = {index: structure_cost(backbone, sample.atoms) for index, sample in enumerate(dataset.samples)}
    largest_pass = {mode: max(sum(costs[i] for i in batch) for batch in planner(range(len(sizes)), costs, budget,
                                                                                  args.batch_size))
                    for mode, planner in (("fixed", fixed_count), ("budget", plan_batches))}
    layers = list(range(len(backbone.layer_widths)))
    backbone.per_atom_features([dataset.samples[0].atoms], layers)  # warm-up
    timings, matrices = {"fixed": [], "budget": []}, {}
    for _ in range(args.repeats):
        for mode in ("fixed", "budget"):
            planner = fixed_count if mode == "fixed" else plan_batches
            with tempfile.TemporaryDirectory() as home, \
                    mock.patch.object(hacknip.features.featurize, "plan_batches", planner):
                report, timing = timed(lambda: featurize(dataset, backbone, FeatureStore(home), batch_size=args.batch_size,
                                                         batch_atoms=budget, threads=args.threads))
                matrices[mode] = layer_matrix(report.features, report.keys, layers, ("mean", "max", "std"))
            timings[mode].append(timing)
    best = {mode: min(runs, key=lambda timing: timing.wall) for mode, runs in timings.items()}
    results = {
        "backbone": args.backbone,
        "structures": len(sizes),
        "atoms": sum(sizes),
        "largest_structures": sorted(sizes, reverse=True)[:2 * args.large],
        "supercells_together": args.together,
        "batch_size": args.batch_size,
        "batch_atoms": budget,
        "batches_at_once": batch_threads(backbone, args.threads),
        "torch_threads": torch_threads(),
        "machine": platform.processor() or platform.machine(),
        "repeats": args.repeats,
        **{f"{mode}_structures_per_s": len(sizes) / best[mode].wall for mode in best},
        **{f"{mode}_structures_per_s_all_repeats": [round(len(sizes) / t.wall, 2) for t in timings[mode]]
           for mode in timings},
        **{f"{mode}_structures_per_cpu_s": len(sizes) / best[mode].cpu for mode in best},
        **{f"{mode}_largest_pass_atoms": value for mode, value in largest_pass.items()},
        "budget_over_fixed": best["fixed"].wall / best["budget"].wall,
        "budget_over_fixed_cpu_time": best["fixed"].cpu / best["budget"].cpu,
        "max_abs_difference_of_features": float(np.abs(matrices["fixed"] - matrices["budget"]).max()),
    }
    for key, value in results.items():
        print(f"{key:45s} {value:.4g}" if isinstance(value, float) else f"{key:45s} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def sweep_budgets(args, backbone):
    """Structures per CPU second at each budget of atoms per batch, no count limit: where bigger passes stop paying.
    Budgets run in increasing order, so the growth of the process's peak memory on the first round is what the
    largest pass of each budget held."""
    import resource

    dataset = read_dataset(args.data).head(args.n)
    budgets = sorted(int(b) for b in args.sweep.split(","))
    warm_up = [sample.atoms for sample in dataset.samples[:2]]  # two: starts a backbone's graph workers too
    backbone.per_atom_features(warm_up, list(range(len(backbone.layer_widths))))
    runs, peak_mb, gpu_peak_mb = {budget: [] for budget in budgets}, {}, {}
    start_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cuda = cuda_memory()
    for _ in range(args.repeats):
        for budget in budgets:
            if cuda:
                cuda.reset_peak_memory_stats()
            with tempfile.TemporaryDirectory() as home:
                store = FeatureStore(home)
                _, timing = timed(lambda store=store, budget=budget: featurize(
                    dataset, backbone, store, batch_size=10 ** 9, batch_atoms=budget, threads=args.threads or 1))
            runs[budget].append(timing)
            peak_mb.setdefault(budget, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_kb) / 1024)
            if cuda:
                gpu_peak_mb.setdefault(budget, cuda.max_memory_allocated() / 2 ** 20)
    atoms = sum(len(sample.atoms) for sample in dataset.samples)
    print(f"{len(dataset.samples)} structures, {atoms} atoms, {args.threads or 1} batch(es) at once, "
          f"{torch_threads()} torch threads")
    for budget, timings in runs.items():
        per_cpu_s = [len(dataset.samples) / t.cpu for t in timings]
        print(f"batch_atoms {budget:6d}: {max(per_cpu_s):6.1f} structures per CPU second (repeats: "
              f"{', '.join(f'{value:.1f}' for value in per_cpu_s)}), {len(dataset.samples) / min(t.wall for t in timings):.1f}"
              f" per second, peak memory +{peak_mb[budget]:.0f} MB"
              + (f", GPU memory peak {gpu_peak_mb[budget]:.0f} MB" if cuda else ""))


def cuda_memory():
    """torch.cuda when a GPU is there (its peak allocated memory per budget is then reported), else None."""
    import torch

    return torch.cuda if torch.cuda.is_available() else None


def torch_threads():
    import torch

    return torch.get_num_threads()


def main():
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as hacknip's CLI does; must precede the torch import
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="chgnet")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--option", action="append", default=[], help="load option of hacknip's backbone, KEY=VALUE")
    parser.add_argument("--paper-option", action="append", default=[],
                        help="load option of the paper protocol's backbone, KEY=VALUE")
    parser.add_argument("--threads", type=int, help="hacknip's batches at once (default: featurize's own choice)")
    parser.add_argument("--ours-only", action="store_true",
                        help="time hacknip's side alone (e.g. to compare --threads settings); no paper protocol, "
                             "no agreement check")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--batching", action="store_true",
                        help="compare fixed-count batches with the budget of atoms on a size-skewed set instead")
    parser.add_argument("--batch-atoms", type=int, help="--batching: the budget (default: featurize's for the device)")
    parser.add_argument("--supercells", default="3,4", help="--batching: supercell repeats, comma-separated")
    parser.add_argument("--large", type=int, default=3, help="--batching: structures repeated into each supercell size")
    parser.add_argument("--repeats", type=int, default=2, help="--batching: runs of each, alternating")
    parser.add_argument("--sweep", help="time these budgets of atoms per batch (comma-separated) instead")
    parser.add_argument("--together", action="store_true",
                        help="--batching: the supercells in a row in the middle of the data, not spread through it")
    parser.add_argument("--skip-without-supercells", action="store_true",
                        help="do not also time the paper's protocol on primitive cells")
    args = parser.parse_args()

    import torch

    dataset = read_dataset(args.data).head(args.n)
    structures = [sample.atoms for sample in dataset.samples]
    backbone = load_backbone(args.backbone, **load_options(args.option))
    if args.batching or args.sweep:
        (compare_batching if args.batching else sweep_budgets)(args, backbone)
        return
    paper_backbone = backbone if args.ours_only else load_backbone(args.backbone, **load_options(args.paper_option))
    if paper_backbone.identity() != backbone.identity():
        raise SystemExit("--option / --paper-option changed the backbone identity: the features would differ")
    layers = list(range(len(backbone.layer_widths)))
    backbone.per_atom_features(structures[:2], layers)  # warm-up (lazy initialisation, allocator)
    paper_backbone.per_atom_features(structures[:2], layers)

    at_once = batch_threads(backbone, args.threads)
    with tempfile.TemporaryDirectory() as home:
        load_at_start = os.getloadavg()[0]
        report, ours_seconds = timed(lambda: featurize(dataset, backbone, FeatureStore(home), batch_size=args.batch_size,
                                                       threads=args.threads))
        ours = {layer: layer_matrix(report.features, report.keys, [layer], ("mean",)) for layer in layers}
    if args.ours_only:
        print(f"ours: {len(structures) / ours_seconds.wall:.3g} structures/s, {len(structures) / ours_seconds.cpu:.3g} per "
              f"CPU second, {ours_seconds.cpu / ours_seconds.wall:.2f} cores busy, "
              f"{at_once} batch(es) at once, load {load_at_start:.2f} -> {os.getloadavg()[0]:.2f}")
        return
    cells = paper_inputs(paper_backbone, structures)
    paper, paper_seconds = timed(lambda: paper_protocol(paper_backbone, cells, layers))
    unbatched, unbatched_seconds = (None, None) if args.skip_without_supercells else timed(
        lambda: paper_protocol(paper_backbone, structures, layers))

    difference = max(float(np.abs(ours[layer] - paper[layer]).max()) for layer in layers)
    relative = max(float((np.abs(ours[layer] - paper[layer]) / np.maximum(np.abs(paper[layer]), 1e-12)).max())
                   for layer in layers)
    worst = max(layers, key=lambda layer: float(np.abs(ours[layer] - paper[layer]).max()))
    at_worst = np.unravel_index(np.argmax(np.abs(ours[worst] - paper[worst])), paper[worst].shape)
    value_at_worst = float(abs(paper[worst][at_worst]))
    agree = all(np.allclose(ours[layer], paper[layer], rtol=TOLERANCE, atol=TOLERANCE) for layer in layers)
    results = {
        "backbone": args.backbone,
        "identity": backbone.identity(),
        "structures": len(structures),
        "layers": len(layers),
        "needs_supercell": backbone.needs_supercell,
        "supercell_rule": supercell_rule(backbone) if backbone.needs_supercell else None,
        "options": load_options(args.option),
        "paper_options": load_options(args.paper_option),
        "atoms_featurised_per_structure_paper": sum(map(len, cells)) / len(cells),
        "torch_threads": torch.get_num_threads(),
        "ours_batches_at_once": at_once,
        "load_average_1min_at_start": load_at_start,
        "machine": platform.processor() or platform.machine(),
        "load_average_1min_at_end": os.getloadavg()[0],
        "ours_structures_per_s": len(structures) / ours_seconds.wall,
        "paper_structures_per_s": len(structures) / paper_seconds.wall,
        "speedup_vs_paper": paper_seconds.wall / ours_seconds.wall,
        "ours_structures_per_cpu_s": len(structures) / ours_seconds.cpu,
        "paper_structures_per_cpu_s": len(structures) / paper_seconds.cpu,
        "speedup_vs_paper_cpu_time": paper_seconds.cpu / ours_seconds.cpu,
        "ours_cores_busy": ours_seconds.cpu / ours_seconds.wall,
        "paper_cores_busy": paper_seconds.cpu / paper_seconds.wall,
        "max_abs_difference_of_mean_embeddings": difference,
        "max_relative_difference_of_mean_embeddings": relative,
        "magnitude_where_the_difference_is_largest": value_at_worst,
        "allclose_rtol_atol_1e-5": agree,
    }
    if unbatched is not None:
        results.update({
            "paper_without_supercells_structures_per_s": len(structures) / unbatched_seconds.wall,
            "speedup_vs_paper_without_supercells": unbatched_seconds.wall / ours_seconds.wall,
            "speedup_vs_paper_without_supercells_cpu_time": unbatched_seconds.cpu / ours_seconds.cpu,
            "max_abs_difference_without_supercells": max(
                float(np.abs(ours[layer] - unbatched[layer]).max()) for layer in layers),
        })
    for key, value in results.items():
        if key not in ("identity", "options", "paper_options"):
            print(f"{key:45s} {value:.4g}" if isinstance(value, float) else f"{key:45s} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not agree:
        raise SystemExit(f"embeddings differ by up to {difference:.3g} (relative {relative:.3g}): beyond rtol=atol="
                         f"{TOLERANCE}, the protocols do not agree")


if __name__ == "__main__":
    main()
