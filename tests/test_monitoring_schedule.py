"""Monitor scheduling, rise/fall, timeouts (on a Clock) and the tcp monitor (real sockets)."""

from __future__ import annotations

import random

from twisted.internet import defer, protocol, reactor
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbframe.config.model import Monitor
from lbframe.monitoring import BaseMonitor, CheckResult, MonitorRunner
from lbframe.monitors.tcp import TCPMonitor
from lbframe.schedulers.round_robin import RoundRobin
from tests.helpers import free_port, member_spec, pool_state


class ScriptedMonitor(BaseMonitor):
    """Answers each check from a list of (ok, reason); None = never answers."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = 0
        self.cancelled = 0

    def check(self, member):
        self.calls += 1
        answer = self.answers.pop(0)
        if answer is None:
            return defer.Deferred(lambda d: setattr(self, "cancelled", self.cancelled + 1))
        return defer.succeed(CheckResult(*answer))


class RiseFallTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.pool = pool_state(RoundRobin(), member_spec("a"), member_spec("b"))
        self.member = self.pool.members["a"]
        self.changes = []
        self.pool.on_state_change.append(lambda *a: self.changes.append(a))
        self.runner = MonitorRunner(self.clock, random.Random(1))

    def run_checks(self, answers, spec):
        mon = ScriptedMonitor(answers)
        self.runner.add(self.pool, self.member, spec, mon)
        self.runner.startService()
        self.addCleanup(self.runner.stopService)
        return mon

    def test_fall_then_rise(self):
        spec = Monitor("alive", "tcp", interval=10, timeout=3, fall=3, rise=2)
        mon = self.run_checks([(False, "connect refused")] * 3 + [(True, "")] * 2 +
                              [(True, "")] * 10, spec)
        self.clock.advance(10)  # the first check is somewhere in the first interval
        self.assertEqual(mon.calls, 1)
        self.assertEqual(self.member.state, "up")
        self.clock.advance(10)
        self.assertEqual(self.member.state, "up")  # 2 failures of 3
        self.clock.advance(10)
        self.assertEqual(self.member.state, "down")
        self.assertFalse(self.member.eligible)
        self.assertEqual(self.member.down_reason, "alive: connect refused (3/3)")
        self.assertEqual(self.changes, [("web", "a", "up", "down", "connect refused (3/3)")])
        self.assertIs(self.pool.scheduler.pick(None), self.pool.members["b"])
        self.clock.advance(10)
        self.assertEqual(self.member.state, "down")  # 1 success of 2
        self.clock.advance(10)
        self.assertEqual(self.member.state, "up")
        self.assertEqual(self.changes[-1], ("web", "a", "down", "up", "check passed (2/2)"))

    def test_detection_time_is_interval_times_fall(self):
        """F7f: a member that dies is down after at most interval × fall
        (plus the first check's offset and one timeout)."""
        spec = Monitor("alive", "tcp", interval=10, timeout=3, fall=3, rise=2)
        self.run_checks([(False, "connect refused")] * 5, spec)
        first = min(c.getTime() for c in self.clock.getDelayedCalls())
        self.clock.advance(first)
        self.clock.advance(10)
        self.assertEqual(self.member.state, "up")
        self.clock.advance(10)
        self.assertEqual(self.member.state, "down")
        self.assertLessEqual(self.clock.seconds(), spec.interval * spec.fall)

    def test_timeout(self):
        spec = Monitor("alive", "tcp", interval=5, timeout=1, fall=1, rise=1)
        mon = self.run_checks([None, (True, "")], spec)
        self.clock.advance(5)
        self.assertEqual(mon.calls, 1)
        self.clock.advance(1)
        self.assertEqual(mon.cancelled, 1)
        self.assertEqual(self.member.state, "down")
        self.assertEqual(self.member.down_reason, "alive: timeout after 1s (1/1)")

    def test_first_checks_spread_over_the_interval(self):
        """Jitter: 50 members' first checks are not all at once, and all fall
        within the first interval."""
        pool = pool_state(RoundRobin(), *(member_spec(f"m{i}") for i in range(50)))
        spec = Monitor("alive", "tcp", interval=10, timeout=1, fall=3, rise=1)
        runner = MonitorRunner(self.clock, random.Random(7))
        for member in pool.members.values():
            runner.add(pool, member, spec, ScriptedMonitor([(True, "")] * 3))
        runner.startService()
        self.addCleanup(runner.stopService)
        times = sorted(c.getTime() for c in self.clock.getDelayedCalls())
        self.assertEqual(len(times), 50)
        self.assertTrue(all(0 <= t < 10 for t in times))
        self.assertGreater(len({round(t, 3) for t in times}), 45)
        self.assertGreater(times[-1] - times[0], 8)  # spread over the interval

    def test_never_two_checks_in_flight(self):
        spec = Monitor("alive", "tcp", interval=1, timeout=30, fall=3, rise=1)
        mon = self.run_checks([None] + [(True, "")] * 5, spec)
        self.clock.advance(1)
        for _ in range(10):
            self.clock.advance(1)
        self.assertEqual(mon.calls, 1)

    def test_two_monitors_both_must_pass(self):
        web = Monitor("web", "tcp", interval=1, timeout=1, fall=1, rise=1)
        db = Monitor("db", "tcp", interval=1, timeout=1, fall=1, rise=1)
        self.runner.add(self.pool, self.member, web, ScriptedMonitor([(True, "")] * 5))
        self.runner.add(self.pool, self.member, db, ScriptedMonitor([(False, "HTTP 500")] * 5))
        self.runner.startService()
        self.addCleanup(self.runner.stopService)
        self.clock.advance(1)
        self.assertEqual(self.member.state, "down")
        self.assertEqual(self.member.down_reason, "db: HTTP 500 (1/1)")

    def test_state_change_is_logged(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        spec = Monitor("alive", "tcp", interval=1, timeout=1, fall=1, rise=1)
        self.run_checks([(False, "connect refused")], spec)
        self.clock.advance(1)
        from twisted.logger import formatEvent
        lines = [formatEvent(e) for e in events if e.get("log_namespace") == "lbframe"]
        self.assertIn("member web/a down: connect refused (1/1); 1 of 2 up", lines)


class TCPMonitorTests(TestCase):
    """The tcp monitor against real sockets on 127.0.0.1."""

    def setUp(self):
        self.pool = pool_state(RoundRobin(), member_spec("a"))
        self.member = self.pool.members["a"]

    @defer.inlineCallbacks
    def test_passes_when_listening(self):
        port = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        spec = Monitor("alive", "tcp", port=port.getHost().port)
        result = yield TCPMonitor(spec, {}, reactor).check(self.member)
        self.assertEqual(result, CheckResult(True))

    @defer.inlineCallbacks
    def test_refused(self):
        spec = Monitor("alive", "tcp", port=free_port())
        result = yield TCPMonitor(spec, {}, reactor).check(self.member)
        self.assertEqual(result, CheckResult(False, "connect refused"))
