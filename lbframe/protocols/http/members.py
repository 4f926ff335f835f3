"""Connections to members, and the idle ones kept for reuse.

A :class:`MemberConnection` carries one exchange at a time (no pipelining
toward members: a member that fails mid-pipeline would take several
requests with it). After a response that leaves the connection clean it goes
back to :class:`IdleConnections`, per member, most recently used first, so
the next request — from any client — skips the TCP handshake. Idle
connections are bounded per member and closed after ``member_idle_timeout``;
one a member closes while idle simply leaves the list.

With ``send_proxy`` a connection's PROXY header names one client, so such
connections are kept per client connection instead (HAProxy does the same).

A member may close an idle connection at any moment (its keep-alive
timeout, a reload). Before an idle connection is handed out, its socket is
looked at without reading (``poll``, ``MSG_PEEK``): one the member closed,
or one it wrote to while nobody asked, is closed and skipped, so the request
provably never reaches it. What is left is the race of a close that crosses
our request on the wire; the exchange handles that (resend or 502).
"""

from __future__ import annotations

import select
import socket
from collections import defaultdict

from twisted.internet import tcp
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from lbframe.protocols.http.parser import ResponseParser
from lbframe.protocols.http.transport import Stream

log = Logger(namespace="lbframe.http")


def _raw_socket(transport):
    """The TCP socket under ``transport`` and whether TLS runs on it (its
    bytes are then records, not HTTP), or (None, False)."""
    if type(transport) is Stream:
        return transport.socket, False
    if isinstance(transport, tcp.Connection):
        return transport.socket, bool(transport.TLS)
    below = getattr(transport, "transport", None)  # TLSMemoryBIOProtocol
    if type(below) is Stream or isinstance(below, tcp.Connection):
        return below.socket, True
    return None, False


#: one poll set for ``idle_state``: register, poll(0), unregister is one
#: system call and no exception on the usual path (nothing to read)
_POLL = select.poll()


def idle_state(transport) -> str:
    """What the socket of an idle connection says, without reading from it:
    ``"open"``, ``"closed"`` (the member's FIN or RST is there) or
    ``"unsolicited"`` (it sent bytes nobody asked for). Bytes on a TLS
    connection may be a session ticket: ``"open"`` then."""
    sock, tls = _raw_socket(transport)
    if sock is None:
        return "open"
    fd = sock.fileno()
    if fd < 0:
        return "closed"
    _POLL.register(fd, select.POLLIN)
    try:
        ready = _POLL.poll(0)
    finally:
        _POLL.unregister(fd)
    if not ready:
        return "open"
    try:
        peeked = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return "open"
    except OSError:
        return "closed"
    if not peeked:
        return "closed"
    return "open" if tls else "unsolicited"


class MemberConnection(Protocol):
    """One TCP (or TLS) connection to a member."""

    def __init__(self, member, max_head: int):
        self.member = member
        self.exchange = None
        self.parser = ResponseParser(None, max_head)
        self.idle_since: float | None = None
        #: True once it served an exchange: a failure before any response
        #: byte may then be the member closing an idle connection (retry)
        self.reused = False
        self.owner = None  # the client connection, for send_proxy connections
        self.lost = False
        self.idle_key = None

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.factory.made(self)

    def dataReceived(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # An idle member connection must be silent: what it sends would
            # be taken for the answer to the next request sent on it.
            self.unsolicited(len(data))
            return
        exchange.member_data(data)

    def unsolicited(self, size: int | None = None) -> None:
        """Bytes nobody asked for on an idle connection (``size`` of them,
        when known): close it, one log line."""
        if self.idle_list is not None and self.idle_since is not None:
            self.idle_list.discard(self)
        member = self.member
        member.misbehaved()
        what = "bytes" if size is None else f"{size} bytes"
        log.warn("member {pool}/{member}: sent {what} on an idle connection; "
                 "connection closed", pool=member.pool, member=member.name, what=what)
        self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        self.lost = True
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.member_lost(self, reason)
        elif self.idle_since is not None:
            self.idle_list.discard(self)

    idle_list = None  # the IdleConnections keeping us


class Connect(ClientFactory):
    """One connection attempt for one exchange."""

    noisy = False

    def __init__(self, exchange, member, max_head: int):
        self.exchange = exchange
        self.member = member
        self.max_head = max_head
        self.connector = None

    def buildProtocol(self, addr):
        conn = MemberConnection(self.member, self.max_head)
        conn.factory = self
        return conn

    def clientConnectionFailed(self, connector, reason) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.connect_failed(reason)

    def clientConnectionLost(self, connector, reason) -> None:
        pass

    def made(self, conn: MemberConnection) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            dispatch = exchange.server.dispatch
            if dispatch is not None:
                dispatch.adopt(conn.transport)
            exchange.member_connected(conn, fresh=True)
        else:
            conn.transport.loseConnection()

    def cancel(self) -> None:
        """The exchange is gone: stop connecting, or close when connected."""
        self.exchange = None
        if self.connector is not None and self.connector.state == "connecting":
            self.connector.stopConnecting()


class IdleConnections:
    """Kept-alive member connections, per member, at most ``per_member``
    each, closed after ``idle_timeout`` seconds unused."""

    def __init__(self, clock, per_member: int, idle_timeout: float):
        self.clock = clock
        self.per_member = per_member
        self.idle_timeout = idle_timeout
        self.idle: dict = defaultdict(list)
        self.count = 0
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = clock

    def start(self) -> None:
        if not self._sweeper.running:
            self._sweeper.start(max(0.05, min(self.idle_timeout / 2, 5.0)), now=False)

    def stop(self) -> None:
        if self._sweeper.running:
            self._sweeper.stop()
        for conns in self.idle.values():
            for conn in conns:
                conn.idle_since = None
                conn.transport.loseConnection()
        self.idle.clear()
        self.count = 0

    def acquire(self, key):
        """The most recently used idle connection for ``key`` that is still
        open, or None. Those found closed by the member (its FIN not yet
        read) are closed here: a request sent on them would be lost."""
        conns = self.idle.get(key)
        while conns:
            conn = conns.pop()
            self.count -= 1
            conn.idle_since = None
            if conn.lost:
                continue
            state = idle_state(conn.transport)
            if state == "open":
                return conn
            if state == "unsolicited":
                conn.unsolicited()
            else:
                conn.transport.abortConnection()
        return None

    def release(self, key, conn: MemberConnection) -> None:
        """Keep ``conn`` for reuse (or close it when ``key`` has enough)."""
        conns = self.idle[key]
        if len(conns) >= self.per_member or self.per_member == 0:
            conn.transport.loseConnection()
            return
        conn.idle_since = self.clock.seconds()
        conn.reused = True
        conn.idle_list = self
        conn.idle_key = key
        conns.append(conn)
        self.count += 1

    def discard(self, conn: MemberConnection) -> None:
        conns = self.idle.get(conn.idle_key)
        if conns and conn in conns:
            conns.remove(conn)
            self.count -= 1
        conn.idle_since = None

    def drop(self, key) -> None:
        """Close every idle connection of ``key`` (a client went away)."""
        for conn in self.idle.pop(key, ()):
            self.count -= 1
            conn.idle_since = None
            conn.transport.loseConnection()

    def drop_client(self, client) -> None:
        """A client connection closed: its send_proxy connections go too."""
        for key in [k for k in self.idle if type(k) is tuple and k[1] is client]:
            self.drop(key)

    def sweep(self) -> None:
        """Close connections idle longer than ``idle_timeout``."""
        deadline = self.clock.seconds() - self.idle_timeout
        for key in list(self.idle):
            conns = self.idle[key]
            keep = []
            for conn in conns:
                if conn.idle_since is not None and conn.idle_since < deadline:
                    conn.idle_since = None
                    self.count -= 1
                    conn.transport.loseConnection()
                else:
                    keep.append(conn)
            if keep:
                self.idle[key] = keep
            else:
                del self.idle[key]
