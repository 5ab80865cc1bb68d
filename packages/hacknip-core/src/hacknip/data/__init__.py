"""Data readers: crystals (Matbench, CIF/POSCAR folders, tables, extxyz), molecules, mixtures, disordered structures."""
