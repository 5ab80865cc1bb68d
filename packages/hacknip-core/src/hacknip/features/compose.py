"""Backbone expressions: ``chgnet``, ``chgnet@4``, ``chgnet@1-4``, ``sevennet@1,2+chgnet``.

``+`` joins backbones, whose features are concatenated. ``@LAYERS`` fixes the layers of one backbone (several
layers are concatenated); without it, that backbone's layers are swept and the best one is chosen.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hacknip.errors import InputError

_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")
_ATTEMPTED_LAYERS = re.compile(r"^[\d\s,\-]*$")
"""After the last '@' of a name with a checkpoint part, text like this is a (faulty) layer list, not part of a path."""
MAX_LAYER = 9999
"""Layer numbers above this are refused at parse time (no backbone has that many; ``@0-99999999`` would not fit)."""


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
                raise InputError(f"{self.name} has layers 0..{n_layers - 1}; {self.label} asks for {bad}: pick layers in "
                                 f"that range, or leave out @LAYERS to sweep them all")
        return self.layers

    @property
    def label(self) -> str:
        if self.all_layers:
            return f"{self.name}@all"
        return self.name if self.layers is None else f"{self.name}@{','.join(map(str, self.layers))}"


def format_backbones(layers: Mapping[str, Sequence[int]]) -> str:
    """The expression for fixed layers of each backbone: ``{"sevennet": [1, 2], "chgnet": [4]}`` ->
    ``"sevennet@1,2+chgnet@4"``."""
    return "+".join(Member(name, tuple(chosen)).label for name, chosen in layers.items())


class BadLayerList(Exception):
    """What is wrong with a layer list (turned into an InputError naming the member)."""


def parse_layer_list(text: str) -> tuple[int, ...]:
    if not text:
        raise BadLayerList("no layers after '@'")
    layers: list[int] = []
    for part in text.split(","):
        if not part:
            raise BadLayerList("an empty item in the layer list")
        match = _ITEM.match(part)
        if match is None:
            if re.fullmatch(r"-\d+(-\d+)?", part):
                raise BadLayerList(f"{part!r} is negative (layers count from 0)")
            raise BadLayerList(f"{part!r} is not a layer number or a range like 1-3")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise BadLayerList(f"the range {part} runs backwards (write {last}-{first})")
        if last > MAX_LAYER:
            raise BadLayerList(f"layer {last} is beyond any backbone (at most {MAX_LAYER})")
        layers += range(first, last + 1)
    return tuple(dict.fromkeys(layers))


def _layer_error(member: str, name: str, problem: str) -> InputError:
    example = name or "chgnet"
    return InputError(f"backbone {member!r}: {problem}; write layers as numbers and ranges, e.g. {example}@4, "
                      f"{example}@1-3, {example}@0,2-4 or {example}@all, or leave out '@' to sweep every layer")


def _split_member(text: str) -> tuple[str, str | None]:
    """``"chgnet@1-3"`` -> ``("chgnet", "1-3")``; ``"sevennet:/models/a@b.pth"`` -> (that, None).

    ``@`` followed by a valid layer list is one. A name without a checkpoint part (no ':') cannot contain '@', so
    whatever follows its last '@' must be a layer list; in a name with a checkpoint part (a path may contain '@'), it
    is one when it looks like an attempt at one (digits, '-', ',' or nothing)."""
    name, at, layers = text.rpartition("@")
    if not at:
        return text, None
    name, layers = name.rstrip(), "".join(layers.split())
    if layers.casefold() == "all":
        return name, "all"
    if ":" in name and not _ATTEMPTED_LAYERS.match(layers):
        return text, None
    if ":" not in name and "@" in name:
        raise InputError(f"backbone {text!r} has more than one '@'; give one layer list, e.g. "
                         f"{name.partition('@')[0]}@1,3")
    return name, layers


def parse_backbones(expression: str) -> list[Member]:
    """Parse a backbone expression; a malformed layer list is an :class:`~hacknip.errors.InputError` saying how to write
    it. Names are not checked here (see :func:`hacknip.plugins.registry.check_backbones`)."""
    members = []
    for text in expression.split("+"):
        text = text.strip()
        name, layers = _split_member(text)
        if not name:
            raise InputError(f"empty backbone name in {expression!r}; write e.g. 'chgnet' or 'chgnet@4+sevennet'")
        if layers == "all":
            members.append(Member(name, None, all_layers=True))
        elif layers is None:
            members.append(Member(name, None))
        else:
            try:
                members.append(Member(name, parse_layer_list(layers)))
            except BadLayerList as problem:
                raise _layer_error(text, name, str(problem)) from None
    keys = [_name_key(m.name) for m in members]
    for position, key in enumerate(keys):
        if key in keys[:position]:
            raise InputError(f"backbone {members[position].name!r} listed twice in {expression!r}; use @LAYERS to "
                             f"take several layers of one, e.g. {members[position].name}@1,3")
    return members


def _name_key(name: str) -> str:
    """Names compare case-insensitively, checkpoint paths exactly: ``CHGNet`` is ``chgnet``."""
    base, sep, rest = name.partition(":")
    return base.casefold() + sep + rest
