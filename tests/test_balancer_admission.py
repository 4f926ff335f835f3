"""Admission: the queue (queue_timeout), the sorry pool, backup members, slow start."""

from __future__ import annotations

import random

from twisted.internet import defer, protocol, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbframe.config.model import Monitor, Pool
from lbframe.monitoring import MonitorRunner
from lbframe.monitors.tcp import TCPMonitor
from lbframe.runtime import PoolState
from lbframe.schedulers.weighted import Weighted
from tests.helpers import member_spec
from tests.protocols.test_tcp import TCPSiteMixin


class SlowStartTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        spec = Pool("web", (member_spec("a", weight=10), member_spec("b", weight=10)),
                    scheduler="weighted", slow_start=10.0)
        self.pool = PoolState.build(spec, Weighted(), clock=self.clock)
        self.a = self.pool.members["a"]

    def bring_back(self):
        self.pool.report_check(self.a, "m", False, "down", rise=1, fall=1, now=0)
        self.assertEqual(self.a.state, "down")
        self.pool.report_check(self.a, "m", True, "", rise=1, fall=1, now=0)
        self.assertEqual(self.a.state, "up")

    def test_members_start_at_full_weight(self):
        self.assertEqual(self.a.effective_weight, 10)

    def test_weight_ramps_up_after_coming_back(self):
        self.bring_back()
        seen = [self.a.effective_weight]
        for _ in range(10):
            self.clock.advance(1)
            seen.append(self.a.effective_weight)
        self.assertEqual(seen, [1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # and the scheduler uses it: at weight 2 of 10+2, a gets 2 picks in 12
        self.bring_back()
        self.clock.advance(2)
        picks = [self.pool.scheduler.pick(None).name for _ in range(12)]
        self.assertEqual(picks.count("a"), 2)

    def test_going_down_again_stops_the_ramp(self):
        self.bring_back()
        self.clock.advance(3)
        self.pool.set_admin(self.a, "disabled")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.pool.set_admin(self.a, "enabled")  # back from maintenance: ramps again
        self.assertEqual(self.a.effective_weight, 1)

    def test_admin_weight_change_during_ramp(self):
        self.bring_back()
        self.clock.advance(5)
        self.pool.set_weight(self.a, 20)
        self.assertEqual(self.a.effective_weight, 10)  # half of the new weight
        self.clock.advance(5)
        self.assertEqual(self.a.effective_weight, 20)


class Waiter:
    def __init__(self, pool, log, name):
        self.pool, self.log, self.name = pool, log, name

    def wake(self):
        member = self.pool.scheduler.pick(None, ())
        if member is None:
            return False
        self.pool.take(member)
        self.log.append((self.name, member.name))
        return True


class QueueUnitTests(SynchronousTestCase):
    def test_fifo_and_wake_on_release_and_on_member_up(self):
        spec = Pool("web", (member_spec("a", maxconn=1),), queue_timeout=5.0)
        pool = PoolState.build(spec, Weighted())
        a = pool.members["a"]
        pool.take(a)
        self.assertTrue(pool.has_full_members())
        log = []
        for name in "xyz":
            self.assertTrue(pool.enqueue(Waiter(pool, log, name)))
        pool.release(a)
        self.assertEqual(log, [("x", "a")])  # one slot: only the oldest goes
        pool.set_admin(a, "disabled")
        pool.release(a)
        self.assertEqual(log, [("x", "a")])  # a is out: nobody can go
        pool.set_admin(a, "enabled")  # a is back: the next waiter goes at once
        self.assertEqual(log, [("x", "a"), ("y", "a")])
        self.assertEqual(len(pool.queue), 1)


class AdmissionTests(TCPSiteMixin, TestCase):
    """Real sockets on 127.0.0.1; timers on a Clock."""

    @defer.inlineCallbacks
    def held_site(self, extra_virtual="", extra=""):
        self.vport, self.runtime, self.svc = self.serve_virtual(
            f"queue_timeout = 5s\nmember a = 127.0.0.1:{self.echo_member()} maxconn=1",
            extra_virtual, extra, pool="main")
        first = yield self.connect(self.vport)
        first.transport.write(b"1")
        yield first.got_data
        return first

    @defer.inlineCallbacks
    def test_waits_for_room_then_is_served(self):
        first = yield self.held_site()
        second = yield self.connect(self.vport)
        second.transport.write(b"2")
        pool = self.runtime.pools["main"]
        yield self.wait_until(lambda: len(pool.queue) == 1)  # lbframe accepted it
        self.assertEqual(second.received, b"")
        first.transport.loseConnection()
        yield first.lost
        yield second.got_data  # served by a once first is gone
        self.assertEqual(second.received, b"2")
        self.assertEqual(pool.members["a"].total, 2)
        self.assertEqual(len(pool.queue), 0)

    @defer.inlineCallbacks
    def test_queue_timeout_then_sorry_pool(self):
        sorry_port = self.echo_member()
        yield self.held_site(extra_virtual="sorry = sorry",
                             extra=f"\n[pool sorry]\nmember s = 127.0.0.1:{sorry_port}\n")
        second = yield self.connect(self.vport)
        second.transport.write(b"2")
        yield self.wait_until(lambda: len(self.runtime.pools["main"].queue) == 1)
        self.clock.advance(4)
        self.assertEqual(self.runtime.pools["sorry"].members["s"].total, 0)
        self.clock.advance(1.5)
        yield second.got_data
        self.assertEqual(second.received, b"2")
        self.assertEqual(self.runtime.pools["sorry"].members["s"].total, 1)
        self.assertEqual(len(self.runtime.pools["main"].queue), 0)

    @defer.inlineCallbacks
    def test_queue_timeout_without_sorry_refuses(self):
        yield self.held_site()
        second = yield self.connect(self.vport)
        yield self.wait_until(lambda: len(self.runtime.pools["main"].queue) == 1)
        self.clock.advance(6)
        yield second.lost
        self.assertEqual(self.runtime.virtuals["v"].refused, 1)


class BackupTests(TCPSiteMixin, TestCase):
    @defer.inlineCallbacks
    def test_backup_takes_over_when_the_others_die_and_gives_back(self):
        ports = {}
        listeners = {}
        for name in "abc":
            listeners[name] = reactor.listenTCP(0, protocol.Factory.forProtocol(
                lambda name=name: Named(name)), interface="127.0.0.1")
            self.addCleanup(lambda n=name: listeners[n].stopListening())
            ports[name] = listeners[name].getHost().port
        vport, runtime, svc = self.serve_virtual(
            f"member a = 127.0.0.1:{ports['a']}\n"
            f"member b = 127.0.0.1:{ports['b']}\n"
            f"member c = 127.0.0.1:{ports['c']} backup")
        pool = runtime.pools["p"]
        # A real tcp monitor (connects on the reactor, scheduled on the Clock).
        spec = Monitor("alive", "tcp", interval=1, timeout=1, fall=1, rise=1)
        runner = MonitorRunner(self.clock, random.Random(0))
        for member in pool.members.values():
            runner.add(pool, member, spec, TCPMonitor(spec, {}, reactor))
        runner.startService()
        self.addCleanup(runner.stopService)

        @defer.inlineCallbacks
        def ask():
            client = yield self.connect(vport)
            client.transport.write(b"?")
            answer = yield client.got_data
            client.transport.loseConnection()
            yield client.lost
            return answer

        @defer.inlineCallbacks
        def asks(n):
            answers = []
            for _ in range(n):
                answers.append((yield ask()))
            return answers

        self.assertEqual(sorted((yield asks(4))), [b"a", b"a", b"b", b"b"])
        # a and b die; their monitor notices at its next check
        yield listeners["a"].stopListening()
        yield listeners["b"].stopListening()
        self.clock.advance(1)
        yield self.wait_until(lambda: [m.state for m in pool.members.values()]
                              == ["down", "down", "up"])
        self.assertEqual((yield asks(3)), [b"c"] * 3)
        # a comes back: the backup steps aside
        listeners["a"] = reactor.listenTCP(ports["a"], protocol.Factory.forProtocol(
            lambda: Named("a")), interface="127.0.0.1")
        self.addCleanup(listeners["a"].stopListening)
        self.clock.advance(1)
        yield self.wait_until(lambda: pool.members["a"].state == "up")
        self.assertEqual((yield asks(3)), [b"a"] * 3)


class Named(protocol.Protocol):
    def __init__(self, name):
        self.name = name.encode()

    def dataReceived(self, data):
        self.transport.write(self.name)
