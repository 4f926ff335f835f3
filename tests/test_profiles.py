"""lbframe.profiles: building a persistence profile, and carrying its counters
over a reload that kept its store."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbframe.balancer import RequestContext
from lbframe.config.model import Persistence
from lbframe.errors import ConfigError
from lbframe.persistence.memory import MemoryStore
from lbframe.persistence.source_ip import SourceIP
from lbframe.plugins import load_plugins
from lbframe.profiles import Profile, build_profile
from lbframe.schedulers.round_robin import RoundRobin
from tests.helpers import member_spec, pool_state

PLUGINS = load_plugins(entry_points=False)


def source_ip(store=None) -> Profile:
    return build_profile(Persistence("s", "source-ip"), PLUGINS, Clock(), store=store)


class BuildTests(SynchronousTestCase):
    def test_builds_method_and_store(self):
        profile = source_ip()
        self.assertIsInstance(profile.method, SourceIP)
        self.assertIsInstance(profile.store, MemoryStore)
        self.assertEqual(profile.name, "s")

    def test_given_store_is_used(self):
        store = MemoryStore(60.0, Clock())
        self.assertIs(source_ip(store).store, store)

    def test_unknown_method_is_a_config_error(self):
        e = self.assertRaises(ConfigError, build_profile, Persistence("s", "source-iq"),
                              PLUGINS, Clock())
        self.assertIn("unknown persistence method 'source-iq'", str(e))


class CarryCountersTests(SynchronousTestCase):
    def used(self, profile: Profile) -> Profile:
        """Count a few lookups, hits and writes on ``profile``."""
        pool = pool_state(RoundRobin(), member_spec("a"), member_spec("b"))
        for _ in range(3):
            context = RequestContext("192.0.2.7", 1, "v")
            member = profile.member_for(context, pool)
            if member is None:
                profile.picked(context, pool.members["a"])
        profile.replaced = 4
        return profile

    def test_same_store_carries_every_counter(self):
        old = self.used(source_ip())
        self.assertEqual((old.lookups, old.hits, old.written), (3, 2, 1))
        new = source_ip(store=old.store)
        self.assertTrue(new.carry_counters_from(old))
        self.assertEqual({c: getattr(new, c) for c in Profile.COUNTERS},
                         {"lookups": 3, "hits": 2, "replaced": 4, "written": 1})
        # They go on from there.
        new.member_for(RequestContext("192.0.2.7", 1, "v"),
                       pool_state(RoundRobin(), member_spec("a")))
        self.assertEqual((new.lookups, new.hits), (4, 3))

    def test_new_store_starts_from_zero(self):
        old = self.used(source_ip())
        new = source_ip()
        self.assertFalse(new.carry_counters_from(old))
        self.assertEqual([getattr(new, c) for c in Profile.COUNTERS], [0, 0, 0, 0])

    def test_from_itself_changes_nothing(self):
        profile = self.used(source_ip())
        self.assertFalse(profile.carry_counters_from(profile))
        self.assertEqual(profile.lookups, 3)
