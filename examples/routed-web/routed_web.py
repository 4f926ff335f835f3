#!/usr/bin/env python3
"""A routed web site in four network namespaces: lbframe's ``protocol = nat``.

    sudo python3 examples/routed-web/routed_web.py          # the NAT case
    sudo python3 examples/routed-web/routed_web.py --flat   # the flat routed case

Builds (198.18.0.0/15, no link to the host)::

    client 198.18.20.10 (+29 more) ── lb (VIP 198.18.20.1) ──┬── web1 198.18.30.11
                                        198.18.30.1          └── web2 198.18.30.12

The NAT case: the VIP is outside, on the clients' side (``site.ini``); the
web servers route 198.18.20.0/24 through lb; no default route anywhere.
The flat routed case (``--flat``, ``site-flat.ini``): the VIP 198.18.30.100
is on the web servers' own subnet, the clients reach it through lb (their
route to 198.18.30.0/24), and the web servers' **default gateway is lb**
(lb itself has no default route and no link to the host, so nothing leaves
the four namespaces); it also shows the bounce-back case failing (web1
calling the VIP: the answer comes straight from the member).

starts ``twistd lbframe --config site.ini`` in lb and a small web server in
web1 and web2 that answers with the client address it sees; then sends 60
connections from 30 client addresses to the VIP, shows who served them and
what address they saw (the client's own: no source NAT), stops web1 and
shows the survivor take everything, restarts it, and removes everything.
tests/system/test_sandwich_nat.py drives the same :class:`RoutedWeb`.
"""

from __future__ import annotations

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
VIP, VIP_PORT = "198.18.20.1", 80
#: --flat: the VIP on the web servers' subnet
FLAT_VIP = "198.18.30.100"
CLIENTS = [f"198.18.20.{10 + i}" for i in range(30)]
WEBS = {"web1": "198.18.30.11", "web2": "198.18.30.12"}
WEB_PORT = 8080

SERVER_CODE = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(256)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    try:
        c.recv(1024)
        body = f"{sys.argv[3]} {peer[0]}\\n"
        c.sendall(f"HTTP/1.0 200 OK\\r\\nContent-Length: {len(body)}\\r\\n\\r\\n{body}".encode())
    except OSError:
        pass
    c.close()
"""

CLIENT_CODE = """
import json, socket, sys
vip, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
out = []
for src in sys.argv[4:]:
    s = socket.socket(); s.settimeout(timeout); s.bind((src, 0))
    try:
        s.connect((vip, port)); s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        data = b""
        while len(data) < 4096:
            chunk = s.recv(4096)
            if not chunk: break
            data += chunk
        name, seen = data.split(b"\\r\\n\\r\\n", 1)[1].decode().split()
        out.append({"src": src, "server": name, "seen": seen, "ok": True,
                    "from": s.getpeername()[0]})
    except (OSError, ValueError, IndexError) as e:
        out.append({"src": src, "ok": False, "error": str(e)})
    finally:
        s.close()
print(json.dumps(out))
"""


def run(argv, check=True, timeout=30, **kw):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


class RoutedWeb:
    def __init__(self, prefix="rw-", workdir=None, python=sys.executable, flat=False):
        self.prefix = prefix
        self.flat = flat
        self.vip = FLAT_VIP if flat else VIP
        self.workdir = workdir or tempfile.mkdtemp(prefix="lbframe-routed-web-")
        self.python = python
        self.procs: dict[str, subprocess.Popen] = {}

    def ns(self, name):
        return self.prefix + name

    def ip(self, name, *args, check=True):
        return run(["ip", "-n", self.ns(name), *args], check=check)

    def exec(self, name, *argv, check=True, timeout=30):
        return run(["ip", "netns", "exec", self.ns(name), *argv], check=check, timeout=timeout)

    def build(self, members=True):
        """The namespaces and links, and (``members``) the small web servers."""
        self.build_network()
        if members:
            for web in WEBS:
                self.start_web(web)

    def build_network(self):
        """Namespaces, links, addresses and routes; forwarding on in lb."""
        for name in ("client", "lb", *WEBS):
            run(["ip", "netns", "add", self.ns(name)])
            self.ip(name, "link", "set", "lo", "up")
        self.ip("lb", "link", "add", "out", "type", "veth", "peer", "name", "lb",
                "netns", self.ns("client"))
        self.ip("lb", "link", "add", "in", "type", "bridge")
        for web in WEBS:
            self.ip("lb", "link", "add", f"to-{web}", "type", "veth", "peer", "name", "lb",
                    "netns", self.ns(web))
            self.ip("lb", "link", "set", f"to-{web}", "master", "in", "up")
        self.ip("lb", "address", "add", f"{VIP}/24", "dev", "out")
        self.ip("lb", "address", "add", "198.18.30.1/24", "dev", "in")
        if self.flat:
            self.ip("lb", "address", "add", f"{FLAT_VIP}/24", "dev", "in")
        for dev in ("out", "in"):
            self.ip("lb", "link", "set", dev, "up")
        self.ip("client", "address", "add", f"{CLIENTS[0]}/24", "dev", "lb")
        for src in CLIENTS[1:]:
            self.ip("client", "address", "add", f"{src}/24", "dev", "lb")
        self.ip("client", "link", "set", "lb", "up")
        if self.flat:
            # the VIP is on the web servers' subnet, behind lb
            self.ip("client", "route", "add", "198.18.30.0/24", "via", VIP)
        for web, address in WEBS.items():
            self.ip(web, "address", "add", f"{address}/24", "dev", "lb")
            self.ip(web, "link", "set", "lb", "up")
            if self.flat:
                # The flat routed case: lbframe is the web servers' default
                # gateway (lb has no default route: nothing goes further).
                self.ip(web, "route", "add", "default", "via", "198.18.30.1")
            else:
                # The way back to the clients is through lbframe (in
                # production: the default gateway).
                self.ip(web, "route", "add", "198.18.20.0/24", "via", "198.18.30.1")
        self.exec("lb", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # The bridge stands for the web servers' switch: with br_netfilter
        # loaded, frames it switches between two web servers would go
        # through lb's conntrack (and be un-NATed), which no switch does.
        for family in ("iptables", "ip6tables"):
            self.exec("lb", "sysctl", "-qw", f"net.bridge.bridge-nf-call-{family}=0",
                      check=False)

    def start_web(self, web):
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(web), self.python, "-c",
                                 SERVER_CODE, WEBS[web], str(WEB_PORT), web],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[web] = proc
        if b"ready" not in proc.stdout.readline():
            raise RuntimeError(f"{web} did not start")

    def stop(self, key):
        proc = self.procs.pop(key, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def start_lbframe(self, config=None):
        config = config or os.path.join(HERE, "site-flat.ini" if self.flat else "site.ini")
        log = open(os.path.join(self.workdir, "lb.log"), "wb")
        argv = [self.python, "-c", "import sys; sys.argv[0] = 'twistd'; "
                "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "lbframe", "--config", config]
        self.procs["lb"] = subprocess.Popen(["ip", "netns", "exec", self.ns("lb"), *argv],
                                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                            env=dict(os.environ, PYTHONPATH=ROOT),
                                            start_new_session=True)
        log.close()
        self.wait_members(set(WEBS))

    def log(self):
        try:
            with open(os.path.join(self.workdir, "lb.log")) as f:
                return f.read()
        except OSError:
            return ""

    def status(self):
        code = ("import urllib.request; print(urllib.request.urlopen("
                "'http://127.0.0.1:8404/api/status', timeout=5).read().decode())")
        return json.loads(self.exec("lb", self.python, "-c", code))

    def table(self):
        done = subprocess.run(["ip", "netns", "exec", self.ns("lb"), "nft", "-j", "list",
                               "table", "inet", "lbframe"], capture_output=True, text=True)
        return json.loads(done.stdout)["nftables"] if done.returncode == 0 else None

    def dnat_targets(self) -> set[str] | None:
        """The member addresses the kernel's dnat map holds now."""
        items = self.table()
        if items is None:
            return None
        found = set()
        for item in items:
            rule = item.get("rule")
            if rule and rule["chain"] == "nat_pre":
                for expr in rule["expr"]:
                    if "dnat" in expr:
                        for _, target in expr["dnat"]["addr"]["map"]["data"]["set"]:
                            found.add(target["concat"][0])
        return found

    def wait_members(self, names, deadline=20.0):
        want = {WEBS[n] for n in names}
        start = time.monotonic()
        while self.dnat_targets() != want:
            proc = self.procs.get("lb")
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("lbframe exited: " + self.log()[-3000:])
            if time.monotonic() - start > deadline:
                raise RuntimeError(f"the dnat map holds {self.dnat_targets()}, not {want}")
            time.sleep(0.1)
        return time.monotonic() - start

    def connections(self, sources, timeout=2.0, netns="client"):
        return json.loads(self.exec(netns, self.python, "-c", CLIENT_CODE, self.vip,
                                    str(VIP_PORT), str(timeout), *sources,
                                    timeout=timeout * len(sources) + 30))

    def bounce_back(self, web="web1", timeout=2.0):
        """``web`` calls the VIP (the flat case's bounce-back): the result."""
        return self.connections([WEBS[web]], timeout=timeout, netns=web)[0]

    def clean(self):
        for key in list(self.procs):
            self.stop(key)
        for name in ("client", "lb", *WEBS):
            subprocess.run(["ip", "netns", "delete", self.ns(name)], capture_output=True)


def summary(results):
    by = {}
    for r in results:
        by[r.get("server", "failed")] = by.get(r.get("server", "failed"), 0) + 1
    real = sum(1 for r in results if r["ok"] and r["seen"] == r["src"])
    return by, real


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["--flat"]):
        print("usage: routed_web.py [--flat]", file=sys.stderr)
        return 2
    if os.geteuid() != 0 or shutil.which("nft") is None:
        print("run as root, with nftables installed", file=sys.stderr)
        return 1
    rw = RoutedWeb(flat=argv == ["--flat"])
    try:
        rw.build()
        rw.start_lbframe()
        if rw.flat:
            print(f"flat routed: VIP {rw.vip} on the web servers' subnet; their routes: "
                  + "; ".join(f"{w}: {rw.ip(w, 'route', 'show').strip().splitlines()[0]}"
                              for w in WEBS))
        sources = [CLIENTS[i % 30] for i in range(60)]
        results = rw.connections(sources)
        by, real = summary(results)
        replies = sorted({r["from"] for r in results if r["ok"]})
        print(f"60 connections to {rw.vip}:{VIP_PORT}: served by {by}; "
              f"{real} of 60 servers saw the client's own address; replies from {replies}")
        if rw.flat:
            r = rw.bounce_back("web1")
            print("bounce-back, web1 calling the VIP: "
                  + (f"answered by {r['server']} from {r['from']}" if r["ok"]
                     else f"fails ({r['error']}): the chosen member answers web1 straight "
                          "over the shared subnet, from its own address, and web1 resets it"))
        time.sleep(2.2)  # lbframe reads the kernel's counters every 2 s
        print("lbframe /api/status, per member:",
              json.dumps(rw.status()["virtuals"]["web"]["next_hops"]))
        rw.stop("web1")
        took = rw.wait_members({"web2"})
        print(f"web1 stopped: out of the kernel's map after {took:.2f}s")
        by, real = summary(rw.connections(sources[:20]))
        print(f"20 connections: served by {by}")
        rw.start_web("web1")
        took = rw.wait_members(set(WEBS))
        print(f"web1 restarted: back after {took:.2f}s")
        rw.stop("lb")
        print(f"lbframe stopped; its table is gone: {rw.table() is None}")
    finally:
        rw.clean()
        shutil.rmtree(rw.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
