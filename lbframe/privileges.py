"""What must happen as root before ``twistd --uid/--gid`` drops privileges.

twistd calls every service's ``privilegedStartService`` as root, then
switches to the given user, then calls ``startService``. Listeners (tcp,
ssl, http, admin) bind and open their access log in
``privilegedStartService``, so ports below 1024 and root-owned log folders
work.

Raw sockets are the other privileged thing: the ICMP monitor
(:mod:`lbframe.monitors.icmp`) opens its socket when a check needs it and
closes it when no check is in flight, which after the switch fails (no
``CAP_NET_RAW``). :func:`keep_icmp_sockets` opens one raw ICMP socket per
address family while still root and hands the monitor a duplicate of it
each time it would open one; the kept socket is never read, the duplicates
share its queue, and the kernel filter the monitor installs keeps that
queue to echo replies and errors.
"""

from __future__ import annotations

import os
import socket

from twisted.logger import Logger

log = Logger(namespace="lbframe")


class KeptICMPSockets:
    """Raw ICMP sockets opened as root; ``open`` is an ``open_socket`` for
    :class:`lbframe.monitors.icmp.Pingers`."""

    def __init__(self, sockets: dict):
        self.sockets = sockets  # family -> socket

    def open(self, family: int, mode: str):
        from lbframe.monitors.icmp import open_icmp_socket

        kept = self.sockets.get(family)
        if kept is not None and mode in ("auto", "raw"):
            return kept.dup(), "raw"
        return open_icmp_socket(family, mode)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets = {}


def will_drop_privileges(twistd_options) -> bool:
    """True when we run as root and twistd was given ``--uid`` or ``--gid``."""
    if twistd_options is None or os.geteuid() != 0:
        return False
    try:
        return bool(twistd_options.get("uid") or twistd_options.get("gid"))
    except AttributeError:
        return False


#: modules the data path may import lazily: imported before the drop, since
#: after it the interpreter may not be able to read its own library (a
#: virtualenv under /root, or a Python upgraded on disk while we run)
LATE_IMPORTS = ("encodings.idna",)


def import_late_modules() -> None:
    import importlib

    for name in LATE_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def uses_raw_icmp(site) -> bool:
    return any(m.type == "icmp" and m.options.get("socket", "auto") in ("auto", "raw")
               for m in site.monitors.values())


def keep_icmp_sockets(reactor) -> KeptICMPSockets | None:
    """Open the raw ICMP sockets now (as root) and make the process's ICMP
    monitors use them after the privilege drop."""
    from lbframe.monitors.icmp import open_icmp_socket, shared_pingers

    sockets = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            sockets[family], _ = open_icmp_socket(family, "raw")
        except OSError as e:
            log.warn("cannot open a raw ICMP socket before dropping privileges: {error}",
                     error=e)
    if not sockets:
        return None
    kept = KeptICMPSockets(sockets)
    shared_pingers(reactor).open_socket = kept.open
    return kept
