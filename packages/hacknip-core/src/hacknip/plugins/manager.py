"""Plugin discovery: pluggy hooks found through the ``hacknip`` entry-point group, loaded on first use.

hacknip-core's own plugins (:data:`DEFAULT_PLUGINS`: the ``ridge`` head, the ``local`` and ``ray`` executors) are
registered first, under the distribution
``hacknip-core``, so that hacknip alone can run a job (as simonw/llm registers its default plugins). Then
``HACKNIP_LOAD_PLUGINS`` (comma-separated distribution names) limits which installed plugins load; set it to an empty
string to load none but the core's own. Plugin modules are imported, but they register light specs only.

One faulty third-party plugin must not break every command: a plugin whose import fails (any exception, ``SystemExit``
included; ``KeyboardInterrupt`` goes through) is skipped with a :class:`PluginWarning` naming its distribution, and
:mod:`hacknip.plugins.registry` isolates each plugin's hooks the same way. Plugins are ordered deterministically: this
project's own distributions (:data:`OWN_DISTRIBUTIONS`) first, then third-party ones by distribution name; the first
one to register a name keeps it.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
import re
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from hacknip.plugins import hookspecs

ENTRY_POINT_GROUP = "hacknip"
LOAD_PLUGINS_ENV = "HACKNIP_LOAD_PLUGINS"

OWN_DISTRIBUTIONS = frozenset({
    "hacknip-core", "hacknip-heads", "hacknip-chgnet", "hacknip-sevennet", "hacknip-orb", "hacknip-mace",
    "hacknip-equiformer",
})
"""This project's distributions: their names take precedence over any third-party plugin's."""

CORE_DISTRIBUTION = "hacknip-core"
DEFAULT_PLUGINS = ("hacknip.plugins.default_heads", "hacknip.plugins.default_executors",
                   "hacknip.plugins.default_descriptors")
"""Plugin modules inside hacknip-core, registered (under their module name) before any entry point, whatever
``HACKNIP_LOAD_PLUGINS`` says: they are part of the core package, not installed plugins."""


class PluginWarning(UserWarning):
    """A plugin misbehaved (failed to import, raised in a hook, registered something wrong or a name already taken);
    what it did is skipped and everything else goes on."""


def normalize_distribution(name: str) -> str:
    """``"Hacknip_Orb"`` -> ``"hacknip-orb"`` (PEP 503 normalisation, how pip compares names)."""
    return re.sub(r"[-_.]+", "-", name or "").lower().strip()


@dataclass(frozen=True)
class PluginInfo:
    name: str
    package: str
    version: str

    @property
    def own(self) -> bool:
        """Whether the plugin comes from one of this project's distributions."""
        return normalize_distribution(self.package) in OWN_DISTRIBUTIONS

    @property
    def precedence(self) -> tuple:
        """Sort key: own distributions first, then third-party ones by name, then plugins registered in code."""
        rank = 0 if self.own else 1 if self.package else 2
        return rank, normalize_distribution(self.package), self.name

    def describe(self) -> str:
        """``"evil-plugin 6.6.6 (plugin 'evil')"``, or ``"plugin 'evil' (registered in code)"`` without a distribution."""
        if not self.package:
            return f"plugin {self.name!r} (registered in code)"
        return f"{self.package} {self.version or '(unknown version)'} (plugin {self.name!r})"

    def remedy(self) -> str:
        """What a user can do about a faulty plugin, as the end of a warning."""
        if not self.package:
            return f"fix or unregister the plugin {self.name!r}"
        return (f"upgrade or uninstall {self.package}, or leave it out by listing the plugins to load in "
                f"{LOAD_PLUGINS_ENV}")


pm = pluggy.PluginManager("hacknip")
pm.add_hookspecs(hookspecs)
_distributions: dict[str, PluginInfo] = {}
"""Registered plugin name -> its distribution (plugins registered in code have none)."""
_loaded_entry_points: set[tuple[str, str]] = set()
_loaded = False


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception as ``"Type: message"`` on one line, cut at ``limit`` characters (for warnings)."""
    if isinstance(error, SystemExit):
        return f"sys.exit({error.code!r})"
    text = " ".join(str(error).split())
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"


def warn(message: str) -> None:
    warnings.warn(message, PluginWarning, stacklevel=3)


def _allowed_distributions() -> set[str] | None:
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {normalize_distribution(name) for name in value.split(",") if name.strip()}


def _entry_point_info(entry_point) -> PluginInfo:
    dist = getattr(entry_point, "dist", None)
    try:
        name = (dist.metadata["Name"] or "") if dist is not None else ""
        version = (dist.version or "") if dist is not None else ""
    except Exception:  # broken metadata of one distribution must not stop the others
        name, version = "", ""
    return PluginInfo(entry_point.name, name, version)


def _free_name(info: PluginInfo) -> str:
    """The entry-point name, or ``"package:name"`` when another distribution already uses that name."""
    if not pm.has_plugin(info.name):
        return info.name
    return f"{info.package}:{info.name}"


def load_plugins() -> pluggy.PluginManager:
    """Import every allowed entry-point plugin once; later calls return the same manager.

    hacknip-core's :data:`DEFAULT_PLUGINS` come first, then own distributions, then third-party ones sorted by
    distribution name. A plugin that cannot be imported or registered is skipped with a :class:`PluginWarning`
    naming its distribution."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    _register_default_plugins()
    allowed = _allowed_distributions()
    try:
        found = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception as error:  # a broken installation: go on without plugins rather than break every command
        warn(f"hacknip could not read the installed plugins' entry points ({one_line(error)}), so none is loaded; "
             f"repair the environment (pip check) or reinstall the broken distribution")
        return pm
    candidates = sorted(((_entry_point_info(ep), ep) for ep in found), key=lambda pair: pair[0].precedence)
    for info, entry_point in candidates:
        if allowed is not None and normalize_distribution(info.package) not in allowed:
            continue
        key = (normalize_distribution(info.package), info.name)
        if key in _loaded_entry_points:
            continue
        _loaded_entry_points.add(key)
        try:
            module = entry_point.load()
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: B036 - SystemExit too: one broken plugin must not end every command
            warn(f"hacknip plugin {info.describe()} could not be loaded and is skipped ({one_line(error)}); "
                 f"{info.remedy()}")
            continue
        name = _free_name(info)
        try:
            pm.register(module, name=name)
        except Exception as error:  # an invalid hook signature, the same module under two names, ...
            warn(f"hacknip plugin {info.describe()} could not be registered and is skipped ({one_line(error)}); "
                 f"{info.remedy()}")
            continue
        _distributions[name] = PluginInfo(name, info.package, info.version)
        _warn_unknown_hooks(module, _distributions[name])
    return pm


def _register_default_plugins() -> None:
    version = _core_version()
    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        if pm.is_registered(module):  # load_plugins again after a reset (tests do): already there
            continue
        pm.register(module, name=module_name)
        _distributions[module_name] = PluginInfo(module_name, CORE_DISTRIBUTION, version)


def _core_version() -> str:
    try:
        return metadata.version(CORE_DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        from hacknip import __version__

        return __version__


def _warn_unknown_hooks(plugin: object, info: PluginInfo) -> None:
    """A hook implementation that matches no hookspec (``register_backbone`` for ``register_backbones``) is never
    called: say so instead of letting the plugin vanish without a word."""
    known = [name for name in vars(hookspecs) if name.startswith("register_")]
    for caller in pm.get_hookcallers(plugin) or []:
        if not caller.has_spec():
            close = difflib.get_close_matches(caller.name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; hacknip's hooks are {', '.join(known)}"
            warn(f"hacknip plugin {info.describe()} implements {caller.name!r}, which is not a hacknip hook, so it is "
                 f"never called{hint}")


def resolve_factory(kind: str, spec) -> Any:
    """The callable a spec's ``"module:attr"`` factory names, or one line naming the spec, its package and the path
    when it cannot be imported (a typo in a plugin, or a library the plugin needs that is not installed)."""
    try:
        return pkgutil.resolve_name(spec.factory)
    except (ImportError, AttributeError, ValueError) as error:
        package = f"{spec.package} {spec.package_version}".strip() or "its plugin"
        raise ImportError(f"the {kind} {spec.name!r} ({package}) names the factory {spec.factory!r}, which cannot be "
                          f"imported ({type(error).__name__}: {error}); install what it needs, or report it to the "
                          f"plugin's authors") from error


def plugin_info(plugin: object) -> PluginInfo:
    """Which distribution a registered plugin object came from (test plugins have none)."""
    name = pm.get_name(plugin) or repr(plugin)
    return _distributions.get(name, PluginInfo(name, "", ""))


def get_plugins() -> list[PluginInfo]:
    """Every loaded plugin with its package and the hooks it implements (for ``hacknip plugins``)."""
    load_plugins()
    infos = [plugin_info(plugin) for plugin in pm.get_plugins() if plugin is not hookspecs]
    return sorted(infos, key=lambda info: info.precedence)
