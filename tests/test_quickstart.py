"""The quickstart, as a user runs it: ``twistd -n lbframe --config site.ini``
in a real process, answers rotating over the demo backends, the admin API
and ``lbframe check``/``lbframe status`` against it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "examples", "quickstart")
#: ``twistd`` of this Python (``python -m twisted`` is ``twist``, not ``twistd``)
TWISTD = [sys.executable, "-c", "import sys; sys.argv[0] = 'twistd'; "
                                "from twisted.scripts.twistd import run; run()"]


def wait_for_port(port: int, proc: subprocess.Popen, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"lbframe exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} after {deadline}s")


def copy_example(source: str, dest: str, ports: dict, files=()) -> str:
    """Copy an example's ``site.ini`` into ``dest`` with every port in
    ``ports`` (old → new) replaced, and ``files`` beside it; the new path."""
    with open(os.path.join(source, "site.ini")) as f:
        text = f.read()
    for old, new in ports.items():
        text = re.sub(rf"(?<=[:]){old}\b", str(new), text)
    config = os.path.join(dest, "site.ini")
    with open(config, "w") as f:
        f.write(text)
    for name in files:
        shutil.copy(os.path.join(source, name), dest)
    return config


def run_twistd(testcase, config: str, log_path: str) -> subprocess.Popen:
    """``twistd -n lbframe --config CONFIG`` with its output in ``log_path``,
    killed at the end of ``testcase`` if still running."""
    log = open(log_path, "wb")
    testcase.addCleanup(log.close)
    proc = subprocess.Popen(TWISTD + ["-n", "--pidfile=", "lbframe", "--config", config],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                            stdout=log, stderr=subprocess.STDOUT)

    def kill():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    testcase.addCleanup(kill)
    return proc


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


class QuickstartTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.ports = {p: free_port() for p in (8080, 8081, 8082, 8083, 8404)}
        self.config = copy_example(QUICKSTART, self.dir, self.ports, ["demo_backends.py"])
        self.env = dict(os.environ, PYTHONPATH=ROOT)

    def run_lbframe(self) -> subprocess.Popen:
        log = open(os.path.join(self.dir, "twistd.log"), "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen(
            TWISTD + ["-n", "--pidfile=", "lbframe", "--config", self.config],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

        def stop():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.addCleanup(stop)
        return proc

    def test_check_accepts_the_quickstart(self):
        out = subprocess.run([sys.executable, "-m", "lbframe.cli", "check",
                              os.path.join(QUICKSTART, "site.ini")],
                             cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
        self.assertEqual((out.returncode, out.stderr), (0, ""))
        self.assertIn("OK", out.stdout)

    def test_round_robin_through_twistd(self):
        proc = self.run_lbframe()
        wait_for_port(self.ports[8404], proc)
        for p in (8080, 8081, 8082, 8083):
            wait_for_port(self.ports[p], proc)
        url = f"http://127.0.0.1:{self.ports[8080]}/"
        answers = [get(url) for _ in range(6)]
        # Round robin: every backend once, then the same order again (where
        # the turn starts depends on the readiness probe above).
        self.assertEqual(sorted(answers[:3]), [b"hello from backend a\n",
                                               b"hello from backend b\n",
                                               b"hello from backend c\n"])
        self.assertEqual(answers[3:], answers[:3])

        status = json.loads(get(f"http://127.0.0.1:{self.ports[8404]}/api/status"))
        members = status["pools"]["web"]["members"]
        # 6 requests and the readiness probe
        self.assertEqual(sum(m["connections_total"] for m in members.values()), 7)
        self.assertEqual(sorted(m["connections_total"] for m in members.values()), [2, 2, 3])
        self.assertEqual(status["virtuals"]["web"]["connections_total"], 7)

        out = subprocess.run([sys.executable, "-m", "lbframe.cli", "status", "--admin",
                              f"http://127.0.0.1:{self.ports[8404]}"],
                             cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(f"127.0.0.1:{self.ports[8082]}", out.stdout)

        proc.send_signal(signal.SIGTERM)
        # twistd shuts down, then ends by the signal it was sent (as Twisted does).
        self.assertEqual(proc.wait(15), -signal.SIGTERM)
        with open(os.path.join(self.dir, "twistd.log")) as f:
            self.assertIn("Server Shut Down.", f.read())
