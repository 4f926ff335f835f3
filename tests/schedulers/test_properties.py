"""Schedulers: exact shares, smoothness, eligibility — as properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from lbframe.interfaces import IScheduler
from lbframe.schedulers.round_robin import RoundRobin
from lbframe.schedulers.weighted import Weighted
from tests.helpers import member_spec, pool_state

weights = st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=10)
# per member: (weight, admin state, healthy, backup)
member_states = st.lists(
    st.tuples(st.integers(0, 10), st.sampled_from(["enabled", "draining", "disabled"]),
              st.booleans(), st.booleans()),
    min_size=0, max_size=10)


def build(cls, ws, **kw):
    return pool_state(cls(), *(member_spec(f"m{i}", weight=w, **kw) for i, w in enumerate(ws)))


class InterfaceTests(SynchronousTestCase):
    def test_verify(self):
        for cls in (RoundRobin, Weighted):
            self.assertTrue(verifyObject(IScheduler, cls()))


class WeightedTests(SynchronousTestCase):
    def test_seed_example_interleaves(self):
        """4:2:1 (high, mid, low spec servers) gives a b a c a b a."""
        pool = pool_state(Weighted(), member_spec("a", weight=4), member_spec("b", weight=2),
                          member_spec("c", weight=1))
        picks = "".join(pool.scheduler.pick(None).name for _ in range(14))
        self.assertEqual(picks, "abacaba" * 2)

    @given(weights)
    def test_exact_shares_over_a_cycle(self, ws):
        pool = build(Weighted, ws)
        counts = {m: 0 for m in pool.members.values()}
        for _ in range(sum(ws)):
            counts[pool.scheduler.pick(None)] += 1
        self.assertEqual({m.name: c for m, c in counts.items()},
                         {f"m{i}": w for i, w in enumerate(ws)})

    @given(weights)
    @settings(max_examples=200)
    def test_smooth(self, ws):
        """At every point of the sequence each member is within 2 picks of
        its exact share: no bursts."""
        pool = build(Weighted, ws)
        total = sum(ws)
        counts = {m: 0 for m in pool.members.values()}
        for k in range(1, 2 * total + 1):
            counts[pool.scheduler.pick(None)] += 1
            for m, c in counts.items():
                self.assertLess(abs(c - k * m.weight / total), 2)

    def test_weight_change_takes_effect(self):
        pool = build(Weighted, [1, 1])
        a, b = pool.members["m0"], pool.members["m1"]
        pool.set_weight(a, 3)
        picks = [pool.scheduler.pick(None) for _ in range(8)]
        self.assertEqual((picks.count(a), picks.count(b)), (6, 2))


class CommonTests(SynchronousTestCase):
    @given(member_states, st.sampled_from([RoundRobin, Weighted]), st.integers(1, 50))
    def test_never_picks_ineligible(self, states, cls, npicks):
        pool = pool_state(cls(), *(member_spec(f"m{i}", weight=max(w, 0), backup=bk)
                                   for i, (w, _, _, bk) in enumerate(states)))
        for (w, admin, healthy, _), member in zip(states, pool.members.values()):
            if admin != "enabled":
                pool.set_admin(member, admin)
            member.healthy = healthy
            pool._changed(member, member.state, "")
        usable = [m for m in pool.members.values() if m.eligible]
        primaries = [m for m in usable if not m.backup]
        for _ in range(npicks):
            picked = pool.scheduler.pick(None)
            if not usable:
                self.assertIsNone(picked)
                continue
            self.assertIn(picked, usable)
            if primaries:
                self.assertFalse(picked.backup, "a backup was used while a primary was up")

    def test_round_robin_rotates(self):
        pool = build(RoundRobin, [1, 1, 1])
        self.assertEqual([pool.scheduler.pick(None).name for _ in range(6)],
                         ["m0", "m1", "m2", "m0", "m1", "m2"])

    def test_exclude_and_maxconn(self):
        for cls in (RoundRobin, Weighted):
            pool = pool_state(cls(), member_spec("a", maxconn=1), member_spec("b"))
            a, b = pool.members["a"], pool.members["b"]
            self.assertIs(pool.scheduler.pick(None, [a]), b)
            pool.take(a)
            self.assertEqual({pool.scheduler.pick(None).name for _ in range(4)}, {"b"})
            pool.release(a)
            self.assertEqual({pool.scheduler.pick(None).name for _ in range(4)}, {"a", "b"})

    def test_empty_pool(self):
        for cls in (RoundRobin, Weighted):
            self.assertIsNone(cls().pick(None, ()))
