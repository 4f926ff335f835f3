"""What the runtime logs when member state changes, and at which level.

A member going down is a warning that says how many members of its pool
are still up; a pool left with no member up is an error; coming back is
info. An admin change through :meth:`PoolState.set_admin` with ``quiet``
(the admin API logs it itself) adds no member line.
"""

from __future__ import annotations

from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from lbframe.config.model import Virtual
from lbframe.runtime import PoolState, VirtualState
from lbframe.schedulers.round_robin import RoundRobin
from tests.helpers import member_spec, pool_state


def make_pool(*names: str) -> PoolState:
    return pool_state(RoundRobin(), *(member_spec(n, 8000 + i) for i, n in enumerate(names)))


class MemberStateLogTests(SynchronousTestCase):
    def setUp(self):
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.pool = make_pool("a", "b", "c")

    def logged(self) -> list[tuple[str, str]]:
        out = [(e["log_level"].name, formatEvent(e)) for e in self.events
               if str(e.get("log_namespace", "")).startswith("lbframe")]
        self.events.clear()
        return out

    def fail(self, name: str, times: int = 3) -> None:
        for i in range(times):
            self.pool.report_check(self.pool.members[name], "tcp", False, "connect refused",
                                   rise=2, fall=3, now=float(i))

    def test_member_down_is_a_warning_with_how_many_are_up(self):
        self.fail("b")
        self.assertEqual(self.logged(), [
            ("warn", "member web/b down: connect refused (3/3); 2 of 3 up")])

    def test_member_up_is_info(self):
        self.fail("b")
        self.logged()
        for i in range(2):
            self.pool.report_check(self.pool.members["b"], "tcp", True, "", rise=2, fall=3,
                                   now=10.0 + i)
        self.assertEqual(self.logged(), [("info", "member web/b up: check passed (2/2); "
                                                  "3 of 3 up")])

    def test_pool_empty_is_an_error_and_coming_back_says_so(self):
        self.fail("a")
        self.fail("b")
        self.logged()
        self.fail("c")
        self.assertEqual(self.logged(), [
            ("warn", "member web/c down: connect refused (3/3); 0 of 3 up"),
            ("error", "pool web: no member up (3 members; last: c down)")])
        for i in range(2):
            self.pool.report_check(self.pool.members["a"], "tcp", True, "", rise=2, fall=3,
                                   now=20.0 + i)
        self.assertEqual(self.logged(), [
            ("info", "member web/a up: check passed (2/2); 1 of 3 up"),
            ("info", "pool web: a member is up again (a)")])

    def test_structured_fields(self):
        self.fail("b")
        [event] = [e for e in self.events if e.get("lbframe_event") == "member_state"]
        self.assertEqual((event["pool"], event["member"], event["state"], event["old"],
                          event["up"], event["members"]), ("web", "b", "down", "up", 2, 3))
        self.assertEqual(event["log_level"], LogLevel.warn)

    def test_quiet_admin_change_logs_no_member_line(self):
        self.pool.set_admin(self.pool.members["a"], "draining", quiet=True)
        self.assertEqual(self.logged(), [])
        self.pool.set_admin(self.pool.members["a"], "enabled")
        self.assertEqual(self.logged(), [("info", "member web/a up: by admin; 3 of 3 up")])

    def test_quiet_change_still_reports_an_empty_pool(self):
        pool = make_pool("only")
        pool.set_admin(pool.members["only"], "disabled", quiet=True)
        self.assertEqual(self.logged(), [
            ("error", "pool web: no member up (1 members; last: only disabled)")])

    def test_state_since_moves_only_on_a_change(self):
        b = self.pool.members["b"]
        b.since = 5.0
        self.fail("b", times=2)  # not down yet
        self.assertEqual(b.since, 5.0)
        self.fail("b", times=1)
        self.assertGreater(b.since, 5.0)


class CounterTests(SynchronousTestCase):
    def test_max_connections_of_member_and_pool(self):
        pool = make_pool("a", "b")
        a, b = pool.members["a"], pool.members["b"]
        pool.take(a)
        pool.take(a)
        pool.take(b)
        pool.release(a)
        pool.release(a)
        pool.take(b)
        self.assertEqual((a.max_active, b.max_active, pool.max_active, pool.active),
                         (2, 2, 3, 2))

    def test_virtual_max_sessions_and_refusals(self):
        v = VirtualState(Virtual("web", ("tcp:80",), "web", max_connections=2))
        v.active += 1
        v.active += 1
        v.active -= 1
        self.assertEqual((v.active, v.max_active), (1, 2))
        v.refuse("no_member")
        v.active += 1
        v.refuse("no_member")  # at max_connections: counted as maxconn
        v.refuse("queue_timeout")
        self.assertEqual(v.refused, 3)
        self.assertEqual({k: n for k, n in v.refusals.items() if n},
                         {"no_member": 1, "maxconn": 1, "queue_timeout": 1})


class DowntimeTests(SynchronousTestCase):
    def test_downs_and_downtime(self):
        pool = make_pool("a", "b")
        a = pool.members["a"]
        a.since = 0.0  # up since the epoch: nothing counted while up
        pool.set_admin(a, "disabled", quiet=True)
        self.assertEqual((a.downs, a.downtime), (0, 0.0))
        pool.set_admin(a, "enabled", quiet=True)
        pool.report_check(a, "tcp", False, "connect refused", rise=1, fall=1, now=1.0)
        self.assertEqual(a.downs, 1)
        a.since -= 100  # down for 100 s
        pool.report_check(a, "tcp", True, "", rise=1, fall=1, now=2.0)
        self.assertEqual(a.downs, 1)
        self.assertTrue(99.0 <= a.downtime <= 101.0, a.downtime)
