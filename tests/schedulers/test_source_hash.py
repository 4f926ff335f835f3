"""``source-hash`` table builds: in slices on the reactor while the old table
answers, the same table as a build in one go (and as lbframe's first fill),
and nothing built when nothing changed. The hashing itself (consistency,
disruption, weights, fallbacks) is in tests/schedulers/test_groups.py."""

from __future__ import annotations

import hashlib
from heapq import heapreplace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbframe.schedulers.maglev import MaglevBuild, maglev_table, table_size
from lbframe.schedulers.source_hash import SourceHash, key_hash
from tests.helpers import member_spec
from tests.schedulers.test_groups import KEYS, build, ctx, differences, set_state

slow = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_table(entries, size):
    """lbframe's first Maglev fill (a heap of (round, index)), kept as it
    was: nodes running an older lbframe must still agree with new ones."""
    entries = sorted(entries, key=lambda e: e[0])
    table = [None] * size
    maxw = max(w for _, w, _ in entries)
    members, weights, pos, skips, taken = [], [], [], [], []
    for name, w, m in entries:
        d = hashlib.blake2b(name.encode(), digest_size=16, person=b"lbframe-maglev").digest()
        h1, h2 = int.from_bytes(d[:8], "big"), int.from_bytes(d[8:], "big")
        members.append(m)
        weights.append(w)
        pos.append(h1 % size)
        skips.append(h2 % (size - 1) + 1)
        taken.append(0)
    heap = [(0, i) for i in range(len(members))]
    for _ in range(size):
        i = heap[0][1]
        c, skip = pos[i], skips[i]
        while table[c] is not None:
            c = (c + skip) % size
        table[c] = members[i]
        pos[i] = (c + skip) % size
        k = taken[i] = taken[i] + 1
        heapreplace(heap, (k * maxw // weights[i], i))
    return table


member_weights = st.dictionaries(st.text("abcdefgh0123", min_size=1, max_size=6),
                                 st.integers(1, 9), min_size=1, max_size=25)
small_primes = st.sampled_from([2, 3, 7, 31, 101, 1009, 4099])


class FillTests(SynchronousTestCase):
    @given(member_weights, small_primes, st.lists(st.integers(1, 500), min_size=1, max_size=20))
    @settings(slow, max_examples=200)
    def test_slices_give_the_table_of_one_go(self, weights, size, steps):
        """However the fill is cut into slices, the table is the one the
        first (heap-based) fill gives, slot for slot."""
        entries = [(name, w, name) for name, w in weights.items()]
        build_ = MaglevBuild(entries, size)
        k = 0
        while not build_.run(steps[k % len(steps)]):
            k += 1
        self.assertEqual(build_.table, reference_table(entries, size))
        self.assertEqual(maglev_table(entries[::-1], size), build_.table)

    @given(member_weights)
    @settings(slow, max_examples=8)
    def test_full_size_tables(self, weights):
        entries = [(name, w, name) for name, w in weights.items()]
        size = table_size(len(entries))
        build_ = MaglevBuild(entries, size)
        while not build_.run(5000):
            pass
        self.assertEqual(differences(build_.table, reference_table(entries, size)), "")

    def test_run_never_exceeds_its_steps(self):
        """A slice's work is bounded even in the last, crowded part of the
        fill (where one member may step over thousands of taken slots)."""
        entries = [(f"m{i}", 1 + i % 4, i) for i in range(40)]
        build_ = MaglevBuild(entries, 65537)
        while True:
            before = build_.work
            done = build_.run(97)
            self.assertLessEqual(build_.work - before, 97 + MaglevBuild.HASH_COST - 1)
            if done:
                break
        self.assertEqual(build_.filled, 65537)


class FakeTimer:
    """The scheduler's timer: ``cost`` seconds per unit of fill work done so
    far, so that a slice's 'duration' is exactly the work it did."""

    def __init__(self, cost=1e-6):
        self.cost = cost
        self.scheduler = None

    def __call__(self):
        return sum(t.build.work for t in self.scheduler._tiers if t.build is not None) * self.cost


class StepClock(Clock):
    """A task.Clock that can run one pending call at a time (``advance(0)``
    runs the slices that a slice schedules with ``callLater(0)`` too)."""

    def step(self):
        call = self.calls.pop(0)
        call.called = 1
        call.func(*call.args, **call.kw)


def cooperative(specs, budget=0.002, steps=256):
    """A pool whose source-hash builds in slices on a StepClock."""
    clock, timer = StepClock(), FakeTimer()
    pool = build(lambda spec, options: SourceHash(spec, options, clock=clock, timer=timer,
                                                  budget=budget, steps=steps), specs)
    timer.scheduler = pool.scheduler
    return pool, clock


def run_builds(clock, limit=100_000):
    """Run slices until no build is pending; returns how many ran."""
    n = 0
    while clock.getDelayedCalls():
        clock.step()
        n += 1
        if n > limit:
            raise AssertionError("the build never ends")
    return n


def names(pool, keys):
    return [getattr(pool.scheduler.pick(ctx(k)), "name", None) for k in keys]


class CooperativeTests(SynchronousTestCase):
    specs = [member_spec(f"s{i}", weight=1 + i % 3) for i in range(12)]

    def settled(self, specs=None):
        pool, clock = cooperative(self.specs if specs is None else specs)
        pool.scheduler.pick(ctx("192.0.2.1"))
        run_builds(clock)
        return pool, clock

    def test_each_slice_keeps_its_budget(self):
        """With 1 µs per unit of work and a 2 ms budget, no slice does more
        than 2000 units plus one look at the timer's worth (256)."""
        pool, clock = cooperative(self.specs, budget=0.002, steps=256)
        pool.scheduler.pick(ctx("192.0.2.1"))
        tier = pool.scheduler._tiers[0]
        self.assertIsNotNone(tier.build, "the first pick starts a build, it does not run it")
        slices = 0
        while clock.getDelayedCalls():
            build_ = tier.build
            before = build_.work
            clock.step()
            slices += 1
            self.assertLessEqual(build_.work - before, 2000 + 256)
        self.assertGreater(slices, 50)
        self.assertEqual(tier.slices, slices)
        self.assertEqual(tier.builds, 1)
        self.assertLessEqual(pool.scheduler.longest_slice, 0.002 + 256e-6)

    def test_picks_during_a_build_use_the_old_table(self):
        pool, clock = self.settled()
        keys = KEYS[:3000]
        old = names(pool, keys)
        s3 = pool.members["s3"]
        pool.set_weight(s3, 9)
        self.assertEqual(differences(names(pool, keys), old), "")  # the build only began
        clock.step()
        clock.step()
        self.assertTrue(pool.scheduler.building)
        self.assertEqual(differences(names(pool, keys), old), "")
        run_builds(clock)
        new = names(pool, keys)
        self.assertGreater(new.count("s3"), 2 * old.count("s3"))
        # and the new table is the one a synchronous build gives
        sync = build(SourceHash, self.specs)
        sync.set_weight(sync.members["s3"], 9)
        self.assertEqual(differences(names(sync, keys), new), "")

    def test_members_that_left_are_skipped_while_the_old_table_answers(self):
        pool, clock = self.settled()
        keys = KEYS[:3000]
        old = names(pool, keys)
        pool.remove_member("s5")
        pool.update_member(member_spec("s6", weight=1 + 6 % 3, backup=True))
        during = names(pool, keys)
        self.assertTrue(pool.scheduler.building)
        self.assertNotIn("s5", during)
        self.assertNotIn("s6", during)  # a backup now: not while others are usable
        # everyone else keeps their member
        self.assertEqual({k for k, a, b in zip(keys, old, during) if a != b},
                         {k for k, a in zip(keys, old) if a in ("s5", "s6")})
        run_builds(clock)
        self.assertNotIn("s5", names(pool, keys))

    def test_no_real_change_builds_nothing(self):
        pool, clock = self.settled()
        tier = pool.scheduler._tiers[0]
        builds, slices = tier.builds, tier.slices
        # a reload that changed only maxconn (the scheduler sees remove + add)
        pool.update_member(member_spec("s1", weight=1 + 1 % 3, maxconn=50))
        # a weight set and set back before anyone picked
        pool.set_weight(pool.members["s2"], 7)
        pool.set_weight(pool.members["s2"], 1 + 2 % 3)
        # health changes never need a table
        set_state(pool, pool.members["s4"], "enabled", False)
        pool.scheduler.pick(ctx("192.0.2.1"))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(pool.scheduler.building)
        self.assertEqual((tier.builds, tier.slices), (builds, slices))

    def test_reload_of_maxconn_only_rebuilds_nothing_synchronously_either(self):
        """Without a clock (a script, a stopped reactor) as with one: a
        member updated without a new weight costs no table."""
        pool = build(SourceHash, self.specs)
        pool.scheduler.pick(ctx("192.0.2.1"))
        tier = pool.scheduler._tiers[0]
        self.assertEqual(tier.builds, 1)
        pool.update_member(member_spec("s1", weight=1 + 1 % 3, maxconn=50))
        pool.scheduler.pick(ctx("192.0.2.1"))
        self.assertEqual(tier.builds, 1)

    def test_a_change_undone_during_its_build_stops_it(self):
        pool, clock = self.settled()
        tier = pool.scheduler._tiers[0]
        builds = tier.builds
        s2 = pool.members["s2"]
        pool.set_weight(s2, 7)
        pool.scheduler.pick(ctx("192.0.2.1"))
        clock.step()
        self.assertTrue(pool.scheduler.building)
        pool.set_weight(s2, 1 + 2 % 3)
        pool.scheduler.pick(ctx("192.0.2.1"))
        self.assertFalse(pool.scheduler.building)
        run_builds(clock)
        self.assertEqual(tier.builds, builds)

    def test_a_newer_change_replaces_the_build_under_way(self):
        pool, clock = self.settled()
        s2 = pool.members["s2"]
        pool.set_weight(s2, 7)
        pool.scheduler.pick(ctx("192.0.2.1"))
        clock.step()
        pool.set_weight(s2, 8)
        pool.scheduler.pick(ctx("192.0.2.1"))
        run_builds(clock)
        sync = build(SourceHash, self.specs)
        sync.set_weight(sync.members["s2"], 8)
        self.assertEqual(differences(names(pool, KEYS[:3000]), names(sync, KEYS[:3000])), "")
        self.assertEqual(pool.scheduler._tiers[0].builds, 2)  # the first table, then weight 8

    def test_first_table_partial_answers_are_final_or_usable(self):
        """Before the first table is full, a client whose slot is filled
        already gets its final member; the others get a usable member
        (the name-order fallback)."""
        pool, clock = cooperative(self.specs, budget=0.002, steps=256)
        keys = KEYS[:2000]
        final = names(build(SourceHash, self.specs), keys)
        pool.scheduler.pick(ctx("192.0.2.1"))
        for _ in range(30):
            clock.step()
        tier = pool.scheduler._tiers[0]
        partial = tier.build
        self.assertIsNotNone(partial)
        filled = [k for k in keys if partial.slots[hash_slot(k, partial.size)]]
        self.assertGreater(len(filled), 100)
        self.assertLess(len(filled), len(keys))
        during = dict(zip(keys, names(pool, keys)))
        for k, name in zip(keys, final):
            self.assertIsNotNone(during[k])
        self.assertEqual([during[k] for k in filled],
                         [name for k, name in zip(keys, final) if k in set(filled)])
        run_builds(clock)
        self.assertEqual(differences(names(pool, keys), final), "")

    def test_settle_finishes_now(self):
        pool, clock = cooperative(self.specs)
        pool.scheduler.pick(ctx("192.0.2.1"))
        pool.scheduler.settle()
        self.assertFalse(pool.scheduler.building)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(differences(names(pool, KEYS[:500]),
                                     names(build(SourceHash, self.specs), KEYS[:500])), "")

    @given(st.lists(st.integers(0, 4), min_size=2, max_size=10),
           st.lists(st.tuples(st.integers(0, 9), st.integers(0, 5), st.booleans()), max_size=6),
           st.integers(16, 2000))
    @settings(slow, max_examples=15)
    def test_nodes_agree_after_cooperative_builds(self, weights, changes, steps):
        """A node that builds in slices (picking between changes) and one
        that builds in one go end with the same tables."""
        specs = [member_spec(f"m{i}", weight=w) for i, w in enumerate(weights)]
        coop, clock = cooperative(specs, budget=0.0005, steps=steps)
        sync = build(SourceHash, specs)
        for i, w, pick in changes:
            name = specs[i % len(specs)].name
            for pool in (coop, sync):
                pool.set_weight(pool.members[name], w)
            if pick:
                coop.scheduler.pick(ctx("192.0.2.1"))
                if clock.calls:  # nothing to build when the weight did not change
                    clock.step()
        coop.scheduler.pick(ctx("192.0.2.1"))
        run_builds(clock)
        sync.scheduler.settle()
        for a, b in zip(coop.scheduler._tiers, sync.scheduler._tiers):
            self.assertEqual(differences([getattr(m, "name", None) for m in a.table],
                                         [getattr(m, "name", None) for m in b.table]), "")


def hash_slot(host, size):
    return key_hash(host) % size
