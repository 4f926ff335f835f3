"""examples/routed-web ``--flat`` (issue 17, F9, the flat routed case): the
VIP on the web servers' own subnet, lbframe their default gateway; the
kernel translates, the web servers see the clients' own addresses, replies
come from the VIP; and the bounce-back case (a web server calling the VIP)
fails, as docs/routed.md says it does."""

from __future__ import annotations

import os
import shutil

from twisted.trial.unittest import SynchronousTestCase

from tests.system.netns import require, require_system
from tests.system.test_sandwich_nat import rw_module


class FlatRoutedWebTests(SynchronousTestCase):
    def setUp(self):
        require_system()
        require(shutil.which("nft") is not None, "protocol nat needs nft (nftables)")
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        self.rw = rw_module.RoutedWeb(prefix=f"f{os.getpid() % 100000}-", workdir=self.workdir,
                                      flat=True)
        self.addCleanup(self.rw.clean)
        self.rw.build()
        self.rw.start_lbframe()

    def test_default_gateway_is_lbframe_and_members_see_clients(self):
        for web in rw_module.WEBS:
            self.assertEqual(self.rw.ip(web, "route", "show", "default").split()[:3],
                             ["default", "via", "198.18.30.1"])
        sources = [rw_module.CLIENTS[i % 30] for i in range(40)]
        results = self.rw.connections(sources)
        self.assertEqual([r for r in results if not r["ok"]], [])
        self.assertEqual({r["from"] for r in results}, {rw_module.FLAT_VIP})
        self.assertEqual([r for r in results if r["seen"] != r["src"]], [])
        self.assertEqual({r["server"] for r in results}, set(rw_module.WEBS))

    def test_bounce_back_fails(self):
        result = self.rw.bounce_back("web1", timeout=1.0)
        self.assertFalse(result["ok"], result)
        # the same call from a client works: it is the path, not the member
        self.assertTrue(self.rw.connections(rw_module.CLIENTS[:1])[0]["ok"])
