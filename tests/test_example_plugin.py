"""The template plugin under examples/ (installed by requirements-dev.txt) is found like any third-party package."""

from __future__ import annotations

import json

from click.testing import CliRunner

from hacknip.cli import cli


def test_hacknip_list_finds_the_example_plugin():
    result = CliRunner().invoke(cli, ["list", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    backbones = {backbone["name"]: backbone for backbone in json.loads(result.output)["backbones"]}
    example = backbones["example-radial"]
    assert example["package"] == "hacknip-example-backbone"
    assert example["layer_widths"] == [16, 16, 16, 16] and example["needs_supercell"] is False
