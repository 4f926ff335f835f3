"""How many member checks one lbframe process runs at a 1 s interval, and at what CPU.

    python bench/monitors.py [--sizes 250,500,1000,2000] [--types tcp,http] [--seconds 10]

The members are served by a separate process (nginx from Debian when it is
installed, else a Twisted web server, on a few 127.0.0.1 ports), so the CPU measured is lbframe's alone: the monitor runner,
the checks' connects and dialogues, and rise/fall bookkeeping. Prints a
markdown table: checks per second, CPU % of one core, checks that failed.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BACKEND = textwrap.dedent("""
    import sys
    from twisted.internet import reactor
    from twisted.web import resource, server
    class OK(resource.Resource):
        isLeaf = True
        def render(self, request):
            return b"OK"
    site = server.Site(OK())
    site.noisy = False
    for port in map(int, sys.argv[1:]):
        reactor.listenTCP(port, site, interface="127.0.0.1", backlog=1024)
    reactor.run()
""")


NGINX = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  server {{ {listen} location / {{ return 200 "OK"; }} }}
}}
"""


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="250,500,1000,2000")
    ap.add_argument("--types", default="tcp,http")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()

    from twisted.internet import defer, reactor, task

    from lbframe.config import parse_site
    from lbframe.plugins import load_plugins
    from lbframe.service import SiteService, build_runtime

    ports = free_ports(8)
    tmp = tempfile.mkdtemp(prefix="lbframe-monbench-")
    os.chmod(tmp, 0o755)
    if shutil.which("nginx"):
        # nginx keeps up with thousands of checks a second; a Python backend would not.
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX.format(tmp=tmp, listen="".join(
                f"listen 127.0.0.1:{p} backlog=1024; " for p in ports)))
        backend = subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"])
    else:
        backend = subprocess.Popen([sys.executable, "-c", BACKEND, *map(str, ports)])
    rows = []

    @defer.inlineCallbacks
    def run():
        yield task.deferLater(reactor, 1.0, lambda: None)
        plugins = load_plugins(entry_points=False)
        for mtype in args.types.split(","):
            for size in map(int, args.sizes.split(",")):
                members = "\n".join(f"member m{i} = 127.0.0.1:{ports[i % len(ports)]}"
                                    for i in range(size))
                site = parse_site(f"""
[virtual v]
listen = tcp:{free_ports(1)[0]}:interface=127.0.0.1
pool = p

[pool p]
monitor = check
{members}

[monitor check]
type = {mtype}
interval = 1s
timeout = 1s
fall = 3
rise = 2
""")
                svc = SiteService(build_runtime(site, plugins, reactor), reactor)
                svc.startService()
                yield task.deferLater(reactor, 2.0, lambda: None)  # first checks spread out
                pool = svc.runtime.pools["p"]
                checks0 = sum(c.checks_total for m in pool.members.values()
                              for c in m.checks.values())
                fails0 = sum(c.checks_failed for m in pool.members.values()
                             for c in m.checks.values())
                cpu0, t0 = cpu_seconds(), time.monotonic()
                yield task.deferLater(reactor, args.seconds, lambda: None)
                cpu, elapsed = cpu_seconds() - cpu0, time.monotonic() - t0
                checks = sum(c.checks_total for m in pool.members.values()
                             for c in m.checks.values()) - checks0
                fails = sum(c.checks_failed for m in pool.members.values()
                            for c in m.checks.values()) - fails0
                down = sum(1 for m in pool.members.values() if m.state != "up")
                yield svc.stopService()
                rows.append((mtype, size, checks / elapsed, 100 * cpu / elapsed, fails, down))
                print(f"[monitors] {mtype} × {size}: {checks / elapsed:.0f} checks/s, "
                      f"CPU {100 * cpu / elapsed:.1f}%, failed {fails}, down {down}",
                      file=sys.stderr)
        reactor.stop()

    def failed(f):
        print(f.getTraceback(), file=sys.stderr)
        reactor.stop()

    reactor.callWhenRunning(lambda: run().addErrback(failed))
    try:
        reactor.run()
    finally:
        backend.terminate()
        backend.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print("| type | members | checks/s | lbframe CPU (% of one core) | failed checks | members down |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mtype, size, rate, cpu, fails, down in rows:
        print(f"| {mtype} | {size} | {rate:.0f} | {cpu:.1f} | {fails} | {down} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
