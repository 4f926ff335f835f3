"""Passive health (lbframe.passive, PoolState.member_failed): what real
traffic says takes a member out, counted on a Clock; then the data paths on
127.0.0.1 report to it."""

from __future__ import annotations

import socket

from twisted.internet import defer, protocol, reactor, threads
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from lbframe.admin.metrics import make_registry, render_metrics
from lbframe.admin.status import member_status
from lbframe.config import ConfigError, parse_site
from lbframe.config.model import Pool
from lbframe.passive import (FAILURE_LOG_INTERVAL, PROBE_READY, PassiveState, count_failure,
                             down_reason)
from lbframe.plugins import load_plugins
from lbframe.runtime import PoolState
from lbframe.schedulers.round_robin import RoundRobin
from lbframe.service import SiteService, build_runtime
from tests.helpers import WaitMixin, free_port, member_spec
from tests.httpkit import HTTPSiteMixin, RecordingFactory

REFUSED = "connect refused"


def capture_log(test) -> list[str]:
    """The lbframe log lines (formatted) while the test runs."""
    events: list = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)

    class Lines:
        def __iter__(self):
            return iter(formatEvent(e) for e in events
                        if e.get("log_namespace", "").startswith("lbframe"))
    return Lines()


def make_pool(*names, clock=None, monitors=(), **keys) -> PoolState:
    specs = tuple(member_spec(n, port=i + 1) for i, n in enumerate(names or ("a", "b")))
    return PoolState.build(Pool("p", specs, monitors=monitors, **keys), RoundRobin(),
                           clock=clock if clock is not None else Clock())


class CountingTests(TestCase):
    """:func:`lbframe.passive.count_failure` on its own."""

    def test_max_fails_in_a_row_within_the_window(self):
        state = PassiveState()
        self.assertFalse(count_failure(state, 0.0, 3, 10.0))
        self.assertFalse(count_failure(state, 4.0, 3, 10.0))
        self.assertTrue(count_failure(state, 9.5, 3, 10.0))

    def test_a_failure_after_the_window_starts_a_new_count(self):
        state = PassiveState()
        count_failure(state, 0.0, 3, 10.0)
        count_failure(state, 5.0, 3, 10.0)
        self.assertFalse(count_failure(state, 10.5, 3, 10.0))
        self.assertEqual((state.fails, state.window_start), (1, 10.5))

    def test_zero_turns_it_off(self):
        state = PassiveState()
        self.assertFalse(any(count_failure(state, 0.0, 0, 10.0) for _ in range(100)))

    def test_reason_words(self):
        self.assertEqual(down_reason(3, REFUSED),
                         "passive: 3 failures in a row (last: connect refused)")
        self.assertEqual(down_reason(1, REFUSED), "passive: connect refused")


class PoolPassiveTests(TestCase):
    """PoolState applies the verdicts: eligibility, state, event, probe."""

    def setUp(self):
        self.clock = Clock()
        self.pool = make_pool("a", "b", clock=self.clock)
        self.a = self.pool.members["a"]
        self.events = []
        self.pool.on_state_change.append(lambda *args: self.events.append(args))

    def refuse(self, member=None, n=1, reason=REFUSED):
        member = member or self.a
        for _ in range(n):
            self.pool.take(member)
            self.pool.member_failed(member, reason, "192.0.2.1")
            self.pool.release(member)

    def picks(self, n=10) -> list[str]:
        out = []
        for _ in range(n):
            m = self.pool.scheduler.pick(None)
            out.append(m.name)
        return out

    def test_three_failures_take_the_member_out(self):
        self.refuse(n=2)
        self.assertEqual(self.a.state, "up")
        self.assertIn("a", self.picks())
        self.refuse()
        self.assertEqual(self.a.state, "down")
        self.assertFalse(self.a.eligible)
        self.assertEqual(self.picks(), ["b"] * 10)
        self.assertEqual(self.events, [("p", "a", "up", "down",
                                        "passive: 3 failures in a row (last: connect refused)")])
        self.assertEqual(self.a.down_reason, "passive: 3 failures in a row (last: connect refused)")
        self.assertEqual(self.a.failures, 3)

    def test_failures_spread_wider_than_fail_timeout_do_not(self):
        for _ in range(10):
            self.refuse()
            self.clock.advance(6)
        self.assertEqual(self.a.state, "up")

    def test_a_success_starts_the_count_again(self):
        for _ in range(10):
            self.refuse(n=2)
            self.pool.record_response_time(self.a, 0.01)
        self.assertEqual(self.a.state, "up")

    def test_a_passing_monitor_is_not_a_success(self):
        self.refuse(n=2)
        self.pool.report_check(self.a, "m", True, "ok", rise=1, fall=1, now=0, duration=0.01)
        self.refuse()
        self.assertEqual(self.a.state, "down")

    def test_after_fail_timeout_one_probe_goes_and_a_failure_keeps_it_out(self):
        self.refuse(n=3)
        self.clock.advance(9.9)
        self.assertFalse(self.a.eligible)
        self.clock.advance(0.2)
        # One probe may go: eligible, still shown down.
        self.assertTrue(self.a.eligible)
        self.assertEqual(self.a.state, "down")
        self.assertIn("a", self.picks(2))
        self.pool.take(self.a)
        self.assertFalse(self.a.eligible)  # nobody else while the probe runs
        self.assertEqual(self.picks(), ["b"] * 10)
        self.pool.member_failed(self.a, REFUSED, "192.0.2.1")
        self.pool.release(self.a)
        self.assertFalse(self.a.eligible)
        self.clock.advance(9.9)
        self.assertFalse(self.a.eligible)
        self.clock.advance(0.2)
        self.assertTrue(self.a.eligible)
        # The state never changed: one event, the first.
        self.assertEqual(len(self.events), 1)

    def test_a_probe_that_answers_brings_the_member_back(self):
        self.refuse(n=3)
        self.clock.advance(10.1)
        self.pool.take(self.a)
        self.pool.record_response_time(self.a, 0.01)
        self.assertEqual(self.a.state, "up")
        self.assertTrue(self.a.eligible)
        self.assertEqual(self.a.down_reason, "")
        self.assertEqual(self.events[-1], ("p", "a", "down", "up", "passive: answered again"))
        self.pool.release(self.a)
        # The count starts from nothing.
        self.refuse(n=2)
        self.assertEqual(self.a.state, "up")

    def test_a_probe_ended_without_verdict_lets_the_next_one_go(self):
        self.refuse(n=3)
        self.clock.advance(10.1)
        self.pool.take(self.a)
        self.pool.release(self.a)  # the client left before the member answered
        self.assertTrue(self.a.eligible)
        self.assertEqual(self.a.passive.probe, PROBE_READY)

    def test_an_older_connection_answering_does_not_end_the_window(self):
        self.refuse(n=3)
        self.pool.record_response_time(self.a, 0.01)
        self.assertEqual(self.a.state, "down")

    def test_max_fails_zero_turns_it_off(self):
        pool = make_pool("a", "b", max_fails=0)
        for _ in range(50):
            pool.member_failed(pool.members["a"], REFUSED)
        self.assertEqual(pool.members["a"].state, "up")
        self.assertEqual(pool.members["a"].failures, 50)

    def test_a_single_member_is_never_taken_out(self):
        pool = make_pool("a")
        for _ in range(50):
            pool.member_failed(pool.members["a"], REFUSED)
        self.assertEqual(pool.members["a"].state, "up")

    def test_the_last_usable_member_stays_in(self):
        """Both members dead: one is taken out, the other stays (a client
        that can make members time out cannot empty the pool either)."""
        b = self.pool.members["b"]
        self.refuse(n=3)
        self.clock.advance(9)
        self.refuse(b, n=5)
        self.assertEqual((self.a.state, b.state), ("down", "up"))
        self.assertEqual(self.picks(), ["b"] * 10)
        # Once a is usable again (its probe is due), b's next failure counts.
        self.clock.advance(1.1)
        self.refuse(b)
        self.assertEqual(b.state, "down")
        self.assertEqual(b.down_reason, "passive: 6 failures in a row (last: connect refused)")

    def test_a_member_left_alone_by_the_admin_stays_in(self):
        lines = capture_log(self)
        pool = make_pool("a", "b", clock=self.clock, fail_timeout=60)
        a, b = pool.members["a"], pool.members["b"]
        pool.set_admin(b, "disabled")
        pool.member_failed(a, REFUSED, "192.0.2.1")
        pool.member_failed(a, REFUSED, "192.0.2.1")
        self.clock.advance(FAILURE_LOG_INTERVAL)  # the summary
        self.clock.advance(FAILURE_LOG_INTERVAL)
        pool.member_failed(a, REFUSED, "192.0.2.1")
        self.assertEqual(a.state, "up")
        self.assertEqual([line for line in lines if "p/a:" in line], [
            "member p/a: connect refused (client 192.0.2.1; 1 of 3 before passive down)",
            "member p/a: failures not logged in the last 10s: 1 (last: connect refused)",
            "member p/a: connect refused (client 192.0.2.1; kept in: the pool's last usable "
            "member)"])
        pool.set_admin(b, "enabled")
        pool.member_failed(a, REFUSED, "192.0.2.1")
        self.assertEqual(a.state, "down")
        pool.stop()

    def test_failures_that_do_not_count(self):
        """A timeout after the response began (http) is counted as a
        failure, not for passive health."""
        for _ in range(5):
            self.pool.member_failed(self.a, "no answer within 1s", counts=False)
        self.assertEqual((self.a.state, self.a.failures), ("up", 5))

    def test_timers_end_with_the_pool_and_the_member(self):
        self.refuse(n=3)
        self.refuse(self.pool.members["b"], n=1)
        self.pool.remove_member("a")
        self.pool.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_window_over_after_a_reload_turned_it_off(self):
        self.refuse(n=3)
        self.pool.spec = Pool("p", self.pool.spec.members, max_fails=0)
        self.clock.advance(10.1)
        self.assertEqual(self.a.state, "up")
        self.assertEqual(self.events[-1][3:], ("up", "passive health off"))


class EverySchedulerTests(TestCase):
    """Each built-in scheduler leaves out a passive-down member, and sends
    one connection (the probe) once its window is over."""

    def test_schedulers(self):
        from lbframe.balancer import RequestContext
        plugins = load_plugins(entry_points=False)
        for name in plugins.schedulers.names():
            clock = Clock()
            specs = tuple(member_spec(n, port=i + 1) for i, n in enumerate("abc"))
            spec = Pool("p", specs, scheduler=name)
            pool = PoolState.build(spec, plugins.schedulers.get(name).factory(spec, {}),
                                   clock=clock)
            a = pool.members["a"]
            for _ in range(3):
                pool.member_failed(a, REFUSED)
            contexts = [RequestContext(f"192.0.2.{i}", 40000 + i, "v") for i in range(1, 60)]
            picked = [pool.scheduler.pick(c) for c in contexts]
            self.assertNotIn(a, picked, name)
            clock.advance(10.1)
            taken = []
            for c in contexts:
                m = pool.scheduler.pick(c)
                pool.take(m)
                taken.append(m)
            self.assertLessEqual(taken.count(a), 1, name)
            pool.stop()


class ReloadTests(TestCase):
    """A reload keeps an unchanged member's passive state (as it keeps its
    monitor state); a reload to max_fails = 0 lets it back at the window's end."""

    def reload(self, old: PoolState, **keys) -> None:
        from lbframe.reload import merge_pool
        plugins = load_plugins(entry_points=False)
        spec = Pool("p", old.spec.members, **keys)
        new = PoolState.build(spec, RoundRobin(), clock=old.clock)
        merge_pool(old, new, plugins)

    def test_state_carried(self):
        clock = Clock()
        pool = make_pool("a", "b", clock=clock)
        for _ in range(3):
            pool.member_failed(pool.members["a"], REFUSED)
        self.reload(pool)
        self.assertEqual(pool.members["a"].state, "down")
        self.assertFalse(pool.members["a"].eligible)
        clock.advance(10.1)
        self.assertTrue(pool.members["a"].eligible)  # its probe is due, as before
        pool.stop()

    def test_turned_off(self):
        clock = Clock()
        pool = make_pool("a", "b", clock=clock)
        for _ in range(3):
            pool.member_failed(pool.members["a"], REFUSED)
        self.reload(pool, max_fails=0)
        clock.advance(10.1)
        self.assertEqual(pool.members["a"].state, "up")
        for _ in range(10):
            pool.member_failed(pool.members["a"], REFUSED)
        self.assertEqual(pool.members["a"].state, "up")
        pool.stop()


class MonitorTests(TestCase):
    """Monitors and passive health: eligible only while neither says down."""

    def setUp(self):
        self.clock = Clock()
        self.pool = make_pool("a", "b", clock=self.clock, monitors=("m",))
        self.a = self.pool.members["a"]

    def check(self, ok: bool, reason="") -> None:
        self.pool.report_check(self.a, "m", ok, reason or ("ok" if ok else REFUSED),
                               rise=1, fall=1, now=self.clock.seconds())

    def refuse(self, n=1):
        for _ in range(n):
            self.pool.take(self.a)
            self.pool.member_failed(self.a, REFUSED)
            self.pool.release(self.a)

    def test_a_passing_monitor_does_not_undo_passive_down(self):
        self.check(True)
        self.refuse(3)
        self.check(True)
        self.check(True)
        self.assertEqual(self.a.state, "down")
        self.assertTrue(self.a.down_reason.startswith("passive: "))

    def test_no_probe_while_the_monitor_says_down(self):
        self.refuse(3)
        self.check(False)
        self.clock.advance(10.1)
        self.assertFalse(self.a.eligible)
        self.check(True)
        self.assertTrue(self.a.eligible)  # now the probe may go
        self.assertEqual(self.a.state, "down")

    def test_passive_cleared_while_the_monitor_says_down(self):
        self.refuse(3)
        self.clock.advance(10.1)
        self.pool.take(self.a)
        self.check(False)
        self.pool.record_response_time(self.a, 0.01)
        self.assertEqual(self.a.state, "down")
        self.assertEqual(self.a.down_reason, "m: connect refused (1/1)")
        self.assertFalse(self.a.eligible)
        self.check(True)
        self.assertEqual(self.a.state, "up")

    def test_both_down(self):
        """The reason names passive health while it holds the member out."""
        self.check(False)
        self.assertEqual(self.a.down_reason, "m: connect refused (1/1)")
        self.refuse(3)  # connections that were already on their way
        self.assertTrue(self.a.down_reason.startswith("passive: "))
        self.check(True)
        self.assertEqual(self.a.state, "down")


class LoggingTests(TestCase):
    """One line per state change; the failures at most one line per member
    per interval, then a summary."""

    def test_down_is_one_line_and_the_failures_one_more(self):
        lines = capture_log(self)
        clock = Clock()
        pool = make_pool("a", "b", clock=clock)
        for _ in range(500):
            member = pool.members["a"]
            if member.eligible:
                pool.take(member)
                pool.member_failed(member, REFUSED, "192.0.2.1")
                pool.release(member)
        clock.advance(FAILURE_LOG_INTERVAL + 1)
        got = [line for line in lines if "p/a" in line]
        self.assertEqual(got, [
            "member p/a: connect refused (client 192.0.2.1; 1 of 3 before passive down)",
            "member p/a down: passive: 3 failures in a row (last: connect refused); "
            "1 of 2 up",
        ])

    def test_without_passive_health_the_failures_are_summed_up(self):
        lines = capture_log(self)
        clock = Clock()
        pool = make_pool("a", "b", clock=clock, max_fails=0)
        for _ in range(10):
            for _ in range(1000):
                pool.member_failed(pool.members["a"], REFUSED, "192.0.2.1")
            clock.advance(1)
        clock.advance(FAILURE_LOG_INTERVAL)
        got = [line for line in lines if "p/a" in line]
        self.assertEqual(got, [
            "member p/a: connect refused (client 192.0.2.1)",
            "member p/a: failures not logged in the last 10s: 9999 (last: connect refused)",
        ])
        self.assertEqual(pool.members["a"].failures, 10000)


class AdminTests(TestCase):
    """/api/status and /metrics show passive-down members generically."""

    def test_status_and_metrics(self):
        pool = make_pool("a", "b")
        for _ in range(3):
            pool.member_failed(pool.members["a"], REFUSED)
        status = member_status(pool.members["a"])
        self.assertEqual(status["state"], "down")
        self.assertEqual(status["down_reason"],
                         "passive: 3 failures in a row (last: connect refused)")

        class Runtime:
            pools = {"p": pool}
            virtuals = balancers = persistence_stores = {}
            redundancy = None
            site = parse_site(ConfigTests.SITE)
        text = render_metrics(make_registry(lambda: Runtime)).decode()
        self.assertIn('lbframe_member_state{member="a",pool="p",state="down"} 1.0', text)
        self.assertIn('lbframe_member_passive_down{member="a",pool="p"} 1.0', text)
        self.assertIn('lbframe_member_passive_down{member="b",pool="p"} 0.0', text)
        pool.stop()


class ConfigTests(TestCase):
    SITE = """
[virtual v]
listen = tcp:8080
pool = p

[pool p]
member a = 127.0.0.1:1
member b = 127.0.0.1:2
"""

    def test_defaults(self):
        pool = parse_site(self.SITE).pools["p"]
        self.assertEqual((pool.max_fails, pool.fail_timeout), (3, 10.0))

    def test_keys(self):
        pool = parse_site(self.SITE + "max_fails = 0\nfail_timeout = 30s\n").pools["p"]
        self.assertEqual((pool.max_fails, pool.fail_timeout), (0, 30.0))

    def test_bad_values(self):
        for line, words in [("max_fails = -1", "max_fails"), ("max_fails = lots", "max_fails"),
                            ("max_fails = 1001", "max_fails"),
                            ("fail_timeout = 0", "more than 0"),
                            ("fail_timeout = soon", "fail_timeout")]:
            with self.assertRaises(ConfigError) as caught:
                parse_site(self.SITE + line + "\n")
            self.assertIn(words, str(caught.exception), line)


# -- the data paths on 127.0.0.1 ---------------------------------------------

class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


def echo_exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, read as many bytes back (or until closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def hello() -> bytes:
    from tests.protocols.test_ssl import client_hello_bytes
    return client_hello_bytes()


class StreamPathTests(WaitMixin, TestCase):
    """tcp and ssl (passthrough): a pool of a live member and a closed port,
    no monitor."""

    FAIL_TIMEOUT = 0.5

    def start(self, protocol_name: str):
        echo = reactor.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        self.dead_port = free_port()
        vport = free_port()
        site = parse_site(f"""
[virtual v]
listen = tcp:{vport}:interface=127.0.0.1
protocol = {protocol_name}
pool = p

[pool p]
fail_timeout = {self.FAIL_TIMEOUT}
member live = 127.0.0.1:{echo.getHost().port}
member dead = 127.0.0.1:{self.dead_port}
""", "site.ini")
        svc = SiteService(build_runtime(site, load_plugins(entry_points=False), reactor), reactor)
        svc.startService()
        self.addCleanup(svc.stopService)
        self.pool = svc.runtime.pools["p"]
        return vport

    @defer.inlineCallbacks
    def requests(self, vport, payload, n):
        for _ in range(n):
            got = yield threads.deferToThread(echo_exchange, vport, payload)
            self.assertEqual(got, payload)

    @defer.inlineCallbacks
    def check_path(self, protocol_name: str, payload: bytes):
        lines = capture_log(self)
        vport = self.start(protocol_name)
        dead = self.pool.members["dead"]
        # Every request succeeds; only max_fails connects go to the dead port.
        yield self.requests(vport, payload, 30)
        self.assertEqual(dead.total, 3)
        self.assertEqual(dead.state, "down")
        self.assertEqual([line for line in lines if "p/dead" in line], [
            "member p/dead: connect refused (client 127.0.0.1; 1 of 3 before passive down)",
            "member p/dead down: passive: 3 failures in a row (last: connect refused); "
            "1 of 2 up"])
        # After fail_timeout: one probe, refused, still down.
        yield self.wait_until(lambda: dead.eligible, timeout=5 * self.FAIL_TIMEOUT)
        yield self.requests(vport, payload, 10)
        self.assertEqual((dead.total, dead.state), (4, "down"))
        # The member comes back: the next probe finds it.
        back = reactor.listenTCP(self.dead_port, protocol.Factory.forProtocol(Echo),
                                 interface="127.0.0.1")
        self.addCleanup(back.stopListening)
        yield self.wait_until(lambda: dead.eligible, timeout=5 * self.FAIL_TIMEOUT)
        yield self.requests(vport, payload, 10)
        self.assertEqual(dead.state, "up")
        self.assertGreater(dead.total, 6)  # it takes its share again
        self.assertEqual(sum("p/dead up: passive: answered again" in line for line in lines), 1)

    def test_tcp(self):
        return self.check_path("tcp", b"ping\n")

    def test_ssl(self):
        return self.check_path("ssl", hello())


GET = b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n"


class HTTPPathTests(HTTPSiteMixin, TestCase):

    @defer.inlineCallbacks
    def statuses(self, port, n) -> list[int]:
        out = []
        for _ in range(n):
            client = yield self.exchange(port, GET)
            out.append(client.responses[0].status)
        return out

    @defer.inlineCallbacks
    def test_connect_failures(self):
        lines = capture_log(self)
        mport, live = self.member("live")
        port = self.serve_http(f"member live = 127.0.0.1:{mport}\n"
                               f"member dead = 127.0.0.1:{free_port()}\nfail_timeout = 10s")
        statuses = yield self.statuses(port, 30)
        self.assertEqual(statuses, [200] * 30)
        dead = self.runtime.pools["p"].members["dead"]
        self.assertEqual((dead.total, dead.state), (3, "down"))
        self.assertEqual(sum("p/dead down: passive: 3 failures" in line for line in lines), 1)
        self.assertEqual(sum("p/dead" in line for line in lines), 2)

    @defer.inlineCallbacks
    def test_the_probe_finds_the_member_back(self):
        mport, live = self.member("live")
        dead_port = free_port()
        port = self.serve_http(f"member live = 127.0.0.1:{mport}\n"
                               f"member dead = 127.0.0.1:{dead_port}\nfail_timeout = 300ms")
        statuses = yield self.statuses(port, 10)
        self.assertEqual(statuses, [200] * 10)
        dead = self.runtime.pools["p"].members["dead"]
        self.assertEqual(dead.state, "down")
        back = RecordingFactory("back")
        listening = reactor.listenTCP(dead_port, back, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(lambda: [m.transport.abortConnection() for m in list(back.live)])
        yield self.wait_until(lambda: dead.eligible, timeout=3)
        statuses = yield self.statuses(port, 10)
        self.assertEqual(statuses, [200] * 10)
        self.assertEqual(dead.state, "up")
        self.assertGreaterEqual(len(back.requests), 4)

    @defer.inlineCallbacks
    def test_a_member_silent_until_timeout_server(self):
        silent = self.listen_member(protocol.Factory.forProtocol(protocol.Protocol))
        mport, live = self.member("live")
        port = self.serve_http(f"member live = 127.0.0.1:{mport}\n"
                               f"member silent = 127.0.0.1:{silent}",
                               virtual_lines="timeout_server = 200ms")
        statuses = yield self.statuses(port, 20)
        # Timed-out requests are not retried (the member may have acted on
        # them): 504 each, until the third takes the member out.
        self.assertEqual(statuses.count(504), 3)
        silent_member = self.runtime.pools["p"].members["silent"]
        self.assertEqual(silent_member.state, "down")
        self.assertTrue(silent_member.down_reason.endswith("(last: no answer within 0.2s)"),
                        silent_member.down_reason)

    @defer.inlineCallbacks
    def test_5xx_is_not_a_failure(self):
        mport, _ = self.member("sick", answer=lambda raw: b"HTTP/1.1 503 Busy\r\n"
                                                          b"Content-Length: 0\r\n\r\n")
        lport, _ = self.member("live")
        port = self.serve_http(f"member sick = 127.0.0.1:{mport}\n"
                               f"member live = 127.0.0.1:{lport}")
        statuses = yield self.statuses(port, 20)
        self.assertEqual(statuses.count(503), 10)
        self.assertEqual(self.runtime.pools["p"].members["sick"].state, "up")
