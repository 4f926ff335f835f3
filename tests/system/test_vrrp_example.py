"""``examples/ha-pair/run.sh`` runs as its README says and shows what it promises:
a failover and a failback, and one member for the client throughout (the
shared Redis table)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from tests.system import netns

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "examples", "ha-pair", "run.sh")


class HAPairExampleTests(SynchronousTestCase):
    timeout = 240

    def test_run_sh(self):
        netns.require_system()
        netns.require(shutil.which("redis-server") is not None, "needs redis-server (apt)")
        prefix = netns.unique("ha")[:10]
        for n in ("sw", "a", "b", "client", "m1", "m2", "redis"):
            self.addCleanup(netns.ip, "netns", "delete", f"{prefix}-{n}", check=False)
        done = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, timeout=200,
                              env=dict(os.environ, HA_PAIR_PREFIX=prefix))
        out = done.stdout + done.stderr
        self.assertEqual(done.returncode, 0, out)
        self.assertRegex(out, r"a: master, VIP on a: yes;  b: backup, VIP on b: no")
        self.assertRegex(out, r"b: master, VIP on b: yes")
        self.assertEqual(len(re.findall(r"a: master, VIP on a: yes;  b: backup, VIP on b: no",
                                        out)), 2, out)  # before the kill and after failback
        m = re.search(r"== (\d+) requests, (\d+) failed .*; members seen: (.*)", out)
        self.assertIsNotNone(m, out)
        requests, failed, members = int(m.group(1)), int(m.group(2)), m.group(3).split()
        self.assertEqual(len(members), 1, out)  # the client kept its member
        self.assertGreater(requests, 60)
        # failures only in the gaps: about 3.6 s (18 requests at 200 ms) plus the failback
        self.assertLess(failed, 30, out)
        self.assertIn("cleaned up", out)
        listed = netns.ip("netns", "list")
        self.assertNotIn(prefix, listed)
