"""Every backbone and head the installed plugins provide, and name resolution for them.

Each plugin's hook runs on its own: a hook that raises (``SystemExit`` included), registers something that is not a
spec, or registers a name another plugin already took costs that plugin its registrations (with a
:class:`hacknip.plugins.manager.PluginWarning` naming its distribution), never the command. Names are matched
case-insensitively (``CHGNet`` is ``chgnet``).
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any

from hacknip.errors import HacknipError, InputError
from hacknip.features.compose import Member, parse_backbones
from hacknip.plugins.backbone import Backbone, BackboneSpec
from hacknip.plugins.descriptor import Descriptor, DescriptorSpec
from hacknip.plugins.executor import Executor, ExecutorSpec
from hacknip.plugins.head import Head, HeadSpec
from hacknip.plugins.manager import (
    LOAD_PLUGINS_ENV,
    PluginInfo,
    load_plugins,
    normalize_distribution,
    one_line,
    plugin_info,
    warn,
)


class UnknownNameError(HacknipError, LookupError):
    """A backbone or head name that no installed plugin registers."""


_KINDS = {"register_backbones": "backbone", "register_heads": "head", "register_executors": "executor",
          "register_descriptors": "descriptor"}

# Which of this project's plugin packages provides a name: a backbone whose name (before any ':') is one of these
# families or starts with "family-" comes with that package. Install hints are given for these names only, never for
# a made-up "hacknip-<name>" that anyone could register on PyPI.
BACKBONE_FAMILIES = {
    "chgnet": "hacknip-chgnet",
    "sevennet": "hacknip-sevennet",
    "orb": "hacknip-orb",
    "mace": "hacknip-mace",
    "uma": "hacknip-equiformer",
    "esen": "hacknip-equiformer",
    "equiformer": "hacknip-equiformer",
}
HEAD_PACKAGES = {**{name: "hacknip-heads" for name in ("lightgbm", "xgboost", "mlp", "modnet")},
                 **{name: "hacknip-core" for name in ("ridge", "ensemble")}}
_LISTED_NAMES = 10
"""Unknown-name errors list the installed names when there are at most this many."""


def _spec_fault(spec: Any, spec_type: type) -> str | None:
    """What is wrong with an object a plugin registered, or None."""
    if not isinstance(spec, spec_type):
        return f"registered a {type(spec).__name__} instead of a {spec_type.__name__}"
    name = spec.name
    if not isinstance(name, str) or not name or any(c.isspace() or c in "+@" for c in name):
        return f"registered a {spec_type.__name__} named {name!r} (a name is non-empty, without spaces, '+' or '@')"
    if spec_type is BackboneSpec:
        widths = spec.layer_widths
        if (not isinstance(widths, (tuple, list)) or not widths
                or not all(isinstance(w, numbers.Integral) and not isinstance(w, bool) and w > 0 for w in widths)):
            return f"registered the backbone {name!r} with layer_widths {widths!r} (not a non-empty tuple of positive ints)"
    if spec_type is DescriptorSpec and not (isinstance(spec.width, numbers.Integral) and spec.width > 0):
        return f"registered the descriptor {name!r} with width {spec.width!r} (not a positive int)"
    return None


def _call_hook(impl: Any, hook_name: str, spec_type: type, info: PluginInfo) -> list:
    """The specs one plugin's hook registers; none, with a warning, if it raises or registers anything invalid."""
    kind = _KINDS[hook_name]
    if impl.hookwrapper or getattr(impl, "wrapper", False):
        warn(f"{info.describe()} implements {hook_name} as a hook wrapper, which hacknip does not support, so its "
             f"{kind}s are skipped; {info.remedy()}")
        return []
    batch: list = []
    faults: list[str] = []

    def register(spec):
        fault = _spec_fault(spec, spec_type)
        if fault:
            faults.append(fault)
        else:
            batch.append(spec)

    try:
        impl.function(**({"register": register} if "register" in impl.argnames else {}))
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # noqa: B036 - SystemExit too: one faulty plugin must not end every command
        faults.insert(0, f"called {one_line(error)}" if isinstance(error, SystemExit) else f"raised {one_line(error)}")
    if faults:
        warn(f"{info.describe()} {faults[0]} in {hook_name}, so all its {kind}s are skipped; {info.remedy()}")
        return []
    return batch


def _collect(hook_name: str, spec_type: type) -> dict[str, Any]:
    """Every spec the plugins register for one hook, plugin by plugin in precedence order (own distributions first,
    then by distribution name); the first plugin to register a name (compared case-insensitively) keeps it."""
    kind = _KINDS[hook_name]
    caller = getattr(load_plugins().hook, hook_name)
    specs: dict[str, Any] = {}
    owners: dict[str, tuple[str, PluginInfo]] = {}
    impls = sorted(caller.get_hookimpls(), key=lambda impl: plugin_info(impl.plugin).precedence)
    for impl in impls:
        info = plugin_info(impl.plugin)
        for spec in _call_hook(impl, hook_name, spec_type, info):
            key = spec.name.casefold()
            if key in owners:
                taken, owner = owners[key]
                if owner == info:
                    warn(f"{info.describe()} registers the {kind} {spec.name!r} twice in {hook_name}; the second one "
                         f"is ignored; {info.remedy()}")
                else:
                    warn(f"{info.describe()} registers the {kind} {spec.name!r}, which {owner.describe()} already "
                         f"provides{f' as {taken!r}' if taken != spec.name else ''}; the one from "
                         f"{info.package or info.name} is ignored (uninstall one of the two to silence this)")
                continue
            owners[key] = (spec.name, info)
            if spec_type is BackboneSpec:
                spec = dataclasses.replace(spec, layer_widths=tuple(spec.layer_widths))
            specs[spec.name] = dataclasses.replace(spec, package=info.package, package_version=info.version)
    return specs


def backbone_specs() -> dict[str, BackboneSpec]:
    return _collect("register_backbones", BackboneSpec)


def head_specs() -> dict[str, HeadSpec]:
    return _collect("register_heads", HeadSpec)


def executor_specs() -> dict[str, ExecutorSpec]:
    return _collect("register_executors", ExecutorSpec)


def descriptor_specs() -> dict[str, DescriptorSpec]:
    return _collect("register_descriptors", DescriptorSpec)


def descriptor_spec(name: str) -> DescriptorSpec | None:
    """The descriptor registered as ``name`` (case-insensitively), or None when ``name`` is not a descriptor."""
    return _lookup(name, descriptor_specs())


def load_descriptor(name: str, **options: Any) -> Descriptor:
    """An installed descriptor by name (``matminer:magpie``)."""
    spec = _lookup(name, specs := descriptor_specs())
    if spec is None:
        raise _unknown("descriptor", name, specs)
    return spec.load(**options)


def create_executor(name: str, **options: Any) -> Executor:
    """An executor by its registered name (``local``, ``ray``, or a plugin's), with its options."""
    spec = _lookup(name, specs := executor_specs())
    if spec is None:
        raise _unknown("executor", name, specs)
    return spec.create(**options)


def known_package(kind: str, name: str) -> str | None:
    """The project's plugin package that provides ``name`` (``"orb-v3-direct-20-omat"`` -> ``"hacknip-orb"``), or None
    for a name that none of them would provide."""
    base = name.partition(":")[0].casefold()
    if kind == "head":
        return HEAD_PACKAGES.get(base)
    for family, package in BACKBONE_FAMILIES.items():
        if base == family or base.startswith(family + "-"):
            return package
    return None


def _unknown(kind: str, name: str, known: dict[str, Any]) -> UnknownNameError:
    folded: dict[str, str] = {}
    for key in sorted(known):
        folded.setdefault(key.casefold(), key)
    base = name.partition(":")[0]
    close = difflib.get_close_matches(name.casefold(), folded, n=3)
    if not close and base != name:
        close = difflib.get_close_matches(base.casefold(), folded, n=3)
    if not known:
        listing = f"no {kind} is installed"
    elif len(known) <= _LISTED_NAMES:
        listing = f"installed: {', '.join(sorted(known))}"
    else:
        listing = f"{len(known)} installed, see hacknip list"
    message = f"no installed plugin provides the {kind} {name!r} ({listing})."
    if close:
        message += f" Did you mean {', '.join(folded[c] for c in close)}?"
    package = known_package(kind, name)
    installed = {normalize_distribution(spec.package) for spec in known.values()}
    if package and package in installed:
        message += f" {package} is installed but provides no {kind} of that name; pip install -U {package} may add it"
    elif package:
        message += f" It comes with {package}: pip install {package}"
        if os.environ.get(LOAD_PLUGINS_ENV) is not None:
            message += f" (if it is installed, add {package} to {LOAD_PLUGINS_ENV})"
    elif not close:
        message += f" Check the name against hacknip list, or install the plugin package that provides this {kind}"
    return UnknownNameError(message)


def _lookup(name: str, specs: dict[str, Any]) -> Any | None:
    """The spec registered as ``name``, compared case-insensitively."""
    if name in specs:
        return specs[name]
    folded = name.casefold()
    return next((spec for key, spec in specs.items() if key.casefold() == folded), None)


def resolve_backbone(name: str) -> tuple[BackboneSpec, str | None]:
    """Find the spec for ``name`` (case-insensitively); ``"base:/path/to/checkpoint"`` selects a spec with a local
    checkpoint (only ``base`` is case-folded)."""
    specs = backbone_specs()
    spec = _lookup(name, specs)
    if spec is not None:
        return spec, None
    base, sep, checkpoint = name.partition(":")
    if sep:
        spec = _lookup(base, specs)
        if spec is not None:
            if not checkpoint.strip():
                raise InputError(f"backbone {name!r} ends with ':' but names no checkpoint; write {spec.name} for its "
                                 f"own weights or {spec.name}:/path/to/checkpoint")
            return spec, checkpoint
    raise _unknown("backbone", name, specs)


def load_backbone(name: str, **options: Any) -> Backbone:
    """Load an installed backbone by name (``chgnet``, ``sevennet:7net-l3i5``, ``mace:/path/x.model``); ``options`` go
    to its loader (``device="cuda"``, ``default_dtype="float64"``).

    Example::

        backbone = hacknip.load_backbone("chgnet")
        features = backbone.per_atom_features([atoms], layers=[4])[0][4]   # (len(atoms), 64)
    """
    spec, checkpoint = resolve_backbone(name)
    return spec.load(checkpoint=checkpoint, **options)


def check_backbones(expression: str | Sequence[Member], *,
                    allow_missing: bool | Callable[[str], bool] = False) -> list[Member]:
    """Check a backbone expression against the installed specs without loading any model.

    Every name must resolve (:class:`UnknownNameError` otherwise, unless ``allow_missing`` is true, or a predicate
    true for that name, e.g. "the store holds features for it": unknown names it allows are kept as they are, for
    features stored by another environment), and every fixed layer must be within the spec's
    ``layer_widths`` (:class:`~hacknip.errors.InputError`). A name with a checkpoint (``mace:/path/model.model``)
    is not checked against the listed widths, since the model it loads decides its layers. Returns the members with
    the registered spelling of each name (``CHGNet@2`` -> ``chgnet@2``)."""
    members = parse_backbones(expression) if isinstance(expression, str) else list(expression)
    checked = []
    for member in members:
        if (described := descriptor_spec(member.name)) is not None:
            checked.append(_descriptor_member(member, described))
            continue
        try:
            spec, checkpoint = resolve_backbone(member.name)
        except UnknownNameError:
            if not (allow_missing(member.name) if callable(allow_missing) else allow_missing):
                raise
            checked.append(member)
            continue
        member = dataclasses.replace(member, name=spec.name if checkpoint is None else f"{spec.name}:{checkpoint}")
        if checkpoint is None:
            member.resolve(len(spec.layer_widths))
        checked.append(member)
    names = [m.name for m in checked]
    for position, name in enumerate(names):
        if name in names[:position]:
            raise InputError(f"backbone {name!r} is listed twice in {_expression_text(expression)!r}; use @LAYERS to "
                             f"take several layers of one, e.g. {name}@1,3")
    return checked


def _descriptor_member(member: Member, spec: DescriptorSpec) -> Member:
    if member.layers is not None or member.all_layers:
        raise InputError(f"{member.label}: {spec.name} is a descriptor, one vector per structure, with no layers; write "
                         f"{spec.name} without '@'")
    return dataclasses.replace(member, name=spec.name, layers=(0,))


def _expression_text(expression: str | Sequence[Member]) -> str:
    return expression if isinstance(expression, str) else "+".join(m.label for m in expression)


def get_head_spec(name: str) -> HeadSpec:
    specs = head_specs()
    spec = _lookup(name, specs)
    if spec is None and "," in name:
        raise UnknownNameError(f"head {name!r}: several heads joined by ',' are for hacknip tune, which chooses among "
                               f"them inside each training fold; name one head here")
    if spec is None:
        raise _unknown("head", name, specs)
    return spec


def create_head(name: str, **params: Any) -> Head:
    return get_head_spec(name).create(**params)
