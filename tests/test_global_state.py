"""Library code changes no global state: only the command line chooses backends, log levels and the like."""

from __future__ import annotations

import subprocess
import sys

_PLOT = """
import sys
from hacknip.report import parity_plot
results = {"predictions": {"true": [1.0, 2.0, 3.0], "predicted": [1.1, 1.9, 3.2]}, "target": "y", "backbone": "toy",
           "best_layer": 1, "head": "ridge", "mae_mean": 0.13, "mae_std": 0.05, "r2_mean": 0.97}
parity_plot(results, sys.argv[1])
print("matplotlib.pyplot" in sys.modules)
"""


def test_plots_are_drawn_without_pyplot_or_a_chosen_backend(tmp_path):
    path = tmp_path / "parity.png"
    result = subprocess.run([sys.executable, "-c", _PLOT, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False" and path.stat().st_size > 5_000


def test_reading_molecules_leaves_rdkits_log_on():
    import pytest
    from rdkit import rdBase

    from hacknip.data.molecules import MoleculeError, parse_smiles

    with pytest.raises(MoleculeError, match="RDKit cannot read 'C1CC'"):
        parse_smiles("C1CC")
    assert "rdApp.error:enabled" in rdBase.LogStatus()
