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


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def run_lbframe(self) -> subprocess.Popen:
    """``twistd -n --pidfile= lbframe --config self.config`` with its output
    in ``self.dir/twistd.log``, stopped (SIGTERM) at the end of the test
    (a method of other examples' test cases: ``run_lbframe = run_lbframe``)."""
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


def free_offset(ports=(8080, 8081, 8082, 8083, 8404)) -> int:
    """An offset that moves every one of ``ports`` to a free one."""
    import random

    for _ in range(50):
        offset = random.randrange(20000, 40000)
        socks = []
        try:
            for port in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port + offset))
            return offset
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free ports")


class QuickstartTests(SynchronousTestCase):
    """The README's quickstart: ``examples/quickstart/run``."""

    timeout = 120
    run_lbframe = run_lbframe

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.offset = free_offset()
        self.env = dict(os.environ, PYTHONPATH=ROOT, PYTHON=sys.executable)

    def port(self, port: int) -> int:
        return port + self.offset

    def run_quickstart(self) -> subprocess.Popen:
        """``examples/quickstart/run --port-offset N`` in its own process
        group (as in a terminal, where Ctrl-C reaches all of it), from a
        scratch directory; stopped with the whole group."""
        self.log_path = os.path.join(self.dir, "out.log")
        log = open(self.log_path, "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen([os.path.join(QUICKSTART, "run"), "--port-offset",
                                 str(self.offset)], cwd=self.dir, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

        def stop():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.addCleanup(stop)
        return proc

    def output(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def status(self) -> dict:
        return json.loads(get(f"http://127.0.0.1:{self.port(8404)}/api/status"))

    def wait_for(self, predicate, what: str, deadline: float = 20.0):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"{what} after {deadline}s; output:\n{self.output()}")

    def test_check_accepts_the_quickstart(self):
        out = subprocess.run([sys.executable, "-m", "lbframe.cli", "check",
                              os.path.join(QUICKSTART, "site.ini")],
                             cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
        self.assertEqual((out.returncode, out.stderr), (0, ""))
        self.assertIn("OK", out.stdout)

    def test_run_moves_ports_and_a_stopped_backend_goes_down(self):
        proc = self.run_quickstart()
        for port in (8080, 8081, 8082, 8083, 8404):
            wait_for_port(self.port(port), proc)
        url = f"http://127.0.0.1:{self.port(8080)}/"
        answers = [get(url) for _ in range(6)]
        # Round robin: every backend once, then the same order again.
        self.assertEqual(sorted(answers[:3]), [b"hello from backend a\n",
                                               b"hello from backend b\n",
                                               b"hello from backend c\n"])
        self.assertEqual(answers[3:], answers[:3])
        status = self.status()
        members = status["pools"]["web"]["members"]
        self.assertEqual(sorted(m["address"] for m in members.values()),
                         [f"127.0.0.1:{self.port(p)}" for p in (8081, 8082, 8083)])
        # lbframe started once the backends answered: no check has failed.
        self.assertEqual(sum(c["checks_failed"] for m in members.values()
                             for c in m["checks"].values()), 0)
        # 6 requests and the readiness probe
        self.assertEqual(status["virtuals"]["web"]["connections_total"], 7)

        # Each backend is a process of its own: stop b, watch it go down.
        pids = dict(re.findall(r"demo backend (\w) on \S+, pid (\d+)", self.output()))
        self.assertEqual(sorted(pids), ["a", "b", "c"])
        os.kill(int(pids["b"]), signal.SIGTERM)
        self.wait_for(lambda: self.status()["pools"]["web"]["members"]["b"]["state"] == "down",
                      "b never went down")
        self.wait_for(lambda: "member web/b down: connect refused (3/3); 2 of 3 up"
                      in self.output(), "no log line for b")
        self.assertIn("[lbframe#warn] member web/b down", self.output())
        out = subprocess.run([sys.executable, "-m", "lbframe.cli", "status", "--admin",
                              f"http://127.0.0.1:{self.port(8404)}"],
                             cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("pool web (round-robin): 2 of 3 up", out.stdout)
        self.assertRegex(out.stdout, r"\n  b +127\.0\.0\.1:\d+ +down \d+s ")
        self.assertEqual(sorted(set(get(url) for _ in range(4))),
                         [b"hello from backend a\n", b"hello from backend c\n"])

        # Ctrl-C stops everything; no twistd.pid is left behind.
        os.killpg(proc.pid, signal.SIGINT)
        self.assertEqual(proc.wait(20), 130)
        self.assertIn("Server Shut Down.", self.output())
        self.assertEqual(os.listdir(self.dir), ["out.log"])
        for port in (8080, 8081, 8083, 8404):
            with self.assertRaises(OSError):
                socket.create_connection(("127.0.0.1", self.port(port)), timeout=1).close()


class ShiftPortsTests(SynchronousTestCase):
    """``examples/shift_ports.py``: every port of every example moves by the offset."""

    def ports(self, config: str) -> list[int]:
        from lbframe.config import load_site

        site = load_site(config)
        out = [m.address.port for p in site.pools.values() for m in p.members]
        for v in site.virtuals.values():
            out += [int(e.split(":")[1]) for e in v.listen]
        if site.lbframe.admin:
            out.append(int(site.lbframe.admin.split(":")[1]))
        return sorted(out)

    def test_every_example(self):
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        self.addCleanup(sys.path.remove, os.path.join(ROOT, "examples"))
        import shift_ports

        for name in ("quickstart", "web", "ap-tier"):
            source = os.path.join(ROOT, "examples", name)
            dest = os.path.abspath(self.mktemp())
            with open(os.path.join(source, "site.ini")) as f:
                text = f.read()
            os.makedirs(dest)
            with open(os.path.join(dest, "site.ini"), "w") as f:
                f.write(shift_ports.shift_text(text, 1000))
            if name == "web":  # its certificate is made by make_certificate.py
                continue
            before = self.ports(os.path.join(source, "site.ini"))
            self.assertEqual(self.ports(os.path.join(dest, "site.ini")),
                             [p + 1000 for p in before], name)

    def test_addresses_and_endpoints(self):
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        self.addCleanup(sys.path.remove, os.path.join(ROOT, "examples"))
        from shift_ports import shift_text

        self.assertEqual(shift_text(
            "listen = tcp:80:interface=127.0.0.1 tcp6:80:interface=\\:\\:1\n"
            "member a = [::1]:8081 weight=2\nmember b = 10.0.0.1:80\n; listen = tcp:1:x\n"
            "admin = tcp:8404:interface=127.0.0.1\n", 5),
            "listen = tcp:85:interface=127.0.0.1 tcp6:85:interface=\\:\\:1\n"
            "member a = [::1]:8086 weight=2\nmember b = 10.0.0.1:85\n; listen = tcp:1:x\n"
            "admin = tcp:8409:interface=127.0.0.1\n")
