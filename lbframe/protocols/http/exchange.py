"""One request and its response, from the decision to the access log line.

An :class:`Exchange` is created when a request head has been parsed and
checked. When its turn comes (requests on one client connection are
answered in order), it asks the balancer for a member, takes a kept-alive
connection to it or opens one, sends the head and streams the body as it
arrives, then streams the member's response back. Backpressure is Twisted's
producer/consumer: while an exchange runs, each side's transport is the
other's producer, so a full write buffer on one side pauses reading on the
other, and memory per connection stays at the transports' buffer sizes
whatever the body sizes.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.logger import Logger
from zope.interface import implementer

from lbframe.balancer import Decision, RequestContext
from lbframe.errors import describe_connect_error
from lbframe.protocols.http import heads, pages
from lbframe.protocols.http.members import Connect
from lbframe.protocols.http.parser import HTTPError
from lbframe.protocols.http.send import has_unsent, send
from lbframe.protocols.http.transport import connect_tcp
from lbframe.tls.client import describe_tls_error, verify_error

log = Logger(namespace="lbframe.http")

#: how many members one request may try
MAX_TRIES = 2

#: methods a member may see twice with the effect of once (RFC 9110
#: §9.2.2): resent after a kept-alive connection failed before answering
IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"))

#: request body bytes kept, per exchange on a reused connection, so that
#: an idempotent request can be resent; a longer body is not resent (one
#: buffer's worth, as HAProxy's l7 retries: tune.bufsize, 16 KiB)
MAX_REPLAY = 16 * 1024

_STATUS_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def _lost_before_answer(conn, reason) -> str:
    """Why a member connection ended before any response byte; for TLS
    members the handshake's own words (expired, untrusted, wrong name)."""
    if ISSLTransport.providedBy(conn.transport):
        detail = verify_error(conn.transport.getHandle())
        words = describe_tls_error(reason, detail)
        if words is not None:
            return words
    return "closed the connection before answering"


def _chunk(data: bytes) -> tuple:
    return (b"%x\r\n" % len(data), data, b"\r\n")


def _tokens(head, name: bytes) -> list[bytes]:
    """The comma-separated tokens of every ``name`` header, lower-cased."""
    tokens = []
    for key, value in head.headers:
        if len(key) == len(name) and key.lower() == name:
            tokens.extend(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


_NOT_ASKED = "101 Switching Protocols to a request that asked for no upgrade"


def switch_refused(request, response) -> str | None:
    """Why a ``101`` in ``response`` must not switch the connection, or
    None when it may (RFC 9110 §7.8, §15.2.2).

    Only a request that asked (``Upgrade`` with ``Connection: upgrade``:
    the data path then forwarded its ``Upgrade``) may be switched, and only
    to protocols it offered; a server switching to anything else — or
    without saying to what — would turn the connection into a raw tunnel
    past every rule and limit of ours."""
    offered = _tokens(request, b"upgrade")
    if not offered or b"upgrade" not in _tokens(request, b"connection"):
        return _NOT_ASKED
    chosen = _tokens(response, b"upgrade")
    if not chosen:
        return "101 Switching Protocols without an Upgrade header"
    if any(protocol not in offered for protocol in chosen):
        return (f"101 Switching Protocols to {b', '.join(chosen).decode('latin-1')!r}, "
                f"not offered by the request")
    return None


@implementer(IPushProducer)
class _ClientReading:
    """The client's transport as the producer of a member transport.

    Twisted tells a consumer's producer to stop when the consumer's
    connection is lost; for the client's transport that means closing the
    client — before our ``member_lost`` could resend the request or answer
    a 502. What happens to the client after a member connection ends is
    the exchange's decision, so stopping does nothing here."""

    __slots__ = ("transport",)

    def __init__(self, transport):
        self.transport = transport

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class Exchange:
    __slots__ = (
        "client", "server", "head", "keep_alive", "has_body", "chunked",
        "wants_upgrade", "pending", "pending_bytes", "conn", "connecting", "decision", "context", "tries",
        "excluded", "started", "connect_started", "t_queue", "t_connect", "t_first",
        "member_keep_alive", "framing", "to_client_chunked", "close_after",
        "request_complete", "response_started", "response_complete", "done", "tunnel",
        "bytes_in", "bytes_out", "status", "waiting", "queue_call", "last_member",
        "outcome", "local_error", "producers", "batch", "sent", "answered", "resent",
        "replay", "replay_bytes",
    )

    def __init__(self, client, head, keep_alive: bool, has_body: bool, chunked: bool):
        self.client = client
        self.server = client.server
        self.head = head
        self.keep_alive = keep_alive
        self.has_body = has_body
        self.chunked = chunked
        self.wants_upgrade = False
        self.pending: list = []
        self.pending_bytes = 0
        self.conn = None
        self.connecting = None
        self.decision: Decision | None = None
        self.context: RequestContext | None = None
        self.tries = 0
        self.excluded: list = []
        # (the read that brought the head: exchanges are made while parsing it)
        self.started = self.last_member = self.connect_started = client.last_read
        self.t_queue = self.t_connect = self.t_first = None
        self.member_keep_alive = False
        self.framing = None
        self.to_client_chunked = False
        self.close_after = False
        #: a request without a body is complete with its head
        self.request_complete = not has_body
        self.response_started = False
        self.response_complete = False
        self.done = False
        self.tunnel = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.status = None
        self.waiting = None
        self.queue_call = None
        self.outcome = None
        self.local_error: HTTPError | None = None
        self.producers = False
        #: writes to the client collected during one member read (see member_data)
        self.batch: list | None = None
        #: whether any byte of our response has reached the client's transport
        self.sent = False
        #: whether any byte came from the member for this request
        self.answered = False
        #: whether the request was sent again after a reused connection failed
        self.resent = False
        #: on a reused connection: the request body bytes sent on it (framed),
        #: while at most MAX_REPLAY, to send them again (None: not kept)
        self.replay: list | None = None
        self.replay_bytes = 0

    # -- the decision ------------------------------------------------------

    def start(self) -> None:
        """Our turn: the exchanges before ours on this connection are done."""
        server = self.server
        server.virtual.requests += 1
        self.started = server.clock.seconds()
        if self.local_error is not None:
            error = self.local_error
            self.respond_local(error.status, lambda close: pages.error_response(error.status),
                               outcome=error.reason, close=True)
            return
        client = self.client
        self.context = RequestContext(client.client_host, client.client_port,
                                      server.virtual.name, self.head)
        waiting = server.balancer.prepare(self.context)
        if waiting is not None:
            waiting.addCallback(lambda _: None if self.done else self.decide())
            return
        self.decide()

    def decide(self) -> None:
        server = self.server
        decision = server.balancer.choose(self.context, self.excluded)
        if decision is not None and decision.wait:
            pool = decision.pool
            if pool.enqueue(self):
                self.waiting = pool
                self.queue_call = server.clock.callLater(pool.spec.queue_timeout,
                                                         self._queue_timeout)
                return
            decision = server.balancer.choose_sorry(self.context, self.excluded)
            if decision is None:
                self.unavailable(f"pool {pool.name}: queue full", "queue_full")
                return
        if decision is None:
            self.unavailable("no member available")
        else:
            self.use(decision)

    def wake(self) -> bool:
        """The pool has room again (we waited in its queue): True when we
        found a member and left the queue."""
        pool = self.waiting
        member = pool.scheduler.pick(self.context, self.excluded)
        if member is None:
            return False
        self.waiting = None
        if self.queue_call is not None and self.queue_call.active():
            self.queue_call.cancel()
        self.queue_call = None
        self.use(Decision(pool, member))
        return True

    def _queue_timeout(self) -> None:
        self.queue_call = None
        pool, self.waiting = self.waiting, None
        pool.dequeue(self)
        decision = self.server.balancer.choose_sorry(self.context, self.excluded)
        if decision is None:
            self.unavailable(f"pool {pool.name}: no member free after "
                             f"{pool.spec.queue_timeout:g}s in the queue", "queue_timeout")
        else:
            self.use(decision)

    def unavailable(self, reason: str, kind: str = "no_member") -> None:
        """Nobody can serve: the sorry page, or a 503."""
        server = self.server
        sorry = server.sorry_page
        server.virtual.refuse("sorry" if sorry is not None else kind)
        head_only = self.head.method == "HEAD"
        if sorry is not None:
            self.respond_local(sorry.status, lambda close: sorry.render(close, head_only),
                               outcome=f"sorry page: {reason}")
        else:
            self.respond_local(503, lambda close: pages.error_response(503, close),
                               outcome=reason)

    # -- the member connection ----------------------------------------------

    def use(self, decision: Decision) -> None:
        server = self.server
        self.decision = decision
        member = decision.member
        decision.pool.connection_opened(member)
        self.tries += 1
        now = server.clock.seconds()
        if self.t_queue is None:
            self.t_queue = now - self.started
        self.connect_started = now
        conn = server.idle.acquire(self._idle_key() if decision.pool.spec.send_proxy != "no"
                                   else member)
        if conn is not None:
            self.t_connect = 0.0
            self.attach(conn, fresh=False)
        else:
            self.open()

    def _idle_key(self):
        if self.decision.pool.spec.send_proxy != "no":
            self.client.owns_idle = True
            return (self.decision.member, self.client)
        return self.decision.member

    def open(self) -> None:
        """A new connection to the decision's member."""
        server = self.server
        member = self.decision.member
        factory = Connect(self, member, server.max_head)
        self.connecting = factory
        address = member.spec.address
        timeout = server.virtual.spec.timeout_connect
        tls = server.settings.member_tls.get(self.decision.pool.name)
        if tls is None:
            factory.connector = connect_tcp(server.reactor, server.dispatch, address.host,
                                            address.port, factory, timeout)
        else:
            factory.connector = server.reactor.connectSSL(
                address.host, address.port, factory, tls.creator(address.host),
                timeout=timeout)

    def member_connected(self, conn, fresh: bool) -> None:
        self.connecting = None
        if self.done:
            conn.transport.loseConnection()
            return
        self.t_connect = self.server.clock.seconds() - self.connect_started
        self.attach(conn, fresh)

    def attach(self, conn, fresh: bool) -> None:
        server, client = self.server, self.client
        self.conn = conn
        conn.exchange = self
        conn.parser.sink = self
        conn.parser.expect(self.head.method)
        data = []
        send_proxy = self.decision.pool.spec.send_proxy
        if fresh and send_proxy != "no":
            conn.owner = client
            data.append(client.proxy_header(send_proxy))
        forwarded = client.client_host if server.virtual.spec.forwarded_for else None
        client_cert = client.certificate_subject() if server.settings.client_auth else False
        data.append(heads.request_bytes(self.head, forwarded, client.scheme, self.wants_upgrade,
                                        client_cert, server.idle.per_member > 0))
        # On a kept-alive connection the member may be closing it right now:
        # keep what we send of an idempotent request's body, to resend it.
        self.replay = ([] if self.has_body and conn.reused and self.head.method in IDEMPOTENT
                       else None)
        self.replay_bytes = 0
        if self.pending:
            data.extend(self.pending)
            client.buffered -= self.pending_bytes
            if self.replay is not None:
                self._keep(self.pending, self.pending_bytes)
            self.pending, self.pending_bytes = [], 0
        if not send(conn.transport, data[0] if len(data) == 1 else b"".join(data)):
            self.backpressure()
        # (a kept-alive connection was taken this very moment, in use())
        self.last_member = server.clock.seconds() if fresh else self.connect_started
        if client.paused:
            client.update_reading()  # (what waited for this member went out)

    def backpressure(self) -> None:
        """Make each side's transport the other's producer, so that a full
        write buffer on one side pauses reading on the other (Twisted's
        producer/consumer). Done once per exchange, the first time a write
        could not go out whole at once: most exchanges never queue a byte,
        and registering and unregistering two producers per request cost
        more than the rest of the exchange's bookkeeping."""
        if self.producers or self.conn is None or self.done:
            return  # (an exchange that is ending registers nothing)
        conn, client = self.conn, self.client
        self.producers = True
        conn.transport.registerProducer(_ClientReading(client.transport), True)
        client.transport.registerProducer(conn.transport, True)

    def connect_failed(self, reason) -> None:
        self.connecting = None
        if self.done:
            return
        self._member_failed(describe_connect_error(reason), may_retry=True)

    def _member_failed(self, why: str, may_retry: bool = False) -> None:
        """The member did not take the request: count it, and after a
        failed connect (the request never left) try another member."""
        decision = self.decision
        member, pool = decision.member, decision.pool
        pool.member_failed(member, why, self.client.client_host)
        pool.connection_closed(member)
        if may_retry and self.tries < MAX_TRIES:
            member.retries += 1
            self.decision = None
            self.excluded.append(member)
            self.decide()
        else:
            self._fail(503 if may_retry else 502, f"member {pool.name}/{member.name}: {why}",
                       released=True)

    # -- the request body, from the client ---------------------------------

    def request_body(self, data: bytes) -> None:
        if self.done:
            return
        self.bytes_in += len(data)
        conn = self.conn
        if conn is not None:
            framed = b"".join(_chunk(data)) if self.chunked else data
            if self.replay is not None:
                self._keep((framed,), len(framed))
            if not send(conn.transport, framed):
                self.backpressure()
            return
        framed = b"".join(_chunk(data)) if self.chunked else data
        self.pending.append(framed)
        self.pending_bytes += len(framed)
        self.client.buffered += len(framed)

    def request_end(self, trailers) -> None:
        if self.done:
            return
        self.request_complete = True
        if self.chunked:
            tail = heads.trailer_bytes(trailers)
            if self.conn is not None:
                if self.replay is not None:
                    self._keep((tail,), len(tail))
                if not send(self.conn.transport, tail):
                    self.backpressure()
            else:
                self.pending.append(tail)
                self.pending_bytes += len(tail)
                self.client.buffered += len(tail)
        if self.response_complete and not self.done:
            self.finish()

    def _keep(self, pieces, size: int) -> None:
        """Keep body bytes sent on a reused connection (see ``replay``)."""
        self.replay_bytes += size
        if self.replay_bytes > MAX_REPLAY:
            self.replay = None  # too long to hold: this request is not resent
        else:
            self.replay.extend(pieces)

    # -- the response, from the member -----------------------------------------

    def member_data(self, data: bytes) -> None:
        self.last_member = self.server.clock.seconds()
        if not self.answered:
            # It answers: no resend any more, nothing to keep for one.
            self.answered = True
            self.replay = None
        if self.tunnel:
            self.bytes_out += len(data)
            if not send(self.client.transport, data):
                self.backpressure()
            return
        # What one read of the member makes us write (head, body, end) goes
        # to the client in one send: on loopback every send wakes the peer.
        self.batch = []
        try:
            self.conn.parser.feed(data)
        except HTTPError as e:
            self.batch = None  # nothing of a malformed response is relayed
            if not self.sent and self.response_started:
                # Its head was only collected: the client can still get a 502.
                self.response_started = False
                self.server.virtual.responses[_STATUS_CLASS.get(self.status // 100, "5xx")] -= 1
            self._bad_response(e)
        self._flush()

    def _to_client(self, data: bytes) -> None:
        batch = self.batch
        if batch is not None:
            batch.append(data)
        else:
            self.sent = True
            if not send(self.client.transport, data):
                self.backpressure()

    def _flush(self) -> None:
        batch, self.batch = self.batch, None
        if batch:
            self.sent = True
            if not send(self.client.transport, batch[0] if len(batch) == 1 else b"".join(batch)):
                self.backpressure()

    def informational(self, head) -> None:
        """A 1xx (100 Continue, 103 Early Hints): passed on to 1.1 clients."""
        if self.head.version == "1.1":
            self._to_client(heads.response_bytes(head, False, False, False))

    def response(self, head, member_keep_alive: bool, framing: str) -> None:
        if head.status == 101:
            # (Without wants_upgrade the member was not even sent Upgrade.)
            refused = switch_refused(self.head, head) if self.wants_upgrade else _NOT_ASKED
            if refused is not None:
                raise HTTPError(502, f"bad response: {refused}")
        server = self.server
        now = server.clock.seconds()
        decision = self.decision
        self.t_first = now - self.started
        decision.pool.record_response_time(decision.member, now - self.connect_started)
        self.status = head.status
        server.virtual.responses[_STATUS_CLASS.get(head.status // 100, "5xx")] += 1
        if head.status >= 500:
            decision.member.responses_5xx += 1
        self.member_keep_alive = member_keep_alive
        self.framing = framing
        extra = server.balancer.responded(self.context, decision, head)
        client_11 = self.head.version == "1.1"
        if head.status == 101:
            self.response_started = True
            self._to_client(heads.response_bytes(head, False, False, False, extra))
            return
        chunked = framing == "chunked" and client_11
        close = (not self.keep_alive or framing == "close" or
                 (framing == "chunked" and not client_11) or server.stopping)
        self.to_client_chunked = chunked
        self.close_after = close
        self.response_started = True
        self._to_client(heads.response_bytes(
            head, chunked, close, not close and not client_11, extra))

    def body(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self.to_client_chunked:
            self._to_client(b"".join(_chunk(data)))
        else:
            self._to_client(data)

    def end(self, trailers) -> None:
        if self.to_client_chunked:
            self._to_client(heads.trailer_bytes(trailers))
        self.response_complete = True
        if not self.request_complete:
            # The member answered before the request ended (e.g. a 413):
            # what is left of the body cannot be told from a next request.
            self.close_after = True
        self.finish()

    def upgrade(self, rest: bytes) -> None:
        """After a 101: both connections become one byte tunnel."""
        if self.status != 101:
            self._bad_response(HTTPError(502, "bad response: unexpected upgrade"))
            return
        self.tunnel = True
        self.backpressure()  # a tunnel relays whatever it gets, both ways
        if rest:
            self.bytes_out += len(rest)
            self._to_client(rest)
        self.client.start_tunnel(self)

    def _bad_response(self, error: HTTPError) -> None:
        decision = self.decision
        log.warn("member {pool}/{member}: {reason} (client {client})",
                 pool=decision.pool.name, member=decision.member.name,
                 reason=error.reason, client=self.client.client_host)
        decision.member.misbehaved()
        self._fail(502, error.reason)

    def member_lost(self, conn, reason) -> None:
        """The member connection closed (or broke) during our exchange."""
        if self.done:
            return
        self.conn = None
        self._unregister(conn)
        if self.tunnel:
            self.close_after = True
            self.outcome = "tunnel closed by member"
            self.finish()
            return
        if self.response_started:
            if self.framing == "close" and self.status != 101:
                # The body was delimited by the close: the response is whole.
                self.response_complete = True
                self.close_after = True
                self.finish()
                return
            self.outcome = "member closed mid-response"
            log.warn("member {pool}/{member}: closed mid-response (client {client})",
                     pool=self.decision.pool.name, member=self.decision.member.name,
                     client=self.client.client_host)
            self.close_after = True
            self.finish()
            return
        if conn.reused and not self.answered:
            # The keep-alive race: the member closed a kept-alive connection
            # as our request went out on it (nginx does on every reload).
            if self._may_resend():
                self._resend()
                return
            self._member_failed(f"{_lost_before_answer(conn, reason)} on a kept-alive "
                                f"connection; a {self.head.method} request that may have "
                                f"been read is not resent")
            return
        self._member_failed(_lost_before_answer(conn, reason))

    def _may_resend(self) -> bool:
        """Whether a request that got no byte of answer on a reused
        connection may go out again: once, when its method is idempotent
        and all of its body sent so far is still held. Any other request
        may have been read and acted on (TCP cannot tell), so it gets a 502
        — a request that provably never left is resent in ``use`` instead,
        when the kept-alive connection is found closed before sending."""
        return (not self.resent and self.head.method in IDEMPOTENT
                and (not self.has_body or self.replay is not None))

    def _resend(self) -> None:
        """Send the request again, to the same member, on a new connection."""
        self.resent = True
        replay, self.replay = self.replay or [], None
        if replay:
            self.pending[:0] = replay
            self.pending_bytes += self.replay_bytes
            self.client.buffered += self.replay_bytes
        self.replay_bytes = 0
        self.connect_started = self.server.clock.seconds()
        self.open()

    def timed_out(self) -> None:
        """``timeout_server`` passed without a byte from the member."""
        decision = self.decision
        limit = self.server.virtual.spec.timeout_server
        decision.pool.member_failed(decision.member, f"no answer within {limit:g}s",
                                    self.client.client_host, counts=not self.response_started)
        self._fail(504, f"server timeout after {limit:g}s")

    # -- ending -----------------------------------------------------------

    def _fail(self, status: int, reason: str, released: bool = False) -> None:
        """Give up on the member: an error page when nothing was sent yet,
        else close the client connection (the response is cut)."""
        self.member_keep_alive = False  # its connection is in an unknown state
        if self.response_started:
            self.outcome = reason
            self.close_after = True
            self.finish(released=released)
        else:
            self.respond_local(status, lambda close: pages.error_response(status, close),
                               outcome=reason, close=True, released=released)

    def respond_local(self, status: int, render, outcome: str, close: bool = False,
                      released: bool = False) -> None:
        """Answer from lbframe itself (error or sorry page)."""
        close = close or not self.keep_alive or not self.request_complete or \
            self.server.stopping
        self.status = status
        self.server.virtual.responses[_STATUS_CLASS.get(status // 100, "5xx")] += 1
        self.outcome = outcome
        self.close_after = close
        self.response_started = self.response_complete = True
        data = render(close)
        if self.head is not None and self.head.method == "HEAD":
            data = data[:data.index(b"\r\n\r\n") + 4]
        self.bytes_out += len(data)
        send(self.client.transport, data)
        self.finish(released=released)

    def _unregister(self, conn) -> None:
        if self.producers:
            self.producers = False
            if conn is not None:
                conn.transport.unregisterProducer()
            client = self.client
            client.transport.unregisterProducer()
            # The member's full buffer may have paused the client's reading
            # (it was the producer): only our own reasons may keep it paused.
            if not client.paused and not client.closing:
                client.transport.resumeProducing()

    def finish(self, released: bool = False) -> None:
        """The exchange is over: give the member connection back (or close
        it), account, log, and let the client connection go on."""
        if self.done:
            return
        self.done = True
        self._flush()  # our response goes out before anything that follows it
        conn = self.conn
        self.conn = None
        registered = self.producers
        if registered:
            self._unregister(conn)
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        if self.waiting is not None:
            self.waiting.dequeue(self)
            self.waiting = None
        if self.queue_call is not None and self.queue_call.active():
            self.queue_call.cancel()
        decision = self.decision
        if decision is not None and not released:
            decision.pool.connection_closed(decision.member, self.bytes_in, self.bytes_out)
        elif decision is not None:
            decision.member.relayed(self.bytes_in, self.bytes_out)
        self.server.virtual.bytes_in += self.bytes_in
        self.server.virtual.bytes_out += self.bytes_out
        if conn is not None and not conn.lost:
            conn.exchange = None
            conn.parser.sink = None
            if conn.parser.extra:
                self._unsolicited(conn)
            if (self.member_keep_alive and self.response_complete and self.request_complete
                    and not self.tunnel and conn.parser.extra == 0 and not self.server.stopping
                    and decision is not None and not has_unsent(conn.transport)):
                if registered:
                    conn.transport.resumeProducing()  # (the client may have paused it)
                self.server.idle.release(self._idle_key() if decision.pool.spec.send_proxy != "no"
                                         else decision.member, conn)
            else:
                conn.transport.loseConnection()
        server = self.server
        if server.access_log is not None:
            server.log_exchange(self)
        self.client.exchange_done(self)

    def _unsolicited(self, conn) -> None:
        """The member sent more than the response (a second response, or
        junk): it would answer the next request on this connection, so the
        connection is closed, never kept; one line in the log."""
        decision = self.decision
        log.warn("member {pool}/{member}: sent bytes after its complete response; "
                 "connection closed, nothing of them relayed (client {client})",
                 pool=decision.pool.name, member=decision.member.name,
                 client=self.client.client_host)
        decision.member.misbehaved()

    def refused(self, error: HTTPError) -> None:
        """Not started yet and its body turned out malformed: drop what was
        held of it; in its turn it answers ``error`` and the connection closes."""
        self.local_error = error
        self.client.buffered -= self.pending_bytes
        self.pending, self.pending_bytes = [], 0
        self.request_complete = True

    def abort_with(self, error: HTTPError) -> None:
        """The request turned out malformed after its head went to the
        member (a bad chunk): cut the member off, answer the error, close."""
        conn = self.conn
        if conn is not None:
            self.conn = None
            self._unregister(conn)
            conn.exchange = None
            conn.transport.abortConnection()
        self.respond_local(error.status, lambda close: pages.error_response(error.status),
                           outcome=error.reason, close=True)

    def abort(self, why: str) -> None:
        """The client went away: drop everything without answering."""
        if self.done:
            return
        self.outcome = why
        conn = self.conn
        if conn is not None and not self.response_complete:
            # Half a request or response on it: not reusable.
            self.conn = None
            self._unregister(conn)
            conn.exchange = None
            conn.transport.abortConnection()
        self.close_after = True
        self.finish()
