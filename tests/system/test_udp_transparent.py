"""``protocol = udp`` with ``source = client`` (IP_TRANSPARENT), for real:
three network namespaces — a client, lbframe, a member — joined by two veth
pairs, none with a default route.

    client 192.0.2.1 ──veth── 192.0.2.2 (VIP)  lbframe  198.51.100.1 ──veth── 198.51.100.2 member

The member routes the client network via lbframe; lbframe delivers what
arrives from the member's side to its local sockets (``ip rule iif … lookup
100`` + ``local 0.0.0.0/0`` in table 100), which is what docs/udp.md tells
operators to set up. The member answers with the address it saw; the client
checks that the answer came from the VIP. lbframe runs as ``twistd -n
lbframe`` inside its namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.system.netns import add_address, add_netns, ip, require_system, unique

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIENT, VIP = "192.0.2.1", "192.0.2.2"
LB_MEMBER_SIDE, MEMBER = "198.51.100.1", "198.51.100.2"
VIP_PORT, MEMBER_PORT = 5353, 5300

MEMBER_PROGRAM = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    s.settimeout(1.0)
    deadline = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        try:
            data, addr = s.recvfrom(65536)
        except socket.timeout:
            continue
        s.sendto(b"%s saw %s:%d" % (data, addr[0].encode(), addr[1]), addr)
""")

CLIENT_PROGRAM = textwrap.dedent("""
    import json, socket, sys, time
    vip = (sys.argv[1], int(sys.argv[2]))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    s.settimeout(0.5)
    out = {"port": s.getsockname()[1], "replies": []}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(out["replies"]) < 3:
        s.sendto(b"q%d" % len(out["replies"]), vip)  # lbframe may still be starting
        try:
            data, addr = s.recvfrom(65536)
        except socket.timeout:
            continue
        out["replies"].append([data.decode(), addr[0], addr[1]])
    print(json.dumps(out))
""")


class TransparentUDPTests(SynchronousTestCase):
    def setUp(self):
        require_system()
        self.client_ns, self.lb_ns, self.member_ns = (add_netns(self) for _ in range(3))
        self.folder = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.folder, ignore_errors=True))
        c_if, lc_if, lm_if, m_if = (unique(t) for t in "clmq")
        # veth pairs created in the lb namespace's view: add, then move both ends.
        for a, b, a_ns, b_ns in ((c_if, lc_if, self.client_ns, self.lb_ns),
                                 (lm_if, m_if, self.lb_ns, self.member_ns)):
            self.addCleanup(ip, "link", "delete", a, netns=a_ns, check=False)
            self.addCleanup(ip, "link", "delete", a, check=False)
            ip("link", "add", a, "type", "veth", "peer", "name", b)
            ip("link", "set", a, "netns", a_ns)
            ip("link", "set", b, "netns", b_ns)
            ip("link", "set", a, "up", netns=a_ns)
            ip("link", "set", b, "up", netns=b_ns)
        add_address(c_if, f"{CLIENT}/29", netns=self.client_ns)
        add_address(lc_if, f"{VIP}/29", netns=self.lb_ns)
        add_address(lm_if, f"{LB_MEMBER_SIDE}/29", netns=self.lb_ns)
        add_address(m_if, f"{MEMBER}/29", netns=self.member_ns)
        # The member answers the client network through lbframe (no default route).
        ip("route", "add", "192.0.2.0/29", "via", LB_MEMBER_SIDE, netns=self.member_ns)
        # lbframe: what comes from the member side is delivered locally, even
        # when addressed to the client (the transparent sockets hold that address).
        ip("rule", "add", "iif", lm_if, "lookup", "100", netns=self.lb_ns)
        ip("route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100", netns=self.lb_ns)
        for ns in (self.client_ns, self.lb_ns, self.member_ns):
            self.assertNotIn("default", ip("route", "show", netns=ns))

    def spawn(self, netns: str, argv: list[str], name: str) -> subprocess.Popen:
        log = open(os.path.join(self.folder, f"{name}.log"), "w")
        self.addCleanup(log.close)
        env = dict(os.environ, PYTHONPATH=ROOT)
        proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=self.folder)

        def stop():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.addCleanup(stop)
        return proc

    def run_site(self, source: str) -> dict:
        site = os.path.join(self.folder, "site.ini")
        with open(site, "w") as f:
            f.write(textwrap.dedent(f"""
                [lbframe]
                stop_grace = 1s

                [virtual dns]
                listen = udp:{VIP_PORT}:interface={VIP}
                protocol = udp
                pool = p
                source = {source}

                [pool p]
                member m = {MEMBER}:{MEMBER_PORT}
            """))
        self.spawn(self.member_ns, [sys.executable, "-c", MEMBER_PROGRAM, str(MEMBER_PORT), "40"],
                   "member")
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        lb = self.spawn(self.lb_ns, [twistd, "-n", "--pidfile=", "lbframe", "--config", site],
                        "lbframe")
        done = subprocess.run(["ip", "netns", "exec", self.client_ns, sys.executable, "-c",
                               CLIENT_PROGRAM, VIP, str(VIP_PORT)], capture_output=True,
                              text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        time.sleep(0.1)
        self.assertIsNone(lb.poll(), self.log("lbframe"))
        out = json.loads(done.stdout)
        self.assertEqual(len(out["replies"]), 3, self.log("lbframe") + self.log("member"))
        return out

    def log(self, name: str) -> str:
        with open(os.path.join(self.folder, f"{name}.log")) as f:
            return f.read()[-3000:]

    def test_member_sees_the_client_and_answers_through_lbframe(self):
        out = self.run_site("client")
        for i, (data, host, port) in enumerate(out["replies"]):
            self.assertEqual((host, port), (VIP, VIP_PORT))  # from the VIP
            self.assertEqual(data, f"q{i} saw {CLIENT}:{out['port']}")

    def test_default_source_is_lbframe(self):
        out = self.run_site("lbframe")
        ports = set()
        for i, (data, host, port) in enumerate(out["replies"]):
            self.assertEqual((host, port), (VIP, VIP_PORT))
            self.assertTrue(data.startswith(f"q{i} saw {LB_MEMBER_SIDE}:"), data)
            ports.add(data.rsplit(":", 1)[1])
        self.assertEqual(len(ports), 1)  # one flow, one socket toward the member
