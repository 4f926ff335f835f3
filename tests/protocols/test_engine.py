"""The relay engine: a real epoll set, dispatched by hand."""

from __future__ import annotations

import socket

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from lbframe.protocols.engine import RelayEngine


class Recorder:
    def __init__(self, sock):
        self.sock = sock
        self.calls = []

    def fileno(self):
        return self.sock.fileno()

    def doRead(self):
        self.calls.append(("read", self.sock.recv(100)))

    def doWrite(self):
        self.calls.append(("write",))

    def connectionLost(self, reason):
        self.calls.append(("lost",))


class EngineTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactor()
        self.engine = RelayEngine(self.reactor)
        self.addCleanup(self.engine.epoll.close)
        self.a, self.b = socket.socketpair()
        self.addCleanup(self.a.close)
        self.addCleanup(self.b.close)
        self.desc = Recorder(self.a)

    def test_registered_with_reactor_while_in_use(self):
        self.engine.acquire()
        self.engine.acquire()
        self.assertIn(self.engine, self.reactor.getReaders())
        self.engine.release()
        self.assertIn(self.engine, self.reactor.getReaders())
        self.engine.release()
        self.assertNotIn(self.engine, self.reactor.getReaders())

    def test_dispatches_reads_and_writes(self):
        self.engine.addReader(self.desc)
        self.engine.doRead()
        self.assertEqual(self.desc.calls, [])
        self.b.send(b"hi")
        self.engine.doRead()
        self.assertEqual(self.desc.calls, [("read", b"hi")])
        self.engine.addWriter(self.desc)  # a socketpair is writable at once
        self.engine.removeReader(self.desc)
        self.engine.doRead()
        self.assertEqual(self.desc.calls[-1], ("write",))
        self.engine.removeWriter(self.desc)
        self.assertEqual(self.engine.masks, {})

    def test_hang_up_is_a_lost_connection_even_if_writable(self):
        self.engine.addWriter(self.desc)
        self.b.close()
        self.engine.doRead()
        # (the recorder stays registered, so each polling round reports it again)
        self.assertEqual(set(self.desc.calls), {("lost",)})

    def test_forget_drops_the_books_without_a_system_call(self):
        self.engine.addReader(self.desc)
        self.engine.forget(self.desc)
        self.assertEqual((self.engine.masks, self.engine.descriptors), ({}, {}))
        self.b.send(b"x")
        # still in the kernel's set (we did not unregister), but unknown: ignored
        self.engine.doRead()
        self.assertEqual(self.desc.calls, [])
