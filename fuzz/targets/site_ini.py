"""The site.ini loader (lbframe/config) and what ``lbframe check`` does next.

The input is a site.ini file. It is loaded as ``lbframe check`` loads it:
:func:`lbframe.config.load_site`, then — when it names no ``plugins =``
(loading files a fuzzer names is no test of ours) — the plugin step,
:func:`lbframe.service.build_runtime` on a memory reactor. Oracle:

- each step either succeeds or raises ConfigError (PluginError for the
  plugin step), with a message; any other exception — a traceback from
  ``lbframe check`` — is a finding;
- loading is deterministic (the same file twice gives equal sites), and an
  accepted site is whole: every virtual's pool, every pool's monitors, every
  rule (and its pool) and every persistence profile named exist.
"""

from __future__ import annotations

import os
import tempfile

from fuzz.common import check, guarded
from lbframe.config import load_site
from lbframe.errors import ConfigError, PluginError

_dir = tempfile.mkdtemp(prefix="lbframe-fuzz-site-")
_path = os.path.join(_dir, "site.ini")
_plugins = None


def _builtin_plugins():
    global _plugins
    if _plugins is None:
        from lbframe.plugins import load_plugins
        _plugins = load_plugins(entry_points=False)
    return _plugins


def load(data: bytes):
    with open(_path, "wb") as f:
        f.write(data)
    try:
        return load_site(_path)
    except ConfigError as e:
        check(bool(str(e)), "config-error-empty", "a ConfigError without a message")
        return None


def check_site(site) -> None:
    for name, virtual in site.virtuals.items():
        pools = [getattr(virtual, "pool", None), getattr(virtual, "sorry_pool", None)]
        for pool in pools:
            check(pool is None or pool in site.pools, "config-dangling",
                  lambda: f"virtual {name} names pool {pool!r}, not defined")
        persistence = getattr(virtual, "persistence", None)
        check(persistence is None or persistence in site.persistence, "config-dangling",
              lambda: f"virtual {name} names persistence {persistence!r}, not defined")
        for rule in virtual.rules:
            check(rule in site.rules and site.rules[rule].pool in site.pools, "config-dangling",
                  lambda: f"virtual {name} names rule {rule!r}, not defined or its pool not")
    for name, pool in site.pools.items():
        for monitor in getattr(pool, "monitors", ()) or ():
            check(monitor in site.monitors, "config-dangling",
                  lambda: f"pool {name} names monitor {monitor!r}, not defined")


@guarded("config")
def TestOneInput(data: bytes) -> None:
    site = load(data)
    if site is None:
        return
    again = load(data)
    check(again == site, "config-not-deterministic", "the same file loaded twice differs")
    check_site(site)
    if site.lbframe.plugins:
        return
    from twisted.internet.testing import MemoryReactorClock

    from lbframe.service import build_runtime
    try:
        build_runtime(site, _builtin_plugins(), MemoryReactorClock())
    except (ConfigError, PluginError) as e:
        check(bool(str(e)), "config-error-empty", "an error without a message")
