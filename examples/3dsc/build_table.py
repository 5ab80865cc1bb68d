"""Build a hacknip input table of superconducting critical temperatures from the 3DSC_MP database (Sommer et al.,
Sci. Data 10, 816 (2023)): one row per Materials Project structure matched to a SuperCon composition.

    python examples/3dsc/build_table.py --out /tmp/3dsc [--doped exclude|approximant] [--max-atoms 128]

Reads, without unpacking anything, ``3DSC_MP_final_cifs.tar.gz`` (10 904 CIFs named
``<formula_sc>-MP-<mp-id>[-synth_doped].cif``) and ``3DSC_MP_cif_index_DERIVED.csv`` (each CIF's SuperCon formula and
its Tc, looked up by identical formula in 3DSC's ICSD table) from ``../shared/data/3dsc``. Writes into ``--out``:

- ``3dsc_tc.csv``: ``id, cif, tc, formula_sc, material_id, family, synth_doped, atoms, approximant``, ready for
  ``hacknip run --data 3dsc_tc.csv --id-column id --target tc``. ``family`` joins rows that share a SuperCon formula
  or a parent MP structure, transitively: ``--split group:family`` never puts one Tc measurement, nor one parent
  structure doped differently, on both sides of a split;
- ``excluded.csv``: every CIF not in the table and why (no Tc found, Tc = 0 K whose logarithm is not finite, a
  doped structure excluded or whose approximant would drop a dopant).

``-synth_doped`` structures are the parent MP structure with SuperCon's dopants put on its sites as partial
occupancies; a NIP needs whole atoms. ``--doped exclude`` (default) leaves them out; ``--doped approximant`` replaces
each with an ordered approximant (``hacknip.data.disorder``: the smallest supercell of at most ``--max-atoms`` atoms that
holds every element within 0.005 in atomic fraction, species dealt to sites by largest remainder in a seeded order);
a dopant too dilute to get one atom in ``--max-atoms`` excludes the row rather than silently turning it into its
parent.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tarfile
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[2] / "shared" / "data" / "3dsc"
TABLE_COLUMNS = ["id", "cif", "tc", "formula_sc", "material_id", "family", "synth_doped", "atoms", "approximant"]


def read_index(data: Path) -> list[dict]:
    with (data / "3DSC_MP_cif_index_DERIVED.csv").open() as stream:
        return list(csv.DictReader(stream))


def table_row(entry: dict, text: str, doped: str, max_atoms: int) -> tuple[dict | None, str | None]:
    """The table row of one CIF, or the reason it is left out."""
    from pymatgen.core import Structure

    from hacknip.data.disorder import ordered_approximant

    tc = entry["tc_from_ICSD_table"]
    if not tc:
        return None, "no Tc for this formula in 3DSC's ICSD table"
    if float(tc) <= 0:
        return None, f"Tc = {tc} K: log Tc is not finite (non-superconductor)"
    row = {"id": Path(entry["cif"]).stem, "tc": float(tc), "formula_sc": entry["formula_sc"],
           "material_id": entry["material_id"], "synth_doped": entry["synth_doped"], "approximant": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen's notes on rounded fractional coordinates
        structure = Structure.from_str(text, fmt="cif")
    if structure.is_ordered:
        return {**row, "cif": text, "atoms": len(structure)}, None
    if doped == "exclude":
        return None, "synth_doped (partially occupied sites); --doped approximant would order it"
    approximant = ordered_approximant(structure, max_atoms=max_atoms)
    if approximant.dropped:
        return None, f"approximant within {max_atoms} atoms drops {', '.join(approximant.dropped)} ({approximant.describe()})"
    return {**row, "cif": approximant.structure.to(fmt="cif"), "atoms": len(approximant.structure),
            "approximant": approximant.describe()}, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the 3DSC files")
    parser.add_argument("--out", type=Path, required=True, help="folder for 3dsc_tc.csv and excluded.csv")
    parser.add_argument("--doped", choices=["exclude", "approximant"], default="exclude")
    parser.add_argument("--max-atoms", type=int, default=128, help="largest ordered approximant")
    args = parser.parse_args()

    from rich.progress import track

    entries = {entry["cif"]: entry for entry in read_index(args.data)}
    rows, excluded = [], []
    with tarfile.open(args.data / "3DSC_MP_final_cifs.tar.gz") as archive:
        members = [member for member in archive.getmembers() if member.isfile()]
        for member in track(members, description="3DSC CIFs"):
            entry = entries.get(member.name)
            if entry is None:
                excluded.append({"cif": member.name, "reason": "not in 3DSC_MP_cif_index_DERIVED.csv"})
                continue
            text = archive.extractfile(member).read().decode()
            try:
                row, reason = table_row(entry, text, args.doped, args.max_atoms)
            except Exception as error:  # one unreadable CIF is listed, not fatal
                row, reason = None, f"{type(error).__name__}: {error}"
            if row is None:
                excluded.append({"cif": member.name, "formula_sc": entry["formula_sc"], "reason": reason})
            else:
                rows.append(row)
    missing = set(entries) - {member.name for member in members}
    excluded += [{"cif": name, "reason": "listed in the index but not in the tar"} for name in sorted(missing)]

    add_families(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out / "3dsc_tc.csv", rows, TABLE_COLUMNS)
    _write(args.out / "excluded.csv", excluded, ["cif", "formula_sc", "reason"])
    formulas = len({row["formula_sc"] for row in rows})
    span = [math.log(row["tc"]) for row in rows]
    print(f"{len(rows)} structures ({formulas} SuperCon formulas, ln Tc {min(span):.2f} to {max(span):.2f}) -> "
          f"{args.out / '3dsc_tc.csv'}")
    reasons: dict[str, int] = {}
    for entry in excluded:
        reason = entry["reason"].split(":")[0]
        if reason.startswith("approximant"):
            reason = f"a dopant too dilute for an approximant of <= {args.max_atoms} atoms"
        reasons[reason] = reasons.get(reason, 0) + 1
    print(f"{len(excluded)} excluded ({args.out / 'excluded.csv'}):", file=sys.stderr)
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        print(f"  {count:5d}  {reason}", file=sys.stderr)


def add_families(rows: list[dict]) -> None:
    """``family``: the connected component of each row in the graph linking rows with the same SuperCon formula or
    the same parent MP structure, named after its first formula."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for row in rows:
        parent[find("mp:" + row["material_id"])] = find("formula:" + row["formula_sc"])
    names: dict[str, str] = {}
    for row in rows:
        row["family"] = names.setdefault(find("formula:" + row["formula_sc"]), row["formula_sc"])


def _write(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, columns)
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
