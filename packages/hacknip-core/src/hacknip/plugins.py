"""Plugin discovery: pluggy hooks found through the ``hacknip`` entry-point group, loaded on first use.

``HACKNIP_LOAD_PLUGINS`` (comma-separated distribution names) limits which installed plugins load;
set it to an empty string to load none. Plugin modules are imported, but they register light specs only.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from importlib import metadata

import pluggy

from hacknip import hookspecs

ENTRY_POINT_GROUP = "hacknip"
LOAD_PLUGINS_ENV = "HACKNIP_LOAD_PLUGINS"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    package: str
    version: str


pm = pluggy.PluginManager("hacknip")
pm.add_hookspecs(hookspecs)
_distributions: dict[str, PluginInfo] = {}
_loaded = False


def _allowed_distributions() -> set[str] | None:
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {name.strip().lower().replace("_", "-") for name in value.split(",") if name.strip()}


def load_plugins() -> pluggy.PluginManager:
    """Import every allowed entry-point plugin once; later calls return the same manager."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    allowed = _allowed_distributions()
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist
        dist_name = dist.metadata["Name"] if dist is not None else ""
        if allowed is not None and dist_name.lower().replace("_", "-") not in allowed:
            continue
        if pm.has_plugin(entry_point.name):
            continue
        try:
            module = entry_point.load()
        except Exception as error:  # one broken plugin must not take the others down with it
            warnings.warn(f"hacknip plugin {entry_point.name!r} ({dist_name}) could not be loaded and is skipped: "
                          f"{type(error).__name__}: {error}", stacklevel=2)
            continue
        pm.register(module, name=entry_point.name)
        _distributions[entry_point.name] = PluginInfo(entry_point.name, dist_name, dist.version if dist else "")
    return pm


def plugin_info(plugin: object) -> PluginInfo:
    """Which distribution a registered plugin object came from (test plugins have none)."""
    name = pm.get_name(plugin) or repr(plugin)
    return _distributions.get(name, PluginInfo(name, "", ""))


def get_plugins() -> list[PluginInfo]:
    """Every loaded plugin with its package and the hooks it implements (for ``hacknip plugins``)."""
    load_plugins()
    return [plugin_info(plugin) for plugin in pm.get_plugins() if plugin is not hookspecs]
