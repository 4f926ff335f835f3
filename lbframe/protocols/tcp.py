"""``protocol = tcp``: L4 balancing (F4, L4 half).

Each accepted connection gets one balancing decision, a non-blocking
connect to the chosen member (``timeout_connect``) and then the byte relay
of :mod:`lbframe.protocols.relay`. A member that refuses or does not answer
in time is counted as a failure and the connection is tried once more on
another member before it is refused.
"""

from __future__ import annotations

import os
import socket
from _socket import socket as raw_socket
from errno import EAGAIN, ECONNREFUSED, EINPROGRESS

from twisted.application import service
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from lbframe import hookimpl
from lbframe.accesslog import access_log_for, access_log_setting
from lbframe.balancer import Balancer, Decision, RequestContext
from lbframe.errors import ListenError, reject_unknown_options
from lbframe.interfaces import IListener, IProtocol
from lbframe.protocols import proxy_protocol
from lbframe.protocols.accept import ONE_CLIENT, AcceptGate, SourceCounts
from lbframe.protocols.engine import RelayEngine
from lbframe.protocols.endpoints import TCPBind, listening_socket, sockaddr_of, tcp_bind
from lbframe.protocols.listening import ListenOutcome, reported_elsewhere
from lbframe.protocols.relay import Relay
from lbframe.protocols.timeouts import TimerWheel

log = Logger(namespace="lbframe.tcp")

#: connections accepted per readable event of a listening socket
ACCEPT_BATCH = 64
#: how many members one connection may try
MAX_TRIES = 2

_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
_TCP, _NODELAY = socket.IPPROTO_TCP, socket.TCP_NODELAY


def connect_error(err: int) -> str:
    """Operator-facing words for a failed connect, as the tcp monitor says them."""
    if err == ECONNREFUSED:
        return "connect refused"
    return f"connect failed: {os.strerror(err).lower()}"


class Connection(Relay):
    """A client connection: choose a member, connect, relay, account."""

    __slots__ = ("server", "context", "decision", "tries", "excluded", "tick",
                 "connect_started", "idle_seen", "idle_strikes", "waiting", "early", "started")

    def __init__(self, server: "TCPVirtualServer", sock: socket.socket, addr):
        super().__init__(server.io, sock, server.connection_closed, clock=server.clock)
        self.server = server
        self.context = RequestContext(addr[0], addr[1], server.virtual.name)
        self.decision = None
        self.tries = 0
        self.excluded: list = []
        self.tick: int | None = None  # our place in the server's timer wheel
        self.connect_started = 0.0
        self.idle_seen = -1
        self.idle_strikes = 0
        self.waiting = None  # the pool whose queue we are in
        #: bytes the client sent after its PROXY header (accept_proxy), for the member
        self.early = b""
        self.started = server.clock.seconds()

    def connect(self) -> None:
        if self.tries == 0:
            # A remote persistence store is read before the decision.
            d = self.server.balancer.prepare(self.context)
            if d is not None:
                d.addCallback(self._prepared)
                return
        self._decide()

    def _prepared(self, _) -> None:
        if not self.closed:
            self._decide()

    def _decide(self) -> None:
        decision = self.server.balancer.choose(self.context, self.excluded)
        if decision is not None and decision.wait:
            self._wait(decision.pool)
        else:
            self._connect_to(decision)

    def _refuse(self, reason: str, kind: str = "no_member") -> None:
        self.server.virtual.refuse(kind)
        self.close(reason)

    # -- waiting for room (queue_timeout) ---------------------------------

    def _wait(self, pool) -> None:
        if not pool.enqueue(self):
            self._connect_to(self.server.balancer.choose_sorry(self.context, self.excluded),
                             f"pool {pool.name}: queue full", "queue_full")
            return
        self.waiting = pool
        self.tick = self.server.timeouts.schedule(self, pool.spec.queue_timeout)

    def wake(self) -> bool:
        """Called by the pool, oldest waiter first, when a member may have
        room. True when we left the queue."""
        pool = self.waiting
        member = pool.scheduler.pick(self.context, self.excluded)
        if member is None:
            return False
        self.waiting = None
        self.server.timeouts.cancel(self, self.tick)
        self.tick = None
        self._connect_to(Decision(pool, member))
        return True

    def _queue_timeout(self) -> None:
        pool, self.waiting = self.waiting, None
        pool.dequeue(self)
        self._connect_to(self.server.balancer.choose_sorry(self.context, self.excluded),
                         f"pool {pool.name}: no member free after "
                         f"{pool.spec.queue_timeout:g}s in the queue", "queue_timeout")

    # -- connecting --------------------------------------------------------

    def _connect_to(self, decision, why_not: str = "no member available",
                    kind: str = "no_member") -> None:
        if decision is None:
            self._refuse(why_not, kind)
            return
        server = self.server
        member = decision.member
        addr = member.sockaddr
        if addr is None:
            addr = member.remember_sockaddr(sockaddr_of(member.spec.address))
        family, sockaddr = addr
        # The C socket type: the relay needs none of socket.socket's Python
        # layer, and creating it non-blocking saves a system call.
        try:
            sock = raw_socket(family, _STREAM_NONBLOCK)
        except OSError as e:
            # EMFILE/ENFILE: no descriptor for the member's side. Close the
            # client's (it would otherwise stay open and counted for ever).
            self._refuse(f"cannot open a socket to a member: {e.strerror}", "resources")
            return
        self.decision = decision
        decision.pool.connection_opened(member)
        self.tries += 1
        sock.setsockopt(_TCP, _NODELAY, 1)
        err = sock.connect_ex(sockaddr)
        self.set_member(sock)
        self.connect_started = self.clock.seconds()
        if err == 0:
            self.connected()
        elif err == EINPROGRESS:
            self.connecting = self.member
            self.io.addWriter(self.member)
            # One timeout serves the whole connection: first as the connect
            # timeout, then (see expired) as the idle check.
            self.tick = server.timeouts.schedule(self, server.virtual.spec.timeout_connect)
        else:
            self._connect_failed(connect_error(err))

    def connect_finished(self, failed: bool) -> None:
        if failed:
            # Only a failure needs the error code; a writable socket without
            # error or hang-up is connected.
            err = self.member.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self.io.removeWriter(self.member)
            self._connect_failed(connect_error(err) if err else "connect failed")
            return
        # One epoll_ctl: start() then finds the member's side already reading.
        self.io.switch_to_reading(self.member)
        self.connected()

    #: measure the time to the member's first byte (a response-time sample)
    wants_first_response = True

    def first_response(self) -> None:
        """Time from the start of the connect to the member's first byte:
        the connect plus the member's time to answer what the client sent
        (the client is not read before the member is connected, so its
        request is forwarded at once). It feeds the response-time schedulers."""
        decision = self.decision
        if decision is not None:
            decision.pool.record_response_time(decision.member,
                                               self.clock.seconds() - self.connect_started)

    def connected(self) -> None:
        first = self._first_bytes()
        if first:
            # A fresh socket takes a few KiB at once; anything else is broken.
            try:
                sent = self.member.sock.send(first)
            except OSError as e:
                sent = -1 if e.errno not in (EAGAIN,) else 0
            if sent != len(first):
                self.close("member did not take the connection's first bytes")
                return
        self.start()
        if self.tick is None:
            self.tick = self.server.timeouts.schedule(self, self.server.idle_step)

    def _first_bytes(self) -> bytes:
        """What goes to the member before relaying: our PROXY header
        (``send_proxy``) and what followed the client's (``accept_proxy``)."""
        version = self.decision.pool.spec.send_proxy
        if version == "no":
            return self.early
        context = self.context
        local = self.client.sock.getsockname()
        build = proxy_protocol.build_v2 if version == "v2" else proxy_protocol.build_v1
        return build((context.client_host, context.client_port), (local[0], local[1])) + self.early

    def expired(self) -> None:
        """Our timeout came: the queue wait or the connect took too long, or
        it is time for an idle check."""
        self.tick = None
        if self.waiting is not None:
            self._queue_timeout()
        elif self.connecting is not None:
            self.io.removeWriter(self.member)
            self._connect_failed(
                f"connect timeout after {self.server.virtual.spec.timeout_connect:g}s")
        else:
            self._idle_check()

    def _connect_failed(self, reason: str) -> None:
        if self.tick is not None:
            self.server.timeouts.cancel(self, self.tick)
            self.tick = None
        self.connecting = None
        member, pool = self.decision.member, self.decision.pool
        pool.member_failed(member, reason, self.context.client_host)
        pool.connection_closed(member)
        self.decision = None
        try:
            self.member.sock.close()
        except OSError:
            pass
        self.member.fd = -1
        self.member = None
        if self.tries < MAX_TRIES:
            member.retries += 1
            self.excluded.append(member)
            self.connect()
        else:
            self._refuse(f"member {pool.name}/{member.name}: {reason}", "member_failed")

    def _idle_check(self) -> None:
        """Every ``idle_step`` seconds: has any byte moved since last time?

        Counting bytes instead of reading the clock on every read keeps the
        hot loop lean; a connection is closed after between ``limit`` and
        ``limit + idle_step`` seconds without traffic. Which limit applies
        depends on who is expected to speak: the client after the member
        spoke last (``timeout_client``), the member otherwise.
        """
        server = self.server
        seen = self.client.nbytes + self.member.nbytes
        if seen != self.idle_seen:
            self.idle_seen = seen
            self.idle_strikes = 0
        else:
            self.idle_strikes += 1
        spec = server.virtual.spec
        if self.waiting_for_client:
            limit, who = spec.timeout_client, "client"
        else:
            limit, who = spec.timeout_server, "server"
        if self.idle_strikes * server.idle_step >= limit:
            self.close(f"{who} timeout after {limit:g}s idle")
        else:
            self.tick = server.timeouts.schedule(self, server.idle_step)


@implementer(IReadDescriptor)
class _Acceptor:
    """Accepts in batches on one listening socket."""

    def __init__(self, server: "TCPVirtualServer", sock: socket.socket):
        self.server = server
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return f"lbframe.tcp.{self.server.virtual.name}"

    def doRead(self):
        accept = self.sock._accept  # (fd, address), without socket.socket's wrapper
        family = self.sock.family
        server = self.server
        on_accept, gate = server.accepted, server.gate
        for _ in range(ACCEPT_BATCH):
            if gate.paused:  # at [lbframe] max_connections, or out of descriptors
                return None
            try:
                fd, addr = accept()
            except BlockingIOError:
                return None
            except OSError as e:
                if e.errno in ONE_CLIENT:
                    continue
                # EMFILE and the like: pause every listener for a back-off
                # rather than being woken at once by the still-readable
                # socket (a busy loop). Any other error that would repeat
                # gets the same treatment.
                gate.exhausted(e)
                return None
            on_accept(raw_socket(family, socket.SOCK_STREAM, 0, fd), addr)
        return None

    def connectionLost(self, reason):
        pass


def _address(sockname):
    """The ``IAddress`` of a bound TCP socket's ``getsockname()``."""
    if len(sockname) == 4:
        return IPv6Address("TCP", sockname[0], sockname[1])
    return IPv4Address("TCP", sockname[0], sockname[1])


@implementer(IListener)
class TCPVirtualServer(service.Service):
    """Listens on a virtual server's endpoints; one :class:`Connection` each."""

    def __init__(self, balancer: Balancer, binds: list[TCPBind], reactor, clock=None, io=None,
                 access_log: tuple | None = None, max_connections: int | None = None,
                 gate: AcceptGate | None = None):
        #: (path, json lines) of ``[lbframe] access_log``; opened at start
        self.access_log_setting = access_log
        self.access_log = None
        self.balancer = balancer
        self.virtual = balancer.virtual
        self.binds = binds
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        #: where relayed sockets wait for readiness (an IRelayIO, see engine.py)
        self.io = io if io is not None else RelayEngine.for_reactor(reactor)
        spec = self.virtual.spec
        self.idle_step = min(spec.timeout_client, spec.timeout_server) / 4
        resolution = min(spec.timeout_connect, self.idle_step) / 8
        self.timeouts = TimerWheel(self.clock, min(1.0, max(0.01, resolution)))
        self.sockets: list[socket.socket] = []
        self.acceptors: list[_Acceptor] = []
        self.connections: set[Connection] = set()
        #: ``accept_proxy``: clients whose PROXY header is still being read
        #: connections whose first bytes are still being read (FirstBytesReader)
        self.readers: set = set()
        #: ``[lbframe] max_connections`` (None: from the descriptor limit)
        self.max_connections = max_connections
        #: the process-wide accept gate: every listener's connection count
        self.gate = gate if gate is not None else AcceptGate.for_reactor(reactor)
        #: connections per client address (``max_connections_per_source``)
        self.sources = SourceCounts(self.virtual.name)
        #: the binding's outcome (start_listening), None when not bound
        self._outcome: ListenOutcome | None = None
        #: whether we hold the relay engine (registered with the reactor)
        self.engine_held = False
        self.setName(f"virtual:{self.virtual.name}")

    # -- IListener ------------------------------------------------------------

    def start_listening(self) -> defer.Deferred:
        """Bind every endpoint (once: later calls get the first outcome)."""
        if self._outcome is None:
            self._outcome = ListenOutcome(self._bind())
        return self._outcome.deferred()

    def _bind(self) -> defer.Deferred:
        sockets = []
        for bind in self.binds:
            try:
                sockets.append(listening_socket(bind))
            except OSError as e:
                for s in sockets:
                    s.close()
                return defer.fail(ListenError(self.virtual.name, bind.description or str(bind),
                                              e.strerror or str(e)))
        self.sockets = sockets
        return defer.succeed(sockets)

    def addresses(self) -> list:
        """One ``IPv4Address``/``IPv6Address`` per listening socket."""
        return [_address(s.getsockname()) for s in self.sockets]

    def privilegedStartService(self) -> None:
        # Bind (and open the access log) here, so that ports below 1024 and
        # root-owned log folders work before twistd drops root (--uid). A
        # failure is the site service's to report (start_listening again).
        self.start_listening().addErrback(reported_elsewhere)
        if self.access_log_setting is not None:
            access_log_for(*self.access_log_setting)
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        if self.access_log_setting is not None:
            self.access_log = access_log_for(*self.access_log_setting)
        self.gate.configure(self.max_connections)
        outcome = self.start_listening()
        outcome.addCallbacks(self._accepting, reported_elsewhere)

    def _accepting(self, _) -> None:
        """Bound: accept on every socket."""
        if not self.running or not self.sockets or self.acceptors:
            return
        if not self.engine_held:
            # Once per listener: the relay engine is shared by the process.
            self.engine_held = True
            self.io.acquire()
        self.acceptors = [_Acceptor(self, s) for s in self.sockets]
        for acceptor in self.acceptors:
            self.io.addReader(acceptor)
        self.gate.add(self)
        log.info("virtual {virtual} listening on {where}", virtual=self.virtual.name,
                 where=", ".join(str(self.bound_address(s)) for s in self.sockets))

    def stopService(self):
        closed = self.stop_listening()
        self.close_all("stopping")
        if self.engine_held:
            self.engine_held = False
            self.io.release()
        self.timeouts.stop()
        super().stopService()
        return closed

    def apply(self, balancer: Balancer, protocol) -> None:
        """A reload kept our endpoints: connections accepted from now on
        use ``balancer`` (established ones finish with the decision they
        made), and we take ``protocol``'s ``access_log`` and ``[lbframe]
        max_connections`` settings."""
        self._use_balancer(balancer)
        self.max_connections = protocol.max_connections
        self.gate.configure(self.max_connections)
        setting = protocol.access_log
        self.access_log_setting = setting
        self.access_log = access_log_for(*setting) if setting is not None else None

    def _use_balancer(self, balancer: Balancer) -> None:
        self.balancer = balancer
        self.virtual = balancer.virtual
        spec = self.virtual.spec
        self.idle_step = min(spec.timeout_client, spec.timeout_server) / 4

    def set_balancer(self, balancer: Balancer) -> None:
        """Deprecated: :meth:`apply` (kept until the site service calls it)."""
        self._use_balancer(balancer)

    def set_protocol(self, protocol) -> None:
        """Deprecated: :meth:`apply` (kept until the site service calls it)."""
        self.apply(self.balancer, protocol)

    def stop_listening(self) -> defer.Deferred:
        """Close the listening sockets; established connections go on. The
        sockets are closed when this returns (the Deferred has fired)."""
        self._outcome = None
        self.gate.remove(self)
        for acceptor in self.acceptors:
            self.io.removeReader(acceptor)
        for s in self.sockets:
            s.close()
        self.acceptors, self.sockets = [], []
        return defer.succeed(None)

    def connection_count(self) -> int:
        """Client connections still open."""
        return len(self.connections) + len(self.readers)

    def close_all(self, reason: str) -> None:
        """Close every connection still open."""
        for reader in list(self.readers):
            reader.close(reason)
        for conn in list(self.connections):
            conn.close(reason)

    def pause_accepting(self) -> None:
        """The accept gate: the process is at ``max_connections`` or out of
        descriptors; clients wait in the listen backlog."""
        for acceptor in self.acceptors:
            self.io.removeReader(acceptor)

    def resume_accepting(self) -> None:
        for acceptor in self.acceptors:
            self.io.addReader(acceptor)

    @staticmethod
    def bound_address(sock: socket.socket):
        return sock.getsockname()

    def accepted(self, sock: socket.socket, addr) -> None:
        sock.setblocking(False)
        sock.setsockopt(_TCP, _NODELAY, 1)
        self.virtual.total += 1
        # Counted from here until the socket is closed, on every path: a
        # reader giving up (reader_closed) or the connection's close
        # (connection_closed).
        self.gate.opened()
        if self.virtual.spec.accept_proxy:
            _ProxyHeaderReader(self, sock, addr)
            return
        self.admit_client(sock, addr)

    def admit_client(self, sock: socket.socket, addr, early: bytes = b"") -> None:
        """The client's address is known (after its PROXY header, with
        ``accept_proxy``): count it for ``max_connections_per_source``, or
        close the connection when that source is at its limit."""
        if not self.sources.acquire(addr[0], self.virtual.spec.max_connections_per_source):
            self.virtual.refuse("source_limit")
            sock.close()
            self.gate.closed()
            return
        self.admit(sock, addr, early)

    def reader_closed(self, reader: "FirstBytesReader") -> None:
        """A :class:`FirstBytesReader` closed its socket (gave up, or the
        server stops): uncount it."""
        self.gate.closed()
        if reader.holds_source:
            self.sources.release(reader.addr[0])

    def admit(self, sock: socket.socket, addr, early: bytes = b"") -> None:
        """Balance and connect an accepted client (after its PROXY header,
        with ``accept_proxy``)."""
        conn = Connection(self, sock, addr)
        conn.early = early
        self.start_connection(conn)

    def start_connection(self, conn: Connection) -> None:
        """Balance, connect and count ``conn`` (a subclass's connection, too)."""
        virtual = self.virtual
        conn.connect()
        # Counted as active only once admitted, so that the balancer's
        # max_connections check compares against the others.
        if not conn.closed:
            self.connections.add(conn)
            virtual.active += 1

    def _log_connection(self, conn: Connection, reason: str) -> None:
        """One access log line per connection, written when it closes."""
        decision, context = conn.decision, conn.context
        self.access_log.write({
            "client": f"{context.client_host}:{context.client_port}",
            "virtual": self.virtual.name,
            "pool": decision.pool.name if decision is not None else None,
            "member": decision.member.name if decision is not None else None,
            "bytes_in": conn.client.nbytes,
            "bytes_out": conn.member.nbytes if conn.member is not None else 0,
            "total_ms": (self.clock.seconds() - conn.started) * 1000.0,
            "outcome": reason,
        })

    def connection_closed(self, conn: Connection, reason: str) -> None:
        if conn.tick is not None:
            self.timeouts.cancel(conn, conn.tick)
            conn.tick = None
        if conn.waiting is not None:
            conn.waiting.dequeue(conn)
            conn.waiting = None
        decision = conn.decision
        if self.access_log is not None:
            self._log_connection(conn, reason)
        if decision is not None:
            member_side = conn.member
            out = member_side.nbytes if member_side is not None else 0
            decision.pool.connection_closed(decision.member, conn.client.nbytes, out)
            self.virtual.bytes_in += conn.client.nbytes
            self.virtual.bytes_out += out
            conn.decision = None
        if conn in self.connections:
            self.connections.discard(conn)
            self.virtual.active -= 1
        # Every Connection was admitted (admit_client) and closes once.
        self.gate.closed()
        self.sources.release(conn.context.client_host)


@implementer(IReadDescriptor)
class FirstBytesReader:
    """Reads a connection's first bytes before it is balanced — a PROXY
    header (``accept_proxy``), a ClientHello (``protocol = ssl``) — bounded
    in size (``limit``) and in time (``timeout_client``). Subclasses say what
    they wait for (``what``) and decide in :meth:`parse`.

    Until then the connection is in the server's ``readers``: counted by
    ``connection_count`` and closed by ``close_all``, like any connection.
    A reader that gives up closes the socket and counts a refusal.
    """

    limit = 0
    what = "first bytes"
    log_name = "first-bytes"
    #: counted under its client address (max_connections_per_source): a
    #: reader that runs once the address is known (after admit_client)
    holds_source = True

    def __init__(self, server: TCPVirtualServer, sock: socket.socket, addr,
                 buffer: bytes = b""):
        self.server = server
        self.sock = sock
        self.addr = addr
        self.buffer = buffer
        self.fd = sock.fileno()
        self.tick = None
        self.done = False
        server.readers.add(self)
        if buffer and self.parse():
            return
        server.io.addReader(self)
        self.tick = server.timeouts.schedule(self, server.virtual.spec.timeout_client)

    def parse(self) -> bool:
        """Look at ``self.buffer``: admit (after :meth:`_stop`) or
        :meth:`_give_up` and return True, or return False to read more."""
        raise NotImplementedError

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return f"lbframe.{self.server.virtual.name}.{self.log_name}"

    def doRead(self):
        try:
            data = self.sock.recv(self.limit - len(self.buffer))
        except BlockingIOError:
            return None
        except OSError as e:
            return self._give_up(f"read error: {e.strerror}")
        if not data:
            return self._give_up(f"closed before its {self.what} was complete")
        self.buffer += data
        if not self.parse() and len(self.buffer) >= self.limit:
            self._give_up(f"no complete {self.what} in {self.limit} bytes")
        return None

    def expired(self) -> None:
        self.tick = None
        self._give_up(f"no complete {self.what} within timeout_client")

    def _stop(self) -> None:
        if self.done:
            return
        self.done = True
        server = self.server
        server.readers.discard(self)
        server.io.removeReader(self)
        if self.tick is not None:
            server.timeouts.cancel(self, self.tick)
            self.tick = None

    def _give_up(self, why: str) -> None:
        if self.done:
            return
        self._stop()
        self.server.virtual.refuse("bad_request")
        log.warn("virtual {virtual}: refused {peer}: {why}", virtual=self.server.virtual.name,
                 peer=self.addr[0], why=why)
        self.sock.close()
        self.server.reader_closed(self)

    def close(self, reason: str) -> None:
        """Stop waiting (the server stops): closed, not counted as refused."""
        if self.done:
            return
        self._stop()
        self.sock.close()
        self.server.reader_closed(self)

    def connectionLost(self, reason):
        self._give_up("connection lost")


class _ProxyHeaderReader(FirstBytesReader):
    """``accept_proxy``: the PROXY header a balancer in front sends first;
    the connection is admitted under the client address it names."""

    limit = proxy_protocol.MAX_HEADER
    what = "PROXY header"
    log_name = "proxy"
    #: the client's address is what the header names: not known yet
    holds_source = False

    def parse(self) -> bool:
        try:
            parsed = proxy_protocol.parse(self.buffer)
        except proxy_protocol.ProxyHeaderError as e:
            self._give_up(str(e))
            return True
        if parsed is None:
            return False
        info, used = parsed
        self._stop()
        addr = info.source if info.source is not None else self.addr
        self.server.admit_client(self.sock, addr, self.buffer[used:])
        return True


@implementer(IProtocol)
class TCPProtocol:
    """Validates a ``protocol = tcp`` virtual server and makes its service."""

    def __init__(self, virtual, options, site=None):
        reject_unknown_options(options, "protocol tcp")
        self.binds = [tcp_bind(d) for d in virtual.listen]
        self.access_log = access_log_setting(site)
        self.max_connections = site.lbframe.max_connections if site is not None else None

    def make_service(self, balancer, reactor):
        return TCPVirtualServer(balancer, self.binds, reactor, access_log=self.access_log,
                                max_connections=self.max_connections)


@hookimpl
def lbframe_register_protocols(registry):
    registry.add("tcp", TCPProtocol)
