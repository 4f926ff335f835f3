"""Member accounting through its owner (lbframe.runtime): the methods the
data path calls instead of writing a member's counters itself."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from lbframe.schedulers.least_connections import LeastConnections
from tests.helpers import member_spec, pool_state


class AccountingTests(SynchronousTestCase):
    def setUp(self):
        self.pool = pool_state(LeastConnections(), member_spec("a"), member_spec("b"))
        self.a = self.pool.members["a"]

    def test_connection_opened_counts_and_tells_the_scheduler(self):
        self.pool.connection_opened(self.a)
        self.pool.connection_opened(self.a)
        self.assertEqual((self.a.active, self.a.total), (2, 2))
        # least-connections now prefers b: the scheduler was told
        self.assertEqual(self.pool.scheduler.pick(None).name, "b")

    def test_connection_closed_uncounts_and_adds_bytes(self):
        self.pool.connection_opened(self.a)
        self.pool.connection_closed(self.a, 100, 2000)
        self.assertEqual((self.a.active, self.a.total), (0, 1))
        self.assertEqual((self.a.bytes_in, self.a.bytes_out), (100, 2000))
        self.pool.connection_opened(self.a)
        self.pool.connection_closed(self.a)  # a failed connect: no bytes
        self.assertEqual((self.a.active, self.a.total), (0, 2))
        self.assertEqual((self.a.bytes_in, self.a.bytes_out), (100, 2000))

    def test_relayed_adds_bytes_only(self):
        self.a.relayed(5, 7)
        self.a.relayed(1, 1)
        self.assertEqual((self.a.bytes_in, self.a.bytes_out), (6, 8))
        self.assertEqual((self.a.active, self.a.total), (0, 0))

    def test_misbehaved_counts_a_failure_not_for_passive_health(self):
        self.a.misbehaved()
        self.assertEqual(self.a.failures, 1)
        self.assertEqual(self.a.passive.fails, 0)
        self.assertTrue(self.a.healthy)

    def test_remember_sockaddr(self):
        addr = (2, ("127.0.0.1", 80))
        self.assertIs(self.a.remember_sockaddr(addr), addr)
        self.assertIs(self.a.sockaddr, addr)
