#!/usr/bin/env python3
"""Soak lbframe: hours of life in minutes — mixed load, member deaths, reloads.

Usage: bench/soak [--ci] [--duration 30m] [--cycle 3m] [--rate 1.0]

One lbframe (``twistd -n lbframe``) serves a site of its own: an http virtual
server, an https one (TLS terminated by lbframe) on the same pool, and a tcp
virtual server on another pool; every member is a real nginx (one process
group each) with a monitor on it. ``bench/soak_load.py`` drives a paced mix of
kept-alive and one-shot requests through all three and records every failed
request with its time. The run is a series of identical cycles; in each:

    4 %  a member is killed (SIGKILL to its process group; web and tcp pools in turn)
   22 %  it is started again
   30 %  another web member reloads itself gracefully (nginx SIGHUP: its idle
         kept-alive connections to lbframe are closed)
   38 %  lbframe is reloaded (SIGHUP) with a changed site: weights changed, a
         member added to each pool and one removed
   46 %  lbframe is reloaded back to the first site
         ... then quiet until the cycle ends (long enough for the members to
         close the connections left idle by the reloads: nginx's 10 s).

The first cycle is the warm-up. lbframe's RSS (VmRSS) and open descriptors
(/proc/PID/fd) are sampled every few seconds. The criteria, each printed with
its figures; the exit status is 1 if one fails:

1. no failed request that a dead member does not explain: a failure is the
   dead member's only if its request was in flight within the *blame window*
   after the kill (the monitor's ``fall × interval + timeout`` and 2 s more),
   on a stream whose pool holds that member (and, for a connection through
   the tcp virtual server, whose member it was); a wrong answer never is;
2. RSS flat: the median over the last 10 s of the run within ±10 % of the
   median over the last 10 s of the warm-up;
3. descriptors flat, the same way, leaving out lbframe's established
   connections to members: those are kept alive between requests, so their
   number follows the load's bursts (a reload, a slow second on a shared
   machine: 17 to 41 in one minute here) and says nothing of a leak; every
   other descriptor (listeners, client connections, sockets in any other
   state, files, pipes, epoll) is what a leak would grow. The total is
   printed too.

Also checked (a failure is a failed run too): lbframe ran to the end, every
reload was applied, the load client finished.

Everything is on 127.0.0.1; the run is bounded (a hard deadline of the
duration plus 3 minutes ends it whatever happens); every process is started in
its own process group and stopped on exit, Ctrl-C, SIGTERM or failure.
See bench/README.md ("Soak").
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import bench as B  # noqa: E402  (the comparison harness: processes, ports, certificates)

REPO_ROOT = BENCH_DIR.parent
LOAD_CLIENT = BENCH_DIR / "soak_load.py"
DEFAULT_OUTPUT = BENCH_DIR / "results" / "soak-latest.md"
HOST = B.HOST
BIG_SIZE = 256 * 1024
MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")

# the monitor on every member, and what it means for the blame window
MONITOR = {"interval": 2.0, "timeout": 1.0, "fall": 2, "rise": 2}
BLAME_MARGIN = 2.0
FLAT = 0.10           # ±10 %
END_WINDOW = 10.0     # seconds at the end of the warm-up and of the run that are compared
QUIET = 0.54          # the last part of each cycle, with no event

# (name, virtual server, rate per second, workers, kept alive)
STREAMS = (
    ("http-ka", "web", 300, 12, True),
    ("http-close", "web", 50, 4, False),
    ("https-ka", "web-tls", 40, 4, True),
    ("https-close", "web-tls", 4, 1, False),
    ("tcp-ka", "raw", 60, 4, True),
    ("tcp-close", "raw", 30, 2, False),
)
STREAM_POOL = {"web": "web", "web-tls": "web", "raw": "raw"}

# Members: the web pool (http and https) and the raw pool (tcp); the last of
# each is the spare that the changed site adds while it removes another.
WEB = ("m1", "m2", "m3", "m4", "m5")
RAW = ("t1", "t2", "t3", "t4")
BASE_SITE = {"web": {"m1": 2, "m2": 1, "m3": 1, "m4": 1}, "raw": {"t1": 1, "t2": 1, "t3": 1}}
CHANGED_SITE = {"web": {"m1": 1, "m2": 3, "m3": 1, "m5": 1},   # m4 out, m5 in, weights moved
                "raw": {"t1": 1, "t2": 2, "t4": 1}}            # t3 out, t4 in


class SoakError(Exception):
    """The soak cannot run (a tool is missing, something did not start)."""


class Deadline(BaseException):
    """The hard deadline passed, or a signal asked us to stop."""


def log(msg: str) -> None:
    print(f"[soak] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# members: one nginx each


@dataclasses.dataclass
class Member:
    name: str
    pool: str
    port: int
    folder: Path
    proc: subprocess.Popen | None = None
    starts: int = 0


def nginx_conf(m: Member, www: Path) -> str:
    # keepalive_timeout 10s, shorter than lbframe's member_idle_timeout (30 s):
    # members closing idle kept-alive connections is part of what a soak must see.
    temp = "\n    ".join(f"{k}_temp_path {m.folder}/temp/{k};"
                         for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""\
# generated by bench/soak.py: member {m.name} of pool {m.pool}
worker_processes 1;
daemon off;
pid {m.folder}/nginx.pid;
error_log {m.folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type text/plain;
    sendfile on;
    keepalive_timeout 10s;
    {temp}
    server {{
        listen {HOST}:{m.port};
        root {www};
        add_header X-Member {m.name} always;
        location = /health {{ return 200 "ok\\n"; }}
        location /s/ {{ return 200 "{m.name} $request_uri\\n"; }}
        location = /big {{ }}
    }}
}}
"""


class Members:
    def __init__(self, procs: B.Processes, tmp: Path) -> None:
        self.procs = procs
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        www = tmp / "www"
        www.mkdir()
        (www / "big").write_bytes(os.urandom(BIG_SIZE))
        # nginx's worker runs as nobody when we are root: let it read the files.
        for path in (tmp, www):
            path.chmod(0o755)
        (www / "big").chmod(0o644)
        names = [(n, "web") for n in WEB] + [(n, "raw") for n in RAW]
        ports = B.free_ports(len(names))
        self.all: dict[str, Member] = {}
        for (name, pool), port in zip(names, ports):
            folder = tmp / "members" / name
            (folder / "temp").mkdir(parents=True)
            folder.chmod(0o755)
            m = Member(name, pool, port, folder)
            (folder / "nginx.conf").write_text(nginx_conf(m, www))
            self.all[name] = m

    def start(self, m: Member) -> None:
        m.proc = self.procs.start([self.nginx, "-p", str(m.folder), "-e", str(m.folder / "error.log"),
                                   "-c", str(m.folder / "nginx.conf")], log=m.folder / "stderr.log")
        m.starts += 1
        try:
            B.wait_for_port(m.port, m.proc, 10, f"nginx {m.name}")
        except B.StartError as exc:
            raise SoakError(f"{exc}\n{B.tail(m.folder / 'stderr.log')}\n"
                            f"{B.tail(m.folder / 'error.log')}") from exc

    def kill(self, m: Member) -> None:
        """SIGKILL to the member's process group (nginx's master and worker)."""
        try:
            os.killpg(m.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        m.proc.wait(5)
        if m.proc in self.procs.procs:
            self.procs.procs.remove(m.proc)
        m.proc = None

    def reload(self, m: Member) -> None:
        """nginx's graceful reload: new workers; the old one closes its idle connections."""
        os.kill(m.proc.pid, signal.SIGHUP)

    def cpu_seconds(self) -> float:
        return sum(B.cpu_seconds(m.proc.pid) for m in self.all.values() if m.proc)


# ---------------------------------------------------------------------------
# lbframe and its site


def site_ini(members: Members, ports: dict[str, int], pem: Path, weights: dict) -> str:
    def pool(name: str, scheduler: str, monitor: str) -> str:
        lines = [f"[pool {name}]", f"scheduler = {scheduler}", f"monitor = {monitor}"]
        for member, weight in weights[name].items():
            lines.append(f"member {member} = {HOST}:{members.all[member].port} weight={weight}")
        return "\n".join(lines)

    check = "\n".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}"
                      for k, v in MONITOR.items())
    return f"""\
# generated by bench/soak.py
[lbframe]
log_format = json
stop_grace = 5s

[virtual web]
listen = tcp:{ports['web']}:interface={HOST}
protocol = http
pool = web

[virtual web-tls]
listen = ssl:{ports['web-tls']}:privateKey={pem}:interface={HOST}
protocol = http
pool = web

[virtual raw]
listen = tcp:{ports['raw']}:interface={HOST}
protocol = tcp
pool = raw

{pool("web", "weighted", "web-check")}

{pool("raw", "least-connections", "raw-check")}

[monitor web-check]
type = http
request = GET /health
{check}

[monitor raw-check]
type = tcp
{check}
"""


def lbframe_argv(config: Path) -> list[str]:
    return B.twistd_argv() + ["-n", "--pidfile=", "lbframe", "--config", str(config)]


def probe(port: int, tls: bool, path: str = "/s/probe") -> tuple[int, str]:
    """One request (a new connection); the status and the member that answered."""
    status, headers, _ = B.http_get(port, path, tls=tls)
    return status, headers.get("x-member", "")


def wait_for_members(ports: dict[str, int], members: dict[str, list[str]], seconds: float) -> None:
    """Until every member of each pool has answered through lbframe (monitors agree)."""
    deadline = time.monotonic() + seconds
    for virtual, tls in (("web", False), ("raw", False), ("web-tls", True)):
        want = set(members[STREAM_POOL[virtual]])
        seen: set[str] = set()
        while not want <= seen:
            if time.monotonic() > deadline:
                raise SoakError(f"through {virtual}: only {sorted(seen)} answered of "
                                f"{sorted(want)} within {seconds:g}s")
            try:
                status, member = probe(ports[virtual], tls)
                if status == 200:
                    seen.add(member)
            except (OSError, http.client.HTTPException):
                time.sleep(0.2)


# ---------------------------------------------------------------------------
# /proc


def proc_sample(pid: int) -> tuple[int, int, float]:
    """VmRSS in KiB, open descriptors, CPU seconds of one process."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    stat = B._read_stat(pid)
    return rss, fds, (stat["ticks"] / CLK_TCK) if stat else 0.0


TCP_STATES = {1: "established", 2: "syn-sent", 3: "syn-recv", 4: "fin-wait1", 5: "fin-wait2",
              6: "time-wait", 7: "close", 8: "close-wait", 9: "last-ack", 10: "listen",
              11: "closing"}


def fd_kinds(pid: int, virtual_ports: set[int], member_ports: set[int]) -> dict[str, int]:
    """What lbframe's descriptors are: listeners, client and member connections by
    TCP state (from /proc/net/tcp), other sockets, and everything else."""
    inodes: dict[int, None] = {}
    kinds: collections.Counter = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes[int(target[8:-1])] = None
        elif target.startswith("anon_inode:"):
            kinds[target[11:].strip("[]")] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        else:
            kinds["file"] += 1
    found = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            f = open(table)
        except OSError:
            continue
        with f:
            next(f, None)
            for line in f:
                cols = line.split()
                if len(cols) < 10 or int(cols[9]) not in inodes:
                    continue
                found += 1
                state = TCP_STATES.get(int(cols[3], 16), cols[3])
                local = int(cols[1].rsplit(":", 1)[1], 16)
                remote = int(cols[2].rsplit(":", 1)[1], 16)
                if state == "listen":
                    kinds["listen"] += 1
                elif local in virtual_ports:
                    kinds[f"client {state}"] += 1
                elif remote in member_ports:
                    kinds[f"member {state}"] += 1
                else:
                    kinds[f"other tcp {state}"] += 1
    if len(inodes) > found:
        kinds["other socket"] += len(inodes) - found
    return dict(kinds)


@dataclasses.dataclass
class Sample:
    t: float          # seconds since the load started
    rss_kib: int
    fds: int
    cpu: float        # lbframe's CPU seconds so far
    load_cpu: float   # the load client's
    ok: int
    failed: int
    busy: tuple
    kinds: dict

    @property
    def member_conns(self) -> int:
        """lbframe's connections to members: kept alive between requests, so their
        number follows the load's bursts (up to ``member_keepalive`` per member)."""
        return self.kinds.get("member established", 0)

    @property
    def own_fds(self) -> int:
        """Every other descriptor: what a leak would grow (a leaked socket ends in
        CLOSE_WAIT once its peer closes it, and every peer here does)."""
        return self.fds - self.member_conns


# ---------------------------------------------------------------------------
# the schedule


@dataclasses.dataclass
class Event:
    at: float                  # seconds since the load started
    kind: str                  # kill, restart, member-reload, reload, reload-back
    target: str                # a member, or the site variant
    cycle: int
    done_at: float | None = None
    note: str = ""


def schedule(cycles: int, cycle: float) -> list[Event]:
    events = []
    for c in range(cycles):
        base = c * cycle
        pool = WEB[:4] if c % 2 == 0 else RAW[:3]
        victim = pool[(c // 2) % len(pool)]
        reloaded = WEB[(c + 1) % 4] if victim != WEB[(c + 1) % 4] else WEB[(c + 2) % 4]
        events += [Event(base + at * cycle, kind, target, c) for at, kind, target in (
            (0.04, "kill", victim),
            (0.22, "restart", victim),
            (0.30, "member-reload", reloaded),
            (0.38, "reload", "changed site"),
            (0.46, "reload-back", "first site"),
        )]
    return events


def blame_window() -> float:
    return MONITOR["fall"] * MONITOR["interval"] + MONITOR["timeout"] + BLAME_MARGIN


def logged_near(failures: list[dict], warnings: list[tuple[float, str]], wall: float) -> None:
    """For each failure, lbframe's warnings within half a second of it (``wall``
    turns the monotonic times into the log's wall-clock times)."""
    for f in failures:
        lo, hi = f["t0"] + wall - 0.5, f["t1"] + wall + 0.5
        f["logged"] = [msg for when, msg in warnings if lo <= when <= hi][:3]


def attribute(failures: list[dict], events: list[Event], start: float) -> None:
    """Mark each failure ``blame`` (the kill that explains it) or leave it None.

    Also ``after``: the last event before the failure and how long before, to
    tell at a glance what an unexplained failure followed.
    """
    window = blame_window()
    kills = [e for e in events if e.kind == "kill" and e.done_at is not None]
    done = sorted((e for e in events if e.done_at is not None), key=lambda e: e.done_at)
    for f in failures:
        t0, t1 = f["t0"] - start, f["t1"] - start
        f["t0_rel"], f["t1_rel"] = round(t0, 3), round(t1, 3)
        f["blame"] = None
        pool = "raw" if f["stream"].startswith("tcp") else "web"
        if f["kind"] != "mismatch":
            for e in kills:
                member_pool = "web" if e.target in WEB else "raw"
                if member_pool != pool or not (t0 <= e.done_at + window and t1 >= e.done_at):
                    continue
                if f.get("pinned_member") and f["pinned_member"] != e.target:
                    continue  # a tcp connection to another member
                f["blame"] = f"kill of {e.target} at {e.done_at:.1f}s"
                break
        before = [e for e in done if e.done_at <= t1]
        if before:
            e = before[-1]
            f["after"] = f"{t1 - e.done_at:.1f}s after {e.kind} {e.target} (at {e.done_at:.1f}s)"
        else:
            f["after"] = "before any event"


# ---------------------------------------------------------------------------
# the run


@dataclasses.dataclass
class Outcome:
    samples: list[Sample]
    events: list[Event]
    failures: list[dict]
    summary: dict
    lbframe_died: str | None
    load_failed: str | None
    idle_fds: tuple[int | None, int | None]
    log_stats: dict
    versions: dict
    started: datetime.datetime
    reloads_sent: int
    machine_start: tuple
    machine_end: tuple


def parse_seconds(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (use 45s, 3m, 1h)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ci", action="store_true",
                   help="the 3-minute mode: --duration 3m --cycle 45s")
    p.add_argument("--duration", type=parse_seconds, help="whole run, warm-up included (30m)")
    p.add_argument("--cycle", type=parse_seconds, help="one kill, restart, member reload and "
                   "two lbframe reloads per cycle (3m; the first cycle is the warm-up)")
    p.add_argument("--rate", type=float, default=1.0,
                   help="scale the load (1.0: about %d requests/s)" % sum(s[2] for s in STREAMS))
    p.add_argument("--sample", type=parse_seconds, default=1.0, help="sampling period (1s)")
    p.add_argument("--request-timeout", type=parse_seconds, default=10.0,
                   help="deadline of one request in the load client (10s)")
    p.add_argument("--output", default=str(DEFAULT_OUTPUT),
                   help="markdown report; samples (.csv) and failures (.jsonl) beside it")
    p.add_argument("--keep-tmp", action="store_true", help="keep configs and logs")
    args = p.parse_args(argv)
    args.duration = args.duration or (180.0 if args.ci else 1800.0)
    args.cycle = args.cycle or (45.0 if args.ci else 180.0)
    args.cycles = int(args.duration // args.cycle + 1e-9)
    if args.cycles < 2:
        p.error("--duration must hold at least two cycles (the first is the warm-up)")
    if args.cycle * QUIET < END_WINDOW + 12:
        p.error(f"--cycle must be at least {(END_WINDOW + 12) / QUIET:.0f}s")
    args.duration = args.cycles * args.cycle
    args.warmup = args.cycle
    return args


def versions() -> dict:
    def first_line(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not found"
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    commit = first_line(["git", "-C", str(REPO_ROOT), "log", "-1", "--format=%h %s"])
    return {"nginx": first_line(["nginx", "-v"]).rpartition(" ")[2], "python": sys.version.split()[0],
            "kernel": platform.release(), "cpu": f"{cpu} × {os.cpu_count()}",
            "lbframe": commit[:90]}


def read_log(path: Path) -> dict:
    """lbframe's JSON log: lines by level, reloads, state changes, tracebacks."""
    levels = collections.Counter()
    messages = collections.Counter()
    stats = {"reloads": 0, "reload_refused": [], "member_state": 0, "tracebacks": [],
             "not_json": 0, "warnings": []}
    try:
        f = open(path, errors="replace")
    except OSError:
        return {"levels": {}, "top": [], **stats}
    with f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                stats["not_json"] += 1
                continue
            if not isinstance(e, dict):
                stats["not_json"] += 1
                continue
            level = e.get("level") or "?"
            levels[level] += 1
            event = e.get("event")
            if event == "reload":
                stats["reloads"] += 1
            elif event == "reload_refused":
                stats["reload_refused"].append(e.get("message", ""))
            elif event == "member_state":
                stats["member_state"] += 1
            if e.get("failure"):
                stats["tracebacks"].append(e.get("message", "") + "\n"
                                           + str(e["failure"])[-600:])
            if level in ("warn", "error", "critical"):
                messages[re.sub(r"\d+", "N", str(e.get("message", "")))[:110]] += 1
                try:
                    when = datetime.datetime.fromisoformat(e["time"]).timestamp()
                except (KeyError, TypeError, ValueError):
                    continue
                if len(stats["warnings"]) < 200_000:
                    stats["warnings"].append((when, str(e.get("message", ""))[:160]))
    return {"levels": dict(levels), "top": messages.most_common(5), **stats}


def run(args: argparse.Namespace, procs: B.Processes, tmp: Path) -> Outcome:
    for tool in ("nginx",):
        if not (shutil.which(tool) or Path("/usr/sbin", tool).exists()):
            raise SoakError(f"{tool} is needed: apt-get install nginx-light")
    started = datetime.datetime.now(datetime.timezone.utc)
    info = versions()
    log(f"temporary directory {tmp}")
    members = Members(procs, tmp)
    for m in members.all.values():
        members.start(m)
    log(f"{len(members.all)} nginx members up")

    pem = B.make_certificate(tmp / "tls.pem", "ec")
    ports = dict(zip(("web", "web-tls", "raw"), B.free_ports(3)))
    config = tmp / "site.ini"
    config.write_text(site_ini(members, ports, pem, BASE_SITE))
    lb_log = tmp / "lbframe.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    lb = procs.start(lbframe_argv(config), log=lb_log, cwd=REPO_ROOT, env=env)
    try:
        for port in ports.values():
            B.wait_for_port(port, lb, 30, "lbframe")
        wait_for_members(ports, {p: list(w) for p, w in BASE_SITE.items()}, 30)
    except (B.StartError, SoakError) as exc:
        raise SoakError(f"lbframe did not start: {exc}\n{B.tail(lb_log)}") from exc
    log(f"lbframe (pid {lb.pid}) relays on {HOST}:{ports['web']} (http), "
        f"{ports['web-tls']} (https), {ports['raw']} (tcp)")
    idle_before = proc_sample(lb.pid)[1]

    # the load
    start = time.monotonic() + 1.0
    wall = time.time() - time.monotonic()  # monotonic -> wall clock, for lbframe's log
    plan = {
        "start": start, "seconds": args.duration, "request_timeout": args.request_timeout,
        "big_size": BIG_SIZE,
        "progress": str(tmp / "progress.json"), "summary": str(tmp / "summary.json"),
        "failures": str(tmp / "failures.jsonl"),
        "streams": [{"name": name, "port": ports[virtual], "tls": virtual == "web-tls",
                     "keepalive": ka, "pinned": virtual == "raw" and ka,
                     "rate": rate * args.rate, "workers": workers}
                    for name, virtual, rate, workers, ka in STREAMS],
    }
    (tmp / "plan.json").write_text(json.dumps(plan, indent=1))
    load = procs.start([sys.executable, str(LOAD_CLIENT), str(tmp / "plan.json")],
                       log=tmp / "load.log")
    total_rate = sum(s["rate"] for s in plan["streams"])
    log(f"load: {total_rate:.0f} requests/s over {len(STREAMS)} streams for "
        f"{args.duration:.0f}s; {args.cycles} cycles of {args.cycle:.0f}s, the first is the warm-up")

    port_sets = (set(ports.values()), {m.port for m in members.all.values()})
    events = schedule(args.cycles, args.cycle)
    pending = list(events)
    samples: list[Sample] = []
    lbframe_died = load_failed = None
    reloads_sent = 0
    next_sample = start
    next_progress = start + 30
    machine_start = B.machine_busy()
    end = start + args.duration
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if lb.poll() is not None:
            lbframe_died = f"lbframe exited with status {lb.returncode} at {now - start:.1f}s"
            break
        if load.poll() is not None:
            load_failed = f"the load client exited with status {load.returncode} early"
            break
        while pending and pending[0].at <= now - start:
            e = pending.pop(0)
            e.done_at = time.monotonic() - start  # the moment the action starts
            do_event(e, members, config, ports, pem, lb)
            if e.kind.startswith("reload"):
                reloads_sent += 1
            log(f"{e.done_at:7.1f}s  cycle {e.cycle + 1}: {e.kind} {e.target} {e.note}".rstrip())
        if now >= next_sample:
            samples.append(take_sample(lb.pid, load.pid, tmp, now - start, port_sets))
            next_sample += args.sample
        if now >= next_progress:
            s = samples[-1]
            log(f"{s.t:7.1f}s  {s.ok:,} ok, {s.failed:,} failed; lbframe RSS "
                f"{s.rss_kib / 1024:.1f} MiB, {s.fds} fds")
            next_progress += 30
        wake = min([next_sample, end] + ([start + pending[0].at] if pending else []))
        time.sleep(max(0.01, min(0.5, wake - time.monotonic())))
    if lbframe_died is None and load_failed is None:
        samples.append(take_sample(lb.pid, load.pid, tmp, time.monotonic() - start, port_sets))
    machine_end = B.machine_busy()

    # the load ends by itself (in-flight requests get their deadline)
    try:
        load.wait(args.request_timeout + 30)
    except subprocess.TimeoutExpired:
        load_failed = load_failed or "the load client did not finish in time"
        procs.stop(load)
    if load.returncode not in (0, None) and not load_failed:
        load_failed = f"the load client exited with status {load.returncode}"
    if load_failed:
        load_failed += "\n" + B.tail(tmp / "load.log")
    try:
        summary = json.loads((tmp / "summary.json").read_text())
        failures = [json.loads(line) for line in open(tmp / "failures.jsonl")]
    except (OSError, ValueError):
        summary, failures = {"streams": {}, "per_second_ok": [], "per_second_failed": []}, []

    # idle descriptors: once no client is connected and the members have closed
    # their idle connections (nginx keepalive_timeout 10 s), lbframe should be
    # back to what it held before the load.
    idle_after = None
    if lb.poll() is None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            idle_after = proc_sample(lb.pid)[1]
            if idle_after <= idle_before:
                break
            time.sleep(0.5)
    if lb.poll() is not None and lbframe_died is None:
        lbframe_died = f"lbframe exited with status {lb.returncode} after the load"
    procs.stop(lb, grace=10)
    if lbframe_died:
        lbframe_died += "\n" + B.tail(lb_log, 15)
    attribute(failures, events, start)
    log_stats = read_log(lb_log)
    logged_near(failures, log_stats.pop("warnings"), wall)
    return Outcome(samples, events, failures, summary, lbframe_died, load_failed,
                   (idle_before, idle_after), log_stats, info, started, reloads_sent,
                   machine_start, machine_end)


def do_event(e: Event, members: Members, config: Path, ports: dict, pem: Path,
             lb: subprocess.Popen) -> None:
    if e.kind == "kill":
        members.kill(members.all[e.target])
    elif e.kind == "restart":
        members.start(members.all[e.target])
    elif e.kind == "member-reload":
        members.reload(members.all[e.target])
    else:
        weights = CHANGED_SITE if e.kind == "reload" else BASE_SITE
        config.write_text(site_ini(members, ports, pem, weights))
        lb.send_signal(signal.SIGHUP)
        if e.kind == "reload":
            e.note = "(m4, t3 out; m5, t4 in; weights moved)"


def take_sample(lb_pid: int, load_pid: int, tmp: Path, t: float, ports: tuple) -> Sample:
    rss, fds, cpu = proc_sample(lb_pid)
    try:
        kinds = fd_kinds(lb_pid, *ports)
    except OSError:
        kinds = {}
    try:
        load_cpu = proc_sample(load_pid)[2]
    except OSError:
        load_cpu = 0.0
    ok = failed = 0
    try:
        progress = json.loads((tmp / "progress.json").read_text())
        ok = sum(s["ok"] for s in progress["streams"].values())
        failed = sum(s["failed"] for s in progress["streams"].values())
    except (OSError, ValueError, KeyError):
        pass
    return Sample(round(t, 2), rss, fds, cpu, load_cpu, ok, failed, B.machine_busy(), kinds)


# ---------------------------------------------------------------------------
# the report


def window_median(samples: list[Sample], end: float, attr: str) -> float | None:
    values = [getattr(s, attr) for s in samples if end - END_WINDOW <= s.t <= end + 0.5]
    return statistics.median(values) if values else None


def kinds_median(samples: list[Sample], end: float) -> dict[str, float]:
    window = [s.kinds for s in samples if end - END_WINDOW <= s.t <= end + 0.5]
    keys = set().union(*window) if window else set()
    return {k: statistics.median(d.get(k, 0) for d in window) for k in keys}


def change(a: float | None, b: float | None) -> float | None:
    return None if not a or b is None else (b - a) / a


def slope_per_hour(samples: list[Sample], after: float) -> float | None:
    """Least-squares slope of RSS (MiB per hour) over the samples after the warm-up."""
    pts = [(s.t, s.rss_kib / 1024) for s in samples if s.t >= after]
    if len(pts) < 3:
        return None
    mt = sum(t for t, _ in pts) / len(pts)
    mv = sum(v for _, v in pts) / len(pts)
    den = sum((t - mt) ** 2 for t, _ in pts)
    return sum((t - mt) * (v - mv) for t, v in pts) / den * 3600 if den else None


def build_report(args: argparse.Namespace, o: Outcome) -> tuple[str, bool]:
    out: list[str] = []
    w = out.append
    mode = ("3-minute (CI)" if args.ci else f"{args.duration / 60:.0f}-minute"
            if args.duration >= 600 else f"{args.duration:.0f}-second")
    w(f"# lbframe soak — {mode} run, {o.started:%Y-%m-%d %H:%M} UTC\n")
    w(f"{args.cycles} cycles of {args.cycle:g} s (the first is the warm-up), "
      f"load scaled ×{args.rate:g}; blame window {blame_window():g} s after a kill.")
    w("Machine: " + ", ".join(f"{k} {v}" for k, v in o.versions.items()) + ".")
    busy = (o.machine_end[0] - o.machine_start[0]) / max(1, o.machine_end[1] - o.machine_start[1])
    w(f"Whole machine busy during the load: {busy:.0%} (all processes, not only the soak's).\n")

    # load
    streams = o.summary.get("streams", {})
    total_ok = sum(s["ok"] for s in streams.values())
    total_failed = sum(sum(s["failed"].values()) for s in streams.values())
    w("## Load\n")
    w("| stream | requests | ok | failed | p50 ms | p99 ms | max ms | connections |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, s in streams.items():
        failed = sum(s["failed"].values())
        w(f"| {name} | {s['ok'] + failed:,} | {s['ok']:,} | {failed:,} | {s['p50_ms']} | "
          f"{s['p99_ms']} | {s['max_ms']} | {s['connections']:,} |")
    w(f"| **all** | {total_ok + total_failed:,} | {total_ok:,} | {total_failed:,} | | | | |\n")
    members = collections.Counter()
    for s in streams.values():
        members.update(s["members"])
    if members:
        w("Answers per member: " + ", ".join(f"{k} {v:,}" for k, v in sorted(members.items()))
          + ".\n")

    # failures and their attribution
    blamed = [f for f in o.failures if f["blame"]]
    unexplained = [f for f in o.failures if not f["blame"]]
    w("## Failures\n")
    w(f"{len(o.failures):,} failed requests: {len(blamed):,} explained by a killed member, "
      f"**{len(unexplained):,} not**.\n")
    if o.failures:
        kinds = collections.Counter((f["stream"], f.get("request", "?"), f["kind"], f["reused"],
                                     bool(f["blame"])) for f in o.failures)
        w("| stream | request | failure | on a reused connection | explained by a kill | count |")
        w("| --- | --- | --- | --- | --- | ---: |")
        for (stream, request, kind, reused, ok), n in sorted(kinds.items()):
            w(f"| {stream} | {request} | {kind} | {'yes' if reused else 'no'} | "
              f"{'yes' if ok else '**no**'} | {n:,} |")
        w("")
    if unexplained:
        near = collections.Counter(re.sub(r"^[0-9.]+s after (\S+) .*", r"\1", f["after"])
                                   for f in unexplained)
        w("Unexplained failures by the last event before them: "
          + ", ".join(f"{k} {v:,}" for k, v in near.most_common()) + ".\n")
        w("First unexplained failures:\n")
        for f in unexplained[:15]:
            said = ("; lbframe logged: " + " / ".join(f"`{m}`" for m in f["logged"])
                    if f.get("logged") else "; lbframe logged nothing within 0.5 s")
            w(f"- {f['t1_rel']:.2f}s {f['stream']} ({f['worker']}) {f.get('request', '?')}: "
              f"{f['kind']}{' — ' + f['detail'] if f['detail'] else ''}"
              f"{', reused connection' if f['reused'] else ''}; {f['after']}{said}")
        w("")

    # events
    w("## Events\n")
    by_kind = collections.Counter(e.kind for e in o.events if e.done_at is not None)
    w(", ".join(f"{v} × {k}" for k, v in by_kind.items()) + ".")
    kills = [e for e in o.events if e.kind == "kill" and e.done_at is not None]
    if kills:
        per_kill = collections.Counter(f["blame"] for f in blamed)
        w("Failures per kill: " + ", ".join(
            f"{e.target} at {e.done_at:.0f}s: {per_kill.get(f'kill of {e.target} at {e.done_at:.1f}s', 0)}"
            for e in kills) + ".\n")

    # resources per cycle
    w("## lbframe's resources\n")
    w("| cycle | until | requests ok | failed (explained / not) | RSS MiB | fds | member connections | other fds | lbframe CPU | load client CPU |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    prev = None
    for c in range(args.cycles):
        end_t = (c + 1) * args.cycle
        in_cycle = [s for s in o.samples if c * args.cycle <= s.t <= end_t + 0.5]
        if not in_cycle:
            break
        last = in_cycle[-1]
        rss = window_median(o.samples, end_t, "rss_kib")
        fds = window_median(o.samples, end_t, "fds")
        conns = window_median(o.samples, end_t, "member_conns")
        own = window_median(o.samples, end_t, "own_fds")
        f_in = [f for f in o.failures if c * args.cycle <= f["t1_rel"] < end_t]
        fb = sum(1 for f in f_in if f["blame"])
        first = prev or o.samples[0]
        span = max(1e-9, last.t - first.t)
        w(f"| {c + 1}{' (warm-up)' if c == 0 else ''} | {end_t:.0f}s | "
          f"{last.ok - (prev.ok if prev else 0):,} | {fb} / {len(f_in) - fb} | "
          f"{rss / 1024:.1f} | {fds:.0f} | {conns:.0f} | {own:.0f} | "
          f"{(last.cpu - first.cpu) / span:.0%} | "
          f"{(last.load_cpu - first.load_cpu) / span:.0%} |")
        prev = last
    w("")
    w("(RSS and fds: medians of the samples in the last "
      f"{END_WINDOW:g} s of each cycle, which are quiet; CPU: % of one core.)\n")
    if o.idle_fds[1] is not None:
        w(f"Descriptors with no client connected: {o.idle_fds[0]} before the load, "
          f"{o.idle_fds[1]} after it (15 s at most for members' idle connections to close).\n")
    slope = slope_per_hour(o.samples, args.warmup)
    if slope is not None and args.duration >= 600:  # too noisy over a few minutes
        w(f"RSS trend after the warm-up (least squares): {slope:+.1f} MiB per hour.\n")

    # lbframe's log
    ls = o.log_stats
    w("## lbframe's log\n")
    w("Lines by level: " + (", ".join(f"{k} {v:,}" for k, v in sorted(ls["levels"].items()))
                            or "none") + f"; {ls['reloads']} reloads applied, "
      f"{len(ls['reload_refused'])} refused; {ls['member_state']} member state changes; "
      f"{len(ls['tracebacks'])} tracebacks.")
    if ls["top"]:
        w("Most frequent warnings and errors:\n")
        for msg, n in ls["top"]:
            w(f"- {n:,} × `{msg}`")
    for tb in ls["tracebacks"][:2]:
        w("\n```\n" + tb.strip() + "\n```")
    w("")

    # verdicts
    warm_end, run_end = args.warmup, args.duration
    rss0, rss1 = window_median(o.samples, warm_end, "rss_kib"), window_median(o.samples, run_end, "rss_kib")
    fd0, fd1 = window_median(o.samples, warm_end, "fds"), window_median(o.samples, run_end, "fds")
    own0, own1 = (window_median(o.samples, warm_end, "own_fds"),
                  window_median(o.samples, run_end, "own_fds"))
    drss, dfd, down = change(rss0, rss1), change(fd0, fd1), change(own0, own1)
    kinds0, kinds1 = kinds_median(o.samples, warm_end), kinds_median(o.samples, run_end)
    checks = []
    complete = not (o.lbframe_died or o.load_failed) and bool(streams)
    checks.append(("no failed request that a dead member does not explain",
                   complete and not unexplained,
                   f"{len(unexplained):,} unexplained of {total_ok + total_failed:,} requests "
                   f"({len(blamed):,} explained by {len(kills)} kills)"))
    checks.append((f"lbframe RSS flat (±{FLAT:.0%})",
                   drss is not None and abs(drss) <= FLAT and complete,
                   f"{rss0 / 1024:.1f} MiB at the end of the warm-up → {rss1 / 1024:.1f} MiB at the end "
                   f"({drss:+.1%})" if drss is not None else "not measured"))
    checks.append((f"lbframe descriptors flat (±{FLAT:.0%}), kept-alive member connections aside",
                   down is not None and abs(down) <= FLAT and complete,
                   f"{own0:.0f} → {own1:.0f} ({down:+.1%}); with the member connections "
                   f"{fd0:.0f} → {fd1:.0f} ({dfd:+.1%})" if down is not None else "not measured"))
    applied = ls["reloads"] == o.reloads_sent and not ls["reload_refused"]
    checks.append(("the run completed: lbframe alive, every reload applied, load finished",
                   complete and applied,
                   "; ".join(filter(None, [
                       o.lbframe_died and o.lbframe_died.splitlines()[0],
                       o.load_failed and o.load_failed.splitlines()[0],
                       f"{ls['reloads']} of {o.reloads_sent} reloads applied"
                       + (f", refused: {ls['reload_refused'][0]}" if ls["reload_refused"] else "")]))))
    if kinds0 and kinds1:
        w("lbframe's descriptors at the end of the warm-up → at the end (medians): "
          + ", ".join(f"{k} {kinds0.get(k, 0):g} → {kinds1.get(k, 0):g}"
                      for k in sorted(set(kinds0) | set(kinds1))) + ".\n")
    w("## Verdict\n")
    w("| criterion | result | figures |")
    w("| --- | --- | --- |")
    for name, ok, figures in checks:
        w(f"| {name} | {'**pass**' if ok else '**FAIL**'} | {figures} |")
    passed = all(ok for _, ok, _ in checks)
    w(f"\n**{'PASS' if passed else 'FAIL'}**")
    if o.lbframe_died:
        w("\n```\n" + o.lbframe_died + "\n```")
    if o.load_failed:
        w("\n```\n" + o.load_failed + "\n```")
    return "\n".join(out) + "\n", passed


def write_outputs(path: Path, report: str, o: Outcome) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report)
    with open(path.with_suffix(".samples.csv"), "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["t", "rss_kib", "fds", "lbframe_cpu_s", "load_cpu_s", "ok", "failed", "fd_kinds"])
        for s in o.samples:
            out.writerow([s.t, s.rss_kib, s.fds, round(s.cpu, 2), round(s.load_cpu, 2), s.ok,
                          s.failed, json.dumps(s.kinds, sort_keys=True)])
    with open(path.with_suffix(".failures.jsonl"), "w") as f:
        for record in o.failures:
            f.write(json.dumps(record) + "\n")


def _stop(signum, frame):
    raise Deadline(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    signal.signal(signal.SIGALRM, _stop)
    signal.alarm(int(args.duration + 180))  # the hard deadline, whatever happens
    procs = B.Processes()
    tmp = Path(tempfile.mkdtemp(prefix="lbframe-soak-"))
    try:
        outcome = run(args, procs, tmp)
        signal.alarm(0)
        report, passed = build_report(args, outcome)
        print(report)
        output = Path(args.output)
        write_outputs(output, report, outcome)
        log(f"written to {output} (and .samples.csv, .failures.jsonl beside it)")
        return 0 if passed else 1
    except SoakError as exc:
        log(f"error: {exc}")
        return 2
    except Deadline as exc:
        log(f"stopped ({exc}): {'hard deadline passed' if 'signal 14' in str(exc) else 'interrupted'}")
        return 130 if "signal 14" not in str(exc) else 2
    finally:
        B.clean_up(procs, tmp, args.keep_tmp)


if __name__ == "__main__":
    sys.exit(main())
