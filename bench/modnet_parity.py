"""Parity of hacknip's PyTorch MODNet head with upstream MODNet 0.4.5 (TensorFlow), on the same stored features,
folds and hyperparameters.

    # 1. hacknip's environment: features from the store (+ official folds) to one .npz
    python bench/modnet_parity.py export --backbone chgnet@all --pooling mean --out phonons_chgnet.npz
    # 2. hacknip's environment: our head
    python bench/modnet_parity.py ours --features phonons_chgnet.npz --out ours.json
    # 3. upstream's own environment (bench/modnet_upstream_env.sh): numpy + modnet only, no hacknip import
    /tmp/venv-modnet/bin/python bench/modnet_parity.py upstream --features phonons_chgnet.npz --out upstream.json
    # 4. either environment
    python bench/modnet_parity.py compare ours.json upstream.json

Hyperparameters default to the HackNIP paper's Table S1 row for phonons; ``--params '{"n_feat": 64}'`` overrides.
Both heads train each fold with several seeds (``--seeds``), as one seed of a small network is noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Table S1, "Frequency at last phonon PhDOS peak": the paper's tuned MODNet for matbench_phonons. The paper's
# scripts call MODNetModel.fit with its defaults otherwise: 200 epochs, no early stopping, MinMax scaling.
PAPER_PHONONS = {"n_feat": 255, "num_neurons": [[132], [132], [132], []], "out_act": "relu", "batch_size": 32,
                 "lr": 0.004464, "loss": "mae", "act": "relu", "epochs": 200,
                 "clip_features": False}  # upstream has no clipping; our head clips by default
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matbench" / "matbench_phonons.json.gz"


def export(args) -> None:
    """Pooled features of the chosen layers from hacknip's store, the targets and the official Matbench folds."""
    from hacknip.workflow.run import RunConfig, prepare

    prepared = prepare(RunConfig(data=args.data, backbone=args.backbone, pooling=args.pooling))
    layers = {m.member.name: list(m.member.resolve(m.n_layers) or range(m.n_layers)) for m in prepared.members}
    X = prepared.matrix(layers)
    fold_of_row = np.full(len(X), -1)
    for fold, (_, test) in enumerate(prepared.folds):
        fold_of_row[test] = fold
    description = {"data": str(args.data), "backbone": args.backbone, "pooling": args.pooling, "layers": layers,
                   "folds": prepared.folds_source}
    np.savez_compressed(args.out, X=X, y=prepared.y, ids=np.array(prepared.dataset.ids), fold=fold_of_row,
                        description=json.dumps(description))
    print(f"wrote {args.out}: X {X.shape}, {len(prepared.folds)} folds; {description}")


def load_features(path: Path):
    data = np.load(path)
    return data["X"], data["y"], data["fold"], json.loads(str(data["description"]))


def folds_of(fold_of_row: np.ndarray):
    rows = np.arange(len(fold_of_row))
    return [(rows[fold_of_row != fold], rows[fold_of_row == fold]) for fold in sorted(set(fold_of_row.tolist()))]


def ours(args) -> None:
    import torch

    from hacknip.plugins.registry import create_head

    torch.set_num_threads(1)
    X, y, fold_of_row, description = load_features(args.features)
    params = {**PAPER_PHONONS, **json.loads(args.params)}

    def fit_predict(train, test, seed):
        head = create_head("modnet", **{**params, "random_state": seed}).fit(X[train], y[train])
        return head.predict(X[test]), head.selected_features_.tolist()

    run_folds(args, "ours (hacknip MODNetHead, PyTorch)", X, y, fold_of_row, params, description, fit_predict)


def upstream(args) -> None:
    import random

    import pandas as pd
    import tensorflow as tf
    from modnet import __version__
    from modnet.models import MODNetModel
    from modnet.preprocessing import MODData, get_cross_nmi

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    X, y, fold_of_row, description = load_features(args.features)
    params = {**PAPER_PHONONS, **json.loads(args.params)}
    columns = [f"f{j}" for j in range(X.shape[1])]
    cross_nmi = upstream_cross_nmi(X, columns, args.cross_nmi_cache, get_cross_nmi, pd) if args.selection == "nmi" else None

    def moddata(rows):
        data = MODData(df_featurized=pd.DataFrame(X[rows], columns=columns, index=[f"id{i}" for i in rows]),
                       targets=y[rows].reshape(-1, 1), target_names=["target"],
                       structure_ids=[f"id{i}" for i in rows])
        data.optimal_features = columns
        return data

    def fit_predict(train, test, seed):
        random.seed(seed)
        np.random.seed(seed)
        tf.random.set_seed(seed)
        train_data, test_data = moddata(train), moddata(test)
        if args.selection == "nmi":
            # Upstream's own selection on the training rows; the feature-only cross NMI is computed once for all rows.
            train_data.feature_selection(n=params["n_feat"], cross_nmi=cross_nmi, random_state=seed + 1)
        n_feat = min(params["n_feat"], len(train_data.optimal_features))
        model = MODNetModel([[["target"]]], {"target": 1.0}, num_neurons=params["num_neurons"], n_feat=n_feat,
                            act=params["act"], out_act=params["out_act"])
        model.fit(train_data, lr=params["lr"], epochs=params["epochs"], batch_size=params["batch_size"],
                  loss=params["loss"], xscale="minmax")
        predicted = model.predict(test_data, remap_out_of_bounds=False)["target"].to_numpy()
        return predicted, [columns.index(name) for name in train_data.optimal_features[:n_feat]]

    run_folds(args, f"upstream modnet {__version__} (TensorFlow {tf.__version__})", X, y, fold_of_row, params,
              description, fit_predict)


def upstream_cross_nmi(X, columns, cache: Path | None, get_cross_nmi, pd):
    if cache and cache.exists():
        return pd.read_pickle(cache)
    started = time.perf_counter()
    frame = pd.DataFrame(X, columns=columns)
    cross = get_cross_nmi(frame, drop_thr=0.2, n_jobs=1, random_state=12)
    print(f"upstream get_cross_nmi on {X.shape}: {time.perf_counter() - started:.0f} s", flush=True)
    if cache:
        cross.to_pickle(cache)
    return cross


def run_folds(args, label, X, y, fold_of_row, params, description, fit_predict) -> None:
    folds = folds_of(fold_of_row)
    seeds = list(range(args.seeds))
    maes = np.zeros((len(seeds), len(folds)))
    selected = {}
    started = time.perf_counter()
    for s, seed in enumerate(seeds):
        for f, (train, test) in enumerate(folds):
            predicted, features = fit_predict(train, test, seed)
            maes[s, f] = float(np.mean(np.abs(predicted - y[test])))
            selected[f"seed{seed}_fold{f}"] = features
            print(f"{label}: seed {seed} fold {f}: MAE {maes[s, f]:.3f}", flush=True)
    per_seed = maes.mean(axis=1)
    selection = getattr(args, "selection", None) or params.get("feature_selection", "nmi")
    result = {"label": label, "params": params, "features": str(args.features), "description": description,
              "selection": selection, "mae_per_seed_and_fold": maes.tolist(),
              "mae_mean": float(per_seed.mean()), "mae_std_over_seeds": float(per_seed.std()),
              "seconds": round(time.perf_counter() - started, 1), "selected_features": selected}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"{label}: MAE {result['mae_mean']:.2f} ± {result['mae_std_over_seeds']:.2f} (mean over folds; ± over "
          f"{len(seeds)} seeds), {result['seconds']} s -> {args.out}")


def compare(args) -> None:
    results = [json.loads(Path(path).read_text()) for path in args.results]
    print("| model | selection | n_feat | MAE (mean of 5 folds, ± over seeds) | per-seed MAEs | seconds |")
    print("|---|---|---|---|---|---|")
    for r in results:
        per_seed = ", ".join(f"{np.mean(row):.2f}" for row in r["mae_per_seed_and_fold"])
        print(f"| {r['label']} | {r['selection']} | {r['params']['n_feat']} | {r['mae_mean']:.2f} ± "
              f"{r['mae_std_over_seeds']:.2f} | {per_seed} | {r['seconds']} |")
    first, *others = results
    for other in others:
        print(f"\n{other['label']} vs {first['label']}: MAE ratio {other['mae_mean'] / first['mae_mean']:.3f}; "
              f"selected-feature overlap per fold (seed 0): {feature_overlap(first, other)}")


def feature_overlap(a, b) -> str:
    overlaps = []
    for key, chosen in a["selected_features"].items():
        if key.startswith("seed0_") and key in b["selected_features"]:
            overlaps.append(len(set(chosen) & set(b["selected_features"][key])) / max(len(chosen), 1))
    return ", ".join(f"{o:.2f}" for o in overlaps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    exporting = modes.add_parser("export", help="stored features + official folds -> .npz (hacknip environment)")
    exporting.add_argument("--data", type=Path, default=DEFAULT_DATA)
    exporting.add_argument("--backbone", default="chgnet@all")
    exporting.add_argument("--pooling", default="mean")
    exporting.add_argument("--out", type=Path, required=True)
    for name, help_text in (("ours", "hacknip's PyTorch MODNet head"), ("upstream", "upstream modnet 0.4.5")):
        mode = modes.add_parser(name, help=help_text)
        mode.add_argument("--features", type=Path, required=True)
        mode.add_argument("--out", type=Path, required=True)
        mode.add_argument("--params", default="{}", help="JSON overriding the Table S1 phonons hyperparameters")
        mode.add_argument("--seeds", type=int, default=3)
    modes.choices["upstream"].add_argument("--selection", choices=["nmi", "first"], default="nmi")
    modes.choices["upstream"].add_argument("--cross-nmi-cache", type=Path,
                                           help="pickle of upstream's cross NMI (computed once, hours for many features)")
    comparing = modes.add_parser("compare", help="table of result files; overlap of selected features")
    comparing.add_argument("results", nargs="+", type=Path)
    args = parser.parse_args()
    {"export": export, "ours": ours, "upstream": upstream, "compare": compare}[args.mode](args)


if __name__ == "__main__":
    main()
