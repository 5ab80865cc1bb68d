"""Links between the docs pages and the README resolve: the file exists, and an ``#anchor`` names one of its headings
as GitHub spells them (lower case, punctuation dropped, spaces as hyphens)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\]\((?!https?:|mailto:)([^)\s]*)\)")
HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```$", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def anchor_of(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor_of(heading) for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8")))}


def test_anchor_of_follows_github():
    assert anchor_of("CHGNet, RDKit descriptors or both, chosen inside each training fold (`--member-subsets`)") == \
        "chgnet-rdkit-descriptors-or-both-chosen-inside-each-training-fold---member-subsets"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_links_resolve(page):
    broken = []
    prose = CODE_SPAN.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))  # SMILES in code hold "]("
    for link in LINK.findall(prose):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no file {target}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link}: {path.name} has no heading #{anchor}")
    assert not broken, f"{page.name}: " + "; ".join(broken)
