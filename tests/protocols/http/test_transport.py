"""The http path's own transport (lbframe.protocols.http.transport): real
sockets on 127.0.0.1 driven by a Dispatcher on the real reactor, and the
send queue's mechanics against a fake socket and a fake epoll set."""

from __future__ import annotations

import errno
import socket
import struct

from twisted.internet import defer, error, protocol, reactor, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.python import failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from lbframe.errors import describe_connect_error
from lbframe.protocols.http import transport as transport_module
from lbframe.protocols.http.dispatch import Dispatcher
from lbframe.protocols.http.send import has_unsent, send, unsent_bytes
from lbframe.protocols.http.transport import (HIGH_WATER, Connector, Stream, StreamServer,
                                              connect_tcp)
from tests.helpers import WaitMixin

_IN, _OUT = transport_module._IN, transport_module._OUT


class Recorder(protocol.Protocol):
    """Keeps what it is told."""

    def __init__(self):
        self.received = []
        self.lost = []
        self.made = 0

    def connectionMade(self):
        self.made += 1

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.lost.append(reason)

    @property
    def data(self) -> bytes:
        return b"".join(self.received)


@implementer(IPushProducer)
class Producer:
    def __init__(self):
        self.calls = []

    def pauseProducing(self):
        self.calls.append("pause")

    def resumeProducing(self):
        self.calls.append("resume")

    def stopProducing(self):
        self.calls.append("stop")


def _drain_peer(sock: socket.socket) -> bytes:
    """Read what a blocking peer socket has until it would block."""
    got = []
    while True:
        try:
            chunk = sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return b"".join(got)
        if not chunk:
            got.append(b"<EOF>")
            return b"".join(got)
        got.append(chunk)


class RealSocketTests(WaitMixin, TestCase):
    """A Stream on an accepted 127.0.0.1 connection; the test holds the peer."""

    def setUp(self):
        self.dispatch = Dispatcher(reactor)
        self.dispatch.acquire()
        self.addCleanup(self._release)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        self.addCleanup(listener.close)
        self.peer = socket.create_connection(listener.getsockname())
        self.addCleanup(self.peer.close)
        sock, addr = listener.accept()
        self.proto = Recorder()
        self.stream = StreamServer(self.dispatch)(sock, self.proto, addr, None, 0, reactor)
        self.proto.makeConnection(self.stream)

    def _release(self):
        if not self.stream.disconnected:
            self.stream.abortConnection()
            return self.wait_until(lambda: self.stream.disconnected).addCallback(
                lambda _: self.dispatch.release())
        self.dispatch.release()

    def test_bytes_both_ways(self):
        self.assertEqual(self.proto.made, 1)
        self.assertIs(self.dispatch.streams[self.stream.fileno()], self.stream)
        self.peer.sendall(b"hello")
        d = self.wait_until(lambda: self.proto.data == b"hello")

        def wrote(_):
            # Nothing queued: the write is sent in the call itself.
            self.stream.write(b"world")
            self.assertFalse(has_unsent(self.stream))
            self.peer.settimeout(2)
            self.assertEqual(self.peer.recv(100), b"world")
            self.stream.writeSequence([b"a", b"b", b"c"])
            self.assertEqual(self.peer.recv(100), b"abc")
            self.assertIsInstance(self.proto.received[0], bytes)
        return d.addCallback(wrote)

    def test_addresses(self):
        peer = self.stream.getPeer()
        self.assertEqual(peer, IPv4Address("TCP", *self.peer.getsockname()))
        self.assertEqual(self.stream.getHost(), IPv4Address("TCP", *self.peer.getpeername()))
        self.stream.setTcpNoDelay(True)
        self.assertTrue(self.stream.getTcpNoDelay())
        self.assertIs(self.stream.getHandle(), self.stream.socket)

    @defer.inlineCallbacks
    def test_peer_fin_is_connection_done_once(self):
        fd = self.stream.fileno()
        self.peer.shutdown(socket.SHUT_WR)
        yield self.wait_until(lambda: self.proto.lost)
        self.assertEqual(len(self.proto.lost), 1)
        self.assertTrue(self.proto.lost[0].check(error.ConnectionDone))
        self.assertNotIn(fd, self.dispatch.streams)
        self.assertEqual(self.stream.fileno(), -1)
        self.assertFalse(self.stream.connected)
        # Late calls on a closed stream do nothing.
        self.stream.write(b"x")
        self.stream.loseConnection()
        self.stream.abortConnection()
        yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(len(self.proto.lost), 1)

    @defer.inlineCallbacks
    def test_peer_reset_is_connection_lost(self):
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.peer.close()
        yield self.wait_until(lambda: self.proto.lost)
        self.assertEqual(len(self.proto.lost), 1)
        self.assertTrue(self.proto.lost[0].check(error.ConnectionLost))
        self.assertFalse(self.proto.lost[0].check(error.ConnectionDone))

    @defer.inlineCallbacks
    def test_backpressure_pauses_and_resumes_the_producer_in_order(self):
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        producer = Producer()
        self.stream.registerProducer(producer, True)
        block = bytes(range(256)) * 512  # 128 KiB
        self.stream.write(block)
        self.assertTrue(has_unsent(self.stream))
        self.assertTrue(self.stream.mask & _OUT)
        self.assertEqual(producer.calls, ["pause"])  # past the high-water mark
        self.stream.write(b"tail")  # queued behind, never before
        self.assertEqual(producer.calls, ["pause", "pause"])  # (each write past it, as Twisted)
        self.assertEqual(unsent_bytes(self.stream), self.stream.unsent)
        got = []
        while sum(map(len, got)) < len(block) + 4:
            yield task.deferLater(reactor, 0, lambda: None)
            got.append(_drain_peer(self.peer))
        self.assertEqual(b"".join(got), block + b"tail")
        yield self.wait_until(lambda: not has_unsent(self.stream))
        self.assertEqual(producer.calls, ["pause", "pause", "resume"])
        self.assertFalse(self.stream.mask & _OUT)
        self.assertTrue(self.stream.mask & _IN)

    @defer.inlineCallbacks
    def test_lose_connection_after_the_queue_drained(self):
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        block = b"z" * (512 * 1024)
        self.stream.write(block)
        self.stream.loseConnection()
        self.assertEqual(self.proto.lost, [])  # never inside the call
        self.assertTrue(self.stream.disconnecting)
        got = b""
        while not got.endswith(b"<EOF>"):
            yield task.deferLater(reactor, 0.001, lambda: None)
            got += _drain_peer(self.peer)
        self.assertEqual(got, block + b"<EOF>")
        yield self.wait_until(lambda: self.proto.lost)
        self.assertTrue(self.proto.lost[0].check(error.ConnectionDone))
        self.assertEqual(len(self.proto.lost), 1)

    @defer.inlineCallbacks
    def test_abort_resets_on_the_next_turn(self):
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.stream.write(b"q" * (512 * 1024))
        producer = Producer()
        self.stream.registerProducer(producer, True)
        self.stream.abortConnection()
        self.assertEqual(self.proto.lost, [])
        self.assertFalse(has_unsent(self.stream))  # dropped
        yield self.wait_until(lambda: self.proto.lost)
        self.assertTrue(self.proto.lost[0].check(error.ConnectionAborted))
        self.assertEqual(producer.calls[-1], "stop")  # the producer is told
        self.peer.settimeout(2)
        with self.assertRaises(ConnectionResetError):
            while self.peer.recv(1 << 20):
                pass
        self.stream.abortConnection()
        yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(len(self.proto.lost), 1)

    @defer.inlineCallbacks
    def test_answer_and_close_from_data_received(self):
        def answer(data):
            self.stream.write(b"bye:" + data)
            self.stream.loseConnection()
            self.assertEqual(self.proto.lost, [])

        self.proto.dataReceived = answer
        self.peer.sendall(b"x")
        yield self.wait_until(lambda: self.proto.lost)
        self.assertTrue(self.proto.lost[0].check(error.ConnectionDone))
        self.assertEqual(self.dispatch.closing, [])
        self.peer.settimeout(2)
        got = b""
        while True:
            chunk = self.peer.recv(100)
            if not chunk:
                break
            got += chunk
        self.assertEqual(got, b"bye:x")

    @defer.inlineCallbacks
    def test_pause_stops_reading_until_resumed(self):
        self.stream.pauseProducing()
        self.assertNotIn(self.stream.fileno(), self.dispatch.streams)
        self.peer.sendall(b"waiting")
        yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(self.proto.received, [])
        self.stream.resumeProducing()
        yield self.wait_until(lambda: self.proto.data == b"waiting")

    @defer.inlineCallbacks
    def test_producer_registered_after_the_end_is_stopped(self):
        self.peer.shutdown(socket.SHUT_WR)
        yield self.wait_until(lambda: self.proto.lost)
        producer = Producer()
        self.stream.registerProducer(producer, True)
        self.assertEqual(producer.calls, ["stop"])
        self.assertIsNone(self.stream.producer)

    @defer.inlineCallbacks
    def test_a_protocol_error_loses_the_connection_once(self):
        def boom(data):
            raise ValueError("boom")

        self.proto.dataReceived = boom
        self.peer.sendall(b"x")
        yield self.wait_until(lambda: self.proto.lost)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertTrue(self.proto.lost[0].check(ValueError))
        self.assertEqual(len(self.proto.lost), 1)


class IPv6Tests(WaitMixin, TestCase):
    def test_ipv6_addresses(self):
        try:
            listener = socket.socket(socket.AF_INET6)
            listener.bind(("::1", 0))
        except OSError:
            raise self.skipTest("no IPv6 loopback")
        listener.listen(1)
        self.addCleanup(listener.close)
        peer = socket.create_connection(listener.getsockname()[:2])
        self.addCleanup(peer.close)
        sock, addr = listener.accept()
        sock.setblocking(False)
        dispatch = Dispatcher(reactor)
        stream = Stream(sock, Recorder(), dispatch, reactor, addr)
        self.addCleanup(stream._lost, transport_module._DONE)
        self.assertEqual(stream.getPeer(), IPv6Address("TCP", "::1", peer.getsockname()[1]))
        self.assertEqual(stream.getHost().port, listener.getsockname()[1])
        self.assertIsInstance(stream.getHost(), IPv6Address)


class _Factory(protocol.ClientFactory):
    def __init__(self):
        self.failed = []
        self.built = []
        self.lost = []

    def buildProtocol(self, addr):
        proto = Recorder()
        proto.addr = addr
        self.built.append(proto)
        return proto

    def clientConnectionFailed(self, connector, reason):
        self.failed.append((connector, reason))

    def clientConnectionLost(self, connector, reason):
        self.lost.append(reason)


class ConnectorTests(WaitMixin, TestCase):
    def setUp(self):
        self.dispatch = Dispatcher(reactor)
        self.dispatch.acquire()
        self.addCleanup(self.dispatch.release)

    @defer.inlineCallbacks
    def test_connects_and_relays(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        factory = _Factory()
        connector = connect_tcp(reactor, self.dispatch, "127.0.0.1", port, factory, 5)
        self.assertIsInstance(connector, Connector)
        self.assertEqual(connector.state, "connecting")
        yield self.wait_until(lambda: factory.built and factory.built[0].made)
        proto = factory.built[0]
        self.assertEqual(connector.state, "connected")
        self.assertEqual(proto.addr, IPv4Address("TCP", "127.0.0.1", port))
        stream = proto.transport
        self.assertIsInstance(stream, Stream)
        self.assertIs(self.dispatch.streams[stream.fileno()], stream)
        self.assertEqual(stream.getPeer(), IPv4Address("TCP", "127.0.0.1", port))
        peer, _ = listener.accept()
        self.addCleanup(peer.close)
        stream.write(b"GET")
        peer.settimeout(2)
        self.assertEqual(peer.recv(10), b"GET")
        peer.sendall(b"200")
        yield self.wait_until(lambda: proto.data == b"200")
        peer.shutdown(socket.SHUT_WR)
        yield self.wait_until(lambda: proto.lost)
        self.assertTrue(proto.lost[0].check(error.ConnectionDone))
        self.assertEqual(len(factory.lost), 1)
        self.assertEqual(connector.state, "disconnected")
        self.assertEqual(factory.failed, [])

    @defer.inlineCallbacks
    def test_connects_over_ipv6(self):
        try:
            listener = socket.socket(socket.AF_INET6)
            listener.bind(("::1", 0))
        except OSError:
            raise self.skipTest("no IPv6 loopback")
        listener.listen(1)
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        factory = _Factory()
        connect_tcp(reactor, self.dispatch, "::1", port, factory, 5)
        yield self.wait_until(lambda: factory.built and factory.built[0].made)
        stream = factory.built[0].transport
        self.assertEqual(stream.getPeer(), IPv6Address("TCP", "::1", port))
        self.assertEqual(factory.built[0].addr, IPv6Address("TCP", "::1", port))
        stream.abortConnection()
        yield self.wait_until(lambda: factory.built[0].lost)

    @defer.inlineCallbacks
    def test_refused_is_twisteds_refused(self):
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        factory = _Factory()
        connector = connect_tcp(reactor, self.dispatch, "127.0.0.1", port, factory, 5)
        self.assertEqual(factory.failed, [])  # never inside the call
        yield self.wait_until(lambda: factory.failed)
        got, reason = factory.failed[0]
        self.assertIs(got, connector)
        self.assertTrue(reason.check(error.ConnectionRefusedError))
        self.assertEqual(describe_connect_error(reason), "connect refused")
        self.assertEqual(connector.state, "disconnected")
        self.assertEqual(self.dispatch.streams, {})

    def test_timeout_is_twisteds_timeout(self):
        clock = task.Clock()
        factory = _Factory()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.addCleanup(listener.close)
        # The dispatcher is not polled here: the connect never completes
        # for us, and the deadline ends it.
        connector = Connector(self.dispatch, clock, "127.0.0.1", listener.getsockname()[1],
                              factory, 0.5)
        clock.advance(0.4)
        self.assertEqual(factory.failed, [])
        clock.advance(0.2)
        [(_, reason)] = factory.failed
        self.assertTrue(reason.check(error.TimeoutError))
        self.assertEqual(describe_connect_error(reason), "connect timeout")
        self.assertEqual(connector.state, "disconnected")
        self.assertEqual(self.dispatch.streams, {})
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop_connecting(self):
        clock = task.Clock()
        factory = _Factory()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.addCleanup(listener.close)
        connector = Connector(self.dispatch, clock, "127.0.0.1", listener.getsockname()[1],
                              factory, 5)
        connector.stopConnecting()
        [(_, reason)] = factory.failed
        self.assertTrue(reason.check(error.UserError))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertRaises(error.NotConnectingError, connector.stopConnecting)
        self.assertEqual(factory.built, [])

    def test_without_a_dispatcher_the_reactor_connects(self):
        calls = []

        class FakeReactor:
            def connectTCP(self, *args, **kw):
                calls.append((args, kw))
                return "twisted"

        self.assertEqual(connect_tcp(FakeReactor(), None, "127.0.0.1", 80, "f", 3), "twisted")
        self.assertEqual(connect_tcp(FakeReactor(), self.dispatch, "member.example", 80, "f", 3),
                         "twisted")
        self.assertEqual(calls[0], (("127.0.0.1", 80, "f"), {"timeout": 3}))


# -- the send queue, against a fake socket and a fake epoll set ------------------


class FakeSocket:
    """Takes at most ``room`` bytes per send (then would block)."""

    def __init__(self):
        self.room = 1 << 30
        self.sent = []
        self.closed = False
        self.error = None
        self.options = []

    def setblocking(self, flag):
        pass

    def fileno(self):
        return -1 if self.closed else 42

    def send(self, data):
        if self.error is not None:
            raise OSError(self.error, "error")
        n = min(len(data), self.room)
        if not n:
            raise BlockingIOError(errno.EAGAIN, "would block")
        self.room -= n
        self.sent.append(bytes(data[:n]))
        return n

    def recv(self, size):
        if self.error is not None:
            raise OSError(self.error, "error")
        raise BlockingIOError(errno.EAGAIN, "would block")

    def setsockopt(self, *args):
        self.options.append(args)

    def close(self):
        self.closed = True


class FakeDispatch:
    def __init__(self):
        self.masks = {}
        self.users = 0
        self.ctl = 0
        self.serving = False
        self.closing = []

    def close_soon(self, stream):
        self.closing.append(stream)

    def acquire(self):
        self.users += 1

    def release(self):
        self.users -= 1

    def watch(self, stream, old, new):
        self.ctl += 1
        assert self.masks.get(stream, 0) == old
        if new:
            self.masks[stream] = new
        else:
            del self.masks[stream]

    def forget(self, stream):
        self.masks.pop(stream, None)


class QueueTests(TestCase):
    def setUp(self):
        self.sock = FakeSocket()
        self.dispatch = FakeDispatch()
        self.clock = task.Clock()
        self.proto = Recorder()
        self.stream = Stream(self.sock, self.proto, self.dispatch, self.clock,
                             ("127.0.0.1", 1234))
        self.stream._want(_IN)
        self.proto.makeConnection(self.stream)

    def sent(self) -> bytes:
        return b"".join(self.sock.sent)

    def test_partial_send_queues_the_rest_and_waits_to_write(self):
        self.sock.room = 3
        self.stream.write(b"abcdef")
        self.assertEqual(self.sent(), b"abc")
        self.assertEqual(self.stream.unsent, 3)
        self.assertEqual(self.dispatch.masks[self.stream], _IN | _OUT)
        self.stream.write(b"gh")  # behind the queue: not sent now
        self.assertEqual(self.sent(), b"abc")
        self.sock.room = 2
        self.stream.doWrite()
        self.assertEqual(self.sent(), b"abcde")
        self.sock.room = 100
        self.stream.doWrite()
        self.assertEqual(self.sent(), b"abcdefgh")
        self.assertEqual(self.stream.unsent, 0)
        self.assertEqual(self.dispatch.masks[self.stream], _IN)

    def test_send_through_send_py(self):
        self.assertTrue(send(self.stream, b"via send"))  # all of it went at once
        self.assertEqual(self.sent(), b"via send")
        self.assertEqual(self.dispatch.ctl, 1)  # only the first registration
        self.sock.room = 2
        self.assertFalse(send(self.stream, b"part"))  # the caller wants backpressure
        self.assertFalse(send(self.stream, b"queued"))
        self.assertEqual(unsent_bytes(self.stream), 8)

    def test_high_water_pauses_and_drain_resumes(self):
        producer = Producer()
        self.stream.registerProducer(producer, True)
        self.sock.room = 0
        self.stream.write(b"x" * HIGH_WATER)
        self.assertEqual(producer.calls, [])  # at the mark, not past it
        self.stream.write(b"y")
        self.assertEqual(producer.calls, ["pause"])
        self.sock.room = HIGH_WATER
        self.stream.doWrite()
        self.assertEqual(producer.calls, ["pause"])  # not drained yet
        self.sock.room = 1
        self.stream.doWrite()
        self.assertEqual(producer.calls, ["pause", "resume"])
        self.assertEqual(self.sent(), b"x" * HIGH_WATER + b"y")
        self.stream.unregisterProducer()
        self.assertIsNone(self.stream.producer)

    def test_second_producer_is_refused(self):
        self.stream.registerProducer(Producer(), True)
        self.assertRaises(RuntimeError, self.stream.registerProducer, Producer(), True)

    def test_lose_connection_waits_for_the_queue_then_closes(self):
        self.sock.room = 1
        self.stream.write(b"abc")
        self.stream.loseConnection()
        self.assertEqual(self.dispatch.masks[self.stream], _OUT)  # reading stopped
        self.assertEqual(self.proto.lost, [])
        self.sock.room = 100
        self.stream.doWrite()
        self.assertEqual(self.sent(), b"abc")
        self.assertTrue(self.sock.closed)
        self.assertEqual(len(self.proto.lost), 1)
        self.assertTrue(self.proto.lost[0].check(error.ConnectionDone))
        self.assertEqual(self.dispatch.masks, {})
        self.assertEqual(self.dispatch.users, 0)

    def test_lose_connection_waits_for_a_paused_producer_as_twisted_does(self):
        producer = Producer()
        self.stream.registerProducer(producer, True)
        self.sock.room = 0
        self.stream.write(b"z" * (HIGH_WATER + 1))
        self.stream.loseConnection()
        self.sock.room = 1 << 20
        self.stream.doWrite()
        # Drained: the paused producer is resumed first, the close waits
        # for it to be unregistered.
        self.assertEqual(producer.calls, ["pause", "resume"])
        self.assertEqual(self.proto.lost, [])
        self.stream.unregisterProducer()
        self.assertTrue(self.dispatch.masks[self.stream] & _OUT)
        self.stream.doWrite()
        self.assertTrue(self.proto.lost[0].check(error.ConnectionDone))

    def test_send_error_is_reported_when_writable(self):
        self.sock.error = errno.ECONNRESET
        self.stream.write(b"abc")  # no connectionLost inside write
        self.assertEqual(self.proto.lost, [])
        self.assertTrue(self.dispatch.masks[self.stream] & _OUT)
        self.stream.on_event(_OUT | transport_module._HUP)
        self.assertEqual(len(self.proto.lost), 1)
        self.assertTrue(self.proto.lost[0].check(error.ConnectionLost))

    def test_abort_drops_the_queue_and_resets(self):
        self.sock.room = 1
        self.stream.write(b"abc")
        self.stream.abortConnection()
        self.stream.write(b"more")
        self.assertEqual(self.dispatch.masks, {})
        self.assertEqual(self.proto.lost, [])
        self.clock.advance(0)
        self.assertEqual(len(self.proto.lost), 1)
        self.assertTrue(self.proto.lost[0].check(error.ConnectionAborted))
        self.assertIn((socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)),
                      self.sock.options)
        self.assertEqual(self.sent(), b"a")

    def test_lose_connection_inside_a_round_closes_at_its_end(self):
        self.dispatch.serving = True
        ctl = self.dispatch.ctl
        self.stream.loseConnection()
        self.assertEqual(self.dispatch.closing, [self.stream])
        self.assertEqual(self.proto.lost, [])
        self.stream.doRead()  # nothing is read meanwhile (the fake would raise)
        self.stream.close_now()
        self.assertEqual(len(self.proto.lost), 1)
        self.assertTrue(self.proto.lost[0].check(error.ConnectionDone))
        self.assertEqual(self.dispatch.ctl, ctl)  # no epoll_ctl for it
        self.assertTrue(self.sock.closed)

    def test_bytes_written_before_the_rounds_end_are_sent_first(self):
        self.dispatch.serving = True
        self.stream.loseConnection()
        self.sock.room = 2
        self.stream.write(b"late")
        self.stream.close_now()
        self.assertEqual(self.proto.lost, [])
        self.assertEqual(self.dispatch.masks[self.stream], _OUT)
        self.sock.room = 10
        self.stream.doWrite()
        self.assertEqual(self.sent(), b"late")
        self.assertTrue(self.proto.lost[0].check(error.ConnectionDone))

    def test_abort_after_lose_connection_is_an_abort(self):
        self.dispatch.serving = True
        self.stream.loseConnection()
        self.stream.abortConnection()
        self.stream.close_now()
        self.clock.advance(0)
        self.assertEqual(len(self.proto.lost), 1)
        self.assertTrue(self.proto.lost[0].check(error.ConnectionAborted))

    def test_lost_comes_once_whatever_happens(self):
        self.stream._lost(failure.Failure(error.ConnectionLost()))
        self.stream._lost(failure.Failure(error.ConnectionDone()))
        self.stream.connectionLost(None)
        self.assertEqual(len(self.proto.lost), 1)
