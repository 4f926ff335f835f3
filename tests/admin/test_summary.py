"""The words the status page and ``lbframe status`` share (lbframe.admin.summary)."""

from __future__ import annotations

import json
import re
from html import unescape

from twisted.trial.unittest import SynchronousTestCase

from lbframe.admin import summary
from lbframe.admin.client import format_status
from lbframe.admin.page import SECTIONS, render_page
from tests.admin.test_web import EXPECTED_STATUS


def dated_status() -> dict:
    status = json.loads(json.dumps(EXPECTED_STATUS))
    status["time"] = 1192.0
    for pool in status["pools"].values():
        for m in pool["members"].values():
            m["state_since"] = 1000.0
    return status


class WordingTests(SynchronousTestCase):
    def test_duration(self):
        cases = {0: "0s", 59.9: "59s", 60: "1m00s", 192: "3m12s", 3599: "59m59s",
                 3600: "1h00m", 7500: "2h05m", 86399: "23h59m", 86400 * 4 + 3 * 3600: "4d3h",
                 -5: "0s"}
        for seconds, text in cases.items():
            self.assertEqual(summary.duration(seconds), text, seconds)

    def test_size_and_rate(self):
        self.assertEqual([summary.size(n) for n in (0, 999, 1000, 1_234_567, 5 * 10 ** 12)],
                         ["0 B", "999 B", "1.0 kB", "1.2 MB", "5.0 TB"])
        self.assertEqual([summary.rate(r) for r in (None, 0.0, 2.25, 99.9, 1234.4)],
                         ["-", "0.0/s", "2.2/s", "99.9/s", "1234/s"])

    def test_redundancy(self):
        self.assertEqual(summary.redundancy_line({"driver": "none", "state": "standalone"}),
                         "standalone")
        self.assertEqual(summary.redundancy_line({"driver": "vrrp", "state": "backup"}),
                         "vrrp: backup")

    def test_refusals_by_reason(self):
        v = {"refused": 5, "refusals": {"no_member": 0, "queue_timeout": 3, "maxconn": 2}}
        self.assertEqual(summary.refusals_line(v), "5: queue timeout 3, maxconn 2")
        self.assertEqual(summary.refusals_line({"refused": 0}), "0")

    def test_check_line_is_one_line(self):
        m = {"down_reason": "http: status 503 (3/3)", "checks": {}}
        self.assertEqual(summary.check_line(m, 0), "http: status 503 (3/3)")
        m = {"checks": {"tcp": {"last_check": {"result": "pass", "time": 90.0}},
                        "http": {"last_check": None}}}
        self.assertEqual(summary.check_line(m, 100.0), "tcp: pass 10s ago; http: not yet")


class SameSummaryTests(SynchronousTestCase):
    """``lbframe status`` says what the page says."""

    def test_pool_summary_and_states_agree(self):
        status = dated_status()
        page = unescape(render_page(status))
        text = format_status(status)
        for name, pool in status["pools"].items():
            s = summary.pool_summary(pool)
            words = f"{s['up']} of {s['members']} up"
            self.assertIn(f'data-label="members up">{words}</td>', page)
            self.assertIn(f"pool {name} ({pool['scheduler']}): {words}", text)
            for mname, m in pool["members"].items():
                state = summary.state_for(m, status["time"])
                self.assertIn(f"<span class=\"word\">{m['state']}</span> "
                              f"<span class=\"since\">3m12s</span>", page)
                self.assertRegex(text, rf"\n  {re.escape(mname)}\b.*  {re.escape(state)} ")
        self.assertIn("down 3m12s", text)
        for v in status["virtuals"].values():
            self.assertIn(f'data-label="refused">{summary.refusals_line(v)}</td>', page)
            self.assertIn(summary.refusals_line(v), text)


class SectionTests(SynchronousTestCase):
    def test_a_new_section_is_rendered_in_its_place(self):
        def flows(view):
            return f"<h2>Flows</h2><p>{len(view.status['virtuals'])} virtual servers</p>\n"

        SECTIONS.append(flows)
        self.addCleanup(SECTIONS.remove, flows)
        page = render_page(dated_status())
        self.assertIn("<h2>Flows</h2><p>2 virtual servers</p>", page)
        self.assertLess(page.index("<h2>Pool api"), page.index("<h2>Flows</h2>"))
