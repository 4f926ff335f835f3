"""Load-aware schedulers (least-connections, response-time, composite):
each pick checked against a brute-force scan of the members, over random
pools and random event sequences."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from lbframe.errors import OptionError
from lbframe.interfaces import IScheduler
from lbframe.plugins import load_plugins
from lbframe.schedulers import usable
from lbframe.schedulers.composite import Composite
from lbframe.schedulers.least_connections import LeastConnections
from lbframe.schedulers.response_time import ResponseTime
from tests.helpers import member_spec, pool_state

SCHEDULERS = {"least-connections": LeastConnections, "response-time": ResponseTime,
              "composite": Composite}


# -- brute-force references ---------------------------------------------------

def candidates(pool, exclude):
    """The members a pick may choose from: usable primaries, else usable backups."""
    ok = [m for m in pool.members.values() if usable(m, exclude)]
    primaries = [m for m in ok if not m.backup]
    return primaries or ok


def w(m):
    return m.effective_weight


def check_least_connections(test, pool, picked, exclude):
    group = candidates(pool, exclude)
    if not group:
        test.assertIsNone(picked)
        return
    test.assertIn(picked, group)
    for m in group:
        # picked.active / w(picked) <= m.active / w(m), without floats
        test.assertLessEqual(picked.active * w(m), m.active * w(picked),
                             f"{picked.name} has more load than {m.name}")


def check_response_time(test, pool, picked, exclude):
    group = candidates(pool, exclude)
    if not group:
        test.assertIsNone(picked)
        return
    test.assertIn(picked, group)
    unsampled = [m for m in group if m.response_time is None]
    if unsampled:
        test.assertIn(picked, unsampled, "an unsampled member must be tried first")
        return
    best = min(m.response_time / w(m) for m in group)
    test.assertEqual(picked.response_time / w(picked), best)


def composite_scores(pool, group):
    """``{member: score}`` as composite.py documents it, or None while no
    eligible member of the pool has a sample."""
    times = [m.response_time for m in pool.members.values()
             if m.eligible and m.response_time is not None]
    if not times:
        return None
    fastest = min(times)
    return {m: (m.active + 1) * (fastest if m.response_time is None else m.response_time) / w(m)
            for m in group}


def check_composite(test, pool, picked, exclude):
    group = candidates(pool, exclude)
    if not group:
        test.assertIsNone(picked)
        return
    test.assertIn(picked, group)
    scores = composite_scores(pool, group)
    if scores is None:
        # no times at all: least connections on (active + 1) / weight
        for m in group:
            test.assertLessEqual((picked.active + 1) * w(m), (m.active + 1) * w(picked))
        return
    best = min(scores.values())
    test.assertEqual(scores[picked], best)
    if picked.response_time is not None:
        test.assertFalse([m for m in group if m.response_time is None and scores[m] == best],
                         "on an equal score an unsampled member goes first")


CHECKS = {LeastConnections: check_least_connections, ResponseTime: check_response_time,
          Composite: check_composite}


# -- random pools and events ----------------------------------------------------

# per member: (weight, admin, healthy, backup, maxconn)
member_states = st.lists(
    st.tuples(st.integers(0, 6), st.sampled_from(["enabled", "enabled", "draining", "disabled"]),
              st.booleans(), st.booleans(), st.sampled_from([None, None, 1, 2, 3])),
    min_size=0, max_size=8)

times = st.sampled_from([0.001, 0.002, 0.004, 0.01, 0.03, 0.1]) | st.floats(0.0001, 2.0)

events = st.lists(st.one_of(
    st.tuples(st.just("pick-take"), st.integers(0, 255)),
    st.tuples(st.just("take"), st.integers(0, 7)),
    st.tuples(st.just("release"), st.integers(0, 7)),
    st.tuples(st.just("time"), st.integers(0, 7), times),
    st.tuples(st.just("weight"), st.integers(0, 7), st.integers(0, 6)),
    st.tuples(st.just("admin"), st.integers(0, 7),
              st.sampled_from(["enabled", "draining", "disabled"])),
    st.tuples(st.just("health"), st.integers(0, 7), st.booleans()),
    st.tuples(st.just("ramp"), st.integers(0, 7), st.integers(1, 6)),
), max_size=60)


def build_pool(cls, states):
    pool = pool_state(cls(), *(member_spec(f"m{i}", weight=wt, backup=bk, maxconn=mc)
                               for i, (wt, _, _, bk, mc) in enumerate(states)))
    for (_, admin, healthy, _, _), member in zip(states, pool.members.values()):
        if admin != "enabled":
            pool.set_admin(member, admin)
        set_health(pool, member, healthy)
    return pool


def set_health(pool, member, healthy):
    old = member.state
    member.healthy = healthy
    pool._changed(member, old, "")


def subset(members, mask):
    return [m for i, m in enumerate(members) if mask >> i & 1]


def run(test, cls, states, evs, exclude_mask):
    """Apply ``evs``; after each, check a pick (with an exclude set) against
    the reference scan."""
    pool = build_pool(cls, states)
    members = list(pool.members.values())
    check = CHECKS[cls]

    def checked_pick(exclude):
        picked = pool.scheduler.pick(None, exclude)
        check(test, pool, picked, exclude)
        return picked

    checked_pick(())
    for ev in evs:
        kind = ev[0]
        if kind == "pick-take":
            picked = checked_pick(subset(members, ev[1]))
            if picked is not None:
                pool.take(picked)
        elif not members:
            continue
        else:
            m = members[ev[1] % len(members)]
            if kind == "take":
                # e.g. chosen by persistence: taken without a pick, but never
                # past maxconn
                if m.has_room:
                    pool.take(m)
            elif kind == "release":
                if m.active:
                    pool.release(m)
            elif kind == "time":
                pool.record_response_time(m, ev[2])
            elif kind == "weight":
                pool.set_weight(m, ev[2])
            elif kind == "admin":
                pool.set_admin(m, ev[2])
            elif kind == "health":
                set_health(pool, m, ev[2])
            elif kind == "ramp" and m.weight:
                # slow start: the runtime lowers effective_weight, then
                # tells the scheduler
                m.effective_weight = min(ev[2], m.weight)
                pool.scheduler.member_changed(m)
        checked_pick(())
        checked_pick(subset(members, exclude_mask))
    return pool


class RegistrationTests(SynchronousTestCase):
    def test_verify(self):
        for cls in SCHEDULERS.values():
            self.assertTrue(verifyObject(IScheduler, cls()))

    def test_registered(self):
        schedulers = load_plugins(entry_points=False).schedulers
        for name, cls in SCHEDULERS.items():
            self.assertIn(name, schedulers)
            self.assertIs(schedulers.get(name).factory, cls)

    def test_no_options(self):
        for cls in SCHEDULERS.values():
            cls(None, {})
            self.assertRaises(OptionError, cls, None, {"slow": "yes"})

    def test_empty_pool(self):
        for cls in SCHEDULERS.values():
            self.assertIsNone(cls().pick(None, ()))
            self.assertIsNone(pool_state(cls()).scheduler.pick(None, ()))


class PropertyTests(SynchronousTestCase):
    @given(member_states, events, st.integers(0, 255))
    @settings(max_examples=150, deadline=None)
    def test_least_connections(self, states, evs, mask):
        run(self, LeastConnections, states, evs, mask)

    @given(member_states, events, st.integers(0, 255))
    @settings(max_examples=150, deadline=None)
    def test_response_time(self, states, evs, mask):
        run(self, ResponseTime, states, evs, mask)

    @given(member_states, events, st.integers(0, 255))
    @settings(max_examples=150, deadline=None)
    def test_composite(self, states, evs, mask):
        run(self, Composite, states, evs, mask)

    @given(st.lists(st.integers(1, 2**70), min_size=2, max_size=5),
           st.lists(st.integers(0, 7), max_size=40))
    @settings(deadline=None)
    def test_least_connections_exact_for_huge_weights(self, weights, takes):
        """Weights set at run time (the admin API has no upper bound) still
        compare exactly, as cross-multiplication does."""
        pool = pool_state(LeastConnections(), *(member_spec(f"m{i}") for i in range(len(weights))))
        members = list(pool.members.values())
        for m, wt in zip(members, weights):
            pool.set_weight(m, wt)
        for i in takes:
            pool.take(members[i % len(members)])
            check_least_connections(self, pool, pool.scheduler.pick(None, ()), ())

    @given(st.integers(1, 6), st.integers(1, 5), st.sampled_from(list(SCHEDULERS.values())))
    def test_equal_members_share_evenly(self, n, rounds, cls):
        """Equal members (same weight, same time or none) with a take after
        each pick: every member once per round."""
        pool = pool_state(cls(), *(member_spec(f"m{i}", weight=2) for i in range(n)))
        for _ in range(rounds):
            picks = []
            for _ in range(n):
                m = pool.scheduler.pick(None, ())
                pool.take(m)
                picks.append(m.name)
            self.assertEqual(sorted(picks), sorted(pool.members))

    @given(st.integers(1, 6), st.sampled_from(list(SCHEDULERS.values())))
    def test_ties_take_turns_without_take(self, n, cls):
        """Even picks not followed by a take (the connect failed before it
        counted, or a queue asked) rotate among equals."""
        pool = pool_state(cls(), *(member_spec(f"m{i}") for i in range(n)))
        for m in pool.members.values():
            pool.record_response_time(m, 0.01)
        names = [pool.scheduler.pick(None, ()).name for _ in range(3 * n)]
        self.assertEqual(names, [f"m{i}" for i in range(n)] * 3)


class LeastConnectionsTests(SynchronousTestCase):
    def test_weighted_shares(self):
        """Weights 2:1 with every connection kept: 2 of every 3 to the
        weight-2 member."""
        pool = pool_state(LeastConnections(), member_spec("a", weight=2), member_spec("b"))
        for _ in range(30):
            pool.take(pool.scheduler.pick(None, ()))
        self.assertEqual((pool.members["a"].active, pool.members["b"].active), (20, 10))

    def test_release_brings_a_member_back_first(self):
        pool = pool_state(LeastConnections(), member_spec("a"), member_spec("b"),
                          member_spec("c"))
        a, b, c = pool.members.values()
        for m in (a, b, c, a, b, c):
            pool.take(m)
        pool.release(b)
        self.assertIs(pool.scheduler.pick(None, ()), b)

    def test_exclude_and_maxconn(self):
        for cls in SCHEDULERS.values():
            pool = pool_state(cls(), member_spec("a", maxconn=1), member_spec("b"))
            a, b = pool.members["a"], pool.members["b"]
            self.assertIs(pool.scheduler.pick(None, [a]), b)
            pool.take(a)
            self.assertEqual({pool.scheduler.pick(None, ()).name for _ in range(4)}, {"b"})
            self.assertIsNone(pool.scheduler.pick(None, [b]))
            pool.release(a)
            self.assertIs(pool.scheduler.pick(None, [b]), a)

    def test_backup_only_when_no_primary(self):
        for cls in SCHEDULERS.values():
            pool = pool_state(cls(), member_spec("a"), member_spec("spare", backup=True))
            a, spare = pool.members["a"], pool.members["spare"]
            for _ in range(5):
                pool.take(a)
            self.assertIs(pool.scheduler.pick(None, ()), a)
            self.assertIs(pool.scheduler.pick(None, [a]), spare)
            pool.set_admin(a, "draining")
            self.assertIs(pool.scheduler.pick(None, ()), spare)
            pool.set_admin(a, "enabled")
            self.assertIs(pool.scheduler.pick(None, ()), a)

    def test_effective_weight_not_weight(self):
        """A slow-starting member (effective_weight lowered by the runtime,
        which then calls member_changed) is judged by its effective weight."""
        for cls in SCHEDULERS.values():
            pool = pool_state(cls(), member_spec("a", weight=4), member_spec("b"))
            a, b = pool.members.values()
            pool.record_response_time(a, 0.010)
            pool.record_response_time(b, 0.010)
            pool.take(a)
            pool.take(b)
            self.assertIs(pool.scheduler.pick(None, ()), a, cls)
            a.effective_weight = 1
            pool.scheduler.member_changed(a)
            # a and b now score alike: they take turns
            self.assertEqual({pool.scheduler.pick(None, ()).name for _ in range(2)},
                             {"a", "b"}, cls)
            pool.take(a)
            self.assertIs(pool.scheduler.pick(None, ()), b, cls)

    def test_removed_member_stays_out(self):
        """A connection of a member removed by a reload may end later; that
        must not bring the member back."""
        for cls in SCHEDULERS.values():
            pool = pool_state(cls(), member_spec("a"), member_spec("b"))
            a = pool.members["a"]
            pool.take(a)
            pool.remove_member("a")
            pool.release(a)
            pool.record_response_time(a, 0.001)
            self.assertEqual({pool.scheduler.pick(None, ()).name for _ in range(4)}, {"b"})

    def test_pick_does_not_scan(self):
        """``pick`` answers from its heaps: it never walks the member list."""
        class NoScan(list):
            def __iter__(self):
                raise AssertionError("pick scanned the members")

        for cls in SCHEDULERS.values():
            pool = pool_state(cls(), *(member_spec(f"m{i}") for i in range(20)))
            pool.scheduler.members = NoScan(pool.scheduler.members)
            for _ in range(50):
                m = pool.scheduler.pick(None, ())
                pool.take(m)
                pool.record_response_time(m, 0.01)

    def test_stale_entries_stay_bounded(self):
        for cls in SCHEDULERS.values():
            pool = pool_state(cls(), *(member_spec(f"m{i}") for i in range(5)))
            sched = pool.scheduler
            for i in range(20000):
                m = sched.pick(None, ())
                pool.take(m)
                pool.record_response_time(m, 0.001 * (i % 7 + 1))
                if i % 3:
                    pool.release(m)
            size = sum(len(h) for h in sched._heaps)
            self.assertLessEqual(size, 2 * len(pool.members) + 2 * sched._SLACK)
            if cls is Composite:
                self.assertLessEqual(len(sched._fast), 2 * len(pool.members) + 2 * sched._SLACK)


class ResponseTimeTests(SynchronousTestCase):
    def test_fastest_wins(self):
        pool = pool_state(ResponseTime(), member_spec("a"), member_spec("b"), member_spec("c"))
        a, b, c = pool.members.values()
        for m, t in ((a, 0.03), (b, 0.01), (c, 0.02)):
            pool.record_response_time(m, t)
        self.assertEqual({pool.scheduler.pick(None, ()).name for _ in range(5)}, {"b"})
        self.assertIs(pool.scheduler.pick(None, [b]), c)

    def test_unsampled_first(self):
        pool = pool_state(ResponseTime(), member_spec("a"), member_spec("new"))
        a, new = pool.members.values()
        pool.record_response_time(a, 0.001)
        self.assertIs(pool.scheduler.pick(None, ()), new)
        pool.record_response_time(new, 0.005)
        self.assertIs(pool.scheduler.pick(None, ()), a)

    def test_weight_divides_the_time(self):
        """A weight-2 member is allowed twice the time."""
        pool = pool_state(ResponseTime(), member_spec("big", weight=2), member_spec("small"))
        big, small = pool.members.values()
        pool.record_response_time(big, 0.018)
        pool.record_response_time(small, 0.010)
        self.assertIs(pool.scheduler.pick(None, ()), big)
        pool.set_weight(big, 1)
        self.assertIs(pool.scheduler.pick(None, ()), small)

    def test_new_sample_moves_a_member(self):
        pool = pool_state(ResponseTime(), member_spec("a"), member_spec("b"))
        a, b = pool.members.values()
        pool.record_response_time(a, 0.01)
        pool.record_response_time(b, 0.02)
        self.assertIs(pool.scheduler.pick(None, ()), a)
        for _ in range(10):
            pool.record_response_time(a, 0.1)  # a slows down
        self.assertIs(pool.scheduler.pick(None, ()), b)


class CompositeTests(SynchronousTestCase):
    def test_worked_example(self):
        """The docstring's example: fast (20 ms, 9 connections) against slow
        (100 ms, idle)."""
        pool = pool_state(Composite(), member_spec("fast"), member_spec("slow"))
        fast, slow = pool.members.values()
        pool.record_response_time(fast, 0.020)
        pool.record_response_time(slow, 0.100)
        for _ in range(9):
            pool.take(fast)
        self.assertIs(pool.scheduler.pick(None, ()), slow)   # 0.200 vs 0.100
        pool.take(slow)
        # 0.200 each: they take turns
        self.assertEqual({pool.scheduler.pick(None, ()).name for _ in range(2)},
                         {"fast", "slow"})
        pool.take(slow)
        self.assertIs(pool.scheduler.pick(None, ()), fast)   # 0.200 vs 0.300
        pool.set_weight(fast, 2)
        pool.release(slow)
        pool.release(slow)
        # fast at weight 2 scores 0.100: level with idle slow
        self.assertEqual({pool.scheduler.pick(None, ()).name for _ in range(2)},
                         {"fast", "slow"})

    def test_steady_share_follows_speed(self):
        """Connections kept open: fast (20 ms) ends up with about five times
        slow's (100 ms)."""
        pool = pool_state(Composite(), member_spec("fast"), member_spec("slow"))
        fast, slow = pool.members.values()
        pool.record_response_time(fast, 0.020)
        pool.record_response_time(slow, 0.100)
        for _ in range(120):
            pool.take(pool.scheduler.pick(None, ()))
        self.assertEqual(fast.active + slow.active, 120)
        self.assertEqual((fast.active, slow.active), (100, 20))

    def test_unsampled_counts_as_fastest(self):
        """A new member is treated as the pool's fastest: it gets the next
        connection, but its own connections count against it."""
        pool = pool_state(Composite(), member_spec("a"), member_spec("b"), member_spec("new"))
        a, b, new = pool.members.values()
        pool.record_response_time(a, 0.010)
        pool.record_response_time(b, 0.050)
        for _ in range(2):
            pool.take(a)
            pool.take(b)
        # a: 3 * 0.010 = 0.030, b: 0.150, new: 1 * 0.010
        self.assertIs(pool.scheduler.pick(None, ()), new)
        pool.take(new)
        pool.take(new)
        # new: 3 * 0.010 = 0.030 ties a: the unsampled one goes first
        self.assertIs(pool.scheduler.pick(None, ()), new)
        pool.take(new)
        self.assertIs(pool.scheduler.pick(None, ()), a)

    def test_no_times_is_least_connections(self):
        pool = pool_state(Composite(), member_spec("a", weight=2), member_spec("b"))
        for _ in range(30):
            pool.take(pool.scheduler.pick(None, ()))
        a, b = pool.members.values()
        self.assertEqual((a.active, b.active), (20, 10))

    def test_fastest_ignores_ineligible(self):
        pool = pool_state(Composite(), member_spec("a"), member_spec("b"), member_spec("new"))
        a, b, new = pool.members.values()
        pool.record_response_time(a, 0.001)
        pool.record_response_time(b, 0.050)
        self.assertEqual(pool.scheduler.fastest(), 0.001)
        pool.set_admin(a, "disabled")
        self.assertEqual(pool.scheduler.fastest(), 0.050)
        pool.take(new)
        # new: 2 * 0.050 = 0.100 against b: 0.050
        self.assertIs(pool.scheduler.pick(None, ()), b)
