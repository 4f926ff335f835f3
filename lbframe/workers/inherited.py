"""Listening sockets a worker process was given by its parent.

The parent binds every listening socket of the virtual servers the workers
serve (before ``--uid`` drops root, so ports below 1024 work) and passes
them to each worker over the channel (``SCM_RIGHTS``). A worker's listeners
bind as they always do, through :func:`lbframe.protocols.endpoints.listening_socket`
(the tcp engine) or :class:`lbframe.protocols.accept.GatedPort` (http);
both ask :func:`take` first, and get a duplicate of the inherited socket
instead of binding a new one.

A duplicate, so that a listener closing its socket (a reload re-binding a
virtual server, a graceful stop) closes only its descriptor: the socket
stays open in the parent and the other workers, and connections queued on
it are accepted by whoever accepts next. Nothing here runs in a process
that has no parent (:data:`_sockets` stays empty): ``take`` answers None.
"""

from __future__ import annotations

import socket

#: (host, port) → the inherited listening socket (this process's copy)
_sockets: dict[tuple[str, int], socket.socket] = {}


def key(host: str, port: int) -> tuple[str, int]:
    """The registry key of a bind address (an empty host is every IPv4 address)."""
    return (host or "0.0.0.0", int(port))


def adopt(host: str, port: int, sock: socket.socket) -> None:
    """Keep ``sock`` as the listening socket of ``host:port``."""
    old = _sockets.pop(key(host, port), None)
    if old is not None and old is not sock:
        old.close()
    _sockets[key(host, port)] = sock


def take(host: str, port: int) -> socket.socket | None:
    """A non-blocking duplicate of the inherited socket of ``host:port``, or None."""
    sock = _sockets.get(key(host, port))
    if sock is None:
        return None
    dup = sock.dup()
    dup.setblocking(False)
    return dup


def keep_only(keys) -> None:
    """Close the inherited sockets not in ``keys`` (the parent no longer serves them)."""
    wanted = {key(h, p) for h, p in keys}
    for k in [k for k in _sockets if k not in wanted]:
        _sockets.pop(k).close()


def held() -> list[tuple[str, int]]:
    return sorted(_sockets)


def clear() -> None:
    for sock in _sockets.values():
        sock.close()
    _sockets.clear()
