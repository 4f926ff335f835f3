"""What the relay needs from where its sockets wait (IRelayIO), declared
and provided by both the engine and the plain-reactor adapter."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from lbframe.protocols.engine import IRelayIO, ReactorIO, RelayEngine


class _Desc:
    def fileno(self):
        return 99


class RelayIOTests(SynchronousTestCase):
    def test_both_provide_irelayio(self):
        engine = RelayEngine(MemoryReactorClock())
        self.addCleanup(engine.epoll.close)
        self.assertTrue(verifyObject(IRelayIO, engine))
        self.assertTrue(verifyObject(IRelayIO, ReactorIO(MemoryReactorClock())))

    def test_reactor_io_switch_and_forget(self):
        reactor = MemoryReactorClock()
        io, desc = ReactorIO(reactor), _Desc()
        io.addWriter(desc)
        io.switch_to_reading(desc)
        self.assertEqual((desc in reactor.readers, desc in reactor.writers), (True, False))
        io.addWriter(desc)
        io.forget(desc)
        self.assertEqual((desc in reactor.readers, desc in reactor.writers), (False, False))
