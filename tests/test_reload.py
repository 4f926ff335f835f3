"""lbframe.reload: what a reload changes, worked out from two sites alone,
and a running pool merged to a new spec touching only what changed.

The reload as a whole (listeners, checks, admin) is tests/test_site.py's.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbframe.config import parse_site
from lbframe.config.model import Address, MemberSpec, Pool
from lbframe.reload import MemberChanges, diff_sites, merge_members
from lbframe.runtime import PoolState
from lbframe.schedulers.round_robin import RoundRobin

SITE = """
[virtual web]
listen = tcp:8080
pool = web

[pool web]
{pool_keys}
member a = 127.0.0.1:1001
member b = 127.0.0.1:1002 {b_words}
{more}

[pool other]
member x = 127.0.0.1:2001
"""


def parsed(pool_keys="", b_words="", more=""):
    return parse_site(SITE.format(pool_keys=pool_keys, b_words=b_words, more=more), "site.ini")


class DiffSitesTests(SynchronousTestCase):
    def test_same_file_no_changes(self):
        changes = diff_sites(parsed(), parsed())
        self.assertFalse(changes)
        self.assertEqual(changes.as_dict(), {})
        self.assertEqual(changes.summary(), "nothing changed")

    def test_file_positions_do_not_count(self):
        """The same sections further down the file are the same sections."""
        moved = parse_site("\n\n\n" + SITE.format(pool_keys="", b_words="", more=""), "x.ini")
        self.assertFalse(diff_sites(parsed(), moved))

    def test_members_named_per_pool_and_only_in_the_changed_pool(self):
        changes = diff_sites(parsed(), parsed(b_words="weight=3", more="member c = 127.0.0.1:1003"))
        self.assertEqual(changes.pools.changed, ["web"])
        self.assertEqual(list(changes.members), ["web"])
        web = changes.members["web"]
        self.assertEqual((web.added, web.changed, web.removed), (["c"], ["b"], []))
        self.assertEqual(sorted(web.specs), ["b", "c"], "specs only of what changed")
        self.assertEqual(web.specs["b"].weight, 3)
        self.assertIsNone(web.order, "c came last: adding at the end keeps the file's order")
        self.assertEqual(changes.pool_settings, set())
        self.assertEqual(changes.as_dict(), {"pools": {"changed": ["web"]},
                                             "members": {"added": ["web/c"],
                                                         "changed": ["web/b"]}})

    def test_settings_and_monitors_of_a_pool(self):
        changes = diff_sites(parsed(), parsed(pool_keys="scheduler = least-connections"))
        self.assertEqual(changes.pool_settings, {"web"})
        self.assertEqual(changes.members, {})
        self.assertEqual(changes.pool_monitors, set())

    def test_sections_added_and_removed(self):
        old = parsed()
        new = parse_site(SITE.format(pool_keys="", b_words="", more="").replace(
            "[pool other]\nmember x = 127.0.0.1:2001\n",
            "[pool third]\nmember y = 127.0.0.1:3001\n"), "site.ini")
        changes = diff_sites(old, new)
        self.assertEqual((changes.pools.added, changes.pools.removed), (["third"], ["other"]))
        self.assertIn("third", changes.pools)
        self.assertNotIn("web", changes.pools)


def spec(name, port, weight=1):
    return MemberSpec(name, Address("127.0.0.1", port), weight=weight)


members = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), st.integers(1, 3), st.integers(1, 4)),
    max_size=8, unique_by=lambda t: t[0]).map(
        lambda items: tuple(spec(name, 1000 + port, weight) for name, port, weight in items))


class MergeMembersTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(before=members, after=members)
    def test_merging_the_difference_gives_the_new_pool(self, before, after):
        """Whatever two member lists: the running pool ends with the new
        members in the file's order, with the new specs, and keeps the
        Member object of every member whose address did not change."""
        pool = PoolState.build(Pool("p", before), RoundRobin(), clock=Clock())
        kept = {m.name: m for m in pool.members.values()}
        new_spec = Pool("p", after)
        changes = MemberChanges.of_pools(Pool("p", before), new_spec)
        made = merge_members(pool, new_spec, changes)
        self.assertEqual(list(pool.members), [m.name for m in after])
        self.assertEqual([m.spec for m in pool.members.values()], list(after))
        self.assertIs(pool.spec, new_spec)
        old_specs = {m.name: m for m in before}
        for m in after:
            old = old_specs.get(m.name)
            member = pool.members[m.name]
            if old is not None and old.address == m.address:
                self.assertIs(member, kept[m.name])
                self.assertNotIn(member, made)
            else:
                self.assertIn(member, made)
        for name, member in kept.items():
            if name not in pool.members or pool.members[name] is not member:
                self.assertTrue(member.removed)
        # The scheduler knows exactly the pool's members.
        picked = {pool.scheduler.pick(None, ()).name for _ in range(40)} if after else set()
        self.assertEqual(picked, {m.name for m in after})

    def test_a_weight_set_by_the_admin_gives_way_to_a_changed_file(self):
        pool = PoolState.build(Pool("p", (spec("a", 1), spec("b", 2))), RoundRobin())
        a, b = pool.members["a"], pool.members["b"]
        pool.set_weight(a, 9)
        pool.set_weight(b, 7)
        new = Pool("p", (spec("a", 1), spec("b", 2, weight=4)))
        merge_members(pool, new, MemberChanges.of_pools(pool.spec, new))
        self.assertEqual((a.weight, b.weight), (9, 4))
