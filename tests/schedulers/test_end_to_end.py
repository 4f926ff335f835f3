"""Schedulers through a real tcp virtual server on 127.0.0.1, with held connections."""

from __future__ import annotations

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

from tests.protocols.test_tcp import TCPSiteMixin


class NamedEcho(protocol.Protocol):
    """Answers every read with its name, after ``delay`` seconds."""

    def __init__(self, name: str, delay: float):
        self.name, self.delay = name.encode(), delay

    def dataReceived(self, data):
        if self.delay:
            reactor.callLater(self.delay, self.answer)
        else:
            self.answer()

    def answer(self):
        if self.transport.connected:
            self.transport.write(self.name)


class LiveSchedulerTests(TCPSiteMixin, TestCase):
    def members(self, **delays) -> str:
        lines = []
        for name, spec in delays.items():
            delay, extra = spec if isinstance(spec, tuple) else (spec, "")
            port = reactor.listenTCP(0, protocol.Factory.forProtocol(
                lambda n=name, d=delay: NamedEcho(n, d)), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            lines.append(f"member {name} = 127.0.0.1:{port.getHost().port} {extra}")
        return "\n".join(lines)

    def site(self, scheduler: str, members: str, pool_extra: str = "", **kw):
        self.vport, self.runtime, self.svc = self.serve_virtual(
            f"scheduler = {scheduler}\n{pool_extra}\n{members}", **kw)
        return self.runtime.pools["p"]

    @defer.inlineCallbacks
    def hold(self):
        """Open a connection, send, wait for the answer; keep it open."""
        client = yield self.connect(self.vport)
        client.transport.write(b"?")
        yield client.got_data
        return client

    @defer.inlineCallbacks
    def close(self, client):
        client.transport.loseConnection()
        yield client.lost
        yield self.wait_until(lambda: sum(m.active for m in self.pool.members.values())
                              == len(self.held) - 1)
        self.held.remove(client)

    @defer.inlineCallbacks
    def test_least_connections_after_some_close(self):
        self.pool = self.site("least-connections", self.members(a=0, b=0, c=0))
        self.held = []
        for _ in range(6):
            self.held.append((yield self.hold()))
        self.assertEqual({n: m.active for n, m in self.pool.members.items()},
                         {"a": 2, "b": 2, "c": 2})
        for client in [c for c in self.held if c.received == b"a"]:
            yield self.close(client)
        for _ in range(2):
            client = yield self.hold()
            self.held.append(client)
            self.assertEqual(client.received, b"a")
        self.assertEqual({n: m.active for n, m in self.pool.members.items()},
                         {"a": 2, "b": 2, "c": 2})

    @defer.inlineCallbacks
    def test_priority_overflow_and_return(self):
        self.pool = self.site("priority", self.members(
            a=(0, "priority=1 maxconn=2"), b=(0, "priority=2")))
        self.held = []
        for _ in range(2):
            self.held.append((yield self.hold()))
        self.assertEqual([c.received for c in self.held], [b"a", b"a"])
        third = yield self.hold()
        self.held.append(third)
        self.assertEqual(third.received, b"b")  # group 1 is full: overflow
        yield self.close(self.held[0])
        fourth = yield self.hold()
        self.held.append(fourth)
        self.assertEqual(fourth.received, b"a")  # room again: back to group 1

    @defer.inlineCallbacks
    def test_response_time_prefers_the_faster_member(self):
        self.pool = self.site("response-time", self.members(fast=0, slow=0.15),
                              real_clock=True)
        answers = []
        for _ in range(12):
            client = yield self.hold()
            answers.append(client.received)
            client.transport.loseConnection()
            yield client.lost
        # each is tried once to get a sample, then the faster one gets the rest
        self.assertEqual(sorted(answers[:2]), [b"fast", b"slow"])
        self.assertEqual(answers[2:], [b"fast"] * 10)
        slow = self.pool.members["slow"].response_time
        fast = self.pool.members["fast"].response_time
        self.assertGreater(slow - fast, 0.14)
