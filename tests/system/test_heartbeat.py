"""``driver = heartbeat`` between two lbframe processes in namespaces: UDP
unicast and a serial line (a ``socat`` pty pair), manual and automatic
failback (see vrrp_lan.py for the LAN)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.system import netns
from tests.system.vrrp_lan import LAN, VIP, kill9, wait_for

TOKEN = "heartbeat-system-token"


def node_config(name: str, peer: str, priority: int, failback: str = "manual") -> str:
    return textwrap.dedent(f"""\
        [lbframe]
        admin = tcp:8404:interface=127.0.0.1
        admin_token = {TOKEN}

        [virtual web]
        listen = tcp:80:interface={VIP}
        protocol = http
        pool = web

        [pool web]
        member m = 198.18.0.50:8081

        [redundancy]
        driver = heartbeat
        interface = eth0
        vips = {VIP}/24
        peer = {peer}
        priority = {priority}
        interval = 200ms
        dead_after = 1s
        failback = {failback}
        node = {name}
        """)


class HeartbeatBase(SynchronousTestCase):
    timeout = 120
    serial = False

    def setUp(self):
        netns.require_system()
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.lan = LAN.build(self)
        self.lan.add("a", 1)
        self.lan.add("b", 2)
        self.lan.add("client", 100)
        self.lan.add("member", 50)
        self.lan.member("member", os.path.join(self.dir, "www"), "from member\n")
        self.procs = {}
        self.peers = {"a": f"udp:{self.lan.address('b')}:694",
                      "b": f"udp:{self.lan.address('a')}:694"}
        if self.serial:
            netns.require(shutil.which("socat") is not None, "needs socat (apt)")
            netns.require(importlib.util.find_spec("serial") is not None, "needs pyserial")
            ttys = [os.path.join(self.dir, "tty-a"), os.path.join(self.dir, "tty-b")]
            socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={ttys[0]}",
                                      f"pty,raw,echo=0,link={ttys[1]}"],
                                     stderr=subprocess.DEVNULL)
            self.addCleanup(lambda: (socat.kill(), socat.wait()))
            wait_for(lambda: all(os.path.exists(t) for t in ttys), 5, "socat's ptys")
            self.peers = {"a": ttys[0], "b": ttys[1]}

    def start(self, name, priority, failback="manual"):
        path = os.path.join(self.dir, f"{name}.ini")
        with open(path, "w") as f:
            f.write(node_config(name, self.peers[name], priority, failback))
        self.procs[name] = self.lan.lbframe(name, path, os.path.join(self.dir, f"{name}.log"))

    def api(self, name, method="GET", path="/api/status"):
        code = ("import json, sys, urllib.request\n"
                f"q = urllib.request.Request('http://127.0.0.1:8404{path}', method={method!r},"
                f" data=b'{{}}' if {method!r} == 'POST' else None,"
                f" headers={{'Authorization': 'Bearer {TOKEN}',"
                " 'Content-Type': 'application/json'})\n"
                "print(urllib.request.urlopen(q, timeout=2).read().decode())\n")
        done = netns.ns_exec(self.lan.ns(name), sys.executable, "-c", code, timeout=15)
        return json.loads(done.stdout) if done.returncode == 0 else {}

    def state(self, name):
        return self.api(name).get("redundancy", {}).get("state")

    def wait_state(self, name, state, timeout=30):
        wait_for(lambda: self.state(name) == state, timeout, f"{name} {state}", step=0.2)

    def owner(self):
        return [n for n in ("a", "b") if self.lan.has_vip(n)]

    def run_failover(self):
        self.start("a", 200)
        self.start("b", 100)
        self.wait_state("a", "master")
        self.wait_state("b", "backup")
        self.assertEqual(self.owner(), ["a"])
        self.assertEqual(self.lan.get("client", f"http://{VIP}/"), "from member\n")
        killed = kill9(self.procs["a"])
        wait_for(lambda: self.lan.has_vip("b"), 5, "b owning the VIP")
        took = time.time() - killed
        self.assertLess(took, 1.0 + 0.2 + 0.5)  # dead_after + one interval + polling
        self.assertEqual(self.lan.get("client", f"http://{VIP}/"), "from member\n")
        # a comes back: manual failback, so b keeps the IP …
        self.start("a", 200)
        self.wait_state("a", "backup")
        time.sleep(2)
        self.assertEqual(self.state("b"), "master")
        self.assertEqual(self.owner(), ["b"])
        # … until the operator says so on a
        red = self.api("a", "POST", "/api/redundancy/takeover")
        self.assertEqual(red.get("state"), "master")
        self.wait_state("b", "backup", timeout=5)
        self.assertEqual(self.owner(), ["a"])
        self.assertEqual(self.lan.get("client", f"http://{VIP}/"), "from member\n")
        # release hands it back at once
        self.api("a", "POST", "/api/redundancy/release")
        self.wait_state("b", "master", timeout=5)
        self.assertEqual(self.owner(), ["b"])

    def run_auto_failback(self):
        self.start("a", 200, "auto")
        self.start("b", 100, "auto")
        self.wait_state("a", "master")
        kill9(self.procs["a"])
        self.wait_state("b", "master")
        self.start("a", 200, "auto")
        self.wait_state("a", "master")
        self.wait_state("b", "backup")
        self.assertEqual(self.owner(), ["a"])


class HeartbeatUDPTests(HeartbeatBase):
    def test_failover_and_manual_failback(self):
        self.run_failover()

    def test_auto_failback(self):
        self.run_auto_failback()


class HeartbeatSerialTests(HeartbeatBase):
    serial = True

    def test_failover_and_manual_failback(self):
        self.run_failover()

    def test_auto_failback(self):
        self.run_auto_failback()
