"""start_listening's promises that the contract's real sockets cannot show:
an endpoint whose listen() answers later (http, any Twisted endpoint), a
failure after another endpoint bound, stop_listening while a listen() is
under way; and ListenOutcome itself."""

from __future__ import annotations

import errno
import socket

import attrs
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lbframe.config import parse_site
from lbframe.errors import ListenError
from lbframe.plugins import load_plugins
from lbframe.protocols.accept import AcceptGate
from lbframe.protocols.http.server import HTTPVirtualServer
from lbframe.protocols.listening import ListenOutcome, why_not
from lbframe.service import build_runtime


class _Port:
    """A listening port as an endpoint gives it."""

    def __init__(self, port: int):
        self.port = port
        self.stopped = False
        self.reading = True
        self.connected, self.disconnecting = True, False

    def getHost(self):
        return IPv4Address("TCP", "127.0.0.1", self.port)

    def stopListening(self):
        self.stopped = True
        return defer.succeed(None)

    def startReading(self):
        self.reading = True

    def stopReading(self):
        self.reading = False


@attrs.define
class _LaterListener:
    """A ``listen`` endpoint whose listen() answers when the test says."""

    description: str
    tls: object = None
    pending: list = attrs.field(factory=list)

    def listen(self, reactor, factory, gate):
        d = defer.Deferred()
        self.pending.append(d)
        return d


class AsynchronousListenTests(SynchronousTestCase):
    def server(self, *listeners):
        text = ("[virtual v]\nlisten = tcp:0:interface=127.0.0.1\nprotocol = http\npool = p\n"
                "[pool p]\nmember a = 127.0.0.1:1\n")
        reactor = MemoryReactorClock()
        runtime = build_runtime(parse_site(text, "/tmp/site.ini"),
                                load_plugins(entry_points=False), reactor)
        settings = attrs.evolve(runtime.protocols["v"].settings, listen=tuple(listeners))
        self.gate = AcceptGate(reactor, limit=100)
        return HTTPVirtualServer(runtime.balancers["v"], settings, reactor, gate=self.gate)

    def outcome(self, d):
        got = []
        d.addBoth(got.append)
        return got

    def test_listen_answering_later(self):
        later = _LaterListener("unix:/run/later")
        svc = self.server(later)
        svc.privilegedStartService()
        svc.startService()
        first, second = self.outcome(svc.start_listening()), self.outcome(svc.start_listening())
        self.assertEqual((first, second, svc.addresses()), ([], [], []))
        self.assertNotIn(svc, self.gate.listeners)
        port = _Port(8080)
        later.pending[0].callback(port)
        self.assertEqual((first, second), ([None], [None]))
        self.assertEqual([a.port for a in svc.addresses()], [8080])
        self.assertIn(svc, self.gate.listeners)  # accepting, under the gate
        self.assertEqual(len(later.pending), 1, "listened twice")
        self.assertEqual(self.outcome(svc.stopService()), [None])
        self.assertTrue(port.stopped)

    def test_failure_after_another_endpoint_bound_closes_it(self):
        one, two = _LaterListener("tcp:8080"), _LaterListener("tcp:8081")
        svc = self.server(one, two)
        svc.privilegedStartService()  # no SystemExit, whatever happens
        got = self.outcome(svc.start_listening())
        bound = _Port(8080)
        one.pending[0].callback(bound)
        self.assertEqual(got, [])
        error = CannotListenError("", 8081, OSError(errno.EADDRINUSE, "Address already in use"))
        two.pending[0].errback(Failure(error))
        self.assertTrue(bound.stopped, "the endpoint that did bind was left bound")
        failure = got[0]
        self.assertIsInstance(failure.value, ListenError)
        self.assertEqual(str(failure.value),
                         "virtual v: cannot listen on tcp:8081: Address already in use")
        self.assertEqual(svc.addresses(), [])
        again = self.outcome(svc.start_listening())
        self.assertIs(again[0].value, failure.value)

    def test_stop_listening_while_listen_is_under_way(self):
        later = _LaterListener("unix:/run/later")
        svc = self.server(later)
        svc.startService()
        stopped = self.outcome(svc.stop_listening())
        self.assertEqual(stopped, [], "fired before the listen() under way answered")
        port = _Port(8080)
        later.pending[0].callback(port)
        self.assertEqual(stopped, [None])
        self.assertTrue(port.stopped)
        self.assertEqual(svc.addresses(), [])
        self.assertNotIn(svc, self.gate.listeners)
        svc.stopService()


class ListenOutcomeTests(SynchronousTestCase):
    def test_every_caller_gets_the_first_outcome(self):
        binding = defer.Deferred()
        outcome = ListenOutcome(binding)
        early = []
        outcome.deferred().addBoth(early.append)
        self.assertFalse(outcome.done)
        error = ListenError("v", "tcp:1", "Permission denied")
        binding.errback(Failure(error))
        late = []
        outcome.deferred().addBoth(late.append)
        self.assertIs(early[0].value, error)
        self.assertIs(late[0].value, error)
        self.assertFalse(outcome.succeeded)
        self.assertIsNone(binding.result)  # consumed: no "unhandled error" at collection

    def test_success_fires_none_and_keeps_the_value(self):
        outcome = ListenOutcome(defer.succeed(["port"]))
        got = []
        outcome.deferred().addBoth(got.append)
        self.assertEqual(got, [None])
        self.assertEqual(outcome.value, ["port"])

    def test_why_not_in_the_operators_words(self):
        refused = CannotListenError("", 80, socket.error(errno.EACCES, "Permission denied"))
        self.assertEqual(why_not(Failure(refused)), "Permission denied")
        self.assertEqual(why_not(Failure(ValueError("bad"))), "bad")
