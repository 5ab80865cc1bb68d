"""Backbone expressions: ``chgnet``, ``chgnet@4``, ``chgnet@1-4``, ``sevennet@1,2+chgnet``.

``+`` joins backbones, whose features are concatenated. ``@LAYERS`` fixes the layers of one backbone (several
layers are concatenated); without it, that backbone's layers are swept and the best one is chosen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LAYERS = re.compile(r"^(all|\d+(-\d+)?(,\d+(-\d+)?)*)$")


@dataclass(frozen=True)
class Member:
    name: str
    layers: tuple[int, ...] | None
    """Fixed layers to concatenate, or None to sweep every layer."""
    all_layers: bool = False

    def resolve(self, n_layers: int) -> tuple[int, ...] | None:
        if self.all_layers:
            return tuple(range(n_layers))
        if self.layers is not None:
            bad = [layer for layer in self.layers if layer >= n_layers]
            if bad:
                raise ValueError(f"{self.name} has layers 0..{n_layers - 1}; {self.label} asks for {bad}")
        return self.layers

    @property
    def label(self) -> str:
        if self.all_layers:
            return f"{self.name}@all"
        return self.name if self.layers is None else f"{self.name}@{','.join(map(str, self.layers))}"


def _parse_layers(text: str) -> tuple[int, ...]:
    layers: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        layers += range(int(first), int(last or first) + 1)
    return tuple(dict.fromkeys(layers))


def parse_backbones(expression: str) -> list[Member]:
    members = []
    for text in expression.split("+"):
        text = text.strip()
        name, at, layers = text.rpartition("@")
        if not at or not _LAYERS.match(layers):
            name, layers = text, ""
        if not name:
            raise ValueError(f"empty backbone name in {expression!r}; write e.g. 'chgnet' or 'chgnet@4+sevennet'")
        if layers == "all":
            members.append(Member(name, None, all_layers=True))
        else:
            members.append(Member(name, _parse_layers(layers) if layers else None))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"backbone listed twice in {expression!r}; use @LAYERS to take several layers of one")
    return members
