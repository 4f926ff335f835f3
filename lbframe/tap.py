"""``twistd lbframe --config site.ini``: options and the service maker.

The twistd layer only: reading, building, starting and reloading the site
are :mod:`lbframe.site`'s.
"""

from __future__ import annotations

import os

from twisted.python import usage

from lbframe.errors import ConfigError, PluginError
from lbframe.site import load, make_service

__all__ = ["Options", "makeService", "load"]


class Options(usage.Options):
    synopsis = "--config site.ini"
    longdesc = "Run the load balancer described by a site.ini file."
    optParameters = [
        ["config", "c", None, "path to site.ini"],
    ]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config site.ini is required")
        if not os.path.exists(self["config"]):
            raise usage.UsageError(f"{self['config']}: no such file")


def makeService(options):
    from twisted.internet import reactor

    try:
        svc = make_service(options["config"], reactor, signals=True, own_process=True)
    except (ConfigError, PluginError) as e:
        # The one line ``lbframe check`` prints, on stderr, and exit status 1:
        # a UsageError would make twistd print a traceback after it.
        raise SystemExit(str(e)) from None
    runtime = svc.runtime
    twistd_options = getattr(options, "parent", None)
    from lbframe import privileges

    if privileges.will_drop_privileges(twistd_options):
        privileges.import_late_modules()
        if privileges.uses_raw_icmp(runtime.site):
            # Raw sockets need root (or CAP_NET_RAW): open them before --uid.
            privileges.keep_icmp_sockets(reactor)
    if runtime.site.lbframe.log_format == "json":
        from lbframe.logs import twistd_observer

        # twistd uses an ILogObserver component of its application, when
        # there is one, instead of its own text observer.
        svc.log_observer = twistd_observer(getattr(options, "parent", None) or {}, reactor)
    return svc
