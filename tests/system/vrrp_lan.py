"""A small LAN in namespaces for the redundancy system tests.

One namespace holds a bridge (the switch); every participant (lbframe nodes,
keepalived, a client, a member) is a namespace with ``eth0`` on that bridge
and an address in 198.18.0.0/24 (RFC 2544 benchmarking space). No namespace
has a default route and none is linked to the test's own namespace, so
nothing leaves the LAN. Everything is deleted when the test ends, even on
failure (clean-ups are registered before what they clean up exists).
"""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import time

import attrs

from tests.system import netns

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = [sys.executable, "-c", "import sys; sys.argv[0] = 'twistd'; "
                                "from twisted.scripts.twistd import run; run()"]
SUBNET = "198.18.0"
VIP = f"{SUBNET}.10"


@attrs.define
class LAN:
    test: object
    switch: str
    hosts: dict = attrs.field(factory=dict)  # name -> (netns, address)

    @classmethod
    def build(cls, test) -> "LAN":
        switch = netns.add_netns(test)
        netns.ip("link", "add", "br0", "type", "bridge", netns=switch)
        netns.ip("link", "set", "br0", "up", netns=switch)
        return cls(test, switch)

    def add(self, name: str, host: int) -> str:
        """A namespace ``name`` with eth0 on the bridge, address 198.18.0.HOST/24."""
        ns = netns.add_netns(self.test)
        port = netns.unique("s")
        netns.ip("link", "add", port, "netns", self.switch, "type", "veth",
                 "peer", "name", "eth0", "netns", ns)
        netns.ip("link", "set", port, "master", "br0", netns=self.switch)
        netns.ip("link", "set", port, "up", netns=self.switch)
        netns.ip("link", "set", "eth0", "up", netns=ns)
        address = f"{SUBNET}.{host}"
        netns.add_address("eth0", f"{address}/24", netns=ns)
        self.hosts[name] = (ns, address)
        return ns

    def ns(self, name: str) -> str:
        return self.hosts[name][0]

    def address(self, name: str) -> str:
        return self.hosts[name][1]

    def addresses_on(self, name: str) -> list[str]:
        out = netns.ip("-4", "-o", "addr", "show", "dev", "eth0", netns=self.ns(name))
        return re.findall(r"inet (\S+)/", out)

    def has_vip(self, name: str, vip: str = VIP) -> bool:
        return vip in self.addresses_on(name)

    def popen(self, name: str, argv, log_path: str, **kw) -> subprocess.Popen:
        """Run ``argv`` in ``name``'s namespace; killed (SIGKILL) at the end of the test."""
        log = open(log_path, "ab")
        self.test.addCleanup(log.close)
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(name), *argv], cwd=ROOT,
                                env=dict(os.environ, PYTHONPATH=ROOT), stdout=log,
                                stderr=subprocess.STDOUT, **kw)

        def kill():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.test.addCleanup(kill)
        return proc

    def lbframe(self, name: str, config: str, log_path: str) -> subprocess.Popen:
        return self.popen(name, TWISTD + ["-n", "--pidfile=", "lbframe", "--config", config],
                          log_path)

    def member(self, name: str, folder: str, text: str, port: int = 8081) -> subprocess.Popen:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "index.html"), "w") as f:
            f.write(text)
        return self.popen(name, [sys.executable, "-m", "http.server", str(port), "--bind",
                                 self.address(name), "--directory", folder],
                          os.path.join(folder, "..", f"{name}.log"))

    def capture(self, name: str, path: str) -> subprocess.Popen:
        """tcpdump of VRRP and ARP on ``name``'s eth0, epoch timestamps, line-buffered."""
        out = open(path, "ab")
        self.test.addCleanup(out.close)
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(name), "tcpdump", "-i", "eth0",
                                 "-n", "-tt", "-l", "-vv", "--immediate-mode",
                                 "vrrp or arp"],
                                stdout=out, stderr=subprocess.DEVNULL)

        def stop():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.test.addCleanup(stop)
        return proc

    def capture_pcap(self, name: str, path: str) -> subprocess.Popen:
        """The same, written raw (``tcpdump -w``, flushed per packet) for byte checks."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(name), "tcpdump", "-i", "eth0",
                                 "-n", "-U", "-w", path, "vrrp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def stop():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.test.addCleanup(stop)
        return proc

    def get(self, client: str, url: str, timeout: float = 2.0, token: str | None = None
            ) -> str | None:
        """One HTTP GET from ``client``'s namespace; the body, or None on failure."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        code = ("import sys, urllib.request\n"
                f"q = urllib.request.Request({url!r}, headers={headers!r})\n"
                f"r = urllib.request.urlopen(q, timeout={timeout})\n"
                "sys.stdout.write(r.read().decode())\n")
        done = netns.ns_exec(self.ns(client), sys.executable, "-c", code, timeout=timeout + 10)
        return done.stdout if done.returncode == 0 else None


def wait_for(predicate, timeout: float, what: str, step: float = 0.02):
    """Poll ``predicate`` until true (its value) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


ADVERT = re.compile(r"^(\d+\.\d+) IP .*?\) *$")


@attrs.frozen
class Seen:
    time: float
    kind: str  # "advert" or "arp"
    source: str
    vrid: int | None = None
    priority: int | None = None
    version: int | None = None
    ttl: int | None = None
    interval_cs: int | None = None
    text: str = ""


def parse_capture(path: str) -> list[Seen]:
    """Adverts and ARP from ``tcpdump -tt -vv`` output (a VRRP line is split in two)."""
    lines = open(path, errors="replace").read().splitlines()
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\d+\.\d+) IP \(tos \S+, ttl (\d+),.*proto VRRP", line)
        if m and i + 1 < len(lines):
            nxt = lines[i + 1]
            v = re.search(r"(\S+) > 224\.0\.0\.18: VRRPv(\d), Advertisement, vrid (\d+), "
                          r"prio (\d+), (?:authtype \S+, )?intvl (\d+)(cs|s)", nxt)
            if v:
                interval = int(v.group(5)) * (100 if v.group(6) == "s" else 1)
                out.append(Seen(float(m.group(1)), "advert", v.group(1), int(v.group(3)),
                                int(v.group(4)), int(v.group(2)), int(m.group(2)), interval, nxt))
            i += 2
            continue
        a = re.match(r"^(\d+\.\d+) ARP, .*Request who-has ([\d.]+) tell ([\d.]+)", line)
        if a:
            out.append(Seen(float(a.group(1)), "arp", a.group(3), text=line))
        elif re.match(r"^(\d+\.\d+) ARP, .*Reply ([\d.]+) is-at", line):
            r = re.match(r"^(\d+\.\d+) ARP, .*Reply ([\d.]+) is-at", line)
            out.append(Seen(float(r.group(1)), "arp-reply", r.group(2), text=line))
        i += 1
    return out


def read_pcap(path: str) -> list[tuple[float, bytes]]:
    """(time, IPv4 datagram) of each Ethernet frame in a classic pcap file."""
    data = open(path, "rb").read()
    if len(data) < 24:
        return []
    endian = "<" if data[:4] == bytes.fromhex("d4c3b2a1") else ">"
    out, off = [], 24
    while off + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        if len(frame) < incl:
            break
        out.append((sec + usec / 1e6, frame[14:]))
        off += 16 + incl
    return out


def kill9(proc: subprocess.Popen) -> float:
    """SIGKILL ``proc`` (``ip netns exec`` execs the program, so the pid is the program's)."""
    t = time.time()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    return t
