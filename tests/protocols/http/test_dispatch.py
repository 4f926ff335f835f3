"""The http path's own epoll set (lbframe.protocols.http.dispatch): real
sockets on 127.0.0.1, the real reactor."""

from __future__ import annotations

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import TestCase

from lbframe.protocols.http.dispatch import Dispatcher
from lbframe.protocols.http.transport import Stream
from tests.httpkit import HTTPSiteMixin
from tests.helpers import WaitMixin

GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


class _Echo(protocol.Protocol):
    def connectionMade(self):
        self.factory.made.append(self)

    def dataReceived(self, data):
        self.transport.write(data)

    def connectionLost(self, reason):
        self.factory.lost.append(reason)


class _Collect(protocol.Protocol):
    def __init__(self):
        self.received = b""
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lost.callback(None)


class DataPathTests(HTTPSiteMixin, TestCase):
    @defer.inlineCallbacks
    def test_client_and_member_connections_wait_in_the_dispatcher(self):
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.exchange(port, GET)
        self.assertEqual(client.responses[0].status, 200)
        dispatch = self.service.dispatch
        self.assertIsNotNone(dispatch)
        conn = next(iter(self.service.connections))
        raw = conn.transport
        # The http path's own stream, in the dispatcher's epoll set.
        self.assertIsInstance(raw, Stream)
        self.assertNotIn(raw, reactor.getReaders())
        fd = raw.fileno()
        self.assertIs(dispatch.streams[fd], raw)
        idle = self.service.idle.acquire(self.runtime.pools["p"].members["a"])
        self.assertIsNotNone(idle)
        self.assertIsInstance(idle.transport, Stream)
        self.assertIs(dispatch.streams[idle.transport.fileno()], idle.transport)
        self.service.idle.release(self.runtime.pools["p"].members["a"], idle)
        # A close from the client is seen there, and the books are cleaned.
        client.transport.loseConnection()
        yield self.wait_until(lambda: not self.service.connections)
        self.assertIsNot(dispatch.streams.get(fd), raw)
        self.assertEqual(raw.fileno(), -1)


class DispatcherTests(WaitMixin, TestCase):
    """One Dispatcher of its own, on a plain TCP echo connection."""

    @defer.inlineCallbacks
    def setUp(self):
        self.dispatch = Dispatcher(reactor)
        self.factory = protocol.Factory.forProtocol(_Echo)
        self.factory.made, self.factory.lost = [], []
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.client = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), _Collect())
        self.addCleanup(lambda: self.client.transport.abortConnection() or self.client.lost)
        yield self.wait_until(lambda: self.factory.made)
        self.server = self.factory.made[0].transport

    def test_nothing_is_adopted_while_no_service_uses_it(self):
        self.dispatch.adopt(self.server)
        self.assertIs(self.server.reactor, reactor)
        self.assertIn(self.server, reactor.getReaders())

    @defer.inlineCallbacks
    def test_adopted_transport_relays_and_goes_back_on_release(self):
        self.dispatch.acquire()
        self.dispatch.adopt(self.server)
        self.assertNotIn(self.server, reactor.getReaders())
        self.assertIn(self.dispatch, reactor.getReaders())
        self.client.transport.write(b"ping")
        yield self.wait_until(lambda: self.client.received == b"ping")
        self.dispatch.release()
        self.assertNotIn(self.dispatch, reactor.getReaders())
        self.assertIs(self.server.reactor, reactor)
        self.assertIn(self.server, reactor.getReaders())
        self.assertEqual(self.dispatch.masks, {})
        self.client.transport.write(b"pong")
        yield self.wait_until(lambda: self.client.received == b"pingpong")

    @defer.inlineCallbacks
    def test_a_pending_write_goes_back_too(self):
        self.dispatch.acquire()
        self.dispatch.adopt(self.server)
        self.server.pauseProducing()
        self.server.loseConnection()  # waits to write (nothing queued): closes
        self.dispatch.release()
        yield self.client.lost
        yield self.wait_until(lambda: self.factory.lost)

    @defer.inlineCallbacks
    def test_peer_close_is_a_clean_connection_lost(self):
        self.dispatch.acquire()
        self.addCleanup(self.dispatch.release)
        self.dispatch.adopt(self.server)
        self.client.transport.loseConnection()
        yield self.wait_until(lambda: self.factory.lost)
        from twisted.internet.error import ConnectionDone
        self.assertTrue(self.factory.lost[0].check(ConnectionDone))
        self.assertEqual(self.dispatch.masks, {})
        self.assertEqual(self.dispatch.by_fd, {})
