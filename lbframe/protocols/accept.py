"""Admission at accept time: the process-wide connection limit, the
per-source limit, and what to do when the process runs out of file
descriptors.

Every listener of the process (``tcp``, ``ssl`` and ``http`` virtual
servers; not the admin server, which must stay reachable) shares one
:class:`AcceptGate`:

- ``[lbframe] max_connections``: once this many client connections are
  open, every listener stops accepting; clients wait in the kernel's
  listen backlog (as HAProxy does at its global ``maxconn``) and are
  accepted as soon as a connection closes. Sending them anywhere else would
  need the very file descriptors we are short of.
- ``EMFILE``/``ENFILE`` (and ``ENOBUFS``/``ENOMEM``) on ``accept``: every
  listener pauses for a short back-off (0.1 s, doubling to 1 s) instead of
  being woken again at once by the still-readable socket, with one log line
  when it starts and one when accepting works again.

Twisted's own ``Port`` handles ``EMFILE`` differently: it closes a reserved
descriptor, accepts every waiting client into the freed slot and closes it
at once (one log line per client), and when the reserve cannot be taken
back it logs and returns — and the reactor calls it again at once, a busy
loop. We pause instead: a client accepted only to be closed is refused,
while one left in the backlog is served a moment later.

``[virtual] max_connections_per_source`` is per virtual server
(:class:`SourceCounts`): a client address already holding that many
connections has its new ones closed at once (HAProxy's ``tcp-request
connection reject`` on a stick table's ``conn_cur``), counted as refused.
"""

from __future__ import annotations

import errno
import ipaddress
import resource
import socket
import weakref

from twisted.internet import tcp
from twisted.logger import Logger

from lbframe.protocols.endpoints import set_freebind

log = Logger(namespace="lbframe.accept")

#: accept errors that mean "no file descriptor or memory for now"; these,
#: and any other error that is not about one client only, pause accepting
EXHAUSTION = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept errors about one client only: go on with the next
ONE_CLIENT = frozenset({errno.EPERM, errno.ECONNABORTED, errno.EINTR, errno.EPROTO})
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 1.0
#: descriptors the default max_connections leaves for everything that is
#: not a client connection: listeners, member connections kept idle for
#: reuse, monitors, logs, the admin server (at least this many, or 1/8)
RESERVE_MIN = 128


def default_max_connections(soft_limit: int | None = None) -> int:
    """The default ``[lbframe] max_connections``: what the soft
    ``RLIMIT_NOFILE`` allows with a reserve left, halved because a proxied
    connection holds two descriptors (the client's and the member's)."""
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY or soft_limit <= 0:
        soft_limit = 1 << 20
    reserve = max(RESERVE_MIN, soft_limit // 8)
    return max(1, (soft_limit - reserve) // 2)


class AcceptGate:
    """How many client connections the process has open, and whether its
    listeners may accept.

    Listeners register with :meth:`add` and implement ``pause_accepting()``
    and ``resume_accepting()``; they call :meth:`opened` and :meth:`closed`
    once per client connection (every close path), and :meth:`exhausted`
    when ``accept`` fails for want of descriptors. An accept loop looks at
    :attr:`paused` before each ``accept``.
    """

    def __init__(self, clock, limit: int | None = None):
        self.clock = clock
        self.limit = limit if limit is not None else default_max_connections()
        self.open = 0
        self.paused = False
        self.listeners: list = []
        #: paused because ``open`` reached ``limit``
        self.full = False
        #: the back-off timer while accept fails for want of descriptors
        self._retry = None
        self._backoff = 0.0
        #: (start time, error name) of the exhaustion episode, or None
        self._episode: tuple | None = None
        self._full_since: float | None = None

    # -- the process's gate ------------------------------------------------

    _gates: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    @classmethod
    def for_reactor(cls, reactor) -> "AcceptGate":
        """The gate every listener on ``reactor`` shares."""
        gate = cls._gates.get(reactor)
        if gate is None:
            gate = cls._gates[reactor] = cls(reactor)
        return gate

    def configure(self, limit: int | None) -> None:
        """Set ``[lbframe] max_connections`` (None: the default from the
        descriptor limit); listeners call it when they start or reload."""
        self.limit = limit if limit is not None else default_max_connections()
        self.full = self.open >= self.limit
        self._update()

    # -- listeners -----------------------------------------------------------

    def add(self, listener) -> None:
        if listener not in self.listeners:
            self.listeners.append(listener)
            if self.paused:
                listener.pause_accepting()

    def remove(self, listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def _update(self) -> None:
        paused = self.full or self._retry is not None
        if paused == self.paused:
            return
        self.paused = paused
        for listener in list(self.listeners):
            if paused:
                listener.pause_accepting()
            else:
                listener.resume_accepting()

    # -- counting --------------------------------------------------------------

    def opened(self) -> None:
        """A client connection was accepted."""
        self.open += 1
        if self._episode is not None and self._retry is None:
            self._episode_over()
        if self.open >= self.limit and not self.full:
            self.full = True
            if self._full_since is None:
                self._full_since = self.clock.seconds()
                log.warn("{open} client connections open: at [lbframe] max_connections, "
                         "accepting paused until one closes (clients wait in the listen "
                         "backlog)", open=self.open, lbframe_event="max_connections_reached")
            self._update()

    def closed(self) -> None:
        """A client connection counted by :meth:`opened` closed."""
        self.open -= 1
        if self.full and self.open < self.limit:
            self.full = False
            self._update()
        # One line per episode: it ends once well below the limit again.
        if self._full_since is not None and self.open <= self.limit * 9 // 10:
            log.info("client connections down to {open}: below [lbframe] max_connections "
                     "({limit}) again after {seconds:.1f}s", open=self.open, limit=self.limit,
                     seconds=self.clock.seconds() - self._full_since,
                     lbframe_event="max_connections_cleared")
            self._full_since = None

    # -- running out of descriptors ------------------------------------------

    def exhausted(self, error: OSError) -> None:
        """``accept`` failed with an :data:`EXHAUSTION` error (or another
        that would fail again at once): pause every listener for a
        back-off, then try again."""
        if self._retry is not None:
            return  # another listener, same wake-up: already paused
        if self._episode is None:
            name = errno.errorcode.get(error.errno, str(error.errno))
            self._episode = (self.clock.seconds(), name)
            self._backoff = BACKOFF_FIRST
            log.error("cannot accept connections: {error} ({strerror}); accepting paused, "
                      "retrying every {first:g} to {most:g}s", error=name,
                      strerror=error.strerror, first=BACKOFF_FIRST, most=BACKOFF_MAX,
                      lbframe_event="accept_exhausted")
        else:
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        self._retry = self.clock.callLater(self._backoff, self._try_again)
        self._update()

    def _try_again(self) -> None:
        self._retry = None
        self._update()

    def _episode_over(self) -> None:
        started, name = self._episode
        self._episode = None
        log.info("accepting connections again after {seconds:.1f}s of {error}",
                 seconds=self.clock.seconds() - started, error=name,
                 lbframe_event="accept_resumed")

    def stop(self) -> None:
        """Forget a pending back-off (tests, and the end of the process)."""
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._update()


def source_key(host: str) -> str:
    """The key a client address is counted under: the address itself for
    IPv4; the /64 for IPv6 (one host commonly holds a whole /64, so counting
    single addresses would limit nothing); an IPv4-mapped IPv6 address as
    its IPv4 address. Empty for clients without an IP address (unix sockets):
    they are not counted."""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class SourceCounts:
    """Client connections per source (:func:`source_key`) of one virtual
    server, for ``max_connections_per_source``. Every source with a
    connection open has an entry; none is kept after its last one closes."""

    def __init__(self, name: str):
        self.name = name
        self.counts: dict[str, int] = {}
        #: sources refused since they reached the limit → how many refused
        self.over: dict[str, int] = {}

    def acquire(self, host: str, limit: int | None) -> bool:
        """Count a new connection from ``host``; False (and nothing counted)
        when it already holds ``limit``."""
        key = source_key(host)
        if not key:
            return True
        count = self.counts.get(key, 0)
        if limit is not None and count >= limit:
            refused = self.over.get(key, 0)
            self.over[key] = refused + 1
            if not refused:
                log.warn("virtual {virtual}: source {source} holds {count} connections "
                         "(max_connections_per_source): refusing its new ones",
                         virtual=self.name, source=key, count=count,
                         lbframe_event="source_limited")
            return False
        self.counts[key] = count + 1
        return True

    def release(self, host: str) -> None:
        """A connection counted by :meth:`acquire` closed."""
        key = source_key(host)
        if not key:
            return
        count = self.counts.get(key, 0) - 1
        if count > 0:
            self.counts[key] = count
        else:
            self.counts.pop(key, None)
        refused = self.over.pop(key, None)
        if refused:
            log.info("virtual {virtual}: source {source} below max_connections_per_source "
                     "again; {refused} of its connections were refused", virtual=self.name,
                     source=key, refused=refused, lbframe_event="source_unlimited")


def serve_accepted(port, sock, addr) -> None:
    """What Twisted's ``Port.doRead`` does with one accepted socket: build
    the protocol and its transport (``port`` is a ``tcp.Port``)."""
    if isinstance(addr, tuple) and len(addr) == 4:
        # IPv6: keep the scope id, as Twisted does.
        host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
        addr = (host[0],) + tuple(addr[1:])
    protocol = port.factory.buildProtocol(port._buildAddr(addr))
    if protocol is None:
        sock.close()
        return
    session = port.sessionno
    port.sessionno = session + 1
    transport = port.transport(sock, protocol, addr, port, session, port.reactor)
    protocol.makeConnection(transport)


class GatedPort(tcp.Port):
    """A Twisted TCP ``Port`` whose accept loop asks an :class:`AcceptGate`:
    it stops while the gate is paused, and an accept that fails for want of
    descriptors pauses the gate instead of spinning (see the module doc)."""

    def __init__(self, port, factory, backlog, interface, reactor, gate: AcceptGate):
        super().__init__(port, factory, backlog, interface, reactor)
        self.gate = gate
        from lbframe.workers import inherited  # a worker process: the parent bound it

        self._preexistingSocket = inherited.take(interface, port)

    def createInternetSocket(self):
        sock = super().createInternetSocket()
        set_freebind(sock, self.interface)  # a VIP this node may own later
        return sock

    def doRead(self):
        gate = self.gate
        accept = self.socket.accept
        for _ in range(self.numberAccepts):
            if gate.paused:
                return
            try:
                sock, addr = accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in ONE_CLIENT:
                    continue
                gate.exhausted(e)  # EMFILE and the like (any error that repeats)
                return
            try:
                serve_accepted(self, sock, addr)
            except Exception:
                log.failure("serving a connection accepted on {port}",
                            port=self._realPortNumber)
                sock.close()

    # The gate's listener API goes through the service, which knows when
    # a port is gone; these are what it calls.
    def pause(self) -> None:
        self.stopReading()

    def resume(self) -> None:
        if self.connected and not self.disconnecting:
            self.startReading()
