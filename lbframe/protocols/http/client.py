"""A client's connection to an http virtual server.

It parses the client's requests as they arrive and keeps one
:class:`~lbframe.protocols.http.exchange.Exchange` per request in arrival
order; only the first is active, so pipelined requests are answered in
order. What waits for its turn (or for its member connection) is bounded:
past ``MAX_BUFFERED`` bytes or ``MAX_PIPELINE`` requests we stop reading
from the client until the line moves.

A request we refuse (malformed, too big) gets its error page in its turn
and the connection is closed after it: after a framing error nothing that
follows can be trusted to be a request boundary.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from lbframe.protocols.http import pages
from lbframe.protocols.http.exchange import Exchange
from lbframe.protocols.http.parser import HTTPError, RequestParser
from lbframe.tls.server import peer_subject

log = Logger(namespace="lbframe.http")

_UNKNOWN = object()

#: ``exchanges`` of a connection with none: a deque costs 760 bytes, and
#: most kept-alive connections wait idle most of the time (see ``_rest``)
_NO_EXCHANGES = ()

#: request bytes we hold for requests waiting for their turn or their member
MAX_BUFFERED = 256 * 1024
#: requests one client may have outstanding before we stop reading from it
#: (one read can bring more: llhttp parses all of it; a 64 KiB read holds
#: at most about 3,600 of the smallest requests — bounded, if not tight)
MAX_PIPELINE = 32


class ClientConnection(Protocol):
    def __init__(self, server):
        self.server = server
        self.exchanges: deque | tuple = _NO_EXCHANGES
        self.incoming: Exchange | None = None  # the request being received
        self.parser: RequestParser | None = None
        #: no request in progress: the parser went back to the server's
        #: pool (``_rest``); one is taken from it with the next byte
        self.resting = False
        #: inside ``parser.feed`` (a local answer may end an exchange there)
        self.feeding = False
        self.buffered = 0
        self.paused = False
        self.closing = False
        self.tunnel: Exchange | None = None
        self.held = b""  # bytes after an Upgrade request, until the answer
        self.proxy_buffer: bytes | None = None
        self.refused_input = False
        self.client_host = ""
        self.client_port = 0
        self.last_read = 0.0
        #: when we began waiting for the next request: the connection's
        #: start, then the end of each exchange (timeout_http_request,
        #: timeout_keepalive count from here)
        self.wait_started = 0.0
        #: when the request head being received began (None: none is)
        self.head_began: float | None = None
        #: how many times every request so far was answered (0: the first
        #: request is still awaited, which timeout_http_request bounds alone)
        self.served = 0
        #: the source address counted by max_connections_per_source, once counted
        self.source: str | None = None
        self.tick = None
        #: b"https" behind an ssl: listener (X-Forwarded-Proto)
        self.scheme = b"http"
        self.cert_subject = _UNKNOWN
        #: member connections kept for this client only (send_proxy)
        self.owns_idle = False

    # -- connection life ---------------------------------------------------

    def connectionMade(self) -> None:
        server = self.server
        if server.dispatch is not None:
            server.dispatch.adopt(self.transport)
        peer = self.transport.getPeer()
        self.client_host = getattr(peer, "host", "")
        self.client_port = getattr(peer, "port", 0)
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass
        self.parser = server.take_parser(self)
        self.resting = False
        if server.virtual.spec.accept_proxy:
            self.proxy_buffer = b""
        self.last_read = self.wait_started = server.clock.seconds()
        server.connection_made(self)
        if self.closing:
            return
        if not server.virtual.spec.accept_proxy and not server.admit_source(self):
            return
        self.tick = server.timeouts.schedule(self, server.idle_step)

    def connectionLost(self, reason) -> None:
        self.closing = True
        server = self.server
        if self.tick is not None:
            server.timeouts.cancel(self, self.tick)
            self.tick = None
        while self.exchanges:
            self.exchanges[0].abort("client closed")
        if self.owns_idle:
            server.idle.drop_client(self)
        server.connection_lost(self)

    def close(self) -> None:
        """Close after what is already written."""
        if not self.closing:
            self.closing = True
            self.transport.loseConnection()

    # -- bytes from the client ---------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self.last_read = self.server.clock.seconds()
        if self.tunnel is not None:
            tunnel = self.tunnel
            tunnel.bytes_in += len(data)
            if tunnel.conn is not None:
                tunnel.conn.transport.write(data)
            return
        if self.proxy_buffer is not None:
            data = self._proxy_header(data)
            if not data:
                return
        parser = self.parser
        if parser is None and self.resting:
            self.resting = False
            parser = self.parser = self.server.take_parser(self)
        if parser is None:
            # After an Upgrade request, until the member answers it.
            self.held += data
            self.buffered += len(data)
            self.update_reading()
            return
        self.feeding = True
        try:
            parser.feed(data)
        except HTTPError as e:
            self.feeding = False
            self.refuse(e)
            return
        self.feeding = False
        if self.head_began is None and parser.in_head:
            self.head_began = self.last_read
        if not self.exchanges:
            self._rest()  # (bytes that began no request: empty lines)
        if (self.paused or self.refused_input or self.buffered > MAX_BUFFERED
                or len(self.exchanges) > MAX_PIPELINE):
            self.update_reading()

    def _proxy_header(self, data: bytes) -> bytes:
        """``accept_proxy``: the PROXY header comes first; it names the client."""
        from lbframe.protocols import proxy_protocol

        buffer = self.proxy_buffer + data
        try:
            parsed = proxy_protocol.parse(buffer)
        except proxy_protocol.ProxyHeaderError as e:
            log.warn("virtual {virtual}: bad PROXY header from {peer}: {error}",
                     virtual=self.server.virtual.name, peer=self.client_host, error=e)
            self.proxy_buffer = None
            self.server.virtual.refuse("bad_request")
            self.transport.abortConnection()
            return b""
        if parsed is None:
            if len(buffer) > proxy_protocol.MAX_HEADER:
                self.transport.abortConnection()
                return b""
            self.proxy_buffer = buffer
            return b""
        info, used = parsed
        self.proxy_buffer = None
        if info.source is not None:
            self.client_host, self.client_port = info.source
        if not self.server.admit_source(self):
            return b""
        return buffer[used:]

    def update_reading(self) -> None:
        """Pause reading while too much waits; resume when it moved."""
        want_pause = (self.buffered > MAX_BUFFERED or len(self.exchanges) > MAX_PIPELINE
                      or self.refused_input)
        if want_pause:
            # Every time: the member transport's backpressure (we are its
            # producer) may have resumed us since we last paused.
            self.paused = True
            self.transport.pauseProducing()
        elif not want_pause and self.paused and not self.closing:
            self.paused = False
            self.transport.resumeProducing()

    # -- the request parser's sink -----------------------------------------

    def request(self, head, keep_alive: bool, has_body: bool) -> None:
        self.head_began = None
        exchange = Exchange(self, head, keep_alive, has_body, self.parser.chunked)
        self.incoming = exchange
        if self.exchanges is _NO_EXCHANGES:
            self.exchanges = deque()
        self.exchanges.append(exchange)
        if len(self.exchanges) == 1:
            exchange.start()

    def body(self, data: bytes) -> None:
        self.incoming.request_body(data)

    def end(self, trailers) -> None:
        exchange, self.incoming = self.incoming, None
        exchange.request_end(trailers)

    def upgrade(self, rest: bytes) -> None:
        """The request just parsed asks for an Upgrade: stop parsing until
        its answer says whether what follows is a tunnel or a request."""
        if self.exchanges:
            self.exchanges[-1].wants_upgrade = True
        self.parser = None
        self.held = rest
        self.buffered += len(rest)

    def refuse(self, error: HTTPError) -> None:
        """A request we will not forward: its error page in its turn, then close."""
        self.parser = None
        self.server.virtual.refuse("bad_request")
        log.info("virtual {virtual}: refused a request from {client}: {reason}",
                 virtual=self.server.virtual.name, client=self.client_host,
                 reason=error.reason)
        incoming, self.incoming = self.incoming, None
        if incoming is not None and not incoming.done and not incoming.request_complete:
            # Its head was accepted, its body broke.
            if incoming is not self.exchanges[0]:
                # Still waiting for its turn: it answers the error then.
                incoming.refused(error)
            elif not incoming.response_started:
                incoming.abort_with(error)
            else:
                incoming.abort(error.reason)
            self._stop_reading()
            return
        exchange = Exchange(self, None, False, False, False)
        exchange.local_error = error
        exchange.request_complete = True
        if self.exchanges is _NO_EXCHANGES:
            self.exchanges = deque()
        self.exchanges.append(exchange)
        if len(self.exchanges) == 1:
            exchange.start()
        self._stop_reading()

    def _stop_reading(self) -> None:
        """After a refusal nothing more is read: the connection closes
        once the answers before it are out."""
        self.refused_input = True
        if not self.paused and not self.closing:
            self.paused = True
            self.transport.pauseProducing()

    # -- exchanges ---------------------------------------------------------

    def exchange_done(self, exchange: Exchange) -> None:
        exchanges = self.exchanges
        if exchanges and exchanges[0] is exchange:
            exchanges.popleft()
        elif not self.closing and exchange in exchanges:
            exchanges.remove(exchange)
        if self.closing:
            return
        if exchange.close_after or self.server.stopping:
            self.close()  # first: the aborts below end here, not recursively
            while exchanges:
                exchanges.popleft().abort("connection closing")
            return
        if exchanges:
            exchanges[0].start()
            return
        # Nothing in flight: the wait for the next request starts now.
        self.served += 1
        self.wait_started = self.server.clock.seconds()
        if self.parser is None and exchange.wants_upgrade:
            # The member did not switch protocols: what followed the
            # request is the next request.
            self.parser = RequestParser(self, self.server.max_request_line,
                                        self.server.max_head)
            held, self.held = self.held, b""
            self.buffered -= len(held)
            if held:
                self.dataReceived(held)
        if not self.feeding:
            self._rest()
        if (self.paused or self.refused_input or self.buffered > MAX_BUFFERED
                or len(self.exchanges) > MAX_PIPELINE):
            self.update_reading()

    def start_tunnel(self, exchange: Exchange) -> None:
        """After a 101: relay bytes both ways until either side closes."""
        self.tunnel = exchange
        held, self.held = self.held, b""
        self.buffered -= len(held)
        if held and exchange.conn is not None:
            exchange.bytes_in += len(held)
            exchange.conn.transport.write(held)
        self.update_reading()

    def certificate_subject(self) -> str | None:
        """The subject of the client's TLS certificate (``client_ca``), once
        per connection; None when it showed none."""
        if self.cert_subject is _UNKNOWN:
            self.cert_subject = peer_subject(self.transport)
        return self.cert_subject

    def proxy_header(self, version: str) -> bytes:
        """The PROXY header naming this client, for ``send_proxy``."""
        from lbframe.protocols import proxy_protocol

        local = self.transport.getHost()
        source = (self.client_host, self.client_port)
        destination = (getattr(local, "host", "0.0.0.0"), getattr(local, "port", 0))
        if version == "v2":
            return proxy_protocol.build_v2(source, destination)
        return proxy_protocol.build_v1(source, destination)

    # -- timeouts (the server's timer wheel calls expired) ------------------

    def expired(self) -> None:
        self.tick = None
        if self.closing:
            return
        server = self.server
        spec = server.virtual.spec
        now = server.clock.seconds()
        idle_client = now - self.last_read
        if self.tunnel is not None:
            if now - max(self.last_read, self.tunnel.last_member) >= server.timeout_tunnel:
                self.tunnel.outcome = f"tunnel idle for {server.timeout_tunnel:g}s"
                self.transport.loseConnection()
                return
        elif self.exchanges:
            exchange = self.exchanges[0]
            if (exchange.conn is not None and not exchange.response_complete and
                    now - exchange.last_member >= spec.timeout_server and
                    (exchange.request_complete or idle_client >= spec.timeout_server)):
                exchange.timed_out()
                if self.closing:
                    return
            elif (self.incoming is not None and not self.incoming.request_complete and
                  idle_client >= spec.timeout_client):
                self._client_timeout(f"client timeout after {spec.timeout_client:g}s "
                                     "in the request body")
                return
        elif self.parser is not None and self.parser.in_head:
            deadline = self._head_deadline()
            if now >= deadline:
                self._client_timeout(f"request head not complete within "
                                     f"timeout_http_request ({server.timeout_http_request:g}s)")
                return
            if idle_client >= spec.timeout_client:
                self._client_timeout(f"client timeout after {spec.timeout_client:g}s "
                                     "in the request head")
                return
            self.tick = server.timeouts.schedule(self, min(server.idle_step, deadline - now))
            return
        else:
            # Waiting for a request's first byte: bytes that begin no head
            # (empty lines, a PROXY header, a TLS handshake) do not extend it.
            deadline = self.wait_started + (server.timeout_http_request if self.served == 0
                                            else server.timeout_keepalive)
            if now >= deadline:
                self.close()
                return
            self.tick = server.timeouts.schedule(self, min(server.idle_step, deadline - now))
            return
        self.tick = server.timeouts.schedule(self, server.idle_step)

    def _rest(self) -> None:
        """Nothing in flight and no head begun: let go of what only a
        request in progress needs, so that an idle keep-alive connection
        holds little memory (10,000 of them: see docs/performance.md). The
        parser (llhttp's state and httptools' bound callbacks, about 1 KiB)
        goes back to the server's pool — between messages llhttp is in its
        start state, so any connection may take it next — and the empty
        deque (760 bytes) goes."""
        parser = self.parser
        if parser is not None and not parser.in_head and not self.exchanges \
                and self.incoming is None and not self.held and not self.closing:
            self.parser = None
            self.resting = True
            self.exchanges = _NO_EXCHANGES
            self.server.give_parser(parser)

    def _head_deadline(self) -> float:
        """When the request head being received must be complete
        (``timeout_http_request``): counted from the connection's start for
        the first request, so a TLS handshake or a PROXY header is part of
        it; on a kept-alive connection from the later of the previous
        exchange's end and the head's first byte, so that an idle wait
        (bounded by ``timeout_keepalive``) does not eat into it."""
        start = self.wait_started
        if self.served and self.head_began is not None:
            start = max(start, self.head_began)
        return start + self.server.timeout_http_request

    def _client_timeout(self, reason: str) -> None:
        log.info("virtual {virtual}: {reason} (client {client})",
                 virtual=self.server.virtual.name, reason=reason, client=self.client_host)
        if not self.exchanges or not self.exchanges[0].response_started:
            self.transport.write(pages.error_response(408))
        while self.exchanges:
            self.exchanges[0].abort(reason)
        self.close()
