#!/usr/bin/env python3
"""Reload a 100-member site under load and count what failed.

    python bench/reload.py [--protocol tcp|http] [--members 100] [--reloads 8]

One nginx listens on ``--members + 1`` ports of 127.0.0.1 (the members);
lbframe runs under ``twistd`` with ``log_format = json``. For each of two
loads — wrk with keep-alive, and wrk with ``Connection: close`` (a new
connection per request) — the site file is rewritten and ``kill -HUP`` sent
every 2 s (alternately adding and removing a member and changing a weight).
It prints, from lbframe's own ``reload`` events, how long each reload took,
and wrk's count of requests, socket errors and non-2xx answers: the claim
is that a reload drops nothing.

Everything is on 127.0.0.1, every process is stopped at the end, every load
is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = "0123456789" * 10
TWISTD = [sys.executable, "-c", "import sys; sys.argv[0] = 'twistd'; "
                                "from twisted.scripts.twistd import run; run()"]


def free_ports(count: int) -> list[int]:
    held = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)
    ports = [s.getsockname()[1] for s in held]
    for s in held:
        s.close()
    return ports


def wait_for_port(port: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {seconds:g}s")


def nginx_conf(folder: str, ports: list[int]) -> str:
    listens = "\n".join(f"    listen 127.0.0.1:{p};" for p in ports)
    temp = " ".join(f"{k}_temp_path {folder};" for k in
                    ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""worker_processes 1; daemon off; pid {folder}/nginx.pid; error_log {folder}/error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; {temp}
  server {{
{listens}
    location / {{ return 200 "{BODY}"; }}
  }}
}}
"""


def site(protocol: str, vport: int, ports: list[int], members: int, first_weight: int) -> str:
    lines = "\n".join(f"member m{i:03d} = 127.0.0.1:{ports[i]}"
                      + (f" weight={first_weight}" if i == 0 else "") for i in range(members))
    return f"""[lbframe]
log_format = json
stop_grace = 5s

[virtual web]
listen = tcp:{vport}:interface=127.0.0.1
protocol = {protocol}
pool = web

[pool web]
scheduler = weighted
monitor = alive
{lines}

[monitor alive]
type = tcp
interval = 2s
timeout = 1s
"""


def wrk_summary(out: str) -> str:
    requests = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return (f"{requests.group(1) if requests else '?'} requests, "
            f"socket errors: {errors.group(1) if errors else 'none'}, "
            f"non-2xx/3xx: {non2xx.group(1) if non2xx else 0}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", choices=("tcp", "http"), default="http")
    p.add_argument("--members", type=int, default=100)
    p.add_argument("--reloads", type=int, default=8, help="reloads per load (one every 2 s)")
    p.add_argument("--clients", type=int, default=32)
    args = p.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (Debian: apt-get install nginx-light wrk)")
    folder = tempfile.mkdtemp(prefix="lbframe-reload-")
    *ports, vport = free_ports(args.members + 2)
    with open(os.path.join(folder, "nginx.conf"), "w") as f:
        f.write(nginx_conf(folder, ports))
    config = os.path.join(folder, "site.ini")
    with open(config, "w") as f:
        f.write(site(args.protocol, vport, ports, args.members, 1))
    log_path = os.path.join(folder, "lbframe.log")
    procs = []
    try:
        procs.append(subprocess.Popen(["nginx", "-c", os.path.join(folder, "nginx.conf"),
                                       "-p", folder], stderr=subprocess.DEVNULL))
        with open(log_path, "wb") as log:
            lb = subprocess.Popen(TWISTD + ["-n", "--pidfile=", "lbframe", "--config", config],
                                  cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                                  stdout=log, stderr=subprocess.STDOUT)
        procs.append(lb)
        wait_for_port(vport)
        time.sleep(3)  # the monitors see every member up
        seconds = 2 * args.reloads + 4
        for load, extra in (("keep-alive", []), ("new connection per request",
                                                  ["-H", "Connection: close"])):
            wrk = subprocess.Popen(["wrk", "-t1", f"-c{args.clients}", f"-d{seconds}s",
                                    "--timeout", "5s", *extra, f"http://127.0.0.1:{vport}/"],
                                   stdout=subprocess.PIPE, text=True)
            time.sleep(2)
            for k in range(args.reloads):
                with open(config, "w") as f:
                    f.write(site(args.protocol, vport, ports, args.members + (k % 2 == 0),
                                 1 + k % 3))
                lb.send_signal(signal.SIGHUP)
                time.sleep(2)
            out, _ = wrk.communicate(timeout=seconds + 30)
            print(f"{args.protocol}, {load}, {args.reloads} reloads: {wrk_summary(out)}")
        with open(log_path) as f:
            events = [json.loads(line) for line in f if line.startswith("{")]
        took = [float(m.group(1)) for e in events if e.get("event") == "reload"
                for m in [re.search(r"in ([0-9.]+) ms", e.get("message", ""))] if m]
        refused = sum(1 for e in events if e.get("event") == "reload_refused")
        if took:
            print(f"reloads: {len(took)} applied, {refused} refused; "
                  f"{min(took):.0f}–{max(took):.0f} ms, median {statistics.median(took):.0f} ms")
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM if proc is not procs[0] else signal.SIGQUIT)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
