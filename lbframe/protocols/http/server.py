"""The listening side of an http virtual server.

It owns what the virtual server's connections share: the listening ports
(any Twisted server endpoint, so ``ssl:`` terminates TLS here), the member
connections kept alive for reuse, one timer wheel for every connection's
timeouts, and the access log. It is an :class:`lbframe.interfaces.IListener`
(what the site service uses to start, reload and drain it).
"""

from __future__ import annotations

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbframe.accesslog import access_log_for
from lbframe.errors import ListenError
from lbframe.interfaces import IListener
from lbframe.protocols.accept import AcceptGate, GatedPort, SourceCounts
from lbframe.protocols.endpoints import tcp_bind
from lbframe.protocols.http.client import ClientConnection
from lbframe.protocols.http.dispatch import Dispatcher
from lbframe.protocols.http.members import IdleConnections
from lbframe.protocols.http.parser import RequestParser
from lbframe.protocols.http.transport import StreamServer
from lbframe.protocols.listening import ListenOutcome, reported_elsewhere, why_not
from lbframe.protocols.timeouts import TimerWheel

log = Logger(namespace="lbframe.http")

#: request parsers kept for reuse by the connections of one virtual server
#: (a connection holds one only while a request is in progress)
PARSER_POOL = 256


@attrs.frozen
class Listener:
    """One ``listen`` endpoint; ``tls`` is the CertificateOptions when we
    terminate TLS on it."""

    description: str
    named: dict = attrs.field(eq=False)
    tls: object = None

    def endpoint(self, reactor):
        if self.tls is None:
            return serverFromString(reactor, self.description)
        named = self.named
        return SSL4ServerEndpoint(reactor, int(named.get("port", 0)), self.tls,
                                  backlog=int(named.get("backlog", 50)),
                                  interface=named.get("interface", ""))

    def listen(self, reactor, factory, gate: AcceptGate):
        """Listen with ``factory``; a Deferred firing with the port.

        ``tcp:``/``tcp6:`` endpoints and those where we terminate TLS get a
        :class:`~lbframe.protocols.accept.GatedPort` (the process-wide
        connection limit, pausing on descriptor exhaustion); other kinds
        (``unix:``) the endpoint's own port, which is paused at the limit
        too but handles ``EMFILE`` as Twisted does."""
        kind = self.description.split(":", 1)[0].lower()
        if kind not in ("tcp", "tcp6", "ssl"):
            return self.endpoint(reactor).listen(factory)
        named = self.named
        if kind == "ssl":
            port, backlog = int(named.get("port", 0)), int(named.get("backlog", 50))
            interface = named.get("interface", "")
        else:
            bind = tcp_bind(self.description)
            port, backlog, interface = bind.port, bind.backlog, bind.host
        if self.tls is not None:
            from lbframe.protocols.http.send import send
            from lbframe.tls.stream import TLSServerFactory

            factory = TLSServerFactory(self.tls, factory, send)
        listening = GatedPort(port, factory, backlog, interface, reactor, gate)
        dispatch = Dispatcher.for_reactor(reactor)
        if dispatch is not None:
            # Accepted connections are the http path's own streams (a TLS
            # protocol, when we terminate it, runs on top of one).
            listening.transport = StreamServer(dispatch)
        try:
            listening.startListening()
        except Exception:
            return defer.fail()
        return defer.succeed(listening)


@attrs.frozen
class HTTPSettings:
    """The http virtual server keys, parsed (see docs/http.md)."""

    listen: tuple  # of Listener
    max_head: int
    max_request_line: int
    timeout_keepalive: float
    timeout_tunnel: float
    member_keepalive: int
    member_idle_timeout: float
    sorry_page: object = None
    access_log: str | None = None
    access_log_json: bool = False
    #: pool name → PoolTLS, for ``tls = yes`` pools
    member_tls: dict = attrs.field(factory=dict)
    #: ``client_ca`` set: pass the client certificate's subject on
    client_auth: bool = False
    #: the whole request head must arrive within this (see client.py)
    timeout_http_request: float = 10.0
    #: ``[lbframe] max_connections`` (None: from the descriptor limit)
    max_connections_process: int | None = None


class _ClientFactory(Factory):
    noisy = False

    def __init__(self, server: "HTTPVirtualServer", scheme: bytes):
        self.server = server
        self.scheme = scheme

    def buildProtocol(self, addr):
        conn = ClientConnection(self.server)
        conn.scheme = self.scheme
        return conn


@implementer(IListener)
class HTTPVirtualServer(service.Service):
    def __init__(self, balancer, settings: HTTPSettings, reactor, clock=None,
                 gate: AcceptGate | None = None):
        self.balancer = balancer
        self.virtual = balancer.virtual
        self.settings = settings
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        spec = self.virtual.spec
        self.max_head = settings.max_head
        self.max_request_line = settings.max_request_line
        self.timeout_keepalive = settings.timeout_keepalive
        self.timeout_tunnel = settings.timeout_tunnel
        self.timeout_http_request = settings.timeout_http_request
        self.sorry_page = settings.sorry_page
        #: the process-wide accept gate ([lbframe] max_connections, EMFILE)
        self.gate = gate if gate is not None else AcceptGate.for_reactor(reactor)
        self.sources = SourceCounts(self.virtual.name)
        self.idle_step = max(0.01, min(spec.timeout_client, spec.timeout_server,
                                       settings.timeout_keepalive, settings.timeout_tunnel,
                                       settings.timeout_http_request) / 4)
        self.timeouts = TimerWheel(self.clock, min(1.0, self.idle_step / 2))
        self.idle = IdleConnections(self.clock, settings.member_keepalive,
                                    settings.member_idle_timeout)
        self.connections: set[ClientConnection] = set()
        #: idle request parsers (see ClientConnection._rest)
        self.parsers: list = []
        #: where our connections wait for readiness (None: in the reactor)
        self.dispatch = Dispatcher.for_reactor(reactor)
        self._dispatching = False
        #: the binding's outcome (start_listening), None when not bound
        self._outcome: ListenOutcome | None = None
        self.stopping = False
        self.access_log = None
        self.setName(f"virtual:{self.virtual.name}")

    # -- IListener ----------------------------------------------------------------

    def start_listening(self) -> defer.Deferred:
        """Listen on every endpoint (once: later calls get the first
        outcome). An endpoint whose ``listen()`` answers later is waited for."""
        if self._outcome is None:
            self._outcome = ListenOutcome(self._listen())
        return self._outcome.deferred()

    def _listen(self) -> defer.Deferred:
        listeners = self.settings.listen
        attempts = []
        for listener in listeners:
            scheme = b"http" if listener.tls is None else b"https"
            attempts.append(defer.maybeDeferred(listener.listen, self.reactor,
                                                _ClientFactory(self, scheme), self.gate))
        done = defer.DeferredList(attempts, consumeErrors=True)
        return done.addCallback(self._listened, listeners)

    def _listened(self, results, listeners):
        ports = [port for ok, port in results if ok]
        failed = [(listener, failure) for listener, (ok, failure) in zip(listeners, results)
                  if not ok]
        if not failed:
            return ports
        listener, failure = failed[0]
        error = ListenError(self.virtual.name, listener.description, why_not(failure))
        # Nothing stays bound: close the endpoints that did listen first.
        closing = defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports],
                                      consumeErrors=True)
        return closing.addBoth(lambda _: Failure(error))

    @property
    def ports(self) -> list:
        """The listening ports (none until bound, or once stopped)."""
        outcome = self._outcome
        return outcome.value if outcome is not None and outcome.succeeded else []

    def privilegedStartService(self) -> None:
        # Bind (and open the access log) before twistd drops root (--uid). A
        # failure is the site service's to report (start_listening again).
        self.start_listening().addErrback(reported_elsewhere)
        access_log_for(self.settings.access_log, self.settings.access_log_json)
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        self.stopping = False
        self.access_log = access_log_for(self.settings.access_log, self.settings.access_log_json)
        self.idle.start()
        if self.dispatch is not None and not self._dispatching:
            self._dispatching = True
            self.dispatch.acquire()
        self.gate.configure(self.settings.max_connections_process)
        listening = self.start_listening()
        listening.addCallbacks(self._accepting, reported_elsewhere, callbackArgs=(self._outcome,))

    def _accepting(self, _, outcome) -> None:
        """Bound (maybe later than startService): take part in the accept gate."""
        if not self.running or outcome is not self._outcome:
            return  # stopped (or stopped and started again) meanwhile
        self.gate.add(self)  # (which pauses us if the gate is closed)
        log.info("virtual {virtual} (http) listening on {where}", virtual=self.virtual.name,
                 where=", ".join(str(p.getHost()) for p in self.ports))

    def stopService(self):
        closed = self.stop_listening()
        self.close_all("stopping")
        self.idle.stop()
        self.timeouts.stop()
        if self._dispatching:
            self._dispatching = False
            self.dispatch.release()
        super().stopService()
        return closed

    def addresses(self) -> list:
        """Where we listen (``IAddress`` per port): tests use the port numbers."""
        return [p.getHost() for p in self.ports]

    def apply(self, balancer, protocol) -> None:
        """A reload kept our endpoints: requests that start from now on use
        ``balancer``; we take the new protocol's settings (limits, timeouts,
        sorry page, member TLS) and certificates, keeping the listening
        sockets (their TLS options are swapped in place)."""
        self.balancer = balancer
        self.virtual = balancer.virtual
        new = protocol.settings
        for old_listener, new_listener in zip(self.settings.listen, new.listen):
            if old_listener.tls is not None and new_listener.tls is not None:
                old_listener.tls.swap(new_listener.tls.options)
        self.settings = attrs.evolve(new, listen=self.settings.listen)
        self.max_head = new.max_head
        self.max_request_line = new.max_request_line
        self.parsers = []  # (made with the old limits)
        self.timeout_keepalive = new.timeout_keepalive
        self.timeout_tunnel = new.timeout_tunnel
        self.timeout_http_request = new.timeout_http_request
        self.sorry_page = new.sorry_page
        self.gate.configure(new.max_connections_process)
        self.idle.per_member = new.member_keepalive
        self.idle.idle_timeout = new.member_idle_timeout
        self.access_log = access_log_for(new.access_log, new.access_log_json)

    def set_balancer(self, balancer) -> None:
        """Deprecated: :meth:`apply` (kept until the site service calls it)."""
        self.balancer = balancer
        self.virtual = balancer.virtual

    def set_protocol(self, protocol) -> None:
        """Deprecated: :meth:`apply` (kept until the site service calls it)."""
        self.apply(self.balancer, protocol)

    def stop_listening(self) -> defer.Deferred:
        """Stop accepting; established connections finish their current
        request and close (``Connection: close`` on their next response).
        Fires once the ports are closed (after a ``listen()`` still under
        way has answered)."""
        outcome, self._outcome = self._outcome, None
        self.stopping = True
        self.gate.remove(self)
        for conn in list(self.connections):
            if not conn.exchanges:
                conn.close()
        if outcome is None:
            return defer.succeed(None)
        d = outcome.deferred()

        def close(_):
            closing = defer.gatherResults([defer.maybeDeferred(p.stopListening)
                                           for p in outcome.value])
            return closing.addCallback(lambda _: None)

        return d.addCallbacks(close, lambda _: None)

    def connection_count(self) -> int:
        return len(self.connections)

    def close_all(self, reason: str) -> None:
        for conn in list(self.connections):
            for exchange in list(conn.exchanges):
                exchange.abort(reason)
            conn.transport.abortConnection()

    # -- the accept gate's listener API ----------------------------------------

    def pause_accepting(self) -> None:
        for port in self.ports:
            port.stopReading()

    def resume_accepting(self) -> None:
        for port in self.ports:
            # (a port whose stopListening is under way stays stopped)
            if port.connected and not port.disconnecting:
                port.startReading()

    # -- connections -----------------------------------------------------------

    def connection_made(self, conn: ClientConnection) -> None:
        virtual = self.virtual
        virtual.total += 1
        virtual.active += 1
        self.connections.add(conn)
        self.gate.opened()
        if self.stopping:
            conn.close()

    def admit_source(self, conn: ClientConnection) -> bool:
        """Count ``conn`` under its client address (``max_connections_per_source``),
        once that address is known (after the PROXY header with
        ``accept_proxy``); a source over its limit has the connection closed."""
        if self.sources.acquire(conn.client_host, self.virtual.spec.max_connections_per_source):
            conn.source = conn.client_host
            return True
        self.virtual.refuse("source_limit")
        conn.closing = True
        conn.transport.abortConnection()
        return False

    def take_parser(self, sink) -> RequestParser:
        """A request parser between messages, for ``sink`` (a connection)."""
        parsers = self.parsers
        if parsers:
            parser = parsers.pop()
            parser.sink = sink
            return parser
        return RequestParser(sink, self.max_request_line, self.max_head)

    def give_parser(self, parser: RequestParser) -> None:
        """``parser`` is between messages and its connection needs it no more."""
        if len(self.parsers) < PARSER_POOL:
            parser.sink = None
            self.parsers.append(parser)

    def connection_lost(self, conn: ClientConnection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.virtual.active -= 1
            self.gate.closed()
            if conn.source is not None:
                self.sources.release(conn.source)
                conn.source = None

    def log_exchange(self, exchange) -> None:
        access_log = self.access_log
        if access_log is None:
            return
        now = self.clock.seconds()
        decision, head, client = exchange.decision, exchange.head, exchange.client
        context = exchange.context

        def ms(seconds):
            return None if seconds is None else seconds * 1000.0

        access_log.write({
            "client": f"{client.client_host}:{client.client_port}",
            "virtual": self.virtual.name,
            "rule": context.rule if context is not None else None,
            "pool": decision.pool.name if decision is not None else None,
            "member": decision.member.name if decision is not None else None,
            "method": head.method if head is not None else None,
            "target": head.target if head is not None else None,
            "version": head.version if head is not None else None,
            "status": exchange.status,
            "bytes_in": exchange.bytes_in,
            "bytes_out": exchange.bytes_out,
            "queue_ms": ms(exchange.t_queue),
            "connect_ms": ms(exchange.t_connect),
            "first_byte_ms": ms(exchange.t_first),
            "total_ms": ms(now - exchange.started),
            "outcome": exchange.outcome,
        })
