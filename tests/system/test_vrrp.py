"""``driver = vrrp`` between real processes in namespaces (see vrrp_lan.py).

Two lbframe nodes (``twistd lbframe`` inside ``ip netns exec``), a member
(Python's http.server) and a client share one bridge. Times are measured
from the packets on the wire (tcpdump in the client's namespace): the last
advert of the old master to the first advert of the new one, against the
backup's Master_Down_Interval (RFC 5798 §6.1) plus 50 ms.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import textwrap
import time

from twisted.trial.unittest import SynchronousTestCase

from lbframe.redundancy.vrrp import packet
from lbframe.redundancy.vrrp.machine import master_down_interval, skew_time
from tests.system import netns
from tests.system.vrrp_lan import LAN, VIP, kill9, parse_capture, read_pcap, wait_for

SLACK = 0.05


def node_config(address: str, priority: int, interval: str = "1s", preempt: str = "yes",
                version: int = 3, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        [lbframe]
        admin = tcp:8404:interface=127.0.0.1

        [virtual web]
        listen = tcp:80:interface={VIP}
        protocol = http
        pool = web

        [virtual raw]
        listen = tcp:81:interface={VIP}
        protocol = tcp
        pool = web

        [pool web]
        member m = 198.18.0.50:8081

        [redundancy]
        driver = vrrp
        interface = eth0
        vrid = 51
        vips = {VIP}/24
        priority = {priority}
        advert_interval = {interval}
        preempt = {preempt}
        version = {version}
        """) + extra


class PairBase(SynchronousTestCase):
    timeout = 120

    def setUp(self):
        netns.require_system()
        netns.require(shutil.which("tcpdump") is not None, "needs tcpdump")
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.lan = LAN.build(self)
        self.lan.add("a", 1)
        self.lan.add("b", 2)
        self.lan.add("client", 100)
        self.lan.add("member", 50)
        self.lan.member("member", os.path.join(self.dir, "www"), "from member\n")
        self.wire = os.path.join(self.dir, "wire.txt")
        self.lan.capture("client", self.wire)
        self.pcap = os.path.join(self.dir, "wire.pcap")
        self.lan.capture_pcap("client", self.pcap)
        time.sleep(0.3)  # tcpdump attaches

    def start_node(self, name: str, priority: int, **kw):
        path = os.path.join(self.dir, f"{name}.ini")
        with open(path, "w") as f:
            f.write(node_config(self.lan.address(name), priority, **kw))
        return self.lan.lbframe(name, path, os.path.join(self.dir, f"{name}.log"))

    def status(self, name: str) -> dict:
        body = self.lan.get(name, "http://127.0.0.1:8404/api/status")
        return json.loads(body) if body else {}

    def state(self, name: str) -> str | None:
        return self.status(name).get("redundancy", {}).get("state")

    def wait_state(self, name: str, state: str, timeout: float = 30):
        wait_for(lambda: self.state(name) == state, timeout, f"{name} {state}", step=0.2)

    def check_bytes(self, source, priority, centis, version=3):
        """Our adverts as captured, field by field from the raw bytes."""
        datagrams = wait_for(lambda: [d for _, d in read_pcap(self.pcap)
                                      if d[12:16] == socket.inet_aton(source)],
                             3, "an advert in the pcap")
        for d in datagrams:
            self.assertEqual(d[8], 255)  # TTL
            self.assertEqual(d[9], 112)  # protocol
            self.assertEqual(d[16:20], socket.inet_aton("224.0.0.18"))
            vrrp = d[(d[0] & 0x0F) * 4:]
            self.assertEqual(vrrp[0], (version << 4) | 1)  # version, type advertisement
            self.assertEqual(vrrp[1], 51)  # VRID
            self.assertEqual(vrrp[2], priority)
            self.assertEqual(vrrp[3], 1)  # one address
            self.assertEqual(vrrp[8:12], socket.inet_aton(VIP))
            if version == 3:
                self.assertEqual(struct.unpack("!H", vrrp[4:6])[0] & 0x0FFF, centis)
                self.assertEqual(len(vrrp), 12)
                pseudo = packet.pseudo_header(source, "224.0.0.18", len(vrrp))
                self.assertEqual(packet.checksum(pseudo + vrrp), 0)  # the checksum holds
            else:
                self.assertEqual((vrrp[4], vrrp[5]), (0, centis // 100))  # no auth, seconds
                self.assertEqual(vrrp[12:20], bytes(8))  # authentication data
                self.assertEqual(len(vrrp), 20)
                self.assertEqual(packet.checksum(vrrp), 0)

    def adverts(self, since: float = 0.0) -> list:
        return [s for s in parse_capture(self.wire) if s.kind == "advert" and s.time >= since]

    def first_advert_from(self, source: str, since: float, timeout: float = 10):
        def find():
            for s in self.adverts(since):
                if s.source == source and s.priority > 0:
                    return s
        return wait_for(find, timeout, f"an advert from {source}", step=0.05)

    def last_advert_from(self, source: str, before: float):
        found = [s for s in self.adverts() if s.source == source and s.time <= before]
        self.assertTrue(found, f"no advert from {source} before {before}")
        return found[-1]


class ElectionTests(PairBase):
    def test_election_failover_preempt_and_clean_stop(self):
        """Priority decides; SIGKILL of the master → the backup's adverts start
        within its Master_Down_Interval; it answers HTTP on the VIP; the first
        node back preempts; a clean stop hands over within Skew_Time."""
        a_addr, b_addr = self.lan.address("a"), self.lan.address("b")
        a = self.start_node("a", 200)
        self.start_node("b", 100)
        self.wait_state("a", "master")
        self.wait_state("b", "backup")
        self.assertTrue(self.lan.has_vip("a"))
        self.assertFalse(self.lan.has_vip("b"))
        self.assertEqual(self.lan.get("client", f"http://{VIP}/"), "from member\n")
        self.assertEqual(self.lan.get("client", f"http://{VIP}:81/"), "from member\n")
        # adverts on the wire, byte for byte as tcpdump decodes them
        seen = self.adverts()
        ours = [s for s in seen if s.source == a_addr]
        self.assertTrue(ours)
        for s in ours:
            self.assertEqual((s.version, s.vrid, s.priority, s.ttl, s.interval_cs),
                             (3, 51, 200, 255, 100), s.text)
            self.assertIn("addrs: 198.18.0.10", s.text)  # tcpdump checks the checksum too
        self.assertNotIn("bad", " ".join(s.text for s in ours))
        self.check_bytes(a_addr, priority=200, centis=100)

        # the master dies
        killed = kill9(a)
        first_b = self.first_advert_from(b_addr, killed)
        last_a = self.last_advert_from(a_addr, killed)
        took = first_b.time - last_a.time
        mdi = master_down_interval(100, 1.0)
        self.assertLessEqual(took, mdi + SLACK, f"took {took:.3f}s, MDI {mdi:.3f}s")
        self.assertGreaterEqual(took, mdi - SLACK)
        wait_for(lambda: self.lan.has_vip("b"), 2, "VIP on b")
        garps = wait_for(lambda: [s for s in parse_capture(self.wire)
                                  if s.kind == "arp" and s.source == VIP
                                  and s.time >= first_b.time - 0.01],
                         2, "a gratuitous ARP for the VIP from b")
        self.assertLessEqual(garps[0].time - last_a.time, mdi + SLACK)
        self.assertEqual(self.lan.get("client", f"http://{VIP}/"), "from member\n")
        self.wait_state("b", "master")

        # a comes back with the higher priority: preempts after its Master_Down_Interval
        self.start_node("a", 200)
        self.wait_state("a", "master", timeout=20)
        self.wait_state("b", "backup")
        self.assertTrue(self.lan.has_vip("a"))
        self.assertFalse(self.lan.has_vip("b"))

        # clean stop of a (SIGTERM): priority 0, b takes over within its Skew_Time
        a2 = self.lan_proc_of("a")
        stopped = time.time()
        a2.terminate()
        a2.wait(20)
        zero = [s for s in self.adverts(stopped - 0.1) if s.source == a_addr and s.priority == 0]
        self.assertTrue(zero, "no priority-0 advert on a clean stop")
        first_b = self.first_advert_from(b_addr, zero[0].time)
        took = first_b.time - zero[0].time
        self.assertLessEqual(took, skew_time(100, 1.0) + SLACK, f"took {took:.3f}s")
        self.assertFalse(self.lan.has_vip("a"))
        wait_for(lambda: self.lan.has_vip("b"), 2, "VIP on b")

    def lan_proc_of(self, name):
        return self._procs[name]

    def start_node(self, name, priority, **kw):
        proc = super().start_node(name, priority, **kw)
        self._procs = getattr(self, "_procs", {})
        self._procs[name] = proc
        return proc

    def test_no_preempt(self):
        """``preempt = no``: a higher-priority node that comes back stays backup."""
        a = self.start_node("a", 200, preempt="no")
        self.start_node("b", 100, preempt="no")
        self.wait_state("a", "master")
        self.wait_state("b", "backup")
        kill9(a)
        self.wait_state("b", "master")
        self.start_node("a", 200, preempt="no")
        self.wait_state("a", "backup")
        time.sleep(5)  # well past a's Master_Down_Interval
        self.assertEqual(self.state("a"), "backup")
        self.assertEqual(self.state("b"), "master")
        self.assertTrue(self.lan.has_vip("b"))
        self.assertFalse(self.lan.has_vip("a"))


CLIENT_LOOP = """\
import sys, time, urllib.request
end = time.time() + float(sys.argv[2])
while time.time() < end:
    t = time.time()
    try:
        body = urllib.request.urlopen(sys.argv[1], timeout=0.3).read().decode().strip()
        print(f"{t:.3f} ok {body}", flush=True)
    except Exception as e:
        print(f"{t:.3f} fail {type(e).__name__}", flush=True)
    time.sleep(max(0, 0.05 - (time.time() - t)))
"""


class FastAdvertTests(PairBase):
    def test_failover_at_100ms_with_traffic(self):
        """0.1 s adverts: the backup's adverts start within its
        Master_Down_Interval (≈0.36 s) of the master's last; a client that
        asks every 50 ms sees failures only in that gap (plus one timeout)."""
        a_addr, b_addr = self.lan.address("a"), self.lan.address("b")
        a = self.start_node("a", 200, interval="0.1s")
        self.start_node("b", 100, interval="0.1s")
        self.wait_state("a", "master")
        self.wait_state("b", "backup")
        script = os.path.join(self.dir, "client.py")
        with open(script, "w") as f:
            f.write(CLIENT_LOOP)
        out = os.path.join(self.dir, "client.txt")
        import sys
        loop = self.lan.popen("client", [sys.executable, script, f"http://{VIP}/", "8"], out)
        wait_for(lambda: os.path.exists(out) and " ok " in open(out).read(), 5,
                 "the client's first answer")
        time.sleep(1)
        killed = kill9(a)
        first_b = self.first_advert_from(b_addr, killed)
        last_a = self.last_advert_from(a_addr, killed)
        took = first_b.time - last_a.time
        mdi = master_down_interval(100, 0.1)
        self.assertLessEqual(took, mdi + SLACK, f"took {took:.3f}s, MDI {mdi:.3f}s")
        self.assertGreaterEqual(took, mdi - SLACK)
        loop.wait(20)
        results = [line.split() for line in open(out).read().splitlines()]
        fails = [float(r[0]) for r in results if r[1] == "fail"]
        oks_after = [float(r[0]) for r in results if r[1] == "ok" and float(r[0]) > killed]
        self.assertTrue(oks_after, "no answer after the failover")
        # failures only inside the gap: from the kill until the new master's
        # first advert, plus one request's timeout and the GARP
        for t in fails:
            self.assertGreaterEqual(t, killed - 0.35, f"a request failed before the kill: {t}")
            self.assertLessEqual(t, first_b.time + 0.1, f"a request failed after takeover: {t}")
        self.assertGreater(len(oks_after), 50)


KEEPALIVED_CONF = """\
global_defs {{
  router_id {name}
  vrrp_version {version}
}}
vrrp_instance VI_1 {{
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority {priority}
  advert_int {interval}
  virtual_ipaddress {{
    {vip}/24
  }}
}}
"""


class KeepalivedV3Tests(PairBase):
    """lbframe and Debian's keepalived in one VRRP group, each as master and as backup."""

    version = 3

    def setUp(self):
        netns.require(shutil.which("keepalived") is not None, "needs keepalived (apt)")
        super().setUp()

    def start_keepalived(self, name: str, priority: int):
        conf = os.path.join(self.dir, f"keepalived-{name}.conf")
        with open(conf, "w") as f:
            f.write(KEEPALIVED_CONF.format(name=name, version=self.version, priority=priority,
                                           interval=1, vip=VIP))
        return self.lan.popen(name, ["keepalived", "-n", "-l", "-D", "--vrrp", "-f", conf,
                                     "-p", os.path.join(self.dir, f"k-{name}.pid"),
                                     "-r", os.path.join(self.dir, f"k-{name}-vrrp.pid")],
                              os.path.join(self.dir, f"keepalived-{name}.log"),
                              start_new_session=True)

    def stop_keepalived(self, proc):
        """SIGTERM: keepalived sends priority 0 and removes its VIP."""
        proc.terminate()
        proc.wait(20)

    def test_keepalived_master_lbframe_backup(self):
        """keepalived (200) is master, lbframe (100) backup; the link of the
        keepalived node goes down (it vanishes): lbframe takes over within
        its Master_Down_Interval; keepalived comes back and preempts; its
        clean stop hands over within lbframe's Skew_Time."""
        k_addr, b_addr = self.lan.address("a"), self.lan.address("b")
        k = self.start_keepalived("a", 200)
        self.start_node("b", 100, version=self.version)
        wait_for(lambda: self.lan.has_vip("a"), 15, "keepalived's VIP")
        self.wait_state("b", "backup")
        time.sleep(2)
        self.assertEqual(self.state("b"), "backup")  # keepalived's adverts are accepted
        self.assertFalse(self.lan.has_vip("b"))
        self.assertEqual(self.lan.get("client", f"http://{VIP}/"), None)  # keepalived serves nothing
        cut = time.time()
        netns.ip("link", "set", "eth0", "down", netns=self.lan.ns("a"))
        first_b = self.first_advert_from(b_addr, cut)
        took = first_b.time - self.last_advert_from(k_addr, cut).time
        mdi = master_down_interval(100, 1.0)
        self.assertLessEqual(took, mdi + SLACK, f"took {took:.3f}s")
        self.wait_state("b", "master")
        self.assertEqual(self.lan.get("client", f"http://{VIP}/"), "from member\n")
        # keepalived is back (its VIP went with the link): it preempts lbframe
        netns.ip("link", "set", "eth0", "up", netns=self.lan.ns("a"))
        self.wait_state("b", "backup", timeout=20)
        wait_for(lambda: self.lan.has_vip("a"), 10, "keepalived's VIP again")
        self.assertFalse(self.lan.has_vip("b"))
        # keepalived stops cleanly: priority 0, lbframe takes over within Skew_Time
        stopped = time.time()
        self.stop_keepalived(k)
        zero = wait_for(lambda: [s for s in self.adverts(stopped - 0.1)
                                 if s.source == k_addr and s.priority == 0], 5,
                        "keepalived's priority-0 advert")
        first_b = self.first_advert_from(b_addr, zero[0].time)
        self.assertLessEqual(first_b.time - zero[0].time, skew_time(100, 1.0) + SLACK)

    def test_lbframe_master_keepalived_backup(self):
        """lbframe (200) is master, keepalived (100) backup: keepalived accepts
        our adverts (it stays backup, no VIP); SIGKILL of lbframe → keepalived
        owns the VIP; lbframe restarts, removes nothing of keepalived's,
        preempts, and keepalived gives the VIP back."""
        a_addr, k_addr = self.lan.address("a"), self.lan.address("b")
        a = self.start_node("a", 200, version=self.version)
        self.wait_state("a", "master")
        self.check_bytes(a_addr, priority=200, centis=100, version=self.version)
        self.start_keepalived("b", 100)
        time.sleep(5)  # longer than keepalived's Master_Down_Interval
        self.assertFalse(self.lan.has_vip("b"), "keepalived took the VIP from a live master")
        self.assertEqual(self.state("a"), "master")
        killed = kill9(a)
        first_k = self.first_advert_from(k_addr, killed)
        took = first_k.time - self.last_advert_from(a_addr, killed).time
        self.assertLessEqual(took, master_down_interval(100, 1.0) + SLACK, f"took {took:.3f}s")
        wait_for(lambda: self.lan.has_vip("b"), 3, "keepalived's VIP")
        # the crashed lbframe left its VIP behind: the restart removes it before backup
        self.assertTrue(self.lan.has_vip("a"))
        self.start_node("a", 200, version=self.version)
        log = os.path.join(self.dir, "a.log")
        wait_for(lambda: "left there by an earlier run" in open(log).read(), 10,
                 "a's leftover VIP removed")
        self.assertFalse(self.lan.has_vip("a") and self.state("a") == "backup")
        self.wait_state("a", "master", timeout=20)
        wait_for(lambda: not self.lan.has_vip("b"), 5, "keepalived releasing the VIP")
        self.assertEqual(self.lan.get("client", f"http://{VIP}/"), "from member\n")


class KeepalivedV2Tests(KeepalivedV3Tests):
    version = 2


class VirtualMACTests(PairBase):
    def neighbour_mac(self) -> str | None:
        out = netns.ip("neigh", "show", VIP, netns=self.lan.ns("client"))
        words = out.split()
        return words[words.index("lladdr") + 1] if "lladdr" in words else None

    def test_use_vmac(self):
        """``use_vmac = yes``: the client learns 00:00:5e:00:01:33 for the VIP,
        and after the failover the same MAC answers from the other node."""
        vmac = "00:00:5e:00:01:33"
        a = self.start_node("a", 200, extra="use_vmac = yes\n")
        self.start_node("b", 100, extra="use_vmac = yes\n")
        self.wait_state("a", "master")
        self.wait_state("b", "backup")
        self.assertFalse(self.lan.has_vip("b"))
        self.assertNotIn(VIP, netns.ip("-4", "addr", "show", "dev", "vrrp.51",
                                       netns=self.lan.ns("b")))
        self.assertIn(VIP, netns.ip("-4", "addr", "show", "dev", "vrrp.51",
                                    netns=self.lan.ns("a")))
        self.assertEqual(self.lan.get("client", f"http://{VIP}/"), "from member\n")
        self.assertEqual(self.neighbour_mac(), vmac)
        kill9(a)
        self.wait_state("b", "master")
        self.assertEqual(self.lan.get("client", f"http://{VIP}/"), "from member\n")
        self.assertEqual(self.neighbour_mac(), vmac)
        self.assertIn(VIP, netns.ip("-4", "addr", "show", "dev", "vrrp.51",
                                    netns=self.lan.ns("b")))
