"""The member side's read states (lbframe.protocols.relay.Side): first
response, peeking, relaying — on real socket pairs pumped by hand."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from lbframe.protocols.engine import ReactorIO
from lbframe.protocols.relay import Relay
from tests.protocols.test_relay import _pair, pump


class _TimedRelay(Relay):
    __slots__ = ("firsts",)
    wants_first_response = True

    def first_response(self) -> None:
        self.firsts += 1


class ReadStateTests(SynchronousTestCase):
    def make(self, relay_class=Relay, peeker=None):
        reactor = MemoryReactorClock()
        c_app, c_lb = _pair()
        m_lb, m_app = _pair()
        self.addCleanup(c_app.close)
        self.addCleanup(m_app.close)
        relay = relay_class(ReactorIO(reactor), c_lb, lambda r, why: None)
        if relay_class is _TimedRelay:
            relay.firsts = 0
        relay.set_member(m_lb, peeker=peeker)
        relay.start()
        return reactor, relay, c_app, m_app

    def test_plain_side_relays(self):
        reactor, relay, c_app, m_app = self.make()
        self.assertEqual(relay.member.doRead, relay.member.relay_read)
        m_app.send(b"hello")
        pump(reactor)
        self.assertEqual(c_app.recv(100), b"hello")

    def test_first_response_told_once_then_relaying(self):
        reactor, relay, c_app, m_app = self.make(_TimedRelay)
        self.assertEqual(relay.member.doRead, relay.member._first_read)
        m_app.send(b"one")
        pump(reactor)
        self.assertEqual(relay.firsts, 1)
        self.assertEqual(relay.member.doRead, relay.member.relay_read)
        m_app.send(b"two")
        pump(reactor)
        self.assertEqual(relay.firsts, 1)
        self.assertEqual(c_app.recv(100), b"onetwo")

    def test_peeker_sees_what_is_relayed_until_it_stops(self):
        seen = []

        def peeker(chunk):
            seen.append(chunk)
            if len(seen) == 2:
                relay.member.stop_peeking()

        reactor, relay, c_app, m_app = self.make(_TimedRelay, peeker=peeker)
        for chunk in (b"first", b"second", b"third"):
            m_app.send(chunk)
            pump(reactor)
        self.assertEqual(seen, [b"first", b"second"])
        self.assertEqual(relay.firsts, 1)
        self.assertEqual(relay.member.doRead, relay.member.relay_read)
        self.assertEqual(c_app.recv(100), b"firstsecondthird")

    def test_peeker_told_of_the_end(self):
        seen = []
        reactor, relay, c_app, m_app = self.make(peeker=seen.append)
        m_app.send(b"partial")
        pump(reactor)
        m_app.shutdown(1)
        pump(reactor)
        self.assertEqual(seen, [b"partial", b""])
        self.assertIsNone(relay.member.peeker)
        self.assertEqual(c_app.recv(100), b"partial")
