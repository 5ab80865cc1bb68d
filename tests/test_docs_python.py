"""docs/python.md runs: every ```python block, in order, in one namespace, with the real CHGNet on real data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import SHARED_DATA

PAGE = Path(__file__).parent.parent / "docs" / "python.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[str]:
    return BLOCK.findall(text)


def test_blocks_are_found():
    blocks = python_blocks("text\n```python\na = 1\n```\n```text\nno\n```\n```python\nb = a\n```\n")
    assert blocks == ["a = 1\n", "b = a\n"]


@pytest.mark.slow
def test_python_page_runs(tmp_path, monkeypatch, capsys):
    """The page reads ``../shared/data`` from the repository root, as the README does: run it from a folder with a
    ``shared`` sibling that links to the real data, so what it writes (parity.png) lands in tmp_path."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the page reads the real data from ../shared/data beside the repo")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(SHARED_DATA)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # HACKNIP_HOME is tmp_path/hacknip-home already (conftest)

    blocks = python_blocks(PAGE.read_text())
    assert len(blocks) >= 5
    namespace: dict = {"__name__": "__docs__"}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"{PAGE.name}, python block {number}", "exec"), namespace)

    printed = capsys.readouterr().out
    assert "200 structures" in printed and "CV MAE" in printed and "chosen:" in printed
    assert "RunResult(chgnet -> ridge on 200 samples: mae" in printed
    assert (work / "runs" / "phonons-chgnet-ridge" / "results.json").exists() and (work / "model" / "model.json").exists()
    assert (work / "parity.png").stat().st_size > 10_000
    assert namespace["X"].shape == (200, 5 * 64)
