#!/usr/bin/env python3
"""The firewall sandwich in six network namespaces, with two lbframe nodes.

    sudo python3 examples/sandwich/sandwich.py          # both modes, a failure, counters
    sudo python3 examples/sandwich/sandwich.py --keep   # leave it running (then --clean)

Builds (all on 198.18.0.0/15, no link to the host, no default route)::

    client ── lb-a ──┬── fw-a ──┬── lb-b ── server
                     └── fw-b ──┘

runs ``twistd lbframe --config lb-a.ini`` in lb-a and ``… lb-b.ini`` in
lb-b, a small TCP server in server (it answers each connection with the
address it sees, so address translation would show), and counting
firewalls (nftables sets of the flows seen in each direction). Then, for
HASH and for LastHop, 40 connections from 30 client addresses, the flows
each firewall saw in each direction, a firewall killed (its links down) and
restored. Everything is removed at the end, also on failure or Ctrl-C.

The test tests/system/test_sandwich.py drives the same :class:`Sandwich`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

CLIENT_NET, SERVER = "198.18.1", "198.18.9.10"
SERVER_PORT = 8080
CLIENTS = [f"{CLIENT_NET}.{100 + i}" for i in range(30)]
FIREWALLS = ("fw-a", "fw-b")
#: lbframe member names are the firewall names: the hash agrees on names
LINKS = {
    # namespace: [(interface, address/prefix, peer namespace, peer interface), ...]
    "client": [("lb", "198.18.1.10/24", "lb-a", "cli")],
    "lb-a": [("cli", "198.18.1.1/24", None, None),
             ("fw-a", "198.18.2.1/30", "fw-a", "out"),
             ("fw-b", "198.18.2.5/30", "fw-b", "out")],
    "fw-a": [("out", "198.18.2.2/30", None, None), ("in", "198.18.3.2/30", "lb-b", "fw-a")],
    "fw-b": [("out", "198.18.2.6/30", None, None), ("in", "198.18.3.6/30", "lb-b", "fw-b")],
    "lb-b": [("fw-a", "198.18.3.1/30", None, None), ("fw-b", "198.18.3.5/30", None, None),
             ("srv", "198.18.9.1/24", "server", "lb")],
    "server": [("lb", "198.18.9.10/24", None, None)],
}
ROUTES = {
    "client": [("198.18.9.0/24", "198.18.1.1")],
    # The main tables route through fw-a only: whatever goes through fw-b
    # went there because lbframe steered it.
    "lb-a": [("198.18.9.0/24", "198.18.2.2")],
    "fw-a": [("198.18.1.0/24", "198.18.2.1"), ("198.18.9.0/24", "198.18.3.1")],
    "fw-b": [("198.18.1.0/24", "198.18.2.5"), ("198.18.9.0/24", "198.18.3.5")],
    "lb-b": [("198.18.1.0/24", "198.18.3.2")],
    "server": [("198.18.1.0/24", "198.18.9.1")],
}
MODES = ("hash", "lasthop")

FIREWALL_RULES = """
table inet fw {
    set there { type ipv4_addr . ipv4_addr . inet_service . inet_service; flags dynamic; size 65536; }
    set back { type ipv4_addr . ipv4_addr . inet_service . inet_service; flags dynamic; size 65536; }
    chain forward {
        type filter hook forward priority 0; policy accept;
        iifname "out" meta l4proto tcp add @there { ip saddr . ip daddr . tcp sport . tcp dport }
        iifname "in" meta l4proto tcp add @back { ip daddr . ip saddr . tcp dport . tcp sport }
    }
}
"""

SERVER_CODE = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(256)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.settimeout(5)
    try:
        c.sendall(f"{peer[0]} {peer[1]}\\n".encode())
    except OSError:
        pass
    c.close()
"""

CLIENT_CODE = """
import json, socket, sys, time
server, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
out = []
for src in sys.argv[4:]:
    s = socket.socket(); s.settimeout(timeout)
    s.bind((src, 0)); sport = s.getsockname()[1]
    try:
        s.connect((server, port))
        data = b""
        while not data.endswith(b"\\n") and len(data) < 200:
            chunk = s.recv(200)
            if not chunk: break
            data += chunk
        seen = data.decode().split()
        out.append({"src": src, "sport": sport, "seen": seen, "ok": len(seen) == 2})
    except OSError as e:
        out.append({"src": src, "sport": sport, "seen": [], "ok": False, "error": str(e)})
    finally:
        s.close()
print(json.dumps(out))
"""


def run(argv, check=True, timeout=30, **kw):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


class Sandwich:
    """The topology; namespace names get ``prefix`` (unique per run)."""

    def __init__(self, prefix="sw-", workdir=None, python=sys.executable, interval=0.5,
                 fall=2, rise=2):
        self.prefix = prefix
        self.workdir = workdir or tempfile.mkdtemp(prefix="lbframe-sandwich-")
        self.python = python
        self.interval, self.fall, self.rise = interval, fall, rise
        self.procs: dict[str, subprocess.Popen] = {}
        self.built = False

    def ns(self, name: str) -> str:
        return self.prefix + name

    def ip(self, name: str, *args: str, check=True) -> str:
        return run(["ip", "-n", self.ns(name), *args], check=check)

    def exec(self, name: str, *argv: str, check=True, timeout=30) -> str:
        return run(["ip", "netns", "exec", self.ns(name), *argv], check=check, timeout=timeout)

    # -- building --------------------------------------------------------------

    def build(self) -> None:
        self.built = True
        for name in LINKS:
            run(["ip", "netns", "add", self.ns(name)])
            self.ip(name, "link", "set", "lo", "up")
        for name, links in LINKS.items():
            for dev, _, peer_ns, peer_dev in links:
                if peer_ns is not None:
                    self.ip(name, "link", "add", dev, "type", "veth", "peer", "name", peer_dev,
                            "netns", self.ns(peer_ns))
        for name, links in LINKS.items():
            for dev, cidr, _, _ in links:
                self.ip(name, "address", "add", cidr, "dev", dev)
                self.ip(name, "link", "set", dev, "up")
        for src in CLIENTS:
            self.ip("client", "address", "add", f"{src}/24", "dev", "lb")
        for name, routes in ROUTES.items():
            for net, via in routes:
                self.ip(name, "route", "add", net, "via", via)
        for name in ("lb-a", "lb-b", *FIREWALLS):
            self.exec(name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for name in ("lb-a", "lb-b"):
            # Loose reverse-path filtering: flows come back through either firewall.
            self.exec(name, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2")
            self.exec(name, "sysctl", "-qw", "net.ipv4.conf.default.rp_filter=2")
            for dev, _, _, _ in LINKS[name]:
                self.exec(name, "sysctl", "-qw", f"net.ipv4.conf.{dev}.rp_filter=2")
        for fw in FIREWALLS:
            run(["ip", "netns", "exec", self.ns(fw), "nft", "-f", "-"], input=FIREWALL_RULES)
        self._start("server", [self.python, "-c", SERVER_CODE, SERVER, str(SERVER_PORT)],
                    ready=b"ready")

    def _start(self, key: str, argv, ready: bytes | None = None, netns: str | None = None,
               log: str | None = None):
        netns = netns or key
        out = open(log, "wb") if log else subprocess.PIPE
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(netns), *argv], stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT,
                                env=dict(os.environ, PYTHONPATH=ROOT), start_new_session=True)
        self.procs[key] = proc
        if ready is not None:
            line = proc.stdout.readline()
            if ready not in line:
                raise RuntimeError(f"{key} did not start: {line!r}")
        return proc

    # -- lbframe ---------------------------------------------------------------

    def site(self, node: str, mode: str) -> str:
        """The node's site.ini for ``mode``, with this run's monitor timing."""
        with open(os.path.join(HERE, mode, f"{node}.ini")) as f:
            text = f.read()
        text = (text.replace("interval = 0.5s", f"interval = {self.interval}s")
                .replace("fall = 2", f"fall = {self.fall}").replace("rise = 2", f"rise = {self.rise}"))
        path = os.path.join(self.workdir, f"{mode}-{node}.ini")
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_lbframe(self, mode: str) -> None:
        for node in ("lb-a", "lb-b"):
            argv = [self.python, "-c", "import sys; sys.argv[0] = 'twistd'; "
                    "from twisted.scripts.twistd import run; run()",
                    "-n", "--pidfile=", "lbframe", "--config", self.site(node, mode)]
            self._start(node, argv, log=os.path.join(self.workdir, f"{mode}-{node}.log"))
        self.wait_live({"lb-a": set(FIREWALLS), "lb-b": set(FIREWALLS)})

    def stop_lbframe(self) -> None:
        for node in ("lb-a", "lb-b"):
            proc = self.procs.pop(node, None)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def log(self, node: str, mode: str) -> str:
        try:
            with open(os.path.join(self.workdir, f"{mode}-{node}.log")) as f:
                return f.read()
        except OSError:
            return ""

    def table(self, node: str) -> list | None:
        """lbframe's nftables table in ``node`` (its JSON items), or None."""
        done = subprocess.run(["ip", "netns", "exec", self.ns(node), "nft", "-j", "list",
                               "table", "inet", "lbframe"], capture_output=True, text=True,
                              timeout=30)
        if done.returncode != 0:
            return None
        return json.loads(done.stdout)["nftables"]

    def live(self, node: str) -> set[str] | None:
        """The firewalls ``node``'s steering rules send to (by routing table)."""
        items = self.table(node)
        if items is None:
            return None
        marks = set()
        for item in items:
            rule = item.get("rule")
            if not rule:
                continue
            for expr in rule["expr"]:
                if "drop" in expr:
                    return set()
                m = expr.get("match")
                if m and m["left"] == {"meta": {"key": "mark"}} and isinstance(m["right"], int):
                    marks.add(m["right"])
        names = set()
        routes = self.ip(node, "rule", "show")
        for mark in marks:
            for line in routes.splitlines():
                if f"fwmark {mark:#x} lookup" in line:
                    table = line.split()[-1]
                    shown = self.ip(node, "route", "show", "table", table)
                    if " dev " not in shown:
                        # Read between lbframe's steps (a rule whose table is
                        # being filled or emptied): not a settled state yet.
                        return None
                    names.add(shown.split(" dev ")[1].split()[0])
        return names

    def wait_live(self, want: dict, deadline: float = 20.0) -> float:
        """Wait until each node steers to exactly ``want[node]``; seconds taken."""
        start = time.monotonic()
        while True:
            got = {node: self.live(node) for node in want}
            if got == want:
                return time.monotonic() - start
            for node in want:
                proc = self.procs.get(node)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"lbframe in {node} exited: " +
                                       "".join(self.log(node, m) for m in MODES)[-3000:])
            if time.monotonic() - start > deadline:
                raise RuntimeError(f"nodes steer to {got}, not {want} after {deadline}s")
            time.sleep(0.1)

    def status(self, node: str) -> dict:
        """lbframe's /api/status in ``node`` (its admin is on the node's loopback)."""
        code = ("import json, urllib.request; print(urllib.request.urlopen("
                "'http://127.0.0.1:8404/api/status', timeout=5).read().decode())")
        return json.loads(self.exec(node, self.python, "-c", code))

    def next_hops(self, node: str, wait_flows: int = 0, deadline: float = 10.0) -> dict:
        """The per-next-hop counters lbframe shows for ``node``'s virtual
        server; waits until they count ``wait_flows`` flows (they are read
        from the kernel every 2 s)."""
        start = time.monotonic()
        while True:
            hops = self.status(node)["virtuals"]["steer"]["next_hops"]
            if sum(h["flows"] for h in hops.values()) >= wait_flows \
                    or time.monotonic() - start > deadline:
                return hops
            time.sleep(0.25)

    # -- traffic ----------------------------------------------------------------

    def flows(self, sources, timeout=2.0) -> list[dict]:
        out = self.exec("client", self.python, "-c", CLIENT_CODE, SERVER, str(SERVER_PORT),
                        str(timeout), *sources, timeout=timeout * len(sources) + 30)
        return json.loads(out)

    def reset_counters(self) -> None:
        for fw in FIREWALLS:
            for s in ("there", "back"):
                self.exec(fw, "nft", "flush", "set", "inet", "fw", s)

    def seen(self) -> dict[str, dict[str, set]]:
        """firewall → {"there", "back"} → {(client, server, cport, sport)}."""
        out = {}
        for fw in FIREWALLS:
            out[fw] = {}
            for s in ("there", "back"):
                items = json.loads(self.exec(fw, "nft", "-j", "list", "set", "inet", "fw", s))
                elems = set()
                for item in items["nftables"]:
                    for e in (item.get("set") or {}).get("elem", []):
                        e = e.get("elem", {}).get("val", e) if isinstance(e, dict) else e
                        elems.add(tuple(e["concat"]))
                out[fw][s] = elems
        return out

    def take_down(self, fw: str) -> None:
        for dev in ("out", "in"):
            self.ip(fw, "link", "set", dev, "down")

    def bring_up(self, fw: str) -> None:
        for dev in ("out", "in"):
            self.ip(fw, "link", "set", dev, "up")
        self.ip(fw, "route", "replace", *ROUTES[fw][0][:1], "via", ROUTES[fw][0][1])
        self.ip(fw, "route", "replace", *ROUTES[fw][1][:1], "via", ROUTES[fw][1][1])

    # -- clean-up -----------------------------------------------------------------

    def clean(self) -> None:
        self.stop_lbframe()
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        for name in LINKS:
            subprocess.run(["ip", "netns", "delete", self.ns(name)], capture_output=True)


def check_flows(flows: list[dict], seen: dict) -> dict:
    """Per flow: which firewalls saw it there and back. Returns a summary:
    ``symmetric``, ``asymmetric``, ``unseen`` flow lists, ``by_firewall``
    counts and ``translated`` (flows whose server saw another address)."""
    summary = {"symmetric": [], "asymmetric": [], "unseen": [], "failed": [], "translated": [],
               "by_firewall": {fw: 0 for fw in seen}}
    for flow in flows:
        if not flow["ok"]:
            summary["failed"].append(flow)
            continue
        if flow["seen"][0] != flow["src"]:
            summary["translated"].append(flow)
        key = (flow["src"], SERVER, flow["sport"], SERVER_PORT)
        there = {fw for fw in seen if key in seen[fw]["there"]}
        back = {fw for fw in seen if key in seen[fw]["back"]}
        flow["there"], flow["back"] = sorted(there), sorted(back)
        if not there or not back:
            summary["unseen"].append(flow)
        elif len(there) == 1 and there == back:
            summary["symmetric"].append(flow)
            summary["by_firewall"][next(iter(there))] += 1
        else:
            summary["asymmetric"].append(flow)
    return summary


def sources(n=40):
    """``n`` flows from the 30 client addresses (some twice)."""
    return [CLIENTS[i % len(CLIENTS)] for i in range(n)]


def show(title: str, summary: dict) -> None:
    print(f"\n== {title}")
    print(f"   symmetric {len(summary['symmetric'])}, asymmetric {len(summary['asymmetric'])}, "
          f"failed {len(summary['failed'])}, translated {len(summary['translated'])}")
    for fw, n in summary["by_firewall"].items():
        print(f"   {fw}: {n} flows, both directions")


def demo(sw: Sandwich) -> None:
    for mode in MODES:
        print(f"\n##### mode {mode}: starting lbframe in lb-a and lb-b")
        sw.start_lbframe(mode)
        sw.reset_counters()
        flows = sw.flows(sources())
        show(f"{mode}: 40 flows from 30 client addresses", check_flows(flows, sw.seen()))
        for node in ("lb-a", "lb-b"):
            hops = sw.next_hops(node, wait_flows=40 if node == "lb-a" else 0)
            print(f"   lbframe in {node} (/api/status): " + ", ".join(
                f"{name} {h['flows']} flows {h['packets']} packets" for name, h in hops.items()))
        print(f"\n   taking {FIREWALLS[0]} down (its links)")
        sw.take_down(FIREWALLS[0])
        took = sw.wait_live({"lb-a": {FIREWALLS[1]}, "lb-b": {FIREWALLS[1]}})
        print(f"   both nodes steer around it after {took:.2f}s "
              f"(monitor interval {sw.interval}s × fall {sw.fall})")
        sw.reset_counters()
        show(f"{mode}: with {FIREWALLS[0]} down", check_flows(sw.flows(sources(20)), sw.seen()))
        sw.bring_up(FIREWALLS[0])
        took = sw.wait_live({"lb-a": set(FIREWALLS), "lb-b": set(FIREWALLS)})
        print(f"\n   {FIREWALLS[0]} back after {took:.2f}s")
        sw.reset_counters()
        show(f"{mode}: restored", check_flows(sw.flows(sources()), sw.seen()))
        sw.stop_lbframe()
        print(f"   lbframe stopped; its table is gone: "
              f"{sw.table('lb-a') is None and sw.table('lb-b') is None}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="build, start HASH mode, leave it")
    parser.add_argument("--clean", action="store_true", help="remove what --keep left")
    parser.add_argument("--prefix", default="sw-", help="namespace name prefix")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (network namespaces)", file=sys.stderr)
        return 1
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing (apt-get install iproute2 nftables)", file=sys.stderr)
            return 1
    sw = Sandwich(args.prefix)
    if args.clean:
        for name in LINKS:
            subprocess.run(["ip", "netns", "delete", sw.ns(name)], capture_output=True)
        return 0
    try:
        sw.build()
        if args.keep:
            sw.start_lbframe("hash")
            print(f"running: namespaces {', '.join(sw.ns(n) for n in LINKS)}; logs in "
                  f"{sw.workdir}. Try: ip netns exec {sw.ns('client')} curl ... ; "
                  "stop with Ctrl-C")
            signal.pause()
        else:
            demo(sw)
    except KeyboardInterrupt:
        pass
    finally:
        sw.clean()
        shutil.rmtree(sw.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
