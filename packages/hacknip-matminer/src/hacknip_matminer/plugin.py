"""Registers matminer's descriptors with hacknip. Light on purpose: no matminer import (``hacknip list`` imports this).

The presets are the featurisers MODNet's Matbench entries start from, as matminer computes them; widths are checked
against matminer's own feature labels by the tests."""

import hacknip
from hacknip.plugins.descriptor import DescriptorSpec

PRESETS = {
    "magpie": (132, "Magpie element-property statistics of the composition (matminer ElementProperty, 132)"),
    "composition": (146, "Magpie (132) + stoichiometry p-norms (6) + valence-orbital occupations (8)"),
    "structure": (7, "density, volume per atom, packing fraction (3) + space group, crystal system, inversion, "
                     "symmetry operations (4); periodic structures only"),
    "all": (153, "composition (146) + structure (7): the 'matminer' baseline of docs/benchmarks.md"),
    "sites": (384, "MODNet's site featurisers (CrystalNN, order parameters, AGNI, Gaussian symmetry functions, GRDF, "
                   "Voronoi, bond lengths and angles...), mean and std over the sites; about 1 s a structure; "
                   "periodic structures only"),
    "modnet": (537, "all (153) + sites (384): the featurisers of MODNet's Matbench entries that give a fixed width"),
}


@hacknip.hookimpl
def register_descriptors(register):
    for preset, (width, description) in PRESETS.items():
        register(DescriptorSpec(name=f"matminer:{preset}", factory=f"hacknip_matminer.descriptors:load_{preset}",
                                width=width, description=description))
