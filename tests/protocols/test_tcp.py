"""The tcp virtual server on real sockets, with timers on a Clock."""

from __future__ import annotations

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from lbframe.config import parse_site
from lbframe.plugins import load_plugins
from lbframe.protocols.tcp import TCPVirtualServer
from lbframe.service import build_runtime
from tests.helpers import WaitMixin, free_port


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Client(protocol.Protocol):
    def __init__(self):
        self.received = b""
        self.got_data = defer.Deferred()
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        self.received += data
        if not self.got_data.called:
            self.got_data.callback(data)

    def connectionLost(self, reason):
        self.lost.callback(None)


class TCPSiteMixin(WaitMixin):
    """Helpers: a tcp virtual server on real sockets with timers on ``self.clock``."""

    def serve(self, site_text: str, real_clock: bool = False):
        runtime = build_runtime(parse_site(site_text), load_plugins(entry_points=False), reactor)
        self.clock = reactor if real_clock else Clock()
        name, = runtime.virtuals
        proto = runtime.protocols[name]
        svc = TCPVirtualServer(runtime.balancers[name], proto.binds, reactor, clock=self.clock)
        svc.startService()
        self.addCleanup(svc.stopService)
        return runtime, svc

    def serve_virtual(self, pool_lines: str, virtual_lines: str = "", more: str = "",
                      pool: str = "p", **kw):
        """Virtual server ``v`` on a free port in front of pool ``pool``
        (whose keys are ``pool_lines``); ``more`` adds sections. Returns
        (port, runtime, service)."""
        vport = free_port()
        runtime, svc = self.serve(f"""
[virtual v]
listen = tcp:{vport}:interface=127.0.0.1
pool = {pool}
{virtual_lines}

[pool {pool}]
{pool_lines}
{more}""", **kw)
        return vport, runtime, svc

    def echo_member(self) -> int:
        port = reactor.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def connect(self, port: int) -> Client:
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Client())
        self.addCleanup(lambda: client.transport.loseConnection() or client.lost)
        return client


class TCPServerTests(TCPSiteMixin, TestCase):
    @defer.inlineCallbacks
    def test_idle_client_is_closed_after_timeout_client(self):
        vport, runtime, svc = self.serve_virtual(
            f"member a = 127.0.0.1:{self.echo_member()}",
            "timeout_client = 20s\ntimeout_server = 40s")
        client = yield self.connect(vport)
        client.transport.write(b"ping")
        yield client.got_data  # the member answered: now the client is expected to speak
        self.assertEqual(client.received, b"ping")
        self.assertEqual(svc.idle_step, 5)
        self.clock.pump([5] * 4)  # 20 s of silence: not yet past the limit step
        self.assertFalse(client.lost.called)
        self.clock.advance(5)
        yield client.lost
        self.assertEqual(runtime.virtuals["v"].active, 0)
        self.assertEqual(runtime.pools["p"].members["a"].active, 0)

    @defer.inlineCallbacks
    def test_traffic_keeps_a_connection_open(self):
        vport, runtime, svc = self.serve_virtual(
            f"member a = 127.0.0.1:{self.echo_member()}",
            "timeout_client = 20s\ntimeout_server = 20s")
        client = yield self.connect(vport)
        for i in range(12):
            client.got_data = defer.Deferred()
            client.transport.write(b"x")
            yield client.got_data
            self.clock.advance(5)
        self.assertFalse(client.lost.called)
        self.assertEqual(runtime.virtuals["v"].active, 1)

    @defer.inlineCallbacks
    def test_max_connections_overflow_to_sorry_pool(self):
        main_port, sorry_port = self.echo_member(), self.echo_member()
        vport, runtime, svc = self.serve_virtual(
            f"member a = 127.0.0.1:{main_port}", "sorry = sorry\nmax_connections = 1",
            f"[pool sorry]\nmember s = 127.0.0.1:{sorry_port}", pool="main")
        first = yield self.connect(vport)
        first.transport.write(b"1")
        yield first.got_data
        second = yield self.connect(vport)
        second.transport.write(b"2")
        yield second.got_data
        self.assertEqual(runtime.pools["main"].members["a"].total, 1)
        self.assertEqual(runtime.pools["sorry"].members["s"].total, 1)

    @defer.inlineCallbacks
    def test_no_member_closes_the_client(self):
        vport, runtime, svc = self.serve_virtual(
            f"member a = 127.0.0.1:{free_port()}\nmember b = 127.0.0.1:{free_port()}")
        client = yield self.connect(vport)
        yield client.lost
        members = runtime.pools["p"].members
        # each refused once: the connection was tried on both, then refused
        self.assertEqual((members["a"].failures, members["b"].failures), (1, 1))
        self.assertEqual(runtime.virtuals["v"].refused, 1)
        self.assertEqual((members["a"].active, members["b"].active), (0, 0))


class SharedEngineTests(TCPSiteMixin, TestCase):
    @defer.inlineCallbacks
    def test_stopping_one_listener_twice_leaves_the_others_relaying(self):
        echo = self.echo_member()
        _, _, first = self.serve_virtual(f"member a = 127.0.0.1:{echo}", real_clock=True)
        vport, _, second = self.serve_virtual(f"member a = 127.0.0.1:{echo}", real_clock=True)
        self.assertIs(first.io, second.io)
        yield first.stopService()
        yield first.stopService()
        client = yield self.connect(vport)
        client.transport.write(b"still here")
        yield self.wait_until(lambda: client.received == b"still here")
