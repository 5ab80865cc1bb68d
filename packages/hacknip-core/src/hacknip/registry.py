"""Every backbone and head the installed plugins provide, and name resolution for them."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from hacknip.backbone import Backbone, BackboneSpec
from hacknip.head import Head, HeadSpec
from hacknip.plugins import load_plugins, plugin_info


class UnknownNameError(LookupError):
    """A backbone or head name that no installed plugin registers."""


def _collect(hook_name: str, spec_type: type) -> dict[str, Any]:
    specs: dict[str, Any] = {}
    caller = getattr(load_plugins().hook, hook_name)
    for impl in caller.get_hookimpls():
        info = plugin_info(impl.plugin)

        def register(spec, _info=info):
            if not isinstance(spec, spec_type):
                raise TypeError(f"plugin {_info.name!r}: {hook_name} must register {spec_type.__name__} objects")
            if spec.name in specs:
                raise ValueError(f"plugin {_info.name!r} registers {spec.name!r}, already registered by "
                                 f"{specs[spec.name].package or 'another plugin'}")
            specs[spec.name] = dataclasses.replace(spec, package=_info.package, package_version=_info.version)

        impl.function(register=register)
    return specs


def backbone_specs() -> dict[str, BackboneSpec]:
    return _collect("register_backbones", BackboneSpec)


def head_specs() -> dict[str, HeadSpec]:
    return _collect("register_heads", HeadSpec)


def _unknown(kind: str, name: str, known: dict[str, Any]) -> UnknownNameError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    names = ", ".join(sorted(known)) or "none"
    return UnknownNameError(f"no installed plugin provides the {kind} {name!r} (installed: {names}).{hint} "
                            f"Install its plugin package, e.g. pip install hacknip-{name.split(':')[0]}")


def resolve_backbone(name: str) -> tuple[BackboneSpec, str | None]:
    """Find the spec for ``name``; ``"base:/path/to/checkpoint"`` selects a spec with a local checkpoint."""
    specs = backbone_specs()
    if name in specs:
        return specs[name], None
    base, sep, checkpoint = name.partition(":")
    if sep and base in specs:
        return specs[base], checkpoint
    raise _unknown("backbone", name, specs)


def load_backbone(name: str, **options: Any) -> Backbone:
    spec, checkpoint = resolve_backbone(name)
    return spec.load(checkpoint=checkpoint, **options)


def get_head_spec(name: str) -> HeadSpec:
    specs = head_specs()
    if name not in specs:
        raise _unknown("head", name, specs)
    return specs[name]


def create_head(name: str, **params: Any) -> Head:
    return get_head_spec(name).create(**params)
