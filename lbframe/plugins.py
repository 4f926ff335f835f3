"""The plugin manager: built-ins, ``lbframe`` entry points, ``plugins =`` files.

Built-in plugins are registered exactly as third-party ones are (pytest's
``default_plugins``, tox's ``internal_plugins``): they are modules with
``@hookimpl`` functions. A manager is built by :func:`load_plugins`, fresh
each time; nothing is built at import time.

Two environment variables are for operators and plugin authors:

- ``LBFRAME_DISABLE_PLUGINS=name,...`` keeps plugins out (an entry point's
  name, a module name, a file's path, name or stem, a built-in's module);
  a disabled plugin is not even imported, so a broken one cannot stop a site.
- ``LBFRAME_TRACE_HOOKS=1`` logs every hook call and every registration
  (pluggy's hook-call monitoring) through :mod:`twisted.logger`.

Registration goes through pluggy's own hook calls, so a ``hookwrapper``
(old or new style) and ``LBFRAME_TRACE_HOOKS`` see it. pluggy hands every
implementation of one call the same arguments, but the registry must know
*which* plugin adds each name (a duplicate names both plugins; ``lbframe
plugins`` lists the owner). So each registration hook is called once per
plugin that implements it, through ``pm.subset_hook_caller``, with that
plugin's :class:`Registrar` as ``registry``: the subset leaves out the other
registering plugins and keeps every plugin that only wraps the hook, so a
wrapper sees each plugin's registration as one call and reads whose it is
from ``registry.plugin``. Two consequences, both refused or documented
rather than left to surprise: a plugin that implements a registration hook
under another name (``specname``) is refused, since pluggy's subset cannot
leave it out; a plugin that both wraps and implements one registration hook
wraps only its own call. A hook that raises is a :class:`PluginError` of one
line naming the plugin, the hook and the error (or the wrapper's plugin,
when a wrapper raised).

A plugin may declare the plugin API it was written for,
``LBFRAME_PLUGIN_API = (1, 0)``; one that needs another major version, or a
newer minor one than :data:`lbframe.PLUGIN_API`, is refused with a message
naming the plugin and both versions.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any, Callable, Iterable

import attrs
import pluggy
from twisted.logger import Logger

from lbframe import PLUGIN_API, PROJECT, hookspecs
from lbframe.errors import PluginError, did_you_mean
from lbframe.monitoring import adapting_factory

log = Logger(namespace="lbframe.plugins")

#: the module attribute a plugin declares its plugin API version with
API_ATTRIBUTE = "LBFRAME_PLUGIN_API"

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
    "lbframe.monitors.dns",
    "lbframe.protocols.tcp",
    "lbframe.protocols.http",
    "lbframe.protocols.ssl",
    "lbframe.protocols.routed",
    "lbframe.schedulers.symmetric_hash",
    "lbframe.persistence.last_hop",
    "lbframe.protocols.udp",
    "lbframe.persistence.memory",
    "lbframe.persistence.source_ip",
    "lbframe.persistence.cookie_insert",
    "lbframe.persistence.cookie_learn",
    "lbframe.persistence.url_session",
    "lbframe.persistence.ssl_session_id",
    "lbframe.redundancy.none",
    "lbframe.redundancy.vrrp.driver",
    "lbframe.redundancy.heartbeat",
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
    #: what lbframe calls to build one object (for monitors, possibly the
    #: plugin's factory behind :func:`lbframe.monitoring.adapting_factory`)
    factory: Callable[..., Any]
    plugin: str


class Registry:
    """The factories of one kind, by name, and which plugin added each.
    Refuses duplicates, naming both plugins.

    Plugins never hold this object: each plugin's registration hook gets
    :meth:`for_plugin`'s :class:`Registrar`, which adds in that plugin's name.
    """

    def __init__(self, kind: str, origins: dict[str, str] | None = None):
        self.kind = kind
        self.noun = KINDS[kind]
        self.hook_name = f"lbframe_register_{kind}"
        self._entries: dict[str, Registration] = {}
        #: plugin name → origin ("built-in", "entry point", ...), for messages
        self._origins = origins if origins is not None else {}

    def _describe(self, plugin: str) -> str:
        origin = self._origins.get(plugin)
        if origin == "built-in":
            return f"the built-in plugin {plugin!r}"
        return f"plugin {plugin!r}" + (f" ({origin})" if origin else "")

    def for_plugin(self, plugin: str) -> "Registrar":
        """What ``plugin``'s registration hook receives as ``registry``."""
        return Registrar(self, plugin)

    def _add(self, plugin: str, name: str, factory: Callable[..., Any]) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.noun} "
                              f"with a bad name {name!r}")
        if not callable(factory):
            raise PluginError(f"plugin {plugin!r} registered {self.noun} "
                              f"{name!r} with a factory that is not callable: {factory!r}")
        if name in self._entries:
            first = self._entries[name].plugin
            hint = ("; give yours another name" if self._origins.get(first) == "built-in"
                    else "; remove one, or keep one out with LBFRAME_DISABLE_PLUGINS")
            raise PluginError(f"{self.noun} {name!r} is registered twice: by "
                              f"{self._describe(first)} and by "
                              f"{self._describe(plugin)}{hint}")
        if self.kind == "monitors":
            factory = adapting_factory(factory, f"monitor type {name!r} of plugin {plugin!r}")
        self._entries[name] = Registration(name, factory, plugin)
        if tracing():
            log.info("plugin {plugin} registered {noun} {name!r}", plugin=plugin,
                     noun=self.noun, name=name)

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


class Registrar:
    """The ``registry`` one plugin's registration hook is called with: adds
    to the kind's :class:`Registry` in that plugin's name. A hook wrapper
    sees it too, and reads ``registry.plugin`` to know whose turn it is."""

    __slots__ = ("_registry", "plugin")

    def __init__(self, registry: Registry, plugin: str):
        self._registry = registry
        #: the name of the plugin whose hook is being called
        self.plugin = plugin

    @property
    def kind(self) -> str:
        return self._registry.kind

    @property
    def noun(self) -> str:
        return self._registry.noun

    def add(self, name: str, factory: Callable[..., Any]) -> None:
        """Register ``factory`` under ``name``."""
        self._registry._add(self.plugin, name, factory)

    def __contains__(self, name: str) -> bool:
        return name in self._registry

    def names(self) -> list[str]:
        """Every name registered so far, by any plugin."""
        return self._registry.names()

    def __repr__(self) -> str:
        return f"<registry of {self.kind} for plugin {self.plugin!r}>"


@attrs.define
class PluginInfo:
    name: str
    origin: str  # "built-in", "entry point", "file", "module"
    version: str | None
    #: the plugin API the plugin declared (``LBFRAME_PLUGIN_API``), or None
    api: tuple[int, int] | None = None
    #: kept out by ``LBFRAME_DISABLE_PLUGINS`` (listed, never imported)
    disabled: bool = False


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

    def registered_by(self, plugin: str) -> dict[str, list[str]]:
        """``{noun: [names]}`` that ``plugin`` registered, e.g.
        ``{"scheduler": ["two-choices"]}``."""
        out = {}
        for registry in self.registries.values():
            names = registry.by_plugin().get(plugin)
            if names:
                out[registry.noun] = sorted(names)
        return out


def _disabled() -> set[str]:
    raw = os.environ.get("LBFRAME_DISABLE_PLUGINS", "")
    return {n.strip() for n in raw.replace(" ", ",").split(",") if n.strip()}


def tracing() -> bool:
    """``LBFRAME_TRACE_HOOKS`` is set to something other than ``0``/empty."""
    return os.environ.get("LBFRAME_TRACE_HOOKS", "").strip().lower() not in ("", "0", "no", "false")


def _trace_hook_calls(pm: pluggy.PluginManager):
    """Log each hook call and its outcome (pluggy's hook-call monitoring)."""

    def before(hook_name, hook_impls, kwargs):
        log.info("hook {hook}({args}) -> {plugins}", hook=hook_name,
                 args=", ".join(f"{k}={v!r}" for k, v in kwargs.items()),
                 plugins=", ".join(i.plugin_name for i in hook_impls) or "no plugin")

    def after(outcome, hook_name, hook_impls, kwargs):
        if outcome.exception is not None:
            log.info("hook {hook} raised {error!r}", hook=hook_name, error=outcome.exception)
        else:
            log.info("hook {hook} returned {result!r}", hook=hook_name, result=outcome.get_result())

    return pm.add_hookcall_monitoring(before, after)


def parse_api(value) -> tuple[int, int] | None:
    """``(1, 0)``, ``[1, 0]``, ``"1.0"`` or ``"1"`` → ``(1, 0)``; None for
    anything else."""
    if isinstance(value, str):
        value = value.strip().split(".")
    try:
        parts = tuple(int(p) for p in value)
    except (TypeError, ValueError):
        return None
    if len(parts) == 1:
        parts += (0,)
    return parts[:2] if len(parts) >= 2 else None


def check_api(plugin_name: str, plugin) -> tuple[int, int] | None:
    """The API ``plugin`` declares; raises PluginError when this lbframe
    cannot serve it. A plugin that declares nothing is taken as written for
    the current API (and ``lbframe plugins`` says it declared nothing)."""
    declared = getattr(plugin, API_ATTRIBUTE, None)
    if declared is None:
        return None
    from lbframe import __version__
    have = ".".join(map(str, PLUGIN_API))
    api = parse_api(declared)
    if api is None:
        raise PluginError(f"plugin {plugin_name!r} declares {API_ATTRIBUTE} = {declared!r}; "
                          f"write it as a (major, minor) tuple, e.g. {tuple(PLUGIN_API)!r}")
    need = ".".join(map(str, api))
    if api[0] != PLUGIN_API[0]:
        what = ("a newer lbframe" if api[0] > PLUGIN_API[0]
                else "an older lbframe; the plugin needs updating")
        raise PluginError(f"plugin {plugin_name!r} needs lbframe plugin API {need}, but lbframe "
                          f"{__version__} provides plugin API {have}: it was written for {what}")
    if api[1] > PLUGIN_API[1]:
        raise PluginError(f"plugin {plugin_name!r} needs lbframe plugin API {need}, but lbframe "
                          f"{__version__} provides plugin API {have}: upgrade lbframe")
    return api


def _is_disabled(disabled: set[str], *names: str | None) -> bool:
    return any(n in disabled for n in names if n)


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


def _load_package_plugin(path: str):
    """A plugin package named by its folder (``plugins =
    ../plugins/lbframe-redis/src/lbframe_redis``): imported under its own
    name, so that a site can use a plugin from a checkout without installing
    it. When a module of that name is imported already (the same plugin
    installed, and loaded by its entry point), that one is used: one plugin
    is registered once."""
    path = os.path.normpath(path)
    name = os.path.basename(path)
    if name in sys.modules:
        return sys.modules[name]
    init = os.path.join(path, "__init__.py")
    if not name.isidentifier() or not os.path.isfile(init):
        raise PluginError(f"plugin folder {path!r} is not a Python package "
                          "(a folder named like a module, with an __init__.py)")
    spec = importlib.util.spec_from_file_location(name, init,
                                                  submodule_search_locations=[path])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise PluginError(f"plugin package {path!r} failed to import: {e!r}") from e
    return module


def _register(pm: pluggy.PluginManager, plugin, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as e:
        raise PluginError(f"plugin {name!r} cannot be registered: {e}") from e


def _is_wrapper(impl: pluggy.HookImpl) -> bool:
    return bool(impl.hookwrapper or impl.wrapper)


def _code(function):
    return getattr(getattr(function, "__func__", function), "__code__", None)


def _culprit(error: BaseException, impls) -> pluggy.HookImpl | None:
    """The implementation among ``impls`` that ``error`` was raised in:
    the innermost of their functions on its traceback (a wrapper's
    generator frame is on it too)."""
    codes = {_code(i.function): i for i in impls}
    found = None
    tb = error.__traceback__
    while tb is not None:
        found = codes.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    return found


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def _fill(pm: pluggy.PluginManager, registry: Registry) -> None:
    """Call ``registry``'s registration hook once per plugin implementing
    it, through pluggy, with that plugin's :class:`Registrar` (see the
    module docstring for why one call per plugin)."""
    hook = registry.hook_name
    impls = getattr(pm.hook, hook).get_hookimpls()
    # One call per plugin, in the order the plugins were loaded (built-ins,
    # entry points, then ``plugins =``): a duplicate name blames the later.
    registering: list = []
    for impl in impls:
        if not _is_wrapper(impl) and not any(p is impl.plugin for p in registering):
            registering.append(impl.plugin)
    names = {id(i.plugin): i.plugin_name for i in impls}
    for plugin in registering:
        if len(registering) > 1 and not hasattr(plugin, hook):
            # pluggy's subset_hook_caller leaves out only plugins with an
            # attribute of the hook's name: this one would run in every call.
            raise PluginError(f"plugin {names[id(plugin)]!r} implements {hook} under another "
                              f"name (specname); lbframe calls registration hooks one plugin "
                              f"at a time: name the function {hook}")
    for plugin in registering:
        name = names[id(plugin)]
        others = [p for p in registering if p is not plugin]
        caller = pm.subset_hook_caller(hook, others)
        try:
            caller(registry=registry.for_plugin(name))
        except PluginError:
            raise
        except Exception as e:
            culprit = _culprit(e, caller.get_hookimpls())
            if culprit is not None and culprit.plugin is not plugin:
                where = (f"plugin {culprit.plugin_name!r} failed in its wrapper of {hook} "
                         f"(around plugin {name!r})")
            else:
                where = f"plugin {name!r} failed in {hook}"
            raise PluginError(_one_line(f"{where}: {e!r}")) from e


def load_plugins(extra: Iterable[str] = (), base_dir: str | None = None,
                 entry_points: bool = True) -> Plugins:
    """Build a plugin manager and fill every registry.

    ``extra`` are module names or paths to ``.py`` files (``plugins =`` in
    ``site.ini``); relative paths are taken from ``base_dir``.
    """
    from lbframe import __version__

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    disabled = _disabled()
    infos: list[PluginInfo] = []

    def add(plugin, name: str, origin: str, version: str | None) -> None:
        api = check_api(name, plugin) if origin != "built-in" else PLUGIN_API
        _register(pm, plugin, name)
        infos.append(PluginInfo(name, origin, version, api))

    for modname in BUILTIN_PLUGINS:
        if _is_disabled(disabled, modname):
            infos.append(PluginInfo(modname, "built-in", __version__, disabled=True))
            continue
        add(importlib.import_module(modname), modname, "built-in", __version__)

    if entry_points:
        from importlib.metadata import entry_points as _eps
        for ep in _eps(group=PROJECT):
            version = ep.dist.version if ep.dist is not None else None
            if _is_disabled(disabled, ep.name, ep.value):
                infos.append(PluginInfo(ep.name, "entry point", version, disabled=True))
                continue
            if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as e:
                raise PluginError(f"entry point plugin {ep.name!r} ({ep.value}) failed to "
                                  f"load: {e!r}; keep it out with "
                                  f"LBFRAME_DISABLE_PLUGINS={ep.name}") from e
            add(plugin, ep.name, "entry point", version)

    for spec in extra:
        if spec.endswith(".py") or os.sep in spec or "/" in spec:
            path = spec if os.path.isabs(spec) or base_dir is None else os.path.join(base_dir, spec)
            stem = os.path.splitext(os.path.basename(path))[0]
            if _is_disabled(disabled, spec, path, os.path.basename(path), stem):
                infos.append(PluginInfo(path, "file", None, disabled=True))
                continue
            if not os.path.exists(path):
                raise PluginError(f"plugin file {path!r} does not exist")
            if os.path.isdir(path):
                plugin = _load_package_plugin(path)
            else:
                plugin = _load_file_plugin(path)
            origin, pname = "file", path
        else:
            if _is_disabled(disabled, spec):
                infos.append(PluginInfo(spec, "module", None, disabled=True))
                continue
            try:
                plugin = importlib.import_module(spec)
            except ImportError as e:
                raise PluginError(f"plugin module {spec!r} cannot be imported: {e}") from e
            origin, pname = "module", spec
        if pm.is_registered(plugin):
            continue
        add(plugin, pname, origin, getattr(plugin, "__version__", None))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        raise PluginError(str(e)) from e

    if tracing():
        _trace_hook_calls(pm)

    origins = {i.name: i.origin for i in infos}
    registries = {kind: Registry(kind, origins) for kind in KINDS}
    for registry in registries.values():
        _fill(pm, registry)

    return Plugins(pm, registries, infos)
