"""The pieces of ``workers = N`` that need no process: the ``workers`` key,
member state tables, counter sums, inherited sockets, the channel framing."""

from __future__ import annotations

import os
import socket

from hypothesis import given, strategies as st
from twisted.internet.testing import MemoryReactor
from twisted.trial import unittest

from lbframe.config import parse_site
from lbframe.errors import ConfigError
from lbframe.plugins import load_plugins
from lbframe.service import build_runtime
from lbframe.workers import inherited, served_by_workers
from lbframe.workers.state import (CounterSum, apply_member_state, changed_rows, counters,
                                   member_state, state_digest)

SITE = """
[lbframe]
{lbframe}

[virtual web]
listen = tcp:8080
protocol = http
pool = app

[pool app]
member a = 127.0.0.1:9001
member b = 127.0.0.1:9002 weight=2
"""


def runtime(lbframe=""):
    site = parse_site(SITE.format(lbframe=lbframe))
    return build_runtime(site, load_plugins(()), MemoryReactor())


class WorkersKeyTests(unittest.TestCase):

    def test_default_is_one(self):
        self.assertEqual(parse_site(SITE.format(lbframe="")).lbframe.workers, 1)

    def test_count_and_auto(self):
        self.assertEqual(parse_site(SITE.format(lbframe="workers = 3")).lbframe.workers, 3)
        auto = parse_site(SITE.format(lbframe="workers = auto")).lbframe.workers
        self.assertEqual(auto, len(os.sched_getaffinity(0)))

    def test_bad_values_are_refused_with_the_key(self):
        for bad in ("0", "-1", "two", "65"):
            with self.assertRaises(ConfigError) as cm:
                parse_site(SITE.format(lbframe=f"workers = {bad}"))
            self.assertIn("workers", str(cm.exception))

    def test_which_virtuals_the_workers_serve(self):
        site = parse_site(SITE.format(lbframe=""))
        self.assertTrue(served_by_workers(site.virtuals["web"]))
        import attrs
        self.assertFalse(served_by_workers(attrs.evolve(site.virtuals["web"],
                                                        listen=("unix:/tmp/x",))))
        self.assertFalse(served_by_workers(attrs.evolve(site.virtuals["web"],
                                                        protocol="routed")))


class MemberStateTests(unittest.TestCase):

    def test_a_worker_follows_the_parents_rows(self):
        parent, worker = runtime(), runtime()
        before = member_state(parent)
        pool = parent.pools["app"]
        pool.set_admin(pool.members["a"], "disabled")
        pool.set_weight(pool.members["b"], 5)
        rows = changed_rows(before, member_state(parent))
        self.assertEqual(set(rows["app"]), {"a", "b"})
        self.assertNotEqual(state_digest(member_state(worker)), state_digest(member_state(parent)))
        self.assertEqual(apply_member_state(worker, rows), 2)
        wa, wb = worker.pools["app"].members["a"], worker.pools["app"].members["b"]
        self.assertEqual((wa.state, wa.eligible), ("disabled", False))
        self.assertEqual((wb.weight, wb.effective_weight), (5, 5))
        self.assertEqual(state_digest(member_state(worker)), state_digest(member_state(parent)))
        self.assertEqual(apply_member_state(worker, rows), 0)  # nothing new

    def test_down_in_the_parent_is_down_in_the_worker(self):
        parent, worker = runtime(), runtime()
        m = parent.pools["app"].members["b"]
        m.healthy, m.down_reason = False, "http check: 503"
        apply_member_state(worker, member_state(parent))
        wb = worker.pools["app"].members["b"]
        self.assertEqual((wb.state, wb.down_reason, wb.eligible), ("down", "http check: 503", False))

    def test_unknown_pools_and_members_are_skipped(self):
        worker = runtime()
        self.assertEqual(apply_member_state(worker, {"gone": {"x": [True, "enabled", 1, ""]},
                                                     "app": {"z": [False, "enabled", 1, ""]}}), 0)


class CounterSumTests(unittest.TestCase):

    def test_sums_and_a_dead_workers_counters_stay(self):
        parent = runtime()
        w1, w2 = runtime(), runtime()
        w1.virtuals["web"].total, w1.virtuals["web"].requests = 10, 12
        w1.virtuals["web"].active = 3
        w2.virtuals["web"].total, w2.virtuals["web"].requests = 5, 6
        w2.virtuals["web"].responses["2xx"] = 6
        w2.pools["app"].members["a"].bytes_out = 1000
        sums = CounterSum()
        sums.report(1, counters(w1))
        sums.report(2, counters(w2))
        sums.write(parent)
        v = parent.virtuals["web"]
        self.assertEqual((v.total, v.requests, v.active, v.responses["2xx"]), (15, 18, 3, 6))
        self.assertEqual(parent.pools["app"].members["a"].bytes_out, 1000)
        sums.retire(1)  # worker 1 died: its counts stay, its open connections do not
        sums.write(parent)
        self.assertEqual((v.total, v.requests, v.active), (15, 18, 0))
        sums.report(1, counters(runtime()))  # its replacement starts from zero
        sums.write(parent)
        self.assertEqual(v.total, 15)

    def test_what_the_parent_counts_itself_is_kept(self):
        parent, w = runtime(), runtime()
        sums = CounterSum()
        w.virtuals["web"].total = 4
        sums.report(1, counters(w))
        sums.write(parent)
        parent.virtuals["web"].total += 2  # served by the parent itself
        w.virtuals["web"].total = 7
        sums.report(1, counters(w))
        sums.write(parent)
        self.assertEqual(parent.virtuals["web"].total, 9)

    @given(st.lists(st.tuples(st.integers(1, 3), st.integers(0, 50)), max_size=30))
    def test_the_sum_never_goes_back(self, steps):
        """Reports that grow, and deaths: the written total is monotonic."""
        parent, sums, seen = runtime(), CounterSum(), {}
        last = 0
        for slot, grow in steps:
            if grow == 0:
                sums.retire(slot)
                seen[slot] = 0
                continue
            seen[slot] = seen.get(slot, 0) + grow
            sums.report(slot, {"v/web/total": seen[slot]})
            sums.write(parent)
            self.assertGreaterEqual(parent.virtuals["web"].total, last)
            last = parent.virtuals["web"].total


class InheritedTests(unittest.TestCase):

    def setUp(self):
        self.addCleanup(inherited.clear)

    def test_take_gives_a_duplicate_that_closes_alone(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(5)
        port = s.getsockname()[1]
        inherited.adopt("127.0.0.1", port, s)
        self.assertIsNone(inherited.take("127.0.0.1", port + 1))
        dup = inherited.take("127.0.0.1", port)
        self.assertNotEqual(dup.fileno(), s.fileno())
        dup.close()
        c = socket.create_connection(("127.0.0.1", port), timeout=2)  # still listening
        c.close()
        inherited.keep_only([])
        self.assertEqual(inherited.held(), [])

    def test_listening_socket_takes_the_inherited_one(self):
        from lbframe.protocols.endpoints import listening_socket, tcp_bind

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(5)
        port = s.getsockname()[1]
        inherited.adopt("127.0.0.1", port, s)
        got = listening_socket(tcp_bind(f"tcp:{port}:interface=127.0.0.1"))
        self.addCleanup(got.close)
        self.assertEqual(got.getsockname(), s.getsockname())
