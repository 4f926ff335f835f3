"""The admin token is never written anywhere: not in the admin server's logs
(in-process and twistd's own log file), not in an answer, not in an error
of ``lbframe check``, ``lbframe status``/``member`` or a refused reload."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import redirect_stderr, redirect_stdout

from twisted.internet import defer
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase

from lbframe.admin.client import AdminClientError, change_member, fetch_status
from lbframe.cli import main
from tests.helpers import free_port
from tests.admin.test_web import AdminServerTestCase, add_persistence
from tests.examples.test_quickstart import run_twistd, wait_for_port

TOKEN = "Tk-9f8e7d6c5b4a-never-in-a-log"


def event_text(event: dict) -> str:
    """Everything an observer could write of one event: the formatted line,
    every field's repr, and a failure's traceback."""
    parts = [formatEvent(event), repr(event)]
    failure = event.get("log_failure")
    if failure is not None:
        parts.append(failure.getTraceback())
    return "\n".join(parts)


class FailingStore:
    """A persistence store whose listing fails: the API logs a failure."""

    def __len__(self):
        return 0

    def items(self):
        raise RuntimeError("store is down")

    def clear(self):
        raise RuntimeError("store is down")


class ServerLogTests(AdminServerTestCase):
    token = TOKEN

    @defer.inlineCallbacks
    def raw(self, data: bytes) -> bytes:
        """Send bytes as they are (for malformed requests) and read the answer."""
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Protocol

        class Collect(Protocol):
            def __init__(self):
                self.data = b""
                self.done = defer.Deferred()

            def dataReceived(self, chunk):
                self.data += chunk

            def connectionLost(self, reason):
                self.done.callback(self.data)

        proto = Collect()
        port = self.service.port.getHost().port
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), proto)
        proto.transport.write(data)
        answer = yield proto.done
        return answer

    @defer.inlineCallbacks
    def test_requests_with_the_token_leave_no_trace(self):
        events = self.capture_log()
        runtime = self.runtime
        add_persistence(runtime)
        runtime.persistence_stores["sticky"] = FailingStore()
        answers = []
        # A change (logged), a read, wrong and malformed tokens, a failure (logged with its
        # traceback), and requests the HTTP parser refuses.
        for method, path, body, token, headers in [
            ("POST", "/api/pools/web/members/a", {"state": "drain"}, TOKEN, None),
            ("GET", "/api/status", None, TOKEN, None),
            ("GET", "/", None, TOKEN, None),
            ("GET", "/metrics", None, TOKEN, None),
            ("POST", "/api/pools/web/members/a", {"weight": 999}, TOKEN, None),
            ("POST", "/api/pools/web/members/a", {"state": "enable"}, TOKEN + "x", None),
            ("POST", "/api/pools/web/members/a", {"state": "enable"}, None,
             {"Authorization": f"Basic {TOKEN}"}),
            ("POST", "/api/pools/web/members/a", {"state": "enable"}, None,
             {"Authorization": TOKEN}),
            ("GET", "/api/persistence/sticky", None, TOKEN, None),
            ("DELETE", "/api/persistence/sticky", None, TOKEN, None),
            ("POST", f"/api/pools/web/members/{TOKEN}", {"state": "drain"}, TOKEN, None),
        ]:
            r = yield self.request(method, path, body, token=token, headers=headers)
            answers.append(r.body)
        self.assertEqual(self.runtime.pools["web"].members["a"].admin, "draining")
        answers.append((yield self.raw(
            b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization Bearer "
            + TOKEN.encode() + b"\r\n\r\n")))
        answers.append((yield self.raw(
            b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + TOKEN.encode() + b"\r\nContent-Length: x\r\n\r\n")))
        texts = [event_text(e) for e in events]
        # The change and the failure were logged: the test saw real log lines.
        self.assertTrue(any("admin state enabled -> draining" in t for t in texts), texts)
        self.assertTrue(any("store is down" in t for t in texts), texts)
        for text in texts:
            self.assertNotIn(TOKEN, text)
        # Only the 404 for a member named like the token may repeat it (the path).
        for answer in answers[:-3] + answers[-2:]:
            self.assertNotIn(TOKEN.encode(), answer)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class ClientTests(SynchronousTestCase):
    """``lbframe status``/``member`` and :mod:`lbframe.admin.client`."""

    def test_unsendable_token_is_not_quoted(self):
        # urllib's error for a header with a newline quotes the whole header
        for token in (f"{TOKEN}\nX-Other: 1", f"{TOKEN} extra", TOKEN + "é", TOKEN + "\x00"):
            for call in (lambda: fetch_status("http://127.0.0.1:1", token),
                         lambda: change_member("http://127.0.0.1:1", token, "web", "a",
                                               "drain")):
                error = self.assertRaises(AdminClientError, call)
                self.assertNotIn(TOKEN, str(error))
                self.assertIn("the admin token has a character that cannot be sent", str(error))

    def test_cli_errors_do_not_show_the_token(self):
        for argv in (["status", "--admin", "http://127.0.0.1:1", "--token", TOKEN + "\n\x01"],
                     ["status", "--admin", "http://[::1", "--token", TOKEN],
                     ["status", "--admin", "http://127.0.0.1:1", "--token", TOKEN]):
            out, err = io.StringIO(), io.StringIO()
            with redirect_stdout(out), redirect_stderr(err):
                rc = main(argv)
            self.assertEqual(rc, 1, argv)
            self.assertNotIn(TOKEN, out.getvalue() + err.getvalue())

    def test_surrounding_blanks_are_stripped(self):
        # as admin_token_file strips its content: "$(cat token.file)\n" still works
        port = free_port()
        error = self.assertRaises(AdminClientError, fetch_status,
                                  f"http://127.0.0.1:{port}", f"  {TOKEN}\n")
        self.assertIn("cannot reach admin API", str(error))


SITE = """\
[lbframe]
admin = tcp:{admin}:interface=127.0.0.1
admin_token_file = admin.token
access_log = access.log

[virtual web]
listen = tcp:{web}:interface=127.0.0.1
pool = web

[pool web]
member a = 127.0.0.1:{member}
"""


class TwistdLogTests(SynchronousTestCase):
    """A real ``twistd``: requests with the token, a reload with a new one and a
    refused reload; its log names none of the tokens."""

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.admin = free_port()
        self.config = os.path.join(self.dir, "site.ini")
        with open(self.config, "w") as f:
            f.write(SITE.format(admin=self.admin, web=free_port(), member=free_port()))
        self.token_file = os.path.join(self.dir, "admin.token")
        self.write_token(TOKEN)

    def write_token(self, token: str, mode: int = 0o600) -> None:
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.chmod(self.token_file, mode)

    def post(self, token: str, body: dict) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin}/api/pools/web/members/a",
            data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {token}"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def wait_for_log(self, log_path: str, text: str, deadline: float = 20.0) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                if text in f.read():
                    return
            time.sleep(0.05)
        self.fail(f"{text!r} not logged in {deadline}s")

    def test_twistd_log_has_no_token(self):
        log_path = os.path.join(self.dir, "twistd.log")
        proc = run_twistd(self, self.config, log_path)
        wait_for_port(self.admin, proc)
        self.assertEqual(self.post(TOKEN, {"state": "drain"}), 200)
        self.assertEqual(self.post(TOKEN + "-wrong", {"state": "enable"}), 403)
        self.assertEqual(self.post(TOKEN, {"weight": 100000}), 400)
        with socket.create_connection(("127.0.0.1", self.admin), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nAuthorization Bearer " + TOKEN.encode() + b"\r\n\r\n")
            s.recv(65536)
        # A reload with a new token, then one refused for the file's mode.
        new = TOKEN + "-rotated"
        self.write_token(new)
        proc.send_signal(signal.SIGHUP)
        self.wait_for_log(log_path, "reloaded")
        self.assertEqual(self.post(new, {"state": "enable"}), 200)
        self.write_token(TOKEN + "-third", mode=0o644)
        proc.send_signal(signal.SIGHUP)
        self.wait_for_log(log_path, "reload refused")
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        with open(log_path, encoding="utf-8", errors="replace") as f:
            log = f.read()
        self.assertIn("admin state enabled -> draining", log)
        self.assertIn("is open to group or others (mode 0644)", log)
        self.assertNotIn(TOKEN, log)  # and so neither of the two others
        access_log = os.path.join(self.dir, "access.log")
        if os.path.exists(access_log):
            with open(access_log, encoding="utf-8") as f:
                self.assertNotIn(TOKEN, f.read())
