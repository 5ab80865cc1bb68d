"""Reading electrolyte descriptions as written in papers ("1 M LiPF6 EC-DMC (1:1 v) 2% wt VC") into mixture parts.

The grammar understood (anything else is rejected with a reason, never guessed):

- ``<c> M <name>``: a concentration in mol/L (``1 M LiPF6``, ``0.6M LiTFSI``, ``0.5M THF``).
- solvent names joined by ``-`` or ``/`` (``EC-DMC``, ``EC/DEC``) with one ratio, in parentheses or after them:
  ``(1:1 v)``, ``(3:7 wt)``, ``(v 1:1)``, ``(1:2 by volume)``, ``(1:3 molar)``, ``1:1 molar``. The ratio applies, in
  order, to the names that have no concentration; a single solvent needs no ratio. A ratio without a unit, or with
  a different number of parts, is rejected.
- molar-ratio formulas ``LiFSI-1.2DME-3TTE`` / ``1 LiFSI - 3 TMS`` (a number written before a name; none means 1).
- additives ``<p> wt% <name>``, ``<p>% wt <name>``, ``<p> vol% <name>``. A bare ``%`` (mass or volume?) is rejected.
- joining words and marks that carry no amount: ``in``, ``with``, ``+``, ``,``.

Names are matched against the species names given (case-insensitive, longest first, so ``12-Crown-4`` is one name).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

NUMBER = r"[0-9]*\.?[0-9]+"
RATIO_UNIT_WORDS = {
    "v": "vol", "vol": "vol", "vol.": "vol", "v/v": "vol", "by volume": "vol", "by vol": "vol", "volume": "vol",
    "wt": "wt", "wt.": "wt", "w/w": "wt", "by weight": "wt", "by wt": "wt", "mass": "wt",
    "mol": "mol", "molar": "mol", "by mol": "mol", "mr": "mol", "mole": "mol",
}
_UNIT = "|".join(sorted((re.escape(word) for word in RATIO_UNIT_WORDS), key=len, reverse=True))
_RATIO_NUMBERS = rf"{NUMBER}(?:\s*:\s*{NUMBER})+"
_RATIO_IN_PARENS = re.compile(rf"\(\s*=?\s*(?:(?P<before>{_UNIT})\s+)?(?P<numbers>{_RATIO_NUMBERS})\s*(?P<after>{_UNIT})?\s*\)",
                              re.IGNORECASE)
_RATIO_BARE = re.compile(rf"(?<![\w.])(?P<numbers>{_RATIO_NUMBERS})\s+(?P<after>{_UNIT})(?![\w/])", re.IGNORECASE)
_PERCENT = re.compile(rf"(?<![\w.])(?P<value>{NUMBER})\s*(?P<before>wt|vol)?\s*%\s*(?P<after>wt|vol)?(?![\w])",
                      re.IGNORECASE)
_SEPARATORS = re.compile(r"(?:[\s,+/-]|\b(?:in|with)\b)+", re.IGNORECASE)


class ElectrolyteParseError(ValueError):
    """A description this grammar does not cover, with the reason."""


@dataclass(frozen=True)
class Part:
    """One component of a parsed description, in the units of :mod:`hacknip.data.mixtures`."""

    name: str
    amount: float
    unit: str


@dataclass
class _Item:
    name: str
    molar: float | None = None
    coefficient: float | None = None


def parse_electrolyte(text: str, names: Iterable[str]) -> list[Part]:
    """The parts of one description; raises :class:`ElectrolyteParseError` naming what is not understood."""
    if not isinstance(text, str) or not text.strip():
        raise ElectrolyteParseError("empty description")
    lookup = {name.lower(): name for name in names}
    text, ratio = _take_ratio(text.strip())
    text, additives = _take_additives(text, lookup)
    items = _scan(text, lookup)
    return _assign(items, ratio) + additives


def components_text(parts: Iterable[Part]) -> str:
    """Parts as a mixture table's ``components`` cell: ``"1 M LiPF6; 1 vol EC; 1 vol DMC"``."""
    return "; ".join(f"{part.amount:g} {part.unit} {part.name}" for part in parts)


def _take_ratio(text: str) -> tuple[str, tuple[list[float], str] | None]:
    matches = list(_RATIO_IN_PARENS.finditer(text)) or list(_RATIO_BARE.finditer(text))
    if len(matches) > 1:
        raise ElectrolyteParseError("more than one ratio")
    if not matches:
        if re.search(rf"{NUMBER}\s*:\s*{NUMBER}", text):
            raise ElectrolyteParseError("a ratio this grammar cannot place (say the unit: vol, wt or mol)")
        return text, None
    match = matches[0]
    words = [w for w in (match.groupdict().get("before"), match["after"]) if w]
    if len(words) != 1:
        raise ElectrolyteParseError(f"ratio {match['numbers']!r} without a unit (vol, wt or mol?)")
    numbers = [float(n) for n in re.split(r"\s*:\s*", match["numbers"].strip())]
    return text[:match.start()] + " " + text[match.end():], (numbers, RATIO_UNIT_WORDS[words[0].lower()])


def _take_additives(text: str, lookup: dict[str, str]) -> tuple[str, list[Part]]:
    additives = []
    while match := _PERCENT.search(text):
        units = [u for u in (match["before"], match["after"]) if u]
        if len(units) != 1:
            raise ElectrolyteParseError(f"{match.group(0).strip()!r}: a percentage without wt or vol")
        start = re.compile(r"\s*").match(text, match.end()).end()
        name, length = _name_at(text[start:], lookup)
        if name is None:
            raise ElectrolyteParseError(f"{match.group(0).strip()!r} not followed by a known species "
                                        f"(found {_word_at(text[start:])!r})")
        additives.append(Part(name, float(match["value"]), f"{units[0].lower()}%"))
        text = text[:match.start()] + " " + text[start + length:]
    return text, additives


def _name_at(text: str, lookup: dict[str, str]) -> tuple[str | None, int]:
    """The longest known name at the start of ``text`` that ends at a word boundary."""
    lowered = text.lower()
    for key in sorted(lookup, key=len, reverse=True):
        if lowered.startswith(key) and (len(text) == len(key) or not (text[len(key)].isalnum())):
            return lookup[key], len(key)
    return None, 0


def _word_at(text: str) -> str:
    match = re.match(r"[^\s]+", text)
    return match.group(0) if match else ""


def _scan(text: str, lookup: dict[str, str]) -> list[_Item]:
    items: list[_Item] = []
    position = 0
    while position < len(text):
        separator = _SEPARATORS.match(text, position)
        if separator and separator.end() > position:
            position = separator.end()
            continue
        item, position = _item_at(text, position, lookup)
        items.append(item)
    if not items:
        raise ElectrolyteParseError("no species named")
    return items


def _item_at(text: str, position: int, lookup: dict[str, str]) -> tuple[_Item, int]:
    molar = re.compile(rf"({NUMBER})\s*M(?=\s)\s*").match(text, position)
    if molar:
        name, length = _name_at(text[molar.end():], lookup)
        if name is None:
            raise ElectrolyteParseError(f"unknown species {_word_at(text[molar.end():])!r}")
        return _Item(name, molar=float(molar.group(1))), molar.end() + length
    coefficient = re.compile(rf"({NUMBER})\s*").match(text, position)
    if coefficient:
        name, length = _name_at(text[coefficient.end():], lookup)
        if name is None:
            raise ElectrolyteParseError(f"unexpected {_word_at(text[position:])!r}")
        return _Item(name, coefficient=float(coefficient.group(1))), coefficient.end() + length
    name, length = _name_at(text[position:], lookup)
    if name is None:
        raise ElectrolyteParseError(f"unknown species {_word_at(text[position:])!r}")
    return _Item(name), position + length


def _assign(items: list[_Item], ratio: tuple[list[float], str] | None) -> list[Part]:
    fixed = [Part(item.name, item.molar, "M") for item in items if item.molar is not None]
    free = [item for item in items if item.molar is None]
    if any(item.coefficient is not None for item in free):
        if ratio is not None:
            raise ElectrolyteParseError("both a molar-ratio formula and a ratio")
        return fixed + [Part(item.name, item.coefficient or 1.0, "mol") for item in free]
    if not free:
        raise ElectrolyteParseError("no solvent (every species has a concentration)")
    if ratio is None:
        if len(free) > 1:
            raise ElectrolyteParseError(f"{len(free)} solvents ({', '.join(i.name for i in free)}) without a ratio")
        return fixed + [Part(free[0].name, 1.0, "vol")]
    numbers, unit = ratio
    if len(numbers) != len(free):
        raise ElectrolyteParseError(f"a ratio of {len(numbers)} parts for {len(free)} species without a concentration "
                                    f"({', '.join(i.name for i in free)})")
    return fixed + [Part(item.name, number, unit) for item, number in zip(free, numbers)]
