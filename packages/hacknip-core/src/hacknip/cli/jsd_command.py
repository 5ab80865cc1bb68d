"""``hacknip analyze jsd``: per-atom Jensen–Shannon divergence across the layers of a backbone for one structure
(:mod:`hacknip.analysis.jsd`), written as CSV files and a figure, with a per-element summary printed."""

from __future__ import annotations

from pathlib import Path

import click

from hacknip.cli.common import check_output_folder, friendly_errors, layers_option, parse_key_values, progress_bars, run_name

JSD_OUTPUTS = ("jsd.csv", "jsd-elements.csv", "jsd.png", "structure.extxyz")
"""What the command writes into --out (and, with --overwrite, replaces there)."""


@click.command(name="jsd")
@click.option("--structure", type=click.Path(path_type=Path),
              help="One structure: a CIF or POSCAR file (or an .xyz file for a molecule).")
@click.option("--smiles", help="One molecule as SMILES: RDKit conformer with hydrogens, optimised with MMFF94 and relaxed "
                               "with the backbone (see --relax).")
@click.option("--backbone", "-b", required=True, help="Backbone name: 'chgnet', 'sevennet', 'mace:/path/x.model'.")
@click.option("--layers", callback=layers_option,
              help="Layers to compare, consecutive pairs in increasing order, e.g. 0-4 or 1,2,4  [default: every layer]")
@click.option("--relax/--no-relax", default=True, show_default=True,
              help="--smiles: relax the conformer with the backbone's forces (BFGS, fmax 0.05 eV/Å, at most 200 steps); "
                   "--no-relax: RDKit's ETKDG conformer as it is.")
@click.option("--disordered", type=click.Choice(["refuse", "approximant"]), default="refuse", show_default=True,
              help="--structure with partially occupied sites: refuse it, or use an ordered approximant (smallest "
                   "supercell of <= 128 atoms; hacknip.data.disorder).")
@click.option("--device", default="cpu", show_default=True, help="torch device for the backbone.")
@click.option("--backbone-option", "backbone_options", multiple=True,
              help="Backbone loader option KEY=VALUE (repeatable), e.g. default_dtype=float64.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Output folder, new or empty (default: runs/<structure>-<backbone>-jsd-<time>).")
@click.option("--overwrite", is_flag=True, help="Replace the files an earlier jsd run wrote in --out.")
@friendly_errors
def jsd(structure, smiles, backbone, layers, relax, disordered, device, backbone_options, out, overwrite):
    """Per-atom Jensen–Shannon divergence between consecutive layers of BACKBONE for one structure.

    Each atom's view of the structure at a layer is a softmax over atoms of the cosine similarity of their features
    (temperature 0.2); the divergence between consecutive layers is in bits, 0 to 1. Writes jsd.csv (one row per
    atom), jsd-elements.csv (mean per element), jsd.png (heat map and per-element means) and structure.extxyz (the
    structure used) into --out.
    """
    if (structure is None) == (smiles is None):
        raise click.UsageError("give one structure: --structure FILE or --smiles SMILES")
    _check_plain_backbone(backbone)
    out = out or Path("runs") / run_name(Path(structure.stem if structure else "molecule"), backbone, "jsd")
    check_output_folder(out, "--out", JSD_OUTPUTS, overwrite)
    options = {"device": device, **parse_key_values(backbone_options, "--backbone-option")}
    result, atoms = _compute(structure, smiles, backbone, layers, relax, disordered, options)
    out.mkdir(parents=True, exist_ok=True)
    written = _write(result, atoms, out)
    _print_summary(result, written)


def _check_plain_backbone(name: str) -> None:
    from hacknip.features.compose import parse_backbones

    members = parse_backbones(name)
    if len(members) > 1 or members[0].layers is not None or members[0].all_layers:
        raise click.BadParameter(f"{name!r}: name one backbone without '@' or '+', and its layers with --layers "
                                 "(e.g. --backbone chgnet --layers 1-4)", param_hint="--backbone")


def _compute(structure, smiles, backbone_name, layers, relax, disordered, options):
    """Inputs are checked before the backbone loads: the file or SMILES, then the layers against the registered
    widths (a name with a checkpoint is checked once loaded, since its file decides its layers)."""
    from hacknip.analysis.jsd import checked_layers, jsd_map, molecule_from_smiles, read_structure, relax_molecule
    from hacknip.data.molecules import default_embed_options
    from hacknip.plugins.registry import load_backbone, resolve_backbone

    atoms = (read_structure(structure, disordered) if structure
             else molecule_from_smiles(smiles, default_embed_options(relaxing=relax)))
    spec, checkpoint = resolve_backbone(backbone_name)
    if checkpoint is None:
        checked_layers(spec, layers)
    backbone = load_backbone(backbone_name, **options)
    checked_layers(backbone, layers)
    with progress_bars() as start:
        if smiles and relax:
            advance = start(f"relaxing {atoms.get_chemical_formula()} with {backbone.name}", 1)
            atoms = relax_molecule(atoms, backbone)
            advance(1)
            click.echo(f"relaxed in {atoms.info['relax_steps']} BFGS steps, largest force {atoms.info['relax_fmax']:.3g} "
                       "eV/Å")
        result = jsd_map(atoms, backbone, layers, label=structure.name if structure else smiles, progress=start)
    return result, atoms


def _write(result, atoms, out: Path) -> list[Path]:
    import ase.io

    from hacknip.report.jsd_figure import jsd_plot

    structure_file = out / "structure.extxyz"
    ase.io.write(structure_file, atoms, format="extxyz")
    return [result.to_csv(out / "jsd.csv"), result.element_csv(out / "jsd-elements.csv"),
            jsd_plot(result, out / "jsd.png"), structure_file]


def _print_summary(result, written: list[Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    from hacknip.analysis.jsd import ALL_ATOMS
    from hacknip.report.jsd_figure import transition_labels

    console = Console()
    table = Table(title=f"{result.label} ({result.formula}, {len(result.symbols)} atoms), {result.backbone}: mean JSD "
                        f"per element (bits, T = {result.temperature:g})")
    table.add_column("element")
    table.add_column("atoms", justify="right")
    for label in transition_labels(result):
        table.add_column(label, justify="right")
    for element, means in result.element_means().items():
        count = len(result.symbols) if element == ALL_ATOMS else result.symbols.count(element)
        table.add_row(element, str(count), *(f"{value:.4f}" for value in means))
    console.print(table)
    atom, step = result.largest()
    before, after = result.transitions[step]
    console.print(f"largest: atom {atom} ({result.symbols[atom]}), layers {before}→{after}: "
                  f"{result.jsd[atom, step]:.4f} bits")
    for note in result.notes:
        console.print(f"note: {note}")
    console.print("wrote " + ", ".join(str(path) for path in written))
