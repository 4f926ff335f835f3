"""The status page of a running site, in headless Chromium, at 1280×800 and 390 px.

A real site (tcp virtual servers, loopback backends, a tcp monitor) with a
member down, one draining and traffic through it; the page is read through
the DevTools protocol (:class:`tests.admin.test_page.DevTools`): the pool's
summary row, how long the down member has been down, its one-line reason,
no horizontal overflow at either width, and the same numbers after the
page's own refresh as on first load.

``LBFRAME_SCREENSHOTS=DIR`` also writes ``status-desktop.png`` and
``status-narrow.png`` there (docs/admin.md shows the committed ones:
``LBFRAME_SCREENSHOTS=docs/img python -m twisted.trial tests.admin.test_page_browser``).
"""

from __future__ import annotations

import base64
import os
import time

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread

from tests.helpers import free_port
from tests.examples.test_quickstart import ROOT
from tests.test_site import ReloadCase, ask
from tests.admin.test_page import DevTools, browser_argv

#: (name, width, height, mobile)
SCREENS = [("desktop", 1280, 800, False), ("narrow", 390, 844, True)]

#: the texts of every number cell and the refusals, which a refresh must not change
#: (not the durations: "down 3m12s", and downs with their downtime, grow by the second)
NUMBERS = ('Array.from(document.querySelectorAll("#status td.num:not(.downs), '
           '#status td.refused, #status td.up-count")).map(function (td) { '
           'return td.textContent.trim(); })')

CHECKS = r"""(function () {
  function text(sel) { var e = document.querySelector(sel); return e && e.textContent.trim(); }
  var summary = document.querySelector('tr.summary[data-pool-summary="web"]');
  var line = document.querySelector('tr[data-pool="web"][data-member="c"] td.check summary');
  var lineHeight = parseFloat(getComputedStyle(line).lineHeight) ||
                   parseFloat(getComputedStyle(line).fontSize) * 1.4;
  var wraps = Array.from(document.querySelectorAll(".wrap")).map(function (w) {
    return w.scrollWidth - w.clientWidth; });
  return {
    width: innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    innerOverflow: Math.max.apply(null, wraps),
    cut: Array.from(document.querySelectorAll("#status td")).filter(function (td) {
      return td.scrollWidth > td.clientWidth + 1; }).map(function (td) {
      return td.dataset.label + ": " + td.textContent; }),
    summary: summary && summary.textContent,
    upCount: text('tr.summary[data-pool-summary="web"] td.up-count'),
    downState: text('tr[data-pool="web"][data-member="c"] td.state'),
    drainState: text('tr[data-pool="web"][data-member="b"] td.state'),
    reason: line && line.textContent,
    reasonTitle: line && line.title,
    reasonHeight: line && line.getBoundingClientRect().height,
    lineHeight: lineHeight,
    reasonWhiteSpace: line && getComputedStyle(line).whiteSpace,
    reasonCut: line && line.scrollWidth > line.clientWidth,
    redundancy: text("#redundancy .state"),
    refused: text('tr[data-virtual="gone"] td.refused'),
    total: text('tr[data-virtual="web"] td.total'),
  };
})()"""


class StatusPageInBrowserTests(ReloadCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        super().setUp()
        self.argv = browser_argv(self)
        pa, _ = self.backend("a")
        pb, _ = self.backend("b")
        dead = free_port()  # nothing listens there
        self.vport, self.gone_port, admin = free_port(), free_port(), free_port()
        self.svc = self.start(f"""
[lbframe]
admin = tcp:{admin}:interface=127.0.0.1

[virtual web]
listen = tcp:{self.vport}:interface=127.0.0.1 tcp:{self.vport}:interface=127.0.0.2
pool = web

[virtual gone]
listen = tcp:{self.gone_port}:interface=127.0.0.1
pool = gone

[pool web]
scheduler = round-robin
monitor = alive
member a = 127.0.0.1:{pa}
member b = 127.0.0.1:{pb}
member c = 127.0.0.1:{dead}

[pool gone]
monitor = alive
member x = 127.0.0.1:{dead}

[monitor alive]
type = tcp
interval = 0.2s
timeout = 1s
fall = 1
rise = 1
""")
        self.url = f"http://127.0.0.1:{admin}/"
        runtime = self.svc.runtime
        web = runtime.pools["web"]
        deadline = time.monotonic() + 15
        def settled():
            checks = [c.checks_total for m in web.members.values() for c in m.checks.values()]
            return (web.members["c"].state == "down" and len(checks) == 3 and min(checks) >= 3
                    and runtime.pools["gone"].members["x"].state == "down")
        while not settled():
            self.assertLess(time.monotonic(), deadline, "the monitor never took c down")
            yield task.deferLater(reactor, 0.05, lambda: None)
        # Traffic: ten answers from a and b, one client refused by "gone".
        answers = []
        for _ in range(10):
            answers.append((yield ask(self.vport)))
        self.assertEqual(sorted(set(answers)), ["a", "b"])
        yield ask(self.gone_port)
        web.set_admin(web.members["b"], "draining")
        # Down for 3m12s already (the page says how long, as HAProxy's does).
        web.members["c"].since = time.time() - 192
        # The rates are sampled once more, then held still, and the monitors
        # stopped: nothing changes between the first load and the refresh.
        sampler = self.admin().context.rates
        sampler.sample()
        sampler.stop()
        yield self.svc.monitor_runner.stopService()

    def admin(self):
        admin = getattr(self.svc, "admin", None)
        return admin if admin is not None else self.svc.getServiceNamed("admin")

    @defer.inlineCallbacks
    def test_page_at_desktop_and_narrow_widths(self):
        shots = os.environ.get("LBFRAME_SCREENSHOTS")
        if shots:
            # relative to the repository root (trial runs in _trial_temp)
            shots = os.path.join(ROOT, shots)

        def drive():
            tools = DevTools(self.argv)
            seen = {}
            try:
                for name, width, height, mobile in SCREENS:
                    target = tools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
                    tab = tools.call("Target.attachToTarget",
                                     {"targetId": target, "flatten": True})["sessionId"]
                    tools.call("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1,
                                "mobile": mobile}, session=tab)
                    tools.call("Page.enable", session=tab)
                    tools.call("Page.navigate", {"url": self.url}, session=tab)
                    tools.wait_event("Page.loadEventFired")
                    tools.wait_js(tab, 'document.documentElement.className === "js"')
                    result = tools.js(tab, CHECKS)
                    first = tools.js(tab, NUMBERS)
                    tools.js(tab, "window.lbframeRefresh()")
                    result["refreshed"] = tools.js(tab, NUMBERS)
                    result["first"] = first
                    if shots:
                        os.makedirs(shots, exist_ok=True)
                        if mobile:
                            # The docs show the draining and the down member's cards.
                            tools.js(tab, 'window.scrollTo(0, document.querySelector('
                                          '\'tr[data-pool="web"][data-member="b"]\')'
                                          '.getBoundingClientRect().top + scrollY - 60)')
                        png = tools.call("Page.captureScreenshot",
                                         {"format": "png",
                                          "captureBeyondViewport": not mobile},
                                         session=tab)["data"]
                        with open(os.path.join(shots, f"status-{name}.png"), "wb") as f:
                            f.write(base64.b64decode(png))
                    seen[name] = result
                    tools.call("Target.closeTarget", {"targetId": target})
                return seen
            finally:
                tools.close()

        seen = yield deferToThread(drive)
        for name, width, _, _ in SCREENS:
            r = seen[name]
            with self.subTest(screen=name):
                self.assertEqual(r["width"], width)
                self.assertLessEqual(r["scrollWidth"], r["width"], f"{name}: scrolls sideways")
                self.assertLessEqual(r["innerOverflow"], 0, f"{name}: a table is cut off")
                self.assertEqual(r["cut"], [], f"{name}: cells cut off")
                self.assertEqual(r["upCount"], "1 of 3 up")
                self.assertIn("web total", r["summary"])
                self.assertRegex(r["downState"], r"^down 3m1[2-4]s$")
                self.assertRegex(r["drainState"], r"^draining \d+s$")
                self.assertIn("connect refused", r["reason"])
                self.assertIn("connect refused", r["reasonTitle"])
                self.assertEqual(r["reasonWhiteSpace"], "nowrap")
                self.assertLess(r["reasonHeight"], 1.6 * r["lineHeight"], f"{name}: wraps")
                self.assertEqual(r["redundancy"], "standalone")
                self.assertEqual(r["total"], "10")
                self.assertRegex(r["refused"], r"^1: (no member|member failed) 1$")
                self.assertEqual(r["refreshed"], r["first"])
                self.assertGreater(len(r["first"]), 20)
