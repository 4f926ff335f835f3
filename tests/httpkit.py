"""Test helpers for the http data path: an http virtual server on real
sockets, members that record exactly what reached them, and a raw client
that splits responses with an independent parser."""

from __future__ import annotations

import os

import httptools
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from lbframe.config import parse_site
from lbframe.plugins import load_plugins
from lbframe.protocols.http.server import HTTPVirtualServer
from lbframe.service import build_runtime
from tests.helpers import WaitMixin


class Response:
    def __init__(self):
        self.status = None
        self.headers: list = []
        self.body = b""
        self.complete = False

    def header(self, name: str):
        for n, v in self.headers:
            if n.lower() == name.lower().encode():
                return v.decode("latin-1")
        return None


class RawClient(protocol.Protocol):
    """Sends raw bytes; collects raw bytes and parsed responses."""

    def __init__(self, head_requests: int = 0):
        self.received = b""
        self.responses: list[Response] = []
        self.lost = defer.Deferred()
        self.waiters: list = []
        self.parser = httptools.HttpResponseParser(self)
        self.current = None
        self.bad = None

    def dataReceived(self, data):
        self.received += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as e:
            self.bad = e
        self._check()

    def connectionLost(self, reason):
        if not self.lost.called:
            self.lost.callback(None)
        self._check()

    # llhttp callbacks
    def on_message_begin(self):
        self.current = Response()

    def on_header(self, name, value):
        self.current.headers.append((name, value))

    def on_headers_complete(self):
        self.current.status = self.parser.get_status_code()
        if 100 <= self.current.status < 200 and self.current.status != 101:
            return
        self.responses.append(self.current)

    def on_body(self, body):
        self.current.body += body

    def on_message_complete(self):
        self.current.complete = True

    def _check(self):
        for waiter in list(self.waiters):
            count, d = waiter
            done = [r for r in self.responses if r.complete]
            if len(done) >= count or self.lost.called:
                self.waiters.remove(waiter)
                d.callback(done)

    def wait_responses(self, count: int) -> defer.Deferred:
        d = defer.Deferred()
        self.waiters.append((count, d))
        self._check()
        return d


class RecordingMember(protocol.Protocol):
    """A member that records every byte and answers each request (one at a
    time) with a response whose body is the raw request it received."""

    def connectionMade(self):
        self.factory.connections += 1
        self.factory.live.append(self)
        self.raw = b""
        self.parser = httptools.HttpRequestParser(self)

    def dataReceived(self, data):
        self.factory.received += data
        self.raw += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        if self in self.factory.live:
            self.factory.live.remove(self)

    def on_url(self, url):
        self.factory.urls.append(url)

    def on_message_complete(self):
        raw, self.raw = self.raw, b""
        self.factory.requests.append(raw)
        answer = self.factory.answer
        if answer is not None:
            self.transport.write(answer(raw))
            return
        self.transport.write(b"HTTP/1.1 200 OK\r\nX-Member: %s\r\nContent-Length: %d\r\n\r\n"
                             % (self.factory.name.encode(), len(raw)) + raw)


class RecordingFactory(protocol.Factory):
    protocol = RecordingMember
    noisy = False

    def __init__(self, name: str = "a", answer=None):
        self.name = name
        self.answer = answer
        self.connections = 0
        self.received = b""
        self.requests: list[bytes] = []
        self.urls: list = []
        self.live: list = []


class HTTPSiteMixin(WaitMixin):
    """An http virtual server ``v`` on a free port, timers on ``self.clock``
    (the real reactor unless a Clock is asked for)."""

    def serve_http(self, pool_lines: str, virtual_lines: str = "", more: str = "",
                   lbframe_lines: str = "", clock=None,
                   listen: str = "tcp:0:interface=127.0.0.1"):
        text = f"""
[lbframe]
{lbframe_lines}

[virtual v]
listen = {listen}
protocol = http
pool = p
{virtual_lines}

[pool p]
{pool_lines}
{more}"""
        runtime = build_runtime(parse_site(text, "/tmp/site.ini"),
                                load_plugins(entry_points=False), reactor)
        self.clock = clock if clock is not None else reactor
        svc = HTTPVirtualServer(runtime.balancers["v"], runtime.protocols["v"].settings,
                                reactor, clock=self.clock)
        svc.startService()
        self.addCleanup(svc.stopService)
        # The pools' timers (slow start, passive health) end with the test.
        self.addCleanup(lambda: [pool.stop() for pool in runtime.pools.values()])
        self.runtime, self.service = runtime, svc
        return svc.addresses()[0].port

    def tempfile(self) -> str:
        """An absolute path in a fresh folder of the test's own."""
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return os.path.join(path, "file")

    def member(self, name: str = "a", answer=None) -> tuple[int, RecordingFactory]:
        factory = RecordingFactory(name, answer)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: [m.transport.abortConnection() for m in list(factory.live)])
        return port.getHost().port, factory

    def listen_member(self, factory) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def connect(self, port: int, client=None):
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                       client if client is not None else RawClient())
        self.addCleanup(lambda: client.transport.abortConnection() or client.lost)
        return client

    @defer.inlineCallbacks
    def exchange(self, port: int, data: bytes, count: int = 1):
        """Connect, send ``data``, wait for ``count`` complete responses (or
        the close), return the client."""
        client = yield self.connect(port)
        client.transport.write(data)
        yield client.wait_responses(count)
        return client
