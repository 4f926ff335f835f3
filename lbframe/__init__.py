"""lbframe: a load-balancer framework on Twisted.

Plugins use the two markers below, exactly as pytest plugins use pytest's::

    from lbframe import hookimpl

    @hookimpl
    def lbframe_register_schedulers(registry):
        registry.add("my-scheduler", MyScheduler)
"""

import pluggy

__version__ = "0.1.0"

#: The version of the plugin-facing API (hooks and interfaces).
PLUGIN_API = (1, 1)

PROJECT = "lbframe"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["__version__", "PLUGIN_API", "PROJECT", "hookspec", "hookimpl"]
