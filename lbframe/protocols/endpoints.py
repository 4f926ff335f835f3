"""Turning ``listen =`` endpoint strings into sockets lbframe accepts on itself.

The fast L4 path accepts with its own descriptor rather than through
Twisted's ``Port``/``Server`` objects, so it needs the plain TCP parameters
of an endpoint string. Twisted's own parser reads the string, so the syntax
is exactly Twisted's.
"""

from __future__ import annotations

import functools
import socket
import weakref

import attrs
from twisted.internet import endpoints

from lbframe.config.model import Address
from lbframe.errors import OptionError


@attrs.frozen
class TCPBind:
    host: str
    port: int
    backlog: int
    family: int
    #: the ``listen`` endpoint string it came from (error messages name it)
    description: str = attrs.field(default="", eq=False)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family == socket.AF_INET6 else f"{self.host}:{self.port}"


class _NoReactor:
    """serverFromString only stores the reactor; parsing needs none."""


def tcp_bind(description: str) -> TCPBind:
    """The address to bind for a ``tcp:``/``tcp6:`` endpoint string.

    Raises :class:`OptionError` (for the ``listen`` key) for any other kind.
    """
    try:
        ep = endpoints.serverFromString(_NoReactor(), description)
    except (TypeError, ValueError, OSError) as e:
        raise OptionError("listen", f"bad endpoint {description!r}: {e}") from None
    if isinstance(ep, endpoints.TCP6ServerEndpoint):
        return TCPBind(ep._interface or "::", ep._port, ep._backlog, socket.AF_INET6,
                       description)
    if isinstance(ep, endpoints.TCP4ServerEndpoint):
        host = ep._interface or "0.0.0.0"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return TCPBind(host, ep._port, ep._backlog, family, description)
    raise OptionError("listen", f"endpoint {description!r}: this protocol accepts on "
                                "tcp: and tcp6: endpoints")


#: IP_FREEBIND (Linux): bind to an address the host does not have (yet)
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
#: addresses a redundancy driver may own later, by owner (see allow_nonlocal);
#: weak, so a driver that was built but never stopped (a refused reload) is forgotten
_nonlocal: "weakref.WeakKeyDictionary[object, frozenset[str]]" = weakref.WeakKeyDictionary()


def allow_nonlocal(owner, hosts) -> None:
    """Let listeners bind ``hosts`` before they are on an interface.

    A redundancy driver calls this for its VIPs: a backup's listeners are
    then bound (with ``IP_FREEBIND``) and ready, and serve as soon as the
    address arrives; until then no packet for it reaches this host. Any
    other address still fails to bind, so a mistyped ``listen`` is an error.
    """
    _nonlocal[owner] = frozenset(hosts)


def forget_nonlocal(owner) -> None:
    _nonlocal.pop(owner, None)


def is_nonlocal(host: str) -> bool:
    return any(host in hosts for hosts in _nonlocal.values())


def set_freebind(sock: socket.socket, host: str) -> None:
    """``IP_FREEBIND`` on ``sock`` when ``host`` is a VIP (see :func:`allow_nonlocal`)."""
    if host and is_nonlocal(host):
        # SOL_IP's IP_FREEBIND also covers AF_INET6 sockets on Linux
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)


def listening_socket(bind: TCPBind) -> socket.socket:
    from lbframe.workers import inherited  # a worker process: the parent bound it

    sock = inherited.take(bind.host, bind.port)
    if sock is not None:
        return sock
    sock = socket.socket(bind.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        set_freebind(sock, bind.host)
        if bind.family == socket.AF_INET6 and bind.host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((bind.host, bind.port))
        sock.listen(bind.backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@functools.lru_cache(maxsize=4096)
def sockaddr_of(address: Address) -> tuple[int, tuple]:
    """(family, sockaddr) for a member address.

    Literal addresses cost nothing; a host name is resolved once and cached
    (as HAProxy resolves at start-up), since ``connect`` must never block on
    a lookup while relaying.
    """
    host = address.host
    try:
        socket.inet_pton(socket.AF_INET, host)
        return socket.AF_INET, (host, address.port)
    except OSError:
        pass
    try:
        socket.inet_pton(socket.AF_INET6, host)
        return socket.AF_INET6, (host, address.port, 0, 0)
    except OSError:
        pass
    family, _, _, _, sockaddr = socket.getaddrinfo(host, address.port, type=socket.SOCK_STREAM)[0]
    return family, sockaddr
