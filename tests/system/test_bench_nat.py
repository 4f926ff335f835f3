"""``bench/run --mode nat`` end to end (issue 17): the benchmark builds its
namespaces, measures lbframe ``protocol = nat``, ``protocol = tcp`` and
HAProxy with wrk for one second each, reports all three, and lbframe's CPU
with the kernel on the data path is far below its CPU when it proxies —
a property of the design, true on any machine, unlike the rates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.system.netns import require, require_system

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "bench", "run")


class BenchNatTests(SynchronousTestCase):
    def setUp(self):
        require_system()
        for tool in ("nft", "nginx", "wrk", "haproxy"):
            require(shutil.which(tool) is not None or os.path.exists(f"/usr/sbin/{tool}"),
                    f"bench/run --mode nat needs {tool}")

    def test_quick_run_reports_three_balancers_and_nat_spares_lbframe(self):
        out = os.path.abspath(self.mktemp()) + ".md"
        proc = subprocess.Popen([RUN, "--mode", "nat", "--quick", "--duration", "1",
                                 "--warmup", "0", "--output", out],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHON=sys.executable))
        try:
            _, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.terminate()  # the harness cleans up on SIGTERM
                proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0, stderr[-3000:])
        # bench/run execs nat.py: its pid names the namespaces, all gone now
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        self.assertEqual([n for n in netns.split() if n.startswith(f"nb{proc.pid}-")], [])
        with open(out) as f:
            report = f.read()
        rows = [line for line in report.splitlines() if line.startswith("| ")]
        for label in ("lbframe `protocol = nat` (kernel DNAT)",
                      "lbframe `protocol = tcp` (proxy)", "HAProxy `mode tcp` (reference)"):
            self.assertEqual(sum(1 for r in rows if r.startswith(f"| {label} |")), 1,
                             f"no row for {label}:\n{report}")
        self.assertIn("load average before", report)
        with open(out[:-3] + ".json") as f:
            data = json.load(f)
        summary = data["summary"]
        for kind in ("nat", "tcp", "haproxy"):
            for case in ("close", "keepalive"):
                self.assertGreater(summary[kind][case]["rate"], 0, (kind, case))
        # nat: the members see the client itself; a proxy: its own address
        self.assertEqual(data["info"]["nat"]["members_see"], "the client's own address")
        self.assertNotEqual(data["info"]["tcp"]["members_see"], "the client's own address")
        nat_cpu = sum(summary["nat"][c]["cpu"] for c in ("close", "keepalive"))
        tcp_cpu = sum(summary["tcp"][c]["cpu"] for c in ("close", "keepalive"))
        # proxying thousands of connections a second costs lbframe a good
        # share of a core; programming the kernel once costs next to nothing
        self.assertGreater(tcp_cpu, 0.2, report)
        self.assertLess(nat_cpu, tcp_cpu / 10, report)
