"""The status page in a real headless browser (Debian's ``chromium``).

``--dump-dom`` shows what the page looks like once its script has run; the
DevTools protocol, spoken over ``--remote-debugging-pipe`` (NUL-separated
JSON on file descriptors 3 and 4, so no websocket client is needed), clicks
a drain button, answers the token prompt and watches the member change.

Without chromium the tests skip, unless ``LBFRAME_SYSTEM_TESTS=required``
(CI installs it), in which case they fail.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from lbframe.admin import make_admin_service
from tests.system.netns import require
from tests.admin.test_web import TOKEN, make_runtime

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--no-proxy-server"]


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_argv(test, *extra: str) -> list[str]:
    browser = find_browser()
    require(browser is not None, "the status page test needs chromium (apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="lbframe-chromium-")
    test.addCleanup(shutil.rmtree, profile, True)
    return [browser] + FLAGS + [f"--user-data-dir={profile}"] + list(extra)


class DevTools:
    """A minimal blocking DevTools-protocol client over chromium's pipe."""

    def __init__(self, argv: list[str]):
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()

        def child_fds():
            # chromium reads commands on fd 3 and writes answers on fd 4.
            a = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(argv + ["--remote-debugging-pipe", "about:blank"],
                                     pass_fds=(3, 4), preexec_fn=child_fds,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._next = 0
        self.events: list[dict] = []

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                data = os.read(self._r, 1 << 16)
                if not data:
                    raise EOFError("chromium closed its DevTools pipe")
                self._buf += data
        message, self._buf = self._buf.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 20) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_event(self, method: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def open(self, url: str) -> str:
        """A new tab showing ``url`` (loaded); its session id."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target,
                                                      "flatten": True})["sessionId"]
        self.call("Page.enable", session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired")
        return session

    def js(self, session: str, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression,
                                                "returnByValue": True, "awaitPromise": True},
                           session=session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_js(self, session: str, expression: str, timeout: float = 15):
        """Evaluate ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(session, expression)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"never true: {expression}")


STATE_OF = ('(function (m) {{ var r = document.querySelector("tr[data-pool=web]'
            '[data-member=" + m + "]"); return r && r.querySelector("td.state .word").textContent; }})'
            '("{member}")')


class StatusPageBrowserTests(TestCase):
    timeout = 120

    def setUp(self):
        self.argv = browser_argv(self)
        self.runtime = make_runtime()
        service = make_admin_service(self.runtime, "tcp:0:interface=127.0.0.1", TOKEN, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.url = f"http://127.0.0.1:{service.port.getHost().port}/"

    @defer.inlineCallbacks
    def test_dump_dom_shows_members_and_states(self):
        done = yield deferToThread(subprocess.run, self.argv + ["--dump-dom", self.url],
                                   capture_output=True, text=True, timeout=90)
        dom = done.stdout
        self.assertIn("<h2>Pool web", dom)
        self.assertRegex(dom, 'data-member="a"><td class="name" data-label="member">a<span '
                         'class="addr">127.0.0.1:8081</span></td><td class="state" '
                         'data-label="state"><span class="word">up</span>')
        self.assertRegex(dom, 'data-member="b"><td class="name" data-label="member">b<span '
                         'class="addr">127.0.0.1:8082</span></td><td class="state" '
                         'data-label="state"><span class="word">down</span>')
        self.assertIn("tcp: connect refused (1/1)", dom)
        self.assertIn('<html lang="en" class="js">', dom, "the page's script ran")

    @defer.inlineCallbacks
    def test_click_drain_with_the_token(self):
        a = self.runtime.pools["web"].members["a"]

        def drive():
            tools = DevTools(self.argv)
            try:
                tab = tools.open(self.url)
                seen = {"before": tools.js(tab, STATE_OF.format(member="a"))}
                # Drain without a token: the page asks for it.
                tools.js(tab, 'document.querySelector("tr[data-member=a] '
                              'button[data-action=drain]").click()')
                tools.wait_js(tab, '!document.getElementById("token-form").hidden')
                seen["asked"] = tools.js(tab, 'document.getElementById("message").textContent')
                # A wrong token: refused, asked again.
                tools.js(tab, 'document.getElementById("token").value = "wrong";'
                              'document.querySelector("#token-form button").click()')
                tools.wait_js(tab, 'document.getElementById("message").textContent'
                                   '.indexOf("wrong admin token") >= 0 && '
                                   '!document.getElementById("token-form").hidden')
                tools.js(tab, f'document.getElementById("token").value = "{TOKEN}";'
                              'document.querySelector("#token-form button").click()')
                seen["after"] = tools.wait_js(
                    tab, STATE_OF.format(member="a") + ' === "draining" && "draining"')
                seen["row_class"] = tools.js(
                    tab, 'document.querySelector("tr[data-member=a]").className')
                seen["kept"] = tools.js(tab, 'sessionStorage.getItem("lbframe-token")')
                # The token is remembered: enabling again asks nothing.
                tools.js(tab, 'document.querySelector("tr[data-member=a] '
                              'button[data-action=enable]").click()')
                seen["enabled"] = tools.wait_js(
                    tab, STATE_OF.format(member="a") + ' === "up" && "up"')
                seen["form_hidden"] = tools.js(tab, 'document.getElementById("token-form").hidden')
                return seen
            finally:
                tools.close()

        states = []
        self.runtime.pools["web"].on_state_change.append(
            lambda pool, member, old, new, reason: states.append((member, old, new)))
        seen = yield deferToThread(drive)
        self.assertEqual(seen["before"], "up")
        self.assertIn("needs the admin token", seen["asked"])
        self.assertEqual(seen["after"], "draining")
        self.assertEqual(seen["row_class"], "member state-draining")
        self.assertEqual(seen["kept"], TOKEN)
        self.assertEqual(seen["enabled"], "up")
        self.assertTrue(seen["form_hidden"])
        self.assertEqual(states, [("a", "up", "draining"), ("a", "draining", "up")])
        self.assertEqual(a.state, "up")
