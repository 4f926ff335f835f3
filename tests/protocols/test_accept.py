"""Admission at accept time: [lbframe] max_connections (every listener of
the process), [virtual] max_connections_per_source, the EMFILE back-off,
and exact counting on every close path."""

from __future__ import annotations

from errno import EMFILE

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbframe.config import parse_site
from lbframe.plugins import load_plugins
from lbframe.protocols.accept import AcceptGate, SourceCounts, default_max_connections, source_key
from lbframe.protocols.http.server import HTTPVirtualServer
from lbframe.protocols.ssl import SSLVirtualServer
from lbframe.protocols.tcp import TCPVirtualServer
from lbframe.service import build_runtime
from tests.helpers import WaitMixin, free_port
from tests.protocols.test_ssl import client_hello_bytes
from tests.protocols.test_tcp import Echo


class FakeListener:
    def __init__(self):
        self.paused = False
        self.calls = []

    def pause_accepting(self):
        self.paused = True
        self.calls.append("pause")

    def resume_accepting(self):
        self.paused = False
        self.calls.append("resume")


class Captured:
    """Log events of lbframe.accept while a test runs."""

    def __init__(self, testcase):
        self.events = []
        observer = self.events.append
        globalLogPublisher.addObserver(observer)
        testcase.addCleanup(globalLogPublisher.removeObserver, observer)

    def of(self, event_name: str) -> list:
        return [e for e in self.events if e.get("lbframe_event") == event_name]


class GateTests(SynchronousTestCase):
    def test_default_limit_leaves_a_reserve_and_halves(self):
        self.assertEqual(default_max_connections(1024), (1024 - 128) // 2)
        self.assertEqual(default_max_connections(65536), (65536 - 8192) // 2)
        self.assertEqual(default_max_connections(100), 1)

    def test_at_the_limit_every_listener_pauses_until_one_closes(self):
        gate, a, b = AcceptGate(Clock(), limit=2), FakeListener(), FakeListener()
        gate.add(a)
        gate.add(b)
        gate.opened()
        self.assertFalse(a.paused or b.paused or gate.paused)
        gate.opened()
        self.assertTrue(a.paused and b.paused and gate.paused)
        late = FakeListener()
        gate.add(late)  # a listener started while paused starts paused
        self.assertTrue(late.paused)
        gate.closed()
        self.assertFalse(a.paused or b.paused or late.paused or gate.paused)
        self.assertEqual(gate.open, 1)

    def test_exhaustion_backs_off_with_one_line_per_episode(self):
        log = Captured(self)
        clock = Clock()
        gate, listener = AcceptGate(clock, limit=100), FakeListener()
        gate.add(listener)
        error = OSError(EMFILE, "Too many open files")
        pauses = []
        for _ in range(6):  # every retry fails again
            gate.exhausted(error)
            gate.exhausted(error)  # a second listener in the same wake-up
            self.assertTrue(listener.paused)
            pauses.append(gate._backoff)
            clock.advance(gate._backoff)
            self.assertFalse(listener.paused)
        self.assertEqual(pauses, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
        self.assertEqual(len(log.of("accept_exhausted")), 1)
        gate.opened()  # an accept worked: the episode is over
        self.assertEqual(len(log.of("accept_resumed")), 1)
        gate.exhausted(error)
        self.assertEqual(gate._backoff, 0.1)
        self.assertEqual(len(log.of("accept_exhausted")), 2)
        gate.stop()

    def test_source_keys(self):
        self.assertEqual(source_key("192.0.2.7"), "192.0.2.7")
        self.assertEqual(source_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64")
        self.assertEqual(source_key("::ffff:192.0.2.7"), "192.0.2.7")
        self.assertEqual(source_key(""), "")

    def test_source_counts_forget_sources_and_log_once_per_episode(self):
        log = Captured(self)
        counts = SourceCounts("v")
        self.assertTrue(counts.acquire("192.0.2.1", 2))
        self.assertTrue(counts.acquire("192.0.2.1", 2))
        for _ in range(5):
            self.assertFalse(counts.acquire("192.0.2.1", 2))
        self.assertTrue(counts.acquire("192.0.2.2", 2))
        self.assertEqual(len(log.of("source_limited")), 1)
        counts.release("192.0.2.1")
        self.assertEqual(len(log.of("source_unlimited")), 1)
        self.assertTrue(counts.acquire("192.0.2.1", 2))
        for host in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
            counts.release(host)
        self.assertEqual((counts.counts, counts.over), ({}, {}))


class Client(protocol.Protocol):
    def __init__(self):
        self.received = b""
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lost.callback(None)


class ListenerMixin(WaitMixin):
    """Virtual servers on real sockets sharing a gate of the test's own."""

    def setUp(self):
        self.gate = AcceptGate(reactor)
        self.addCleanup(self.gate.stop)
        echo = reactor.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        self.member_port = echo.getHost().port

    def runtime(self, virtual_lines: str, protocol_name: str = "tcp", lbframe_lines: str = "",
                listen: str | None = None):
        port = free_port()
        listen = listen or f"tcp:{port}:interface=127.0.0.1"
        text = (f"[lbframe]\n{lbframe_lines}\n[virtual v]\nlisten = {listen}\n"
                f"protocol = {protocol_name}\npool = p\n{virtual_lines}\n"
                f"[pool p]\nmember a = 127.0.0.1:{self.member_port}\n")
        return build_runtime(parse_site(text, "/tmp/site.ini"), load_plugins(entry_points=False),
                             reactor), port

    def start(self, svc):
        svc.startService()
        self.addCleanup(svc.stopService)
        return svc

    def tcp(self, virtual_lines: str = "", max_connections=None, cls=TCPVirtualServer):
        runtime, port = self.runtime(virtual_lines, "ssl" if cls is SSLVirtualServer else "tcp")
        proto = runtime.protocols["v"]
        svc = self.start(cls(runtime.balancers["v"], proto.binds, reactor,
                             max_connections=max_connections, gate=self.gate))
        return svc, port

    def http(self, virtual_lines: str = "", lbframe_lines: str = "", listen=None):
        runtime, port = self.runtime(virtual_lines, "http", lbframe_lines, listen)
        svc = self.start(HTTPVirtualServer(runtime.balancers["v"],
                                           runtime.protocols["v"].settings, reactor,
                                           gate=self.gate))
        return svc, svc.addresses()[0].port

    @defer.inlineCallbacks
    def connect(self, port: int, source: str = "127.0.0.1") -> Client:
        client = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0)), Client())
        self.addCleanup(lambda: client.transport.abortConnection() or client.lost)
        return client

    @defer.inlineCallbacks
    def echoed(self, client: Client, data: bytes = b"ping"):
        client.received = b""
        client.transport.write(data)
        yield self.wait_until(lambda: client.received == data or client.lost.called)
        return client.received == data

    @defer.inlineCallbacks
    def poke(self, port: int, data: bytes = b"", abort: bool = False):
        """Connect, send ``data``, close (or reset), wait for the close."""
        client = yield self.connect(port)
        if data:
            client.transport.write(data)
        yield task.deferLater(reactor, 0.001, lambda: None)
        if abort:
            client.transport.abortConnection()
        else:
            client.transport.loseConnection()
        yield client.lost

    @defer.inlineCallbacks
    def all_closed(self, *services):
        yield self.wait_until(lambda: self.gate.open == 0 and
                              all(s.connection_count() == 0 for s in services))
        for svc in services:
            self.assertEqual(svc.sources.counts, {})
            self.assertEqual(svc.virtual.active, 0)


class ProcessLimitTests(ListenerMixin, TestCase):
    @defer.inlineCallbacks
    def test_at_max_connections_clients_wait_in_the_backlog_until_one_closes(self):
        svc, port = self.tcp(max_connections=2)
        # Another listener of the same process (and site).
        hsvc, hport = self.http(lbframe_lines="max_connections = 2")
        first = yield self.connect(port)
        self.assertTrue((yield self.echoed(first)))
        web = yield self.connect(hport)
        yield self.wait_until(lambda: self.gate.open == 2)
        self.assertTrue(self.gate.paused)
        waiting = yield self.connect(port)  # the kernel completes the handshake
        waiting.transport.write(b"hello")
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual((waiting.received, svc.virtual.total), (b"", 1))
        self.assertFalse(waiting.lost.called)
        web.transport.loseConnection()  # one closes: the waiting one is accepted
        yield self.wait_until(lambda: waiting.received == b"hello")
        self.assertEqual(self.gate.open, 2)
        first.transport.loseConnection()
        waiting.transport.loseConnection()
        yield self.all_closed(svc, hsvc)
        self.assertFalse(self.gate.paused)

    def test_a_reload_applies_the_new_limit(self):
        svc, _ = self.tcp(max_connections=2)
        self.assertEqual(self.gate.limit, 2)
        runtime, _ = self.runtime("", lbframe_lines="max_connections = 7")
        svc.set_protocol(runtime.protocols["v"])
        self.assertEqual(self.gate.limit, 7)
        hsvc, _ = self.http(lbframe_lines="max_connections = 7")
        runtime, _ = self.runtime("", "http", lbframe_lines="")
        hsvc.set_protocol(runtime.protocols["v"])  # the key removed: the default
        self.assertEqual(self.gate.limit, default_max_connections())

    def test_the_key_is_read(self):
        runtime, _ = self.runtime("", lbframe_lines="max_connections = 5")
        self.assertEqual(runtime.site.lbframe.max_connections, 5)
        self.assertEqual(runtime.protocols["v"].max_connections, 5)


class SourceLimitTests(ListenerMixin, TestCase):
    @defer.inlineCallbacks
    def test_tcp_a_source_over_its_limit_is_refused_others_are_not(self):
        svc, port = self.tcp("max_connections_per_source = 2")
        held = []
        for _ in range(2):
            client = yield self.connect(port)
            self.assertTrue((yield self.echoed(client)))
            held.append(client)
        third = yield self.connect(port)
        yield third.lost
        self.assertEqual(third.received, b"")
        self.assertEqual(svc.virtual.refused, 1)
        other = yield self.connect(port, source="127.0.0.2")
        self.assertTrue((yield self.echoed(other)))
        held[0].transport.loseConnection()
        yield held[0].lost
        yield self.wait_until(lambda: svc.sources.counts.get("127.0.0.1") == 1)
        again = yield self.connect(port)
        self.assertTrue((yield self.echoed(again)))
        for client in (held[1], other, again):
            client.transport.loseConnection()
        yield self.all_closed(svc)

    @defer.inlineCallbacks
    def test_http_a_source_over_its_limit_is_refused(self):
        svc, port = self.http("max_connections_per_source = 1")
        first = yield self.connect(port)
        yield self.wait_until(lambda: svc.sources.counts.get("127.0.0.1") == 1)
        second = yield self.connect(port)
        yield second.lost
        self.assertEqual(svc.virtual.refused, 1)
        first.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        yield first.lost
        self.assertTrue(first.received.startswith(b"HTTP/1.1 "))  # admitted, answered
        yield self.all_closed(svc)

    @defer.inlineCallbacks
    def test_accept_proxy_counts_the_source_the_header_names(self):
        svc, port = self.tcp("accept_proxy = yes\nmax_connections_per_source = 1")
        header = b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 80\r\n"
        first = yield self.connect(port)
        first.transport.write(header + b"a")
        yield self.wait_until(lambda: first.received == b"a")
        yield self.wait_until(lambda: svc.sources.counts.get("192.0.2.9") == 1)
        # Same balancer in front (127.0.0.1), another client: admitted.
        other = yield self.connect(port)
        other.transport.write(b"PROXY TCP4 192.0.2.10 127.0.0.1 5555 80\r\nb")
        yield self.wait_until(lambda: other.received == b"b")
        # The first client again: refused.
        again = yield self.connect(port)
        again.transport.write(header + b"c")
        yield again.lost
        self.assertEqual(svc.virtual.refused, 1)
        first.transport.loseConnection()
        other.transport.loseConnection()
        yield self.all_closed(svc)

    @defer.inlineCallbacks
    def test_http_over_tls_and_behind_a_proxy(self):
        import os

        from tests.tlskit import make_ca, make_cert, write_bundle
        ca = make_ca()
        leaf_key, leaf = make_cert(ca, "www.test")
        key = write_bundle(os.path.join(os.path.abspath(self.mktemp()), "tls.pem"),
                           leaf_key, leaf, ca)
        tls, tport = self.http("max_connections_per_source = 1",
                               listen=f"ssl:{free_port()}:privateKey={key}:interface=127.0.0.1")
        proxied, xport = self.http("accept_proxy = yes\nmax_connections_per_source = 1")
        held = yield self.connect(tport)  # no handshake yet: counted all the same
        yield self.wait_until(lambda: tls.sources.counts.get("127.0.0.1") == 1)
        refused = yield self.connect(tport)
        yield refused.lost
        named = yield self.connect(xport)
        named.transport.write(b"PROXY TCP4 192.0.2.5 127.0.0.1 1 2\r\n")
        yield self.wait_until(lambda: proxied.sources.counts.get("192.0.2.5") == 1)
        again = yield self.connect(xport)
        again.transport.write(b"PROXY TCP4 192.0.2.5 127.0.0.1 3 2\r\n")
        yield again.lost
        self.assertEqual((tls.virtual.refused, proxied.virtual.refused), (1, 1))
        held.transport.loseConnection()
        named.transport.loseConnection()
        yield self.all_closed(tls, proxied)

    def test_udp_refuses_the_key(self):
        from lbframe.errors import ConfigError
        with self.assertRaises(ConfigError):
            parse_site("[virtual v]\nlisten = udp:53\nprotocol = udp\npool = p\n"
                       "max_connections_per_source = 3\n[pool p]\nmember a = 127.0.0.1:53\n")


class NoLeakTests(ListenerMixin, TestCase):
    """Every close path gives its count back: after many opens and closes,
    clients closing at every stage, nothing is left counted."""

    ROUNDS = 15

    @defer.inlineCallbacks
    def test_tcp_and_proxy_header_readers(self):
        plain, pport = self.tcp("max_connections_per_source = 1000")
        proxied, xport = self.tcp("accept_proxy = yes\nmax_connections_per_source = 1000")
        for i in range(self.ROUNDS):
            abort = bool(i % 2)
            yield self.poke(pport, abort=abort)
            yield self.poke(pport, b"data", abort=abort)
            yield self.poke(xport, b"PROXY TCP4 192.0.2.1", abort=abort)  # mid-header
            yield self.poke(xport, b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\nx", abort=abort)
            yield self.poke(xport, b"GARBAGE\r\n", abort=abort)  # refused
        yield self.all_closed(plain, proxied)

    @defer.inlineCallbacks
    def test_ssl_passthrough_closing_during_the_client_hello(self):
        svc, port = self.tcp("max_connections_per_source = 1000", cls=SSLVirtualServer)
        proxied, xport = self.tcp("accept_proxy = yes", cls=SSLVirtualServer)
        hello = client_hello_bytes()
        for i in range(self.ROUNDS):
            abort = bool(i % 2)
            yield self.poke(port, abort=abort)
            yield self.poke(port, hello[:20], abort=abort)
            yield self.poke(port, hello, abort=abort)
            yield self.poke(xport, b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n" + hello[:9],
                            abort=abort)
        yield self.all_closed(svc, proxied)

    @defer.inlineCallbacks
    def test_http_plain_proxy_and_tls_handshakes(self):
        import os

        from tests.tlskit import make_ca, make_cert, write_bundle
        ca = make_ca()
        leaf_key, leaf = make_cert(ca, "www.test")
        key = write_bundle(os.path.join(os.path.abspath(self.mktemp()), "tls.pem"),
                           leaf_key, leaf, ca)
        web, wport = self.http("max_connections_per_source = 1000")
        proxied, xport = self.http("accept_proxy = yes\nmax_connections_per_source = 1000")
        tls, tport = self.http("max_connections_per_source = 1000",
                               listen=f"ssl:{free_port()}:privateKey={key}:"
                                      "interface=127.0.0.1")
        hello = client_hello_bytes()
        for i in range(self.ROUNDS):
            abort = bool(i % 2)
            yield self.poke(wport, abort=abort)
            yield self.poke(wport, b"GET / HTTP/1.1\r\nHo", abort=abort)
            yield self.poke(xport, b"PROXY TCP4 192.0.2.1 ", abort=abort)
            yield self.poke(tport, abort=abort)
            yield self.poke(tport, hello[:30], abort=abort)
            yield self.poke(tport, hello, abort=abort)
        yield self.all_closed(web, proxied, tls)
