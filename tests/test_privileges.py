"""``twistd --uid/--gid``: started as root, lbframe binds every listener
(tcp, ssl-terminating http, http, admin) on ports below 1024 and opens its
raw ICMP socket before the switch, then serves as ``nobody``."""

from __future__ import annotations

import json
import os
import pwd
import grp
import socket
import ssl
import subprocess
import time
import urllib.request

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.helpers import serve_canned
from tests.examples.test_quickstart import ROOT, TWISTD
from tests.tlskit import cert_pem, make_ca, make_cert, write, write_bundle

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nmember"


def low_ports(count: int) -> list[int]:
    """Free ports below 1024 on 127.0.0.1 (other tests may hold some)."""
    found = []
    for port in range(700, 1000):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        found.append(port)
        if len(found) == count:
            return found
    raise SkipTest("no free ports below 1024")


def serve_member() -> socket.socket:
    """A member answering one HTTP response per connection, in a thread."""
    return serve_canned(RESPONSE)


def uid_of(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                real, effective = line.split()[1:3]
                return int(real), int(effective)
    raise AssertionError("no Uid line")


def raw_request(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


class PrivilegeDropTests(SynchronousTestCase):
    def setUp(self):
        if os.geteuid() != 0:
            raise SkipTest("needs root: twistd --uid switches from root")
        try:
            self.nobody = pwd.getpwnam("nobody")
            self.group = grp.getgrgid(self.nobody.pw_gid).gr_name
        except KeyError:
            raise SkipTest("no user nobody") from None
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        member = serve_member()
        self.addCleanup(member.close)
        self.mport = member.getsockname()[1]

    def start(self, site: str) -> subprocess.Popen:
        config = write(os.path.join(self.dir, "site.ini"), site.encode())
        log = open(os.path.join(self.dir, "twistd.log"), "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen(
            TWISTD + ["-n", "--pidfile=", f"--uid={self.nobody.pw_uid}",
                      f"--gid={self.nobody.pw_gid}", "lbframe", "--config", config],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=log,
            stderr=subprocess.STDOUT)

        def stop():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.addCleanup(stop)
        return proc

    def log(self) -> str:
        with open(os.path.join(self.dir, "twistd.log")) as f:
            return f.read()

    def wait_for(self, proc, predicate, what: str, deadline: float = 20.0):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if proc.poll() is not None:
                self.fail(f"lbframe exited with {proc.returncode}: {self.log()[-3000:]}")
            try:
                if predicate():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.fail(f"{what} not reached in {deadline}s: {self.log()[-3000:]}")

    def test_binds_below_1024_and_serves_as_nobody(self):
        ca = make_ca()
        key, cert = make_cert(ca, "www.test")
        bundle = write_bundle(os.path.join(self.dir, "tls.pem"), key, cert, ca)
        os.chmod(bundle, 0o600)  # readable by root only, as a key should be
        ca_file = write(os.path.join(self.dir, "ca.pem"), cert_pem(ca[1]))
        http, https, tcp, admin = low_ports(4)
        proc = self.start(f"""
[lbframe]
admin = tcp:{admin}:interface=127.0.0.1

[virtual web]
listen = tcp:{http}:interface=127.0.0.1
protocol = http
pool = p

[virtual secure]
listen = ssl:{https}:privateKey={bundle}:interface=127.0.0.1
protocol = http
pool = p

[virtual raw]
listen = tcp:{tcp}:interface=127.0.0.1
pool = p

[pool p]
member a = 127.0.0.1:{self.mport}
monitor = ping

[monitor ping]
type = icmp
socket = raw
interval = 250ms
timeout = 1s
""")

        def status():
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/status", timeout=2) as r:
                return json.load(r)

        def checked():
            check = status()["pools"]["p"]["members"]["a"]["checks"].get("ping")
            return check is not None and check["checks_total"] >= 3

        self.wait_for(proc, checked, "three ICMP checks")
        self.assertEqual(uid_of(proc.pid), (self.nobody.pw_uid, self.nobody.pw_uid))
        self.assertIn(f"set uid/gid {self.nobody.pw_uid}/{self.nobody.pw_gid}", self.log())
        # Checks run after the switch, on the raw socket opened before it.
        check = status()["pools"]["p"]["members"]["a"]["checks"]["ping"]
        self.assertEqual((check["checks_failed"], check["ok"]), (0, True), check)
        self.assertTrue(raw_request(http).endswith(b"\r\n\r\nmember"))
        self.assertTrue(raw_request(tcp).endswith(b"\r\n\r\nmember"))
        context = ssl.create_default_context(cafile=ca_file)
        with socket.create_connection(("127.0.0.1", https), timeout=5) as s:
            with context.wrap_socket(s, server_hostname="www.test") as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
        self.assertTrue(data.endswith(b"\r\n\r\nmember"))
        self.assertEqual(uid_of(proc.pid), (self.nobody.pw_uid, self.nobody.pw_uid))
