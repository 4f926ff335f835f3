"""The plugin manager: built-ins, ``lbframe`` entry points, ``plugins =`` files.

Built-in plugins are registered exactly as third-party ones are (pytest's
``default_plugins``, tox's ``internal_plugins``): they are modules with
``@hookimpl`` functions. A manager is built by :func:`load_plugins`, fresh
each time; nothing is built at import time.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any, Callable, Iterable

import attrs
import pluggy

from lbframe import PROJECT, hookspecs
from lbframe.errors import PluginError, did_you_mean

BUILTIN_PLUGINS = (
    "lbframe.schedulers.round_robin",
    "lbframe.schedulers.weighted",
    "lbframe.schedulers.priority",
    "lbframe.schedulers.least_connections",
    "lbframe.schedulers.response_time",
    "lbframe.schedulers.composite",
    "lbframe.schedulers.source_hash",
    "lbframe.monitors.tcp",
    "lbframe.monitors.http",
    "lbframe.monitors.ftp",
    "lbframe.monitors.smtp",
    "lbframe.monitors.pop3",
    "lbframe.monitors.script",
    "lbframe.monitors.icmp",
    "lbframe.protocols.tcp",
    "lbframe.persistence.memory",
    "lbframe.persistence.source_ip",
    "lbframe.persistence.cookie_insert",
    "lbframe.persistence.cookie_learn",
    "lbframe.persistence.url_session",
    "lbframe.redundancy.none",
)

#: registration hook suffix → what one entry is called in messages
KINDS = {
    "schedulers": "scheduler",
    "monitors": "monitor type",
    "protocols": "protocol",
    "persistence_methods": "persistence method",
    "persistence_stores": "persistence store",
    "redundancy_drivers": "redundancy driver",
}


#: names the contract (CONTRACT.md) gives each kind; one that no loaded plugin
#: registers is reported as "not available in this version" rather than unknown
CONTRACT_NAMES = {
    "schedulers": ("round-robin", "weighted", "priority", "least-connections",
                   "response-time", "composite", "source-hash"),
    "monitors": ("icmp", "tcp", "http", "https", "ftp", "smtp", "pop3", "script"),
    "protocols": ("tcp", "udp", "http", "ssl"),
    "persistence_methods": ("source-ip", "cookie-insert", "cookie-learn", "url-session",
                            "ssl-session-id"),
    "persistence_stores": ("memory", "redis"),
    "redundancy_drivers": ("vrrp", "heartbeat", "none"),
}


@attrs.frozen
class Registration:
    name: str
    factory: Callable[..., Any]
    plugin: str


class Registry:
    """The factories of one kind, by name. Refuses duplicates."""

    def __init__(self, kind: str):
        self.kind = kind
        self.noun = KINDS[kind]
        self._entries: dict[str, Registration] = {}
        self._current_plugin = "?"

    def add(self, name: str, factory: Callable[..., Any]) -> None:
        """Register ``factory`` under ``name``."""
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {self._current_plugin!r} registered a {self.noun} "
                              f"with a bad name {name!r}")
        if name in self._entries:
            first = self._entries[name].plugin
            raise PluginError(f"{self.noun} {name!r} is registered twice: by plugin "
                              f"{first!r} and by plugin {self._current_plugin!r}")
        self._entries[name] = Registration(name, factory, self._current_plugin)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Registration:
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        """``unknown scheduler 'x' (did you mean 'y'?); known: a, b``."""
        known = ", ".join(self.names()) or "none"
        if name in CONTRACT_NAMES[self.kind]:
            return (f"{self.noun} {name!r} is not available in this version of lbframe "
                    f"(no loaded plugin provides it); available: {known}")
        return f"unknown {self.noun} {name!r}{did_you_mean(name, self._entries)}; known: {known}"

    def by_plugin(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for reg in self._entries.values():
            out.setdefault(reg.plugin, []).append(reg.name)
        return out


@attrs.define
class PluginInfo:
    name: str
    origin: str  # "built-in", "entry point", "file", "module"
    version: str | None


class Plugins:
    """The loaded plugins: the pluggy manager and a registry per kind
    (``plugins.schedulers``, ``plugins.monitors``, ...)."""

    def __init__(self, manager: pluggy.PluginManager, registries: dict[str, Registry],
                 infos: list[PluginInfo]):
        self.manager = manager
        self.registries = registries
        self.infos = infos
        self.schedulers = registries["schedulers"]
        self.monitors = registries["monitors"]
        self.protocols = registries["protocols"]
        self.persistence_methods = registries["persistence_methods"]
        self.persistence_stores = registries["persistence_stores"]
        self.redundancy_drivers = registries["redundancy_drivers"]

    @property
    def hook(self):
        return self.manager.hook


def _disabled() -> set[str]:
    raw = os.environ.get("LBFRAME_DISABLE_PLUGINS", "")
    return {n.strip() for n in raw.replace(" ", ",").split(",") if n.strip()}


def _load_file_plugin(path: str):
    name = "lbframe_plugin_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot load plugin file {path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise PluginError(f"plugin file {path!r} failed to import: {e!r}") from e
    return module


def _register(pm: pluggy.PluginManager, plugin, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as e:
        raise PluginError(f"plugin {name!r} cannot be registered: {e}") from e


def load_plugins(extra: Iterable[str] = (), base_dir: str | None = None,
                 entry_points: bool = True) -> Plugins:
    """Build a plugin manager and fill every registry.

    ``extra`` are module names or paths to ``.py`` files (``plugins =`` in
    ``site.ini``); relative paths are taken from ``base_dir``.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    disabled = _disabled()
    infos: list[PluginInfo] = []
    from lbframe import __version__

    for modname in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(modname), name=modname)
        infos.append(PluginInfo(modname, "built-in", __version__))

    if entry_points:
        from importlib.metadata import entry_points as _eps
        for ep in _eps(group=PROJECT):
            if ep.name in disabled or pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as e:
                raise PluginError(f"entry point plugin {ep.name!r} failed to load: {e!r}") from e
            _register(pm, plugin, ep.name)
            version = ep.dist.version if ep.dist is not None else None
            infos.append(PluginInfo(ep.name, "entry point", version))

    for spec in extra:
        if spec.endswith(".py") or os.sep in spec or "/" in spec:
            path = spec if os.path.isabs(spec) or base_dir is None else os.path.join(base_dir, spec)
            if not os.path.exists(path):
                raise PluginError(f"plugin file {path!r} does not exist")
            plugin = _load_file_plugin(path)
            origin, pname = "file", path
        else:
            try:
                plugin = importlib.import_module(spec)
            except ImportError as e:
                raise PluginError(f"plugin module {spec!r} cannot be imported: {e}") from e
            origin, pname = "module", spec
        if pname in disabled or getattr(plugin, "__name__", None) in disabled:
            continue
        if pm.is_registered(plugin):
            continue
        _register(pm, plugin, pname)
        infos.append(PluginInfo(pname, origin, getattr(plugin, "__version__", None)))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        raise PluginError(str(e)) from e

    registries = {kind: Registry(kind) for kind in KINDS}
    for kind, registry in registries.items():
        caller = getattr(pm.hook, f"lbframe_register_{kind}")
        # Call each implementation ourselves so the registry knows which
        # plugin is adding what (for duplicate errors and `lbframe plugins`).
        for impl in caller.get_hookimpls():
            registry._current_plugin = impl.plugin_name
            kwargs = {"registry": registry}
            impl.function(**{k: kwargs[k] for k in impl.argnames})
        registry._current_plugin = "?"

    return Plugins(pm, registries, infos)
