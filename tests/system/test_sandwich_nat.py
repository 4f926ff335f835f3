"""protocol = nat end to end (issue 17, F9): examples/routed-web in four
namespaces (client, lb, web1, web2; 198.18.0.0/15, no default route) with a
real ``twistd lbframe``: the kernel translates, the web servers see the
clients' own addresses, replies come from the VIP, source-ip persistence
holds, a dead member leaves the map within interval × fall, and the table
goes when lbframe stops."""

from __future__ import annotations

import importlib.util
import os
import shutil
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.system.netns import require, require_system

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "routed-web", "routed_web.py")
#: the example's tcp monitor
INTERVAL, FALL = 0.5, 2


def load_example():
    spec = importlib.util.spec_from_file_location("routed_web_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rw_module = load_example()


class RoutedWebTests(SynchronousTestCase):
    def setUp(self):
        require_system()
        require(shutil.which("nft") is not None, "protocol nat needs nft (nftables)")
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        self.rw = rw_module.RoutedWeb(prefix=f"w{os.getpid() % 100000}-", workdir=self.workdir)
        self.addCleanup(self.rw.clean)
        self.rw.build()
        self.rw.start_lbframe()

    def test_translated_by_the_kernel_with_real_client_addresses(self):
        sources = [rw_module.CLIENTS[i % 30] for i in range(60)]
        results = self.rw.connections(sources)
        self.assertEqual([r for r in results if not r["ok"]], [])
        self.assertEqual({r["from"] for r in results}, {rw_module.VIP})
        self.assertEqual([r for r in results if r["seen"] != r["src"]], [],
                         "a web server saw a translated client address")
        served = {}
        for r in results:
            served.setdefault(r["src"], set()).add(r["server"])
        # source-ip persistence: each client address kept its server
        self.assertEqual([s for s, names in served.items() if len(names) != 1], [])
        counts = {n: sum(1 for r in results if r["server"] == n) for n in rw_module.WEBS}
        self.assertTrue(all(counts.values()), counts)
        self.assertGreater(counts["web2"], counts["web1"], "web2 has weight 2")
        # lbframe shows the kernel's counters per member
        deadline = time.monotonic() + 10
        while True:
            hops = self.rw.status()["virtuals"]["web"]["next_hops"]
            if sum(h["flows"] for h in hops.values()) >= 60 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        self.assertEqual({n: h["flows"] for n, h in hops.items()}, counts)

    def test_dead_member_leaves_the_map_and_returns(self):
        self.rw.stop("web1")
        took = self.rw.wait_members({"web2"}, deadline=10)
        self.assertLess(took, INTERVAL * FALL + INTERVAL + 1.0)
        results = self.rw.connections([rw_module.CLIENTS[i] for i in range(30)])
        self.assertEqual([r for r in results if not r["ok"]], [])
        self.assertEqual({r["server"] for r in results}, {"web2"})
        self.rw.start_web("web1")
        self.rw.wait_members(set(rw_module.WEBS), deadline=10)
        results = self.rw.connections([rw_module.CLIENTS[i] for i in range(30)])
        self.assertEqual({r["server"] for r in results}, set(rw_module.WEBS))
        self.rw.stop("lb")
        self.assertIsNone(self.rw.table(), "lbframe's table outlived it")
