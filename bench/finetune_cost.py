"""What fine-tuning costs on the CPU: seconds per epoch per 1000 training structures for each trainable backbone, in
one run, through hacknip's own training code (the loop ``hacknip finetune`` runs for each fold).

    python bench/finetune_cost.py                                   # 256 structures, 3 epochs, 2 threads
    python bench/finetune_cost.py --n 16 --epochs 2                 # smoke test (numbers mean nothing)
    python bench/finetune_cost.py --backbones chgnet,sevennet --threads 1

Backbones: ``chgnet`` (CHGNet 0.3.0's real weights), ``sevennet`` (SevenNet-0, 7net-0's real weights), ``mace`` (the
MACE-MP-0-medium architecture with random weights, saved as a ``.model`` file and loaded through ``mace:PATH``) and
``orb`` (the orb-v2 architecture with random weights, saved as a state_dict checkpoint and loaded through
``orb-v2:PATH``), the last two built as tests/test_backbone_mace.py and tests/test_backbone_orb.py build them (the
pretrained weights cannot be downloaded here; the cost depends on the architecture, not on the weights).

For each backbone: the first ``--n`` structures of ``--data``, as given (no cutoff supercells, even for a backbone that
declares ``needs_supercell``: ``hacknip finetune`` would feed such a one supercells, so its cost here is a lower
bound), fine-tuned up to the backbone's last layer with ``FinetuneOptions`` defaults (embedding and past-layer groups
frozen, MLP head 128x128, AdamW) but ``--epochs`` and ``--batch-size``, 10 % of the rows carved for validation. Prints a
markdown table for docs/benchmarks.md: the graph-building seconds per 1000 structures (``network.inputs``, once), the
first epoch (warm-up) and the median of the later epochs, in seconds per 1000 *training* structures (an epoch's
seconds include its validation pass over the 10 % held out), and the number of backbone parameters trained.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as hacknip's CLI does; must precede the torch import

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matbench" / "matbench_phonons.json.gz"
BACKBONES = ("chgnet", "sevennet", "mace", "orb")
WEIGHTS = {
    "chgnet": "CHGNet 0.3.0 (real weights)",
    "sevennet": "SevenNet-0, 7net-0 (real weights)",
    "mace": "MACE-MP-0 medium architecture, random weights",
    "orb": "orb-v2 architecture, random weights",
}


def mace_model_file(folder: Path) -> Path:
    """A MACE-MP-0-medium-like network with random weights (r_max 6 Å, 2 interactions, correlation 3, max_ell 3,
    hidden irreps 128x0e+128x1o, float64 as MACE-MP files are), saved whole as MACE saves its models: the network of
    tests/test_backbone_mace.py's ``model_file`` fixture."""
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        zs = list(range(1, 84))  # H..Bi
        interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
        network = modules.ScaleShiftMACE(
            r_max=6.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=3, interaction_cls=interaction,
            interaction_cls_first=interaction, num_interactions=2, num_elements=len(zs),
            hidden_irreps=o3.Irreps("128x0e+128x1o"), MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=np.linspace(-5.0, -1.0, len(zs)), avg_num_neighbors=1.0, atomic_numbers=zs,
            correlation=3, gate=torch.nn.functional.silu, atomic_inter_scale=1.0, atomic_inter_shift=0.0,
        )
        with torch.no_grad():
            network.node_embedding.linear.weight.mul_(10.0)
    finally:
        torch.set_default_dtype(previous)
    path = folder / "mace-mp-medium-like.model"
    torch.save(network, path)
    return path


def orb_checkpoint(folder: Path) -> Path:
    """orb-models' own orb-v2 architecture with seeded random weights, saved as a state_dict (the format of orb-models'
    published weights): tests/test_backbone_orb.py's ``orb_v2_checkpoint`` fixture."""
    import torch
    from orb_models.forcefield import pretrained

    torch.manual_seed(0)
    network = pretrained.orb_v2_architecture(device="cpu")
    path = folder / "orb-v2-random.ckpt"
    torch.save(network.state_dict(), path)
    return path


def backbone_name(which: str, folder: Path) -> str:
    if which == "mace":
        return f"mace:{mace_model_file(folder)}"
    if which == "orb":
        return f"orb-v2:{orb_checkpoint(folder)}"
    return which


def measure(which: str, structures, y, args, folder: Path) -> dict:
    import numpy as np

    from hacknip.features.supercell import cutoff_supercell
    from hacknip.finetuning.trainer import FinetuneOptions, FineTuner, PreparedNetwork
    from hacknip.plugins.backbone import supercell_rule
    from hacknip.plugins.registry import load_backbone
    from hacknip.plugins.trainable import trainable_network

    name = backbone_name(which, folder)
    started = time.perf_counter()
    backbone = load_backbone(name)
    load_seconds = time.perf_counter() - started
    layer = len(backbone.layer_widths) - 1
    network = trainable_network(backbone, layer)

    started = time.perf_counter()
    inputs = network.inputs(structures)
    graph_seconds = time.perf_counter() - started

    options = FinetuneOptions(epochs=args.epochs, batch_size=args.batch_size, validation_fraction=0.1)
    prepared = PreparedNetwork(network, inputs, options.frozen)
    try:
        trained = sum(p.numel() for p in prepared.network.parameters() if p.requires_grad)
        total = sum(p.numel() for p in prepared.network.parameters())
        tuner = FineTuner(prepared, options)
        started = time.perf_counter()
        tuner.fit(np.arange(len(structures))[:, None], y)
        fit_seconds = time.perf_counter() - started
        record = tuner.record
        head = sum(p.numel() for p in tuner.model.head.parameters())
    finally:
        prepared.restore_pretrained()

    per_1000 = 1000 / record.n_train
    epochs = [epoch.seconds for epoch in record.history]
    atoms = [len(atoms) for atoms in structures]
    result = {
        "backbone": which, "name": backbone.name, "weights": WEIGHTS[which], "layer": layer,
        "groups_frozen": list(options.frozen), "trained_parameters": trained, "network_parameters": total,
        "head_parameters": head, "n_train": record.n_train, "n_validation": record.n_validation,
        "load_s": load_seconds, "graphs_s_per_1000": graph_seconds / len(structures) * 1000,
        "epoch_seconds": epochs, "first_epoch_s_per_1000": epochs[0] * per_1000,
        "later_epochs_median_s_per_1000": statistics.median(epochs[1:]) * per_1000 if len(epochs) > 1 else None,
        "fit_s": fit_seconds, "mean_atoms": float(np.mean(atoms)), "needs_supercell": backbone.needs_supercell,
    }
    if backbone.needs_supercell:  # what `hacknip finetune` would have fed it instead
        rule = supercell_rule(backbone)
        result["mean_atoms_in_supercells"] = float(np.mean([len(cutoff_supercell(a, backbone.cutoff, rule))
                                                            for a in structures]))
    del tuner, prepared, network, inputs, backbone
    gc.collect()
    return result


def markdown(results: list[dict], n: int) -> str:
    rows = ["| backbone | weights | layer | trained backbone parameters | graphs (s / 1000 structures) "
            "| epoch 1, warm-up (s / 1000 train) | later epochs, median (s / 1000 train) | train / validation |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        later = "—" if r["later_epochs_median_s_per_1000"] is None else f"{r['later_epochs_median_s_per_1000']:.4g}"
        rows.append(f"| `{r['backbone']}` | {r['weights']} | {r['layer']} | {r['trained_parameters']:,} "
                    f"of {r['network_parameters']:,} | {r['graphs_s_per_1000']:.3g} | {r['first_epoch_s_per_1000']:.4g} "
                    f"| {later} | {r['n_train']} / {r['n_validation']} |")
    notes = [f"Structures: the first {n} of the dataset as given (primitive cells, no cutoff supercells), "
             f"mean {results[0]['mean_atoms']:.1f} atoms." if results else ""]
    for r in results:
        if r["needs_supercell"]:
            notes.append(f"`{r['backbone']}` declares needs_supercell: `hacknip finetune` would feed it cutoff "
                         f"supercells of {r['mean_atoms_in_supercells']:.1f} atoms on average instead of "
                         f"{r['mean_atoms']:.1f}, so its cost here is a lower bound.")
    return "\n".join(rows) + "\n\n" + "\n".join(f"- {note}" for note in notes if note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=256, help="structures (the first N of --data)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (the first is reported apart, as warm-up)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbones", default=",".join(BACKBONES), help=f"comma-separated, of {', '.join(BACKBONES)}")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.backbones.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BACKBONES]
    if unknown or not chosen:
        parser.error(f"--backbones takes some of {', '.join(BACKBONES)}; got {args.backbones!r}")
    if args.epochs < 1 or args.n < 2:
        parser.error("needs --epochs >= 1 and --n >= 2 (one row goes to validation)")

    import json

    import torch

    from hacknip.data.read import read_dataset

    torch.set_num_threads(args.threads)
    dataset = read_dataset(args.data).head(args.n)
    structures = [sample.atoms for sample in dataset.samples]
    y = dataset.targets

    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    header = [
        f"command: {command}",
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f} at start",
        f"data: {args.data} (first {len(structures)} structures, as given: no supercells), target {dataset.target_name}",
        f"epochs {args.epochs}, batch size {args.batch_size}, validation fraction 0.1",
    ]
    print("\n".join(header), flush=True)

    results = []
    with tempfile.TemporaryDirectory(prefix="finetune-cost-") as folder:
        for which in chosen:
            result = measure(which, structures, y, args, Path(folder))
            results.append(result)
            print(f"{which}: load {result['load_s']:.1f} s, graphs {result['graphs_s_per_1000']:.3g} s/1000, epochs "
                  + ", ".join(f"{s:.2f}" for s in result["epoch_seconds"]) + f" s ({result['n_train']} train + "
                  f"{result['n_validation']} validation)", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at end\n")
    print(markdown(results, len(structures)))
    if args.json:
        args.json.write_text(json.dumps({"command": command, "torch": torch.__version__,
                                         "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                                         "n": len(structures), "epochs": args.epochs, "batch_size": args.batch_size,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
