"""The vrrp driver's state in /api/status, /metrics and the status page."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from lbframe.admin.metrics import RuntimeCollector
from lbframe.admin.page import render_page
from lbframe.admin.status import redundancy_status
from tests.redundancy.test_vrrp_driver import make


class Runtime:
    def __init__(self, driver):
        self.redundancy = driver
        self.site = type("S", (), {})()
        self.site.redundancy = driver.spec
        self.site.persistence = {}
        self.pools, self.virtuals, self.persistence_stores = {}, {}, {}


class AdminTests(SynchronousTestCase):
    def setUp(self):
        self.driver, self.clock, fakes, _ = make(priority=150)
        self.driver.start()
        self.addCleanup(self.driver.stop)
        self.runtime = Runtime(self.driver)

    def metric(self, name):
        for family in RuntimeCollector(lambda: self.runtime)._site(self.runtime):
            if family.name == name:
                return family.samples

    def test_backup_then_master_everywhere(self):
        status = redundancy_status(self.runtime)
        self.assertEqual((status["driver"], status["state"]), ("vrrp", "backup"))
        self.assertEqual(status["groups"]["51"]["state"], "backup")
        self.assertEqual(self.metric("lbframe_redundancy_master")[0].value, 0)
        self.clock.advance(4)
        status = redundancy_status(self.runtime)
        self.assertEqual(status["state"], "master")
        self.assertEqual(status["groups"]["51"]["vips"], ["198.18.0.10"])
        self.assertEqual(self.metric("lbframe_redundancy_master")[0].value, 1)
        page = render_page({"redundancy": status})
        self.assertIn('VRID 51: <span class="state">master</span>, priority 150', page)
