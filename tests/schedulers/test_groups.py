"""``priority`` and ``source-hash``: overflow between groups, consistent hashing
— as properties over random member sets, states and connection events."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from lbframe.balancer import RequestContext
from lbframe.config.model import Pool
from lbframe.errors import OptionError
from lbframe.interfaces import IScheduler
from lbframe.plugins import load_plugins
from lbframe.runtime import PoolState
from lbframe.schedulers import usable
from lbframe.schedulers.priority import Priority
from lbframe.schedulers.source_hash import SourceHash, key_hash, maglev_table, table_size
from tests.helpers import member_spec

# the table builds of source-hash take tens of milliseconds each
slow = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def build(cls, specs, threshold=None, order=None):
    """A PoolState whose scheduler is built as the service builds it: from
    the frozen Pool. ``order`` adds the members in another order."""
    spec = Pool("web", tuple(specs), priority_threshold=threshold)
    pool = PoolState(spec, cls(spec, {}))
    for s in (specs if order is None else order):
        pool.add_member(s)
    return pool


def set_state(pool, member, admin, healthy):
    """As tests/schedulers/test_properties.py does: the admin API's way, and health the
    way the monitors' owner (PoolState) applies it."""
    if admin != member.admin:
        pool.set_admin(member, admin)
    if healthy != member.healthy:
        old = member.state
        member.healthy = healthy
        pool._changed(member, old, "")


def ctx(host):
    return RequestContext(host, 40000, "vs")


def addresses(n, seed=0):
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        if i % 4 == 3:
            out.append("2001:db8::%x:%x" % (rnd.getrandbits(16), rnd.getrandbits(16)))
        else:
            out.append("%d.%d.%d.%d" % (rnd.randrange(1, 224), rnd.getrandbits(8),
                                        rnd.getrandbits(8), rnd.randrange(1, 255)))
    return out


KEYS = addresses(10_000)


def differences(a, b) -> str:
    """Empty when the sequences are equal, else a short account (assertEqual's
    diff of two 65 537-slot tables would take minutes)."""
    if len(a) != len(b):
        return f"lengths {len(a)} != {len(b)}"
    bad = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if not bad:
        return ""
    return f"{len(bad)} of {len(a)} differ, e.g. " + ", ".join(
        f"[{i}] {a[i]!r} != {b[i]!r}" for i in bad[:5])


class InterfaceTests(SynchronousTestCase):
    def test_verify(self):
        for cls in (Priority, SourceHash):
            self.assertTrue(verifyObject(IScheduler, cls()))
            self.assertTrue(verifyObject(IScheduler, cls(Pool("web", ()), {})))

    def test_registered(self):
        schedulers = load_plugins(entry_points=False).schedulers
        spec = Pool("web", (member_spec("a"),), priority_threshold=5)
        for name, cls in (("priority", Priority), ("source-hash", SourceHash)):
            self.assertIn(name, schedulers)
            built = schedulers.get(name).factory(spec, {})
            self.assertIsInstance(built, cls)
            self.assertTrue(verifyObject(IScheduler, built))
        self.assertEqual(schedulers.get("priority").factory(spec, {}).threshold, 5)

    def test_no_options(self):
        for cls in (Priority, SourceHash):
            with self.assertRaises(OptionError):
                cls(Pool("web", ()), {"bogus": "1"})

    def test_empty_pool(self):
        for cls in (Priority, SourceHash):
            self.assertIsNone(cls().pick(None, ()))
            self.assertIsNone(cls().pick(ctx("192.0.2.1"), ()))


# -- priority -------------------------------------------------------------

# per member: (weight, priority, maxconn, backup)
group_members = st.lists(
    st.tuples(st.integers(0, 5), st.integers(1, 3),
              st.one_of(st.none(), st.integers(1, 3)),
              st.sampled_from([False, False, False, True])),
    min_size=1, max_size=8)
thresholds = st.one_of(st.none(), st.integers(1, 3))
# events: pick (and take what was picked), release, state and weight changes
events = st.lists(st.one_of(
    st.tuples(st.just("pick"), st.one_of(st.none(), st.integers(0, 7))),
    st.tuples(st.just("release"), st.integers(0, 7)),
    st.tuples(st.just("state"), st.integers(0, 7),
              st.sampled_from(["enabled", "enabled", "draining", "disabled"]), st.booleans()),
    st.tuples(st.just("weight"), st.integers(0, 7), st.integers(0, 5)),
), max_size=60)


def under(member, threshold):
    limit = threshold if threshold is not None else member.maxconn
    return limit is None or member.active < limit


class PriorityTests(SynchronousTestCase):
    def check_pick(self, pool, threshold, picked, exclude):
        """The whole rule, from scratch, against what the scheduler chose."""
        ok = [m for m in pool.members.values() if usable(m, exclude)]
        if not ok:
            self.assertIsNone(picked)
            return
        self.assertIn(picked, ok)
        primaries = [m for m in ok if not m.backup]
        tier = primaries or ok
        self.assertEqual(picked.backup, not primaries,
                         "a backup was used while a primary was usable")
        below = [m for m in tier if under(m, threshold)]
        if below:
            # never group k+1 while group k has a usable member under threshold
            self.assertTrue(under(picked, threshold))
            self.assertEqual(picked.priority, min(m.priority for m in below))
        else:
            # all at the threshold: the highest group with room
            self.assertEqual(picked.priority, min(m.priority for m in tier))

    @given(group_members, thresholds, events)
    @settings(max_examples=300)
    def test_events(self, members, threshold, evs):
        specs = [member_spec(f"m{i}", weight=w, priority=p, maxconn=mc, backup=bk)
                 for i, (w, p, mc, bk) in enumerate(members)]
        pool = build(Priority, specs, threshold)
        ms = list(pool.members.values())
        for ev in evs:
            if ev[0] == "pick":
                exclude = [ms[ev[1] % len(ms)]] if ev[1] is not None else []
                picked = pool.scheduler.pick(None, exclude)
                self.check_pick(pool, threshold, picked, exclude)
                if picked is not None:
                    pool.take(picked)
            elif ev[0] == "release":
                m = ms[ev[1] % len(ms)]
                if m.active:
                    pool.release(m)
            elif ev[0] == "state":
                set_state(pool, ms[ev[1] % len(ms)], ev[2], ev[3])
            else:
                pool.set_weight(ms[ev[1] % len(ms)], ev[2])
        # the event-kept counts agree with a recount
        sched = pool.scheduler
        for m in ms:
            self.assertEqual(sched._open[m], usable(m, ()) and under(m, threshold))
        for tier in sched._tiers:
            for g in tier:
                self.assertEqual(g.open, sum(sched._open[m] for m in g.wrr.members))

    @given(st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=4), min_size=2, max_size=4),
           st.integers(1, 4), st.data())
    @settings(max_examples=150)
    def test_overflow_then_return(self, groups, threshold, data):
        """Group 1 takes exactly threshold × its size, then group 2 does...;
        a connection ending in group 1 brings the next one back there."""
        specs = [member_spec(f"g{p}m{i}", weight=w, priority=p)
                 for p, ws in enumerate(groups, 1) for i, w in enumerate(ws)]
        pool = build(Priority, specs, threshold)
        for p, ws in enumerate(groups, 1):
            for _ in range(threshold * len(ws)):
                m = pool.scheduler.pick(None)
                self.assertEqual(m.priority, p)
                pool.take(m)
        self.assertTrue(all(m.active == threshold for m in pool.members.values()))
        # all at the threshold: the top group takes the excess
        m = pool.scheduler.pick(None)
        self.assertEqual(m.priority, 1)
        # load falls in group 2 (then in group 1): new connections go back up
        for p in (2, 1):
            freed = data.draw(st.sampled_from(
                [m for m in pool.members.values() if m.priority == p]))
            pool.release(freed)
            self.assertIs(pool.scheduler.pick(None), freed)
            pool.take(freed)
            self.assertEqual(pool.scheduler.pick(None).priority, 1)

    @given(st.lists(st.integers(1, 6), min_size=1, max_size=5),
           st.lists(st.integers(1, 6), min_size=1, max_size=5), st.integers(1, 3))
    @settings(max_examples=100)
    def test_weighted_shares_inside_a_group(self, top, second, threshold):
        """Exact weight shares over a cycle, in group 1 while it has room
        and in group 2 while group 1 is saturated."""
        specs = ([member_spec(f"a{i}", weight=w, priority=1) for i, w in enumerate(top)]
                 + [member_spec(f"b{i}", weight=w, priority=2) for i, w in enumerate(second)])
        pool = build(Priority, specs, threshold)
        picks = Counter(pool.scheduler.pick(None).name for _ in range(2 * sum(top)))
        self.assertEqual(picks, {f"a{i}": 2 * w for i, w in enumerate(top)})
        for m in list(pool.members.values()):
            if m.priority == 1:
                for _ in range(threshold):
                    pool.take(m)
        picks = Counter(pool.scheduler.pick(None).name for _ in range(sum(second)))
        self.assertEqual(picks, {f"b{i}": w for i, w in enumerate(second)})

    def test_maxconn_is_the_default_threshold(self):
        pool = build(Priority, [member_spec("a", maxconn=2), member_spec("b", priority=2)])
        a, b = pool.members["a"], pool.members["b"]
        got = []
        for _ in range(4):
            m = pool.scheduler.pick(None)
            got.append(m.name)
            pool.take(m)
        self.assertEqual(got, ["a", "a", "b", "b"])
        pool.release(a)
        self.assertIs(pool.scheduler.pick(None), a)
        # without maxconn nor threshold a member is never at the threshold
        pool = build(Priority, [member_spec("a"), member_spec("b", priority=2)])
        for _ in range(50):
            pool.take(pool.scheduler.pick(None))
        self.assertEqual(pool.members["a"].active, 50)
        self.assertEqual(b.active, 2)

    def test_down_group_overflows_and_backup_last(self):
        pool = build(Priority, [member_spec("a"), member_spec("b", priority=2),
                                member_spec("c", priority=1, backup=True)], threshold=1)
        a, b, c = (pool.members[n] for n in "abc")
        set_state(pool, a, "enabled", False)
        self.assertIs(pool.scheduler.pick(None), b)
        pool.take(b)
        # b is at the threshold but usable: still before the backup
        self.assertIs(pool.scheduler.pick(None), b)
        set_state(pool, b, "draining", True)
        self.assertIs(pool.scheduler.pick(None), c)
        set_state(pool, a, "enabled", True)
        self.assertIs(pool.scheduler.pick(None), a)
        self.assertIs(pool.scheduler.pick(None, [a]), c)

    def test_reload_removes_and_adds(self):
        pool = build(Priority, [member_spec("a"), member_spec("b", priority=2)], threshold=1)
        pool.take(pool.members["a"])
        self.assertEqual(pool.scheduler.pick(None).name, "b")
        pool.remove_member("b")
        self.assertEqual(pool.scheduler._tiers, ([pool.scheduler._group[pool.members["a"]]], []))
        pool.add_member(member_spec("c", priority=3))
        self.assertEqual(pool.scheduler.pick(None).name, "c")


# -- source-hash ------------------------------------------------------------

# per member: (weight, admin, healthy, maxconn, backup)
hash_members = st.lists(
    st.tuples(st.integers(0, 4), st.sampled_from(["enabled", "enabled", "draining", "disabled"]),
              st.sampled_from([True, True, False]), st.one_of(st.none(), st.integers(1, 2)),
              st.sampled_from([False, False, False, True])),
    min_size=1, max_size=12)


def mapping(pool, keys=KEYS):
    return [pool.scheduler.pick(ctx(k)).name for k in keys]


class SourceHashTests(SynchronousTestCase):
    @given(hash_members, st.randoms(use_true_random=False), st.lists(st.integers(0, 11), max_size=6))
    @settings(slow, max_examples=25)
    def test_nodes_agree(self, members, rnd, takes):
        """Two schedulers built apart (members added in another order, as on
        another node or worker) map every address to the same member, also
        when members are down, full or excluded."""
        specs = [member_spec(f"m{i}", port=i + 1, weight=w, maxconn=mc, backup=bk)
                 for i, (w, _, _, mc, bk) in enumerate(members)]
        shuffled = list(specs)
        rnd.shuffle(shuffled)
        nodes = [build(SourceHash, specs), build(SourceHash, specs, order=shuffled)]
        for pool in nodes:
            for (_, admin, healthy, _, _), spec in zip(members, specs):
                set_state(pool, pool.members[spec.name], admin, healthy)
            for t in takes:
                m = pool.members[specs[t % len(specs)].name]
                if usable(m, ()):
                    pool.take(m)
        keys = KEYS[:300]
        exclude_name = specs[0].name
        results = []
        for pool in nodes:
            names = []
            for k in keys:
                for exclude in ([], [pool.members[exclude_name]]):
                    m = pool.scheduler.pick(ctx(k), exclude)
                    names.append(None if m is None else m.name)
            results.append(names)
        self.assertEqual(differences(results[0], results[1]), "")
        # whole lookup tables, not only a sample of them (an order-dependent
        # build differs in a few dozen slots out of 65 537)
        tables = []
        for pool in nodes:
            for tier in pool.scheduler._tiers:
                if tier.dirty:
                    tier.rebuild()
            tables.append([[m.name for m in tier.table] for tier in pool.scheduler._tiers])
        for a, b in zip(*tables):
            self.assertEqual(differences(a, b), "")
        # the same node, asked again, answers the same
        self.assertEqual([m.name for m in (nodes[0].scheduler.pick(ctx(k)) for k in keys) if m],
                         [n for n in results[0][::2] if n])

    @given(hash_members, st.lists(st.tuples(st.integers(0, 11), st.booleans()), max_size=20))
    @settings(slow, max_examples=30)
    def test_never_picks_ineligible(self, members, ops):
        specs = [member_spec(f"m{i}", weight=w, maxconn=mc, backup=bk)
                 for i, (w, _, _, mc, bk) in enumerate(members)]
        pool = build(SourceHash, specs)
        ms = list(pool.members.values())
        for (_, admin, healthy, _, _), m in zip(members, ms):
            set_state(pool, m, admin, healthy)
        for n, (i, with_address) in enumerate(ops):
            exclude = [ms[i % len(ms)]] if n % 3 == 0 else []
            picked = pool.scheduler.pick(ctx(KEYS[n]) if with_address else None, exclude)
            ok = [m for m in ms if usable(m, exclude)]
            if not ok:
                self.assertIsNone(picked)
                continue
            self.assertIn(picked, ok)
            if any(not m.backup for m in ok):
                self.assertFalse(picked.backup, "a backup was used while a primary was usable")
            pool.take(picked)

    def test_disruption_about_one_nth(self):
        """Adding or removing one of n members (3 ≤ n ≤ 20) moves at most
        1.2/n of 10 000 clients: mostly those of that member."""
        for n in range(3, 21):
            specs = [member_spec(f"s{i}") for i in range(n)]
            pool = build(SourceHash, specs)
            before = mapping(pool)
            pool.add_member(member_spec("new"))
            added = mapping(pool)
            moved = sum(x != y for x, y in zip(before, added))
            self.assertLessEqual(moved, 1.2 / n * len(KEYS), f"n={n}: {moved} moved on add")
            self.assertGreater(added.count("new"), 0.8 / (n + 1) * len(KEYS))
            pool.remove_member("new")
            self.assertEqual(differences(mapping(pool), before), "")
            gone = f"s{n // 2}"
            pool.remove_member(gone)
            removed = mapping(pool)
            moved = sum(x != y for x, y in zip(before, removed))
            self.assertLessEqual(moved, 1.2 / n * len(KEYS), f"n={n}: {moved} moved on remove")
            self.assertNotIn(gone, removed)

    def test_member_down_moves_only_its_clients_roughly(self):
        pool = build(SourceHash, [member_spec(f"s{i}") for i in range(10)])
        before = mapping(pool)
        set_state(pool, pool.members["s3"], "enabled", False)
        after = mapping(pool)
        moved = sum(x != y for x, y in zip(before, after))
        self.assertLessEqual(moved, 1.2 / 10 * len(KEYS))
        self.assertNotIn("s3", after)
        set_state(pool, pool.members["s3"], "enabled", True)
        self.assertEqual(differences(mapping(pool), before), "")

    def test_weights_honoured(self):
        pool = build(SourceHash, [member_spec("heavy", weight=2)]
                     + [member_spec(f"s{i}") for i in range(4)])
        counts = Counter(mapping(pool))
        light = sum(counts[f"s{i}"] for i in range(4)) / 4
        self.assertTrue(1.8 < counts["heavy"] / light < 2.2, counts)

    @given(st.lists(st.integers(1, 256), min_size=1, max_size=30))
    @settings(slow, max_examples=20)
    def test_table_shares(self, weights):
        """Each member owns its weight's share of the table, to within
        1 + n·w/W slots (less than 1% of its share)."""
        size = table_size(len(weights))
        table = maglev_table([(f"m{i}", w, i) for i, w in enumerate(weights)], size)
        counts = Counter(table)
        total = sum(weights)
        for i, w in enumerate(weights):
            self.assertLessEqual(abs(counts[i] - size * w / total),
                                 2 + len(weights) * w / total)

    def test_table_independent_of_order(self):
        """Slots contested within one round go by name, not by the order the
        members were added in (that differs by a few dozen slots only)."""
        specs = [member_spec(f"s{i}", weight=1 + i % 3) for i in range(12)]
        orders = [specs, specs[::-1], random.Random(7).sample(specs, len(specs))]
        tables = []
        for order in orders:
            tier = build(SourceHash, specs, order=order).scheduler._tiers[0]
            tier.rebuild()
            tables.append([m.name for m in tier.table])
        self.assertEqual(differences(tables[0], tables[1]), "")
        self.assertEqual(differences(tables[0], tables[2]), "")

    def test_table_size(self):
        self.assertEqual(table_size(1), 65537)
        self.assertEqual(table_size(655), 65537)
        self.assertEqual(table_size(656), 131071)
        self.assertEqual(table_size(50_000), 5_000_011)

    def test_key_hash_is_stable(self):
        # fixed values: the same in every process, whatever PYTHONHASHSEED
        self.assertEqual(key_hash("192.0.2.1"), key_hash("::ffff:192.0.2.1"))
        self.assertEqual(key_hash("192.0.2.1"), 0xc874face288b2811)

    def test_rebuild_only_on_real_change(self):
        pool = build(SourceHash, [member_spec(f"s{i}") for i in range(5)])
        tier = pool.scheduler._tiers[0]
        pool.scheduler.pick(ctx("192.0.2.1"))
        self.assertEqual(tier.builds, 1)  # one build for all five additions
        a = pool.members["s0"]
        pool.record_response_time(a, 0.01)
        pool.take(a)
        pool.release(a)
        pool.set_weight(a, 1)
        pool.scheduler.pick(ctx("192.0.2.1"))
        self.assertEqual(tier.builds, 1)
        pool.set_weight(a, 3)
        set_state(pool, pool.members["s1"], "disabled", True)
        pool.scheduler.pick(ctx("192.0.2.1"))
        self.assertEqual(tier.builds, 2)
        # the backup tier is built only when needed
        self.assertEqual(pool.scheduler._tiers[1].builds, 0)

    def test_member_down_moves_only_its_clients_without_a_rebuild(self):
        pool = build(SourceHash, [member_spec(f"s{i}") for i in range(10)])
        tier = pool.scheduler._tiers[0]
        keys = KEYS[:2000]
        before = {k: pool.scheduler.pick(ctx(k)).name for k in keys}
        builds = tier.builds
        set_state(pool, pool.members["s3"], "enabled", False)  # s3 goes down
        during = {k: pool.scheduler.pick(ctx(k)).name for k in keys}
        self.assertEqual(tier.builds, builds)
        moved = {k for k in keys if during[k] != before[k]}
        self.assertEqual(moved, {k for k in keys if before[k] == "s3"})
        self.assertGreater(len(moved), 100)
        # its clients spread over the others rather than piling onto one
        self.assertGreater(len({during[k] for k in moved}), 5)
        set_state(pool, pool.members["s3"], "enabled", True)  # back: they return
        self.assertEqual({k: pool.scheduler.pick(ctx(k)).name for k in keys}, before)
        self.assertEqual(tier.builds, builds)

    def test_full_or_excluded_falls_back_deterministically(self):
        specs = [member_spec(f"s{i}", maxconn=1) for i in range(6)]
        nodes = [build(SourceHash, specs), build(SourceHash, specs, order=specs[::-1])]
        host = "198.51.100.7"
        first = nodes[0].scheduler.pick(ctx(host)).name
        seconds = []
        for pool in nodes:
            self.assertEqual(pool.scheduler.pick(ctx(host)).name, first)
            pool.take(pool.members[first])
            second = pool.scheduler.pick(ctx(host))
            self.assertNotEqual(second.name, first)
            self.assertNotIn(pool.scheduler.pick(ctx(host), [second]).name, (first, second.name))
            seconds.append(second.name)
            pool.release(pool.members[first])
            self.assertEqual(pool.scheduler.pick(ctx(host)).name, first)
        self.assertEqual(seconds[0], seconds[1])
        # a full member's clients spread over the others
        pool = nodes[0]
        sticky = [k for k, name in zip(KEYS[:2000], mapping(pool, KEYS[:2000])) if name == "s0"]
        pool.take(pool.members["s0"])
        spread = Counter(mapping(pool, sticky))
        self.assertNotIn("s0", spread)
        self.assertEqual(len(spread), 5)

    def test_backup_only_when_no_other_usable(self):
        pool = build(SourceHash, [member_spec("a", maxconn=1), member_spec("b", backup=True),
                                  member_spec("c", backup=True)])
        a = pool.members["a"]
        self.assertEqual(set(mapping(pool, KEYS[:50])), {"a"})
        pool.take(a)
        backups = mapping(pool, KEYS[:200])
        self.assertEqual(set(backups), {"b", "c"})
        pool.release(a)
        set_state(pool, a, "enabled", False)
        self.assertEqual(differences(mapping(pool, KEYS[:200]), backups), "")

    def test_no_address_round_robin(self):
        pool = build(SourceHash, [member_spec("a"), member_spec("b"), member_spec("c")])
        set_state(pool, pool.members["b"], "disabled", True)
        self.assertEqual([pool.scheduler.pick(None).name for _ in range(4)], ["a", "c", "a", "c"])
        self.assertEqual([pool.scheduler.pick(ctx("")).name for _ in range(2)], ["a", "c"])
        self.assertEqual(pool.scheduler.pick(object()).name, "a")
