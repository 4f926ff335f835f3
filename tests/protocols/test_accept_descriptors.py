"""Out of file descriptors: a listener process with a low RLIMIT_NOFILE,
more clients than descriptors. Accepting pauses (one log line), the process
does not spin, waiting clients stay in the backlog, and once clients close
it serves again. Bounded in count and time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import free_port, serve_canned

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: the listener process: a tcp virtual server reading PROXY headers (each
#: waiting client holds one descriptor) and an http one, sharing the gate
CHILD = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from twisted.internet import epollreactor
epollreactor.install()
from twisted.internet import reactor
from twisted.logger import globalLogPublisher
from lbframe.config import parse_site
from lbframe.plugins import load_plugins
from lbframe.service import build_runtime

def observe(event):
    name = event.get("lbframe_event")
    if name:
        print("EVENT", name, flush=True)
globalLogPublisher.addObserver(observe)
text = sys.stdin.read()
runtime = build_runtime(parse_site(text, "/tmp/site.ini"), load_plugins(entry_points=False), reactor)
services = [runtime.protocols[n].make_service(runtime.balancers[n], reactor) for n in ("t", "h")]
for svc in services:
    svc.startService()
print("READY", flush=True)
reactor.run()
"""

SITE = """
[lbframe]
max_connections = 10000

[virtual t]
listen = tcp:{tport}:interface=127.0.0.1:backlog=200
accept_proxy = yes
timeout_client = 1h
pool = p

[virtual h]
listen = tcp:{hport}:interface=127.0.0.1:backlog=200
protocol = http
pool = p

[pool p]
member a = 127.0.0.1:{mport}
"""

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FdExhaustionTests(SynchronousTestCase):
    FDS = 64
    CLIENTS = 120

    def setUp(self):
        # A member answering one HTTP response per connection, in a thread.
        self.member = serve_canned(RESPONSE, backlog=50)
        self.addCleanup(self.member.close)
        self.tport, self.hport = free_port(), free_port()
        self.log = open(os.path.join(os.path.abspath(self.mktemp()) + ".log"), "w+")
        self.addCleanup(self.log.close)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(self.FDS)], cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.PIPE,
            stdout=self.log, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(self._stop)
        self.proc.stdin.write(SITE.format(tport=self.tport, hport=self.hport,
                                          mport=self.member.getsockname()[1]))
        self.proc.stdin.close()
        self.wait_output("READY")

    def _stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_output(self, text: str, count: int = 1, deadline: float = 20.0):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.output().count(text) >= count:
                return
            if self.proc.poll() is not None:
                self.fail(f"listener exited: {self.output()}")
            time.sleep(0.02)
        self.fail(f"{text!r} not seen in {deadline}s: {self.output()[-2000:]}")

    def http_get(self, sock: socket.socket) -> bytes:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk

    def test_out_of_descriptors_pauses_then_serves_again(self):
        clients = []
        self.addCleanup(lambda: [c.close() for c in clients])
        for _ in range(self.CLIENTS):  # more than the listener has descriptors
            clients.append(socket.create_connection(("127.0.0.1", self.tport), timeout=5))
        self.wait_output("EVENT accept_exhausted")
        # An http client now waits in the backlog: not served, not closed.
        waiting = socket.create_connection(("127.0.0.1", self.hport), timeout=10)
        self.addCleanup(waiting.close)
        before = cpu_seconds(self.proc.pid)
        time.sleep(2.0)
        used = cpu_seconds(self.proc.pid) - before
        self.assertLess(used, 0.5, f"the listener spun: {used:.2f}s of CPU in 2s")
        out = self.output()
        self.assertEqual(out.count("EVENT accept_exhausted"), 1, out[-2000:])
        self.assertLess(len(out.splitlines()), 40, out[-2000:])  # no line per retry
        # Clients go away: the listener accepts again and serves the one waiting.
        for client in clients:
            client.close()
        clients.clear()
        self.assertTrue(self.http_get(waiting).endswith(b"\r\n\r\nok"))
        self.wait_output("EVENT accept_resumed")
        fresh = socket.create_connection(("127.0.0.1", self.hport), timeout=10)
        self.addCleanup(fresh.close)
        self.assertTrue(self.http_get(fresh).endswith(b"\r\n\r\nok"))
