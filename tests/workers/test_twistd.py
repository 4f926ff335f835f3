"""``twistd lbframe`` with ``workers = 2``: the real process tree, driven
by signals as an operator (or systemd) drives it: SIGHUP reloads every
worker, SIGTERM stops them all, and workers whose parent was killed exit
on their own. 127.0.0.1 only; every wait has a deadline."""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.examples.test_quickstart import run_twistd, wait_for_port
from tests.workers.test_parent import free_port

DEADLINE = 20.0


class _Member(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"member {self.server.name}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def get(port: int, path: str = "/") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.read().decode()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for our purposes
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


class TwistdWorkersTests(SynchronousTestCase):

    def setUp(self):
        self.members = {}
        for name in ("a", "b"):
            srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Member)
            srv.name = name
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            self.addCleanup(srv.server_close)
            self.addCleanup(srv.shutdown)
            self.members[name] = srv.server_address[1]
        self.port, self.admin = free_port(), free_port()
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.config = os.path.abspath(os.path.join(self.dir, "site.ini"))
        self.write({"a": 1, "b": 1})
        self.log = os.path.join(self.dir, "twistd.log")
        self.proc = run_twistd(self, self.config, self.log)
        wait_for_port(self.port, self.proc)
        self.pids = self.until(lambda: self.ready_workers(2), "two workers ready")

    def write(self, weights):
        with open(self.config, "w") as f:
            f.write(f"""
[lbframe]
workers = 2
admin = tcp:{self.admin}:interface=127.0.0.1
stop_grace = 3

[virtual web]
listen = tcp:{self.port}:interface=127.0.0.1
protocol = http
pool = app

[pool app]
member a = 127.0.0.1:{self.members["a"]} weight={weights["a"]}
member b = 127.0.0.1:{self.members["b"]} weight={weights["b"]}
""")

    def until(self, condition, what):
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            result = condition()
            if result:
                return result
            time.sleep(0.1)
        with open(self.log) as f:
            self.fail(f"not within {DEADLINE}s: {what}\n{f.read()[-3000:]}")

    def ready_workers(self, n):
        try:
            rows = json.loads(get(self.admin, "/api/status"))["workers"]
        except OSError:
            return None
        pids = [w["pid"] for w in rows if w["ready"] and w["in_step"]]
        return pids if len(pids) == n else None

    def test_sighup_reloads_every_worker_and_sigterm_stops_them(self):
        self.assertEqual({get(self.port) for _ in range(10)}, {"member a", "member b"})
        self.write({"a": 0, "b": 1})
        self.proc.send_signal(signal.SIGHUP)
        self.until(lambda: {get(self.port) for _ in range(10)} == {"member b"},
                   "member a at weight 0 in every worker")
        with open(self.log) as f:
            text = f.read()
        self.assertEqual(text.count("worker 1: reloaded"), 1, text[-3000:])
        self.assertEqual(text.count("worker 2: reloaded"), 1, text[-3000:])
        self.proc.send_signal(signal.SIGTERM)
        # twistd ends by re-raising the signal it stopped on (-15) once shut down
        self.assertIn(self.proc.wait(timeout=DEADLINE), (0, -signal.SIGTERM))
        self.assertFalse([pid for pid in self.pids if alive(pid)])
        with open(self.log) as f:
            text = f.read()
        stopped = text.index("Received SIGTERM")
        for n in (1, 2):
            self.assertIn(f"worker {n} (pid", text[stopped:])
        self.assertLess(text.index("stopped", stopped), text.index("Server Shut Down"))

    def test_workers_exit_when_the_parent_is_killed(self):
        self.proc.kill()
        self.proc.wait(timeout=DEADLINE)
        self.until(lambda: not any(alive(pid) for pid in self.pids),
                   "orphaned workers gone")
