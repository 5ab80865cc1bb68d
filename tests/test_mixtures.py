"""Mixtures: the table format, amounts to mol/L, weighted-sum and mean embeddings, one featurisation per component;
and the electrolyte-description parser on real strings from the Coulombic-efficiency data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA
from toy_backbone import ToyBackbone

from hacknip.data.electrolytes import ElectrolyteParseError, Part, components_text, parse_electrolyte
from hacknip.data.mixtures import (
    Component,
    Mixture,
    MixtureError,
    Species,
    embed_mixtures,
    molar_concentrations,
    parse_components,
    read_mixture_table,
    read_species_table,
)
from hacknip.data.structures import BadInputError
from hacknip.store import FeatureStore

SPECIES_CSV = Path(__file__).parents[1] / "examples" / "ce" / "species.csv"
CE_DATA = SHARED_DATA / "ce_kim2023_pnas" / "CE_data.csv"


@pytest.fixture(scope="module")
def species_names() -> list[str]:
    return list(read_species_table(SPECIES_CSV))


# --- the electrolyte parser, on descriptions copied from CE_data.csv ----------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1 M LiPF6 EC-DMC (1:2 vol)", "1 M LiPF6; 1 vol EC; 2 vol DMC"),
    ("1M LiFSI EC/DEC (v 1:1)", "1 M LiFSI; 1 vol EC; 1 vol DEC"),
    ("1 M LiPF6 EC-EMC (3:7 wt) 2% wt VC", "1 M LiPF6; 3 wt EC; 7 wt EMC; 2 wt% VC"),
    ("1 M LiPF6-EC/DEC (1:1 vol.) + 5 vol% FEC", "1 M LiPF6; 1 vol EC; 1 vol DEC; 5 vol% FEC"),
    ("1 M LiPF6 FEC-DMC (1:1 v) 0.25wt% 12-Crown-4", "1 M LiPF6; 1 vol FEC; 1 vol DMC; 0.25 wt% 12-Crown-4"),
    ("0.6M LiTFSI 0.4M LiBOB EC-EMC (5:5 wt)", "0.6 M LiTFSI; 0.4 M LiBOB; 5 wt EC; 5 wt EMC"),
    ("1M LiFSI+0.3 M LiNO3-FEC/GBL (1:2 v/v)", "1 M LiFSI; 0.3 M LiNO3; 1 vol FEC; 2 vol GBL"),
    ("1 M LiFSI in tetraglyme", "1 M LiFSI; 1 vol tetraglyme"),
    ("LiFSI-1.2DME-3BTFE", "1 mol LiFSI; 1.2 mol DME; 3 mol BTFE"),
    ("1 LiFSI - 3 TMS- 3 TTE", "1 mol LiFSI; 3 mol TMS; 3 mol TTE"),
    ("LiFSI SL (1:3 molar)", "1 mol LiFSI; 3 mol SL"),
    ("LiFSI-TEP 1:1.5 molar", "1 mol LiFSI; 1.5 mol TEP"),
    ("1.2M LiFSI 0.15M LiDFOB EC-EMC-BTFE (0.175:0.825:2 mol)",
     "1.2 M LiFSI; 0.15 M LiDFOB; 0.175 mol EC; 0.825 mol EMC; 2 mol BTFE"),
])
def test_parser_reads_real_descriptions(text, expected, species_names):
    assert components_text(parse_electrolyte(text, species_names)) == expected


@pytest.mark.parametrize("text, reason", [
    ("1 M LiPF6 EC-DMC (1:1 v) 2% VC", "percentage without wt or vol"),
    ("1M LiTFSI DME-DOL (1:1) 3% LiNO3", "without a unit"),
    ("LiFSI DME-TTE (1:1.2:3)", "without a unit"),
    ("10 M LiFSI EC-DMC", "2 solvents (EC, DMC) without a ratio"),
    ("2.2M LiFSI TEP (= 1:2 MR)", "a ratio of 2 parts for 1 species"),
    ("1.2 M LiFSI F3DEE", "unknown species 'F3DEE'"),
    ("5M LiTFSI 1-4 (EA-DCM vol)", "unexpected '1-4'"),
    ("1 M LiPF6 EC-DMC (1:1 v), 0.5 M LiNO3 TEGDME, 70%", "percentage without wt or vol"),
    ("", "empty"),
])
def test_parser_rejects_what_it_would_have_to_guess(text, reason, species_names):
    with pytest.raises(ElectrolyteParseError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_electrolyte(text, species_names)


def test_every_ce_row_is_parsed_or_rejected_with_a_reason(species_names):
    with CE_DATA.open() as stream:
        descriptions = [row["Electrolyte"] for row in csv.DictReader(stream)]
    assert len(descriptions) == 150
    parsed, reasons = 0, []
    for text in descriptions:
        try:
            parts = parse_electrolyte(text, species_names)
        except ElectrolyteParseError as error:
            reasons.append(str(error))
            continue
        parsed += 1
        assert all(part.amount > 0 and part.name in species_names for part in parts)
    assert parsed > 100 and all(reasons)


def test_species_table_facts_are_consistent():
    from rdkit import Chem

    species = read_species_table(SPECIES_CSV)
    for entry in species.values():
        assert Chem.MolFromSmiles(entry.smiles) is not None, entry.name
        if "." in entry.smiles:  # salts are ion pairs: solids, no liquid density
            assert entry.density is None, entry.name
        assert entry.density is None or 0.7 < entry.density < 1.7, entry.name


# --- amounts to molar concentrations --------------------------------------------------------------------------

A = Species("A", smiles="C", molar_mass=100.0, density=1.0)
B = Species("B", smiles="CC", molar_mass=50.0, density=2.0)
SALT = Species("S", smiles="[Li+].[F-]", molar_mass=200.0)
ADDITIVE = Species("D", smiles="CCC", molar_mass=120.0, density=1.2)


@pytest.mark.parametrize("unit, expected", [
    ("vol", [5.0, 20.0]),            # 500 mL × 1.0 g/mL / 100 g/mol ; 500 mL × 2.0 / 50
    ("wt", [20 / 3, 40 / 3]),        # 1 g of blend fills 0.5/1 + 0.5/2 = 0.75 mL → 1333.3 g per litre
    ("mol", [8.0, 8.0]),             # 1 mol of blend fills 0.5·100/1 + 0.5·50/2 = 62.5 mL → 16 mol per litre
])
def test_ratio_parts_to_molar(unit, expected):
    assert molar_concentrations([Component(A, 1, unit), Component(B, 1, unit)]) == pytest.approx(expected)


@pytest.mark.parametrize("unit", ["wt%", "vol%"])
def test_percent_additive_to_molar(unit):
    # base: 1 L of A (10 mol, 1000 g) + 1 M salt (200 g) = 1200 g; 20 wt% of the total is 300 g of D = 2.5 mol,
    # filling 250 mL; 20 vol% is the same 250 mL. The final volume is 1.25 L either way.
    components = [Component(SALT, 1, "M"), Component(A, 1, "vol"), Component(ADDITIVE, 20, unit)]
    assert molar_concentrations(components) == pytest.approx([0.8, 8.0, 2.0])


def test_salt_in_a_molar_ratio_adds_no_volume():
    # 1 S : 3 A by moles; only A fills volume: 0.75 · 100 / 1.0 = 75 mL per mol of blend → 13.33 mol per litre
    assert molar_concentrations([Component(SALT, 1, "mol"), Component(A, 3, "mol")]) == pytest.approx([10 / 3, 10])


def test_missing_density_is_named():
    with pytest.raises(MixtureError, match="S: no density, needed to convert a volume ratio"):
        molar_concentrations([Component(SALT, 1, "vol"), Component(A, 1, "vol")])
    liquid = Species("L", smiles="CCOCC", molar_mass=74.0)  # not a salt: its volume cannot be left out
    with pytest.raises(MixtureError, match="L: no density, needed to convert a mol ratio"):
        molar_concentrations([Component(SALT, 1, "mol"), Component(liquid, 3, "mol")])


def test_molar_mass_from_the_smiles():
    ethanol = Species("ethanol", smiles="CCO", density=0.789)
    assert molar_concentrations([Component(ethanol, 1, "vol")]) == pytest.approx([789 / 46.069], rel=1e-4)


def test_components_text_round_trip(species_names):
    species = read_species_table(SPECIES_CSV)
    parts = parse_electrolyte("1 M LiPF6 EC-DMC (1:1 v)", species_names)
    components = parse_components(components_text(parts), species)
    assert [(c.species.name, c.amount, c.unit) for c in components] == [(p.name, p.amount, p.unit) for p in parts]
    ec, dmc = molar_concentrations(components)[1:]
    assert ec == pytest.approx(500 * 1.321 / 88.062, rel=1e-3) and dmc == pytest.approx(500 * 1.069 / 90.078, rel=1e-3)
    assert Part("EC", 1.0, "vol") in parts


# --- the mixture table --------------------------------------------------------------------------------------

def test_table_rows_that_cannot_be_used_are_named(tmp_path):
    table = tmp_path / "mixtures.csv"
    table.write_text("id,components,y\n"
                     "good,1 M [Li+].[F-]; 1 vol A,1.5\n"
                     "bad,1 M [Li+].[F-]; 1 vol Zz9,2.0\n"
                     "nodensity,1 vol A; 1 vol CCO,3.0\n")
    species = {"A": A}
    with pytest.raises(BadInputError, match=r"row 3 \(id bad\): 'Zz9' is neither a known species nor a readable SMILES"):
        read_mixture_table(table, species=species)
    read = read_mixture_table(table, species=species, on_error="skip")
    assert [m.id for m in read.mixtures] == ["good"] and read.target_name == "y"
    assert [(s.row, s.id) for s in read.skipped] == [("row 3", "bad"), ("row 4", "nodensity")]
    assert "no density" in read.skipped[1].reason


# --- embeddings -------------------------------------------------------------------------------------------

def _mixture(name: str, parts: list[tuple[str, float, str]]) -> Mixture:
    species = {"EC": Species("EC", smiles="O=C1OCCO1", density=1.321), "DMC": Species("DMC", smiles="COC(=O)OC", density=1.069),
               "PC": Species("PC", smiles="CC1COC(=O)O1", density=1.205)}
    return Mixture(name, name, [Component(species[s], amount, unit) for s, amount, unit in parts], 0.0)


def test_weighted_sum_and_mean_and_each_component_featurised_once():
    backbone = ToyBackbone()
    store = FeatureStore()
    mixtures = [_mixture("m1", [("EC", 1, "vol"), ("DMC", 1, "vol")]),
                _mixture("m2", [("EC", 1, "vol"), ("PC", 3, "vol")])]
    summed = embed_mixtures(mixtures, backbone, store, [1], relax_options=None)[1]
    assert backbone.calls == 3  # EC is shared: three distinct components, each featurised once
    assert len(summed.component_keys) == 3 and summed.rejected == []

    single = embed_mixtures([_mixture(s, [(s, 1, "vol")]) for s in ("EC", "DMC", "PC")], backbone, store, [1],
                            relax_options=None)[1]
    assert backbone.calls == 3  # the store already holds them: nothing is featurised again
    pure = {mixture.id: row / mixture.concentrations()[mixture.components[0].species.key]
            for mixture, row in zip(single.mixtures, single.X)}  # each pure component's own embedding
    for mixture, row in zip(mixtures, summed.X):
        molar = [molar_concentrations(mixture.components)[i] for i in range(2)]
        expected = sum(c * pure[comp.species.name] for c, comp in zip(molar, mixture.components))
        np.testing.assert_allclose(row, expected, rtol=1e-10)

    mean = embed_mixtures(mixtures, backbone, store, [1], weighting="mean", relax_options=None)[1]
    totals = np.array([sum(m.concentrations().values()) for m in mixtures])
    np.testing.assert_allclose(mean.X, summed.X / totals[:, None], rtol=1e-10)


def test_a_failed_component_rejects_its_mixtures_by_row():
    backbone = ToyBackbone(fail_on=8)  # the toy network refuses oxygen
    mixtures = [_mixture("m1", [("EC", 1, "vol")]), Mixture("m2", "row 9", [Component(Species("X", smiles="CC"), 1, "M"),
                                                                            Component(A, 1, "vol")])]
    result = embed_mixtures(mixtures, backbone, FeatureStore(), [0], relax_options=None)[0]
    assert [m.id for m in result.mixtures] == ["m2"]
    assert result.rejected[0].id == "m1" and "component EC: toy cannot featurise it" in result.rejected[0].reason


def test_components_whose_relaxation_did_not_converge_are_kept_and_flagged():
    from test_molecules import MorseBackbone

    from hacknip.data.molecules import NOT_CONVERGED, RelaxOptions

    mixtures = [_mixture("m1", [("EC", 1, "vol"), ("DMC", 1, "vol")])]
    result = embed_mixtures(mixtures, MorseBackbone(), FeatureStore(), [0], relax_options=RelaxOptions(steps=1))[0]
    assert [m.id for m in result.mixtures] == ["m1"]
    assert sorted(entry.id for entry in result.flagged) == sorted(c.species.key for c in mixtures[0].components)
    assert all(entry.reason.startswith(NOT_CONVERGED) for entry in result.flagged)
