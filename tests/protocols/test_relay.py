"""The byte relay: backpressure, half-close, errors — on real socket pairs
driven by hand through a MemoryReactor, so every step is deterministic."""

from __future__ import annotations

import hashlib
import os
import select
import socket

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from lbframe.protocols.engine import ReactorIO
from lbframe.protocols.relay import CHUNK, Relay


def _pair(small: bool = False):
    a, b = socket.socketpair()
    for s in (a, b):
        s.setblocking(False)
        if small:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return a, b


def pump(reactor, rounds: int = 10000) -> None:
    """Play the reactor: call doRead/doWrite of ready descriptors until idle."""
    for _ in range(rounds):
        readers = [r for r in reactor.readers if r.fileno() >= 0]
        writers = [w for w in reactor.writers if w.fileno() >= 0]
        if not readers and not writers:
            return
        r, w, _ = select.select(readers, writers, [], 0)
        if not r and not w:
            return
        for d in r:
            if d in reactor.readers:
                d.doRead()
        for d in w:
            if d in reactor.writers:
                d.doWrite()


class RelayTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.closed = []

    def make(self, small=False):
        c_app, c_lb = _pair(small)
        m_lb, m_app = _pair(small)
        relay = Relay(ReactorIO(self.reactor), c_lb, lambda r, why: self.closed.append(why),
                      member=m_lb)
        relay.start()
        self.addCleanup(c_app.close)
        self.addCleanup(m_app.close)
        return relay, c_app, m_app

    def test_bytes_both_ways(self):
        relay, c_app, m_app = self.make()
        c_app.send(b"hello member")
        pump(self.reactor)
        self.assertEqual(m_app.recv(100), b"hello member")
        m_app.send(b"hello client")
        pump(self.reactor)
        self.assertEqual(c_app.recv(100), b"hello client")
        self.assertEqual((relay.client.nbytes, relay.member.nbytes), (12, 12))

    def test_full_consumer_pauses_producer(self):
        """When the member cannot take more, the client is no longer read;
        at most one chunk is held; draining the member resumes the client."""
        relay, c_app, m_app = self.make(small=True)
        data = os.urandom(8 * CHUNK)
        sent = 0
        # Fill everything: the client's kernel buffers, the relay, the member's.
        for _ in range(10000):
            try:
                sent += c_app.send(data[sent:sent + 65536])
            except BlockingIOError:
                pass
            pump(self.reactor)
            if relay.client not in self.reactor.readers:
                break
        else:
            self.fail("the client was never paused")
        self.assertIn(relay.member, self.reactor.writers)
        self.assertIsNotNone(relay.member.pending)
        self.assertLessEqual(len(relay.member.pending), CHUNK)
        # More readable data on the client side changes nothing while paused.
        held = len(relay.member.pending)
        pump(self.reactor)
        self.assertNotIn(relay.client, self.reactor.readers)
        self.assertEqual(len(relay.member.pending), held)

        received = bytearray()
        while len(received) < sent:
            try:
                received += m_app.recv(1 << 20)
            except BlockingIOError:
                pass
            if sent < len(data):
                try:
                    sent += c_app.send(data[sent:sent + 65536])
                except BlockingIOError:
                    pass
            pump(self.reactor)
        self.assertEqual(bytes(received), data[:sent])
        self.assertIn(relay.client, self.reactor.readers)
        self.assertIsNone(relay.member.pending)

    def test_half_close_then_answer(self):
        """The client sends and shuts its write side; the member still
        answers, and the relay closes once both directions ended."""
        relay, c_app, m_app = self.make()
        c_app.sendall(b"request")
        c_app.shutdown(socket.SHUT_WR)
        pump(self.reactor)
        self.assertEqual(m_app.recv(100), b"request")
        self.assertEqual(m_app.recv(100), b"")  # EOF passed on
        self.assertFalse(relay.closed)
        m_app.sendall(b"answer")
        m_app.shutdown(socket.SHUT_WR)
        pump(self.reactor)
        self.assertEqual(c_app.recv(100), b"answer")
        self.assertEqual(c_app.recv(100), b"")
        self.assertEqual(self.closed, ["done"])

    def test_member_reset_closes_both(self):
        relay, c_app, m_app = self.make()
        m_app.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c_app.send(b"x")
        pump(self.reactor)
        m_app.close()
        c_app.send(b"more")
        pump(self.reactor)
        self.assertTrue(relay.closed)
        self.assertEqual(len(self.closed), 1)
        self.assertEqual(c_app.recv(100), b"")
        self.assertNotIn(relay.client, self.reactor.readers)
        self.assertNotIn(relay.member, self.reactor.readers)

    def test_large_transfer_intact_both_ways(self):
        relay, c_app, m_app = self.make()
        up, down = os.urandom(3 * CHUNK + 17), os.urandom(2 * CHUNK + 5)
        got_up, got_down = bytearray(), bytearray()
        su = sd = 0
        for _ in range(100000):
            if su < len(up):
                try:
                    su += c_app.send(up[su:su + 65536])
                except BlockingIOError:
                    pass
            if sd < len(down):
                try:
                    sd += m_app.send(down[sd:sd + 65536])
                except BlockingIOError:
                    pass
            pump(self.reactor)
            for s, buf in ((m_app, got_up), (c_app, got_down)):
                try:
                    buf += s.recv(1 << 20)
                except BlockingIOError:
                    pass
            if len(got_up) == len(up) and len(got_down) == len(down):
                break
        self.assertEqual(hashlib.sha256(got_up).digest(), hashlib.sha256(up).digest())
        self.assertEqual(hashlib.sha256(got_down).digest(), hashlib.sha256(down).digest())
