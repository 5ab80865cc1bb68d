"""What a relaxation run left in the geometry store: per store folder (one backbone and one set of relaxation
settings), how many molecules converged, their steps and seconds, and how many relaxed molecules have an atom with no
neighbour within the backbone's cutoff (an ion that drifted away from its counter-ion, say).

    python bench/relaxed_geometries.py                       # every folder under $HACKNIP_HOME/features/geometries
    python bench/relaxed_geometries.py ~/.cache/hacknip/features/geometries/chgnet-dfab674c65098983
    python bench/relaxed_geometries.py FOLDER --against OTHER_FOLDER  # the molecules both relaxed: how far apart
    python bench/relaxed_geometries.py FOLDER --data ../shared/data/moleculenet/clintox.csv  # only this table's molecules

A folder holds every molecule relaxed with its settings, whichever table it came from; ``--data`` keeps those whose
canonical SMILES is one of the table's rows (canonicalised as hacknip does when it reads the table).

Seconds are each worker's wall clock for one molecule (embedding, MMFF94 start and relaxation), as the store records
them; with one torch thread per worker and no other load they are CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np


def default_root() -> Path:
    from hacknip.store.files import hacknip_home

    return hacknip_home() / "features" / "geometries"


def has_isolated_atom(record: dict, cutoff: float) -> bool:
    positions = np.asarray(record["positions"], dtype=float)
    if len(positions) < 2:
        return False
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    return bool((distances.min(axis=1) > cutoff).any())


def relaxed_records(folder: Path) -> list[dict]:
    records = [json.loads(file.read_text()) for file in sorted(folder.glob("*.json")) if file.name != "identity.json"]
    return [record for record in records if "converged" in record]


def table_smiles(path: Path, smiles_column: str = "smiles") -> set[str]:
    """The canonical SMILES of a table's rows, as the store records them; rows RDKit cannot read are left out."""
    import pandas as pd

    from hacknip.data.molecules import MoleculeError, canonical_smiles, parse_smiles

    frame = pd.read_csv(path)
    if smiles_column not in frame.columns:
        raise SystemExit(f"{path}: no column {smiles_column!r} (columns: {list(frame.columns)}); name it with "
                         "--smiles-column")
    found = set()
    for smiles in frame[smiles_column]:
        try:
            found.add(canonical_smiles(parse_smiles(smiles)))
        except MoleculeError:  # the dummy atom '*', say: never relaxed
            continue
    return found


def is_relaxation_folder(folder: Path) -> bool:
    """A folder of relaxed geometries, not the one of unrelaxed conformers beside them."""
    identity = folder / "identity.json"
    return identity.exists() and "relax" in json.loads(identity.read_text())


def summarise(folder: Path, only: set[str] | None = None) -> str:
    """``only``: the SMILES to count (:func:`table_smiles`); every relaxed molecule in the folder when None."""
    identity = json.loads((folder / "identity.json").read_text())
    cutoff = float(identity["backbone"].get("atom_graph_cutoff", identity["relax"]["vacuum"]))
    records = [record for record in relaxed_records(folder) if only is None or record["smiles"] in only]
    if not records:
        return f"{folder}: no relaxed molecules"
    steps = [record["steps"] for record in records]
    seconds = [record["seconds"] for record in records]
    converged = sum(record["converged"] for record in records)
    atoms = [len(record["numbers"]) for record in records]
    stuck = [record["fmax"] for record in records if not record["converged"]]
    isolated = sum(has_isolated_atom(record, cutoff) for record in records)
    relax = identity["relax"]
    lines = [
        f"{folder.name}: {identity['backbone']['name']} {identity['backbone'].get('model', '')}, fmax {relax['fmax']} "
        f"eV/Å, at most {relax['steps']} steps, {relax['optimizer']}"
        # folders before 2026-12-02 recorded the conformer a relaxation started from; now each file's key holds it
        + (f", start {relax['force_field'] or 'ETKDG'}" if "force_field" in relax else ""),
        f"  molecules {len(records)} ({min(atoms)}-{max(atoms)} atoms, median {statistics.median(atoms):.0f})",
        f"  converged {converged}/{len(records)} ({100 * converged / len(records):.1f} %)"
        + (f"; the others stopped at fmax median {statistics.median(stuck):.3f} eV/Å" if stuck else ""),
        f"  steps: mean {statistics.mean(steps):.0f}, median {statistics.median(steps):.0f}, max {max(steps)}",
        f"  seconds per molecule: mean {statistics.mean(seconds):.1f}, median {statistics.median(seconds):.1f}, "
        f"max {max(seconds):.0f}, total {sum(seconds) / 3600:.2f} h",
        f"  with an atom that has no neighbour within {cutoff:g} Å: {isolated}",
    ]
    return "\n".join(lines)


def compare(folder: Path, other: Path) -> str:
    """The molecules (by SMILES) relaxed in both folders: how far apart their geometries ended."""
    first = {record["smiles"]: record for record in relaxed_records(folder)}
    second = {record["smiles"]: record for record in relaxed_records(other)}
    shared = sorted(set(first) & set(second))
    if not shared:
        return f"{folder.name} against {other.name}: no molecule relaxed in both"
    apart = np.array([np.abs(np.subtract(first[s]["positions"], second[s]["positions"])).max() for s in shared])
    start_apart = max(abs(first[s]["energy_initial"] - second[s]["energy_initial"]) for s in shared)
    lines = [f"{folder.name} against {other.name}: {len(shared)} molecules relaxed in both",
             f"  largest difference in the starting energy: {start_apart:.1e} eV",
             f"  final positions identical: {int((apart == 0).sum())}; within 0.001 Å: {int((apart <= 1e-3).sum())}; "
             f"within 0.02 Å: {int((apart <= 0.02).sum())}; largest {apart.max():.3f} Å"]
    for index in np.argsort(apart)[::-1][:5]:
        a, b = first[shared[index]], second[shared[index]]
        lines.append(f"  {apart[index]:.3f} Å apart, {len(a['numbers'])} atoms: steps {a['steps']} / {b['steps']}, "
                     f"converged {a['converged']} / {b['converged']}, energy {a['energy']:.4f} / {b['energy']:.4f} eV, "
                     f"{shared[index]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--against", type=Path, help="compare the one folder given with this one")
    parser.add_argument("--data", type=Path, help="count only the molecules of this table (CSV with SMILES)")
    parser.add_argument("--smiles-column", default="smiles")
    args = parser.parse_args()
    if args.against is not None:
        if len(args.folders) != 1:
            parser.error("--against compares one folder with another: give exactly one folder before it")
        print(compare(args.folders[0], args.against))
        return
    folders = args.folders or sorted(path for path in default_root().glob("*") if is_relaxation_folder(path))
    only = table_smiles(args.data, args.smiles_column) if args.data else None
    for folder in folders:
        print(summarise(folder, only))


if __name__ == "__main__":
    main()
