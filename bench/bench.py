#!/usr/bin/env python3
"""Compare lbframe with HAProxy in front of the same nginx, in one run.

Usage: bench/run [--quick] [--duration 10s] [--runs 3] [--cases keepalive,close,bulk,rss]

One nginx (``worker_processes 1``, two listen ports = the two pool members) serves
a 100-byte response and a 64 MiB file. For every case and run a *fresh* balancer
process is started (HAProxy ``mode tcp``/``nbthread 1``/round robin, or lbframe
from a generated ``site.ini``), checked with one request, warmed up, and loaded;
lbframe and HAProxy alternate (ABBA order) so drift hits both alike. The balancer's
CPU seconds (utime+stime of its process tree from /proc) are sampled around each
load, and its VmHWM is read before it is stopped. Medians over the runs are
reported as a markdown table on stdout and in ``bench/results/latest.md``.

Everything listens on and connects to 127.0.0.1 only; every load is bounded by
``--duration``; every process is started in its own process group and killed on
exit, Ctrl-C or failure. See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_OUTPUT = BENCH_DIR / "results" / "latest.md"
WRK_SCRIPT = BENCH_DIR / "wrk_report.lua"
BULK_CLIENT = BENCH_DIR / "bulk_client.py"
IDLE_CLIENT = BENCH_DIR / "idle_client.py"
#: the idle case: connections held, the target for the balancer's RSS with them
#: (issue 18), and how long they sit idle before RSS is read (lbframe lets
#: go of an idle connection's parser at its next timer tick, 2.5 s at most
#: with the bench's timeouts)
IDLE_CONNECTIONS = 10000
TARGET_IDLE_RSS_MIB = 100.0
IDLE_SETTLE = 5.0

HOST = "127.0.0.1"
SMALL_BODY = "0123456789" * 9 + "012345678\n"  # exactly 100 bytes
BIG_SIZE = 64 * 1024 * 1024
MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")

ALL_CASES = ("keepalive", "close", "bulk", "rss", "idle")
LOAD_CASES = ("keepalive", "close", "bulk")  # "rss" is read from the 50-client runs
BALANCERS = ("lbframe", "haproxy")
LEFT_OUT = "left out with --balancers"

# Targets for the tcp path (see docs/performance.md).
TARGET_KEEPALIVE_EFF = 0.8
TARGET_CLOSE_EFF = 0.7
TARGET_BULK_RAW = 1.5
TARGET_RSS_MIB = 40.0


def default_lbframe_cmd() -> str:
    """`twistd -n lbframe --config site.ini`, with the twistd of this interpreter.

    Note: ``python -m twisted`` is Twisted's ``twist`` runner, which has no ``-n``;
    ``twistd`` is the contract's command. ``--pidfile=`` stops twistd from writing
    ``twistd.pid`` into the repository (and refusing to start while one exists).
    """
    return "{twistd} -n --pidfile= lbframe --config {config}"


def twistd_argv() -> list[str]:
    candidate = Path(sys.executable).parent / "twistd"
    if candidate.exists():
        return [str(candidate)]
    return [
        sys.executable,
        "-c",
        "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
    ]


# ---------------------------------------------------------------------------
# processes


class BenchError(Exception):
    """The harness itself cannot go on (missing tool, backend did not start)."""


class StartError(Exception):
    """A balancer did not start or did not relay a first request."""


class Processes:
    """Every process we start, each in its own session/process group."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], *, log: Path, cwd: Path | None = None,
              env: dict[str, str] | None = None,
              stdout_pipe: bool = False) -> subprocess.Popen:
        logf = open(log, "ab")
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else logf,
                stderr=logf,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            logf.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left of it."""
        pgid = proc.pid
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if proc.poll() is not None and not _group_alive(pgid):
                    break
                time.sleep(0.02)
            else:
                continue
            break
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        if proc.stdout:
            proc.stdout.close()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            self.stop(proc, grace=2.0)


def _die_with_parent() -> None:
    """In the child: get SIGKILL if bench.py itself dies without cleaning up."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(…, 0) also succeeds for zombies; look for a live member.
    for pid in _all_pids():
        stat = _read_stat(pid)
        if stat and stat["pgrp"] == pgid and stat["state"] != "Z":
            return True
    return False


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _read_stat(pid: int) -> dict | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(")") + 2:].split()
    return {
        "state": rest[0],
        "ppid": int(rest[1]),
        "pgrp": int(rest[2]),
        "ticks": int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14]),
    }


def process_tree(root: int) -> list[int]:
    """root and all its live descendants."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        stat = _read_stat(pid)
        if stat:
            children.setdefault(stat["ppid"], []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(root: int) -> float:
    """utime+stime (+cutime+cstime of reaped children) of root's process tree.

    /proc/PID/stat of a process already counts all its threads.
    """
    ticks = 0
    for pid in process_tree(root):
        stat = _read_stat(pid)
        if stat:
            ticks += stat["ticks"]
    return ticks / CLK_TCK


def peak_rss_mib(root: int, field: str = "VmHWM") -> float:
    """Sum of VmHWM (or another /proc status field, VmRSS) over root's
    process tree (one process for haproxy and twistd -n)."""
    total_kib = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total_kib += int(line.split()[1])
        except OSError:
            pass
    return total_kib / 1024


def machine_busy() -> tuple[int, int, int]:
    """Jiffies over all CPUs from /proc/stat: (busy, total, task time).

    busy includes interrupt/softirq time (loopback TCP is mostly softirq work);
    task time is user+nice+system, the time charged to processes.
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total, fields[0] + fields[1] + fields[2]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def idle_fds() -> int:
    """The descriptors each process may use in the idle case (HAProxy asks
    for about twice its maxconn): the soft limit, raised (see raise_fd_limit)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def haproxy_idle_connections(args) -> int:
    """How many idle connections HAProxy can be given: it wants about two
    descriptors per ``maxconn`` (20,000 descriptors hold 9,900 connections)."""
    return min(args.idle_connections, (idle_fds() - 200) // 2)


def raise_fd_limit(wanted: int) -> None:
    """Raise RLIMIT_NOFILE (inherited by the balancers and the idle client)
    to ``wanted`` when allowed (root may raise the hard limit too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft >= wanted:
        return
    for limits in ((wanted, max(hard, wanted)), (min(wanted, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            return
        except (ValueError, OSError):
            continue


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out for port 0 on 127.0.0.1, all distinct."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise StartError(f"{what} exited with status {proc.returncode} before accepting on {HOST}:{port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise StartError(f"{what} did not accept on {HOST}:{port} within {timeout:g}s")
        time.sleep(0.05)


#: the PEM (key + certificate) both balancers terminate TLS with, in --mode https
TLS_PEM: Path | None = None


def make_certificate(path: Path, kind: str) -> Path:
    """A self-signed certificate for 127.0.0.1: RSA 2048 or ECDSA P-256."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa"
           else ec.generate_private_key(ec.SECP256R1()))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .sign(key, hashes.SHA256()))
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
                     + cert.public_bytes(serialization.Encoding.PEM))
    return path


def http_get(port: int, path: str, method: str = "GET", tls: bool = False
             ) -> tuple[int, dict[str, str], bytes]:
    if tls:
        import ssl
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # our own self-signed certificate
        conn = http.client.HTTPSConnection(HOST, port, timeout=5, context=context)
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read() if method == "GET" else b""
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def check_path(port: int, what: str, tls: bool = False) -> None:
    """One small and one HEAD-of-big request through the balancer must work."""
    try:
        for _ in range(2):  # both members, whatever the scheduler picks first
            status, _, body = http_get(port, "/small", tls=tls)
            if status != 200 or body != SMALL_BODY.encode():
                raise StartError(f"{what}: GET /small answered {status} with {len(body)} bytes")
        status, headers, _ = http_get(port, "/big", "HEAD", tls=tls)
        if status != 200 or headers.get("content-length") != str(BIG_SIZE):
            raise StartError(f"{what}: HEAD /big answered {status}, length {headers.get('content-length')}")
    except (OSError, http.client.HTTPException) as exc:
        raise StartError(f"{what}: a request through {HOST}:{port} failed: {exc!r}") from exc


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------
# backend and balancers


@dataclasses.dataclass
class Backend:
    proc: subprocess.Popen
    ports: tuple[int, int]


def start_nginx(procs: Processes, tmp: Path) -> Backend:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    root = tmp / "nginx"
    www = root / "www"
    (root / "temp").mkdir(parents=True)
    www.mkdir()
    chunk = os.urandom(MIB)
    with open(www / "big", "wb") as f:
        for _ in range(BIG_SIZE // MIB):
            f.write(chunk)
    # nginx's worker runs as nobody when we are root: let it read the files.
    for path in (tmp, root, www):
        path.chmod(0o755)
    (www / "big").chmod(0o644)
    ports = tuple(free_ports(2))
    conf = root / "nginx.conf"
    conf.write_text(f"""\
# generated by bench/bench.py
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;  # a keep-alive run never reconnects
    keepalive_timeout 75s;
    client_body_temp_path {root}/temp/body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;
    server {{
        listen {HOST}:{ports[0]};
        listen {HOST}:{ports[1]};
        root {www};
        location = /small {{
            default_type text/plain;
            return 200 "{SMALL_BODY[:-1]}\\n";
        }}
        location = /big {{ }}
    }}
}}
""")
    log = root / "stderr.log"
    proc = procs.start([nginx, "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)], log=log)
    try:
        for port in ports:
            wait_for_port(port, proc, 10, "nginx")
            check_path(port, "nginx")
    except StartError as exc:
        raise BenchError(f"{exc}\n{tail(log)}\n{tail(root / 'error.log')}") from exc
    return Backend(proc, ports)


@dataclasses.dataclass
class Running:
    name: str
    proc: subprocess.Popen
    port: int
    log: Path


class BalancerStarter:
    def __init__(self, name: str, procs: Processes, tmp: Path, backend: Backend,
                 args: argparse.Namespace) -> None:
        self.idle = False
        self.name = name
        self.procs = procs
        self.tmp = tmp
        self.backend = backend
        self.args = args
        self.count = 0

    def start(self, idle: bool = False) -> Running:
        self.idle = idle
        self.count += 1
        workdir = self.tmp / f"{self.name}-{self.count}"
        workdir.mkdir()
        port = free_ports(1)[0]
        log = workdir / "output.log"
        if self.name == "haproxy":
            argv, cwd, env = self._haproxy(workdir, port)
        else:
            argv, cwd, env = self._lbframe(workdir, port)
        (workdir / "command").write_text(shlex.join(argv) + "\n")
        try:
            proc = self.procs.start(argv, log=log, cwd=cwd, env=env)
        except OSError as exc:
            raise StartError(f"cannot run {shlex.join(argv)}: {exc}") from exc
        running = Running(self.name, proc, port, log)
        try:
            wait_for_port(port, proc, self.args.startup_timeout, self.name)
            check_path(port, self.name, tls=TLS_PEM is not None)
        except StartError as exc:
            self.procs.stop(proc)
            raise StartError(f"{exc}\ncommand: {shlex.join(argv)}\n(cwd {cwd})\n"
                             f"--- last lines of its output ---\n{tail(log)}") from exc
        return running

    def _haproxy(self, workdir: Path, port: int):
        a, b = self.backend.ports
        cfg = workdir / "haproxy.cfg"
        # HAProxy's default configuration: no tune.* and no splice options.
        cfg.write_text(f"""\
# generated by bench/bench.py
global
    nbthread {self.args.workers}
{f"    maxconn {haproxy_idle_connections(self.args) + 50}{chr(10)}    ulimit-n {idle_fds()}" if self.idle else ""}

defaults
    mode {"tcp" if self.args.mode == "tcp" else "http"}
    timeout connect 5s
    timeout client 60s
    timeout server 60s
{"    timeout http-keep-alive 120s" if self.idle else ""}

frontend bench
    bind {HOST}:{port}{f" ssl crt {TLS_PEM} alpn http/1.1" if TLS_PEM else ""}
    default_backend backends

backend backends
    balance roundrobin
    server a {HOST}:{a}
    server b {HOST}:{b}
""")
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        return [haproxy, "-f", str(cfg), "-db"], workdir, None

    def _lbframe(self, workdir: Path, port: int):
        a, b = self.backend.ports
        cfg = workdir / "site.ini"
        idle = (f"max_connections = {self.args.idle_connections + 2000}\n\n"
                if self.idle else "\n")
        cfg.write_text(f"""\
# generated by bench/bench.py
[lbframe]
workers = {self.args.workers}
{idle}[virtual bench]
listen = {f"ssl:{port}:privateKey={TLS_PEM}" if TLS_PEM else f"tcp:{port}"}:interface={HOST}{":backlog=1024" if self.idle else ""}
protocol = {"tcp" if self.args.mode == "tcp" else "http"}
pool = backends
timeout_client = 60s
timeout_server = 60s
{"timeout_keepalive = 120s" if self.idle and self.args.mode != "tcp" else ""}

[pool backends]
scheduler = round-robin
member a = {HOST}:{a}
member b = {HOST}:{b}
""")
        template = self.args.lbframe_cmd
        if "{config}" not in template:
            raise StartError(f"the lbframe command must contain {{config}}: {template!r}")
        argv = []
        for word in shlex.split(template):
            if word == "{twistd}":
                argv.extend(twistd_argv())
            else:
                argv.append(word.format(python=sys.executable, config=cfg, port=port,
                                        twistd=shlex.join(twistd_argv())))
        cwd = Path(self.args.lbframe_cwd).resolve()
        env = dict(os.environ)
        # The repository first, so `lbframe` and twisted/plugins/lbframe_dropin.py are
        # found whatever script starts Python (twisted itself is a regular package and
        # still wins over the repository's twisted/ namespace directory).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), env.get("PYTHONPATH")]))
        return argv, cwd, env


# ---------------------------------------------------------------------------
# load


@dataclasses.dataclass
class RunResult:
    balancer: str
    case: str
    run: int
    count: float = 0.0          # requests (keepalive/close) or bytes (bulk)
    duration: float = 0.0       # seconds, as measured by the load generator
    cpu: float = 0.0            # balancer CPU seconds during the measured load
    wall: float = 0.0           # wall seconds of the CPU sampling window
    hwm_mib: float = 0.0        # balancer VmHWM at the end of its (fresh) life
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    error_detail: str = ""
    loadgen_cpu: float = 0.0    # load generator CPU seconds
    nginx_cpu: float = 0.0      # backend CPU seconds
    machine_busy: float = 0.0   # fraction of all CPUs busy during the load
    others_cpu: float = 0.0     # CPU seconds of processes that are not part of the benchmark
    clients: int = 0

    @property
    def rate(self) -> float:
        """req/s, connections/s or MiB/s."""
        if not self.duration:
            return 0.0
        if self.case == "bulk":
            return self.count / MIB / self.duration
        return self.count / self.duration

    @property
    def efficiency(self) -> float | None:
        """requests (or MiB) per balancer CPU second."""
        if self.cpu <= 0:
            return None
        amount = self.count / MIB if self.case == "bulk" else self.count
        return amount / self.cpu


#: ``taskset -c CPUS`` when --loadgen-cpus pins the load generator
LOADGEN_PREFIX: list[str] = []


def run_wrk(procs: Processes, tmp: Path, port: int, case: str, seconds: int,
            clients: int) -> dict:
    argv = LOADGEN_PREFIX + ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "5s",
                             "--latency", "-s", str(WRK_SCRIPT)]
    if case == "close":
        argv += ["-H", "Connection: close"]
    scheme = "https" if TLS_PEM is not None else "http"
    argv.append(f"{scheme}://{HOST}:{port}/small")
    return _run_loadgen(procs, tmp, argv, seconds)


def run_bulk(procs: Processes, tmp: Path, port: int, seconds: int, clients: int) -> dict:
    argv = [sys.executable, str(BULK_CLIENT), "--port", str(port), "--path", "/big",
            "--connections", str(clients), "--duration", str(seconds)]
    return _run_loadgen(procs, tmp, argv, seconds)


def _run_loadgen(procs: Processes, tmp: Path, argv: list[str], seconds: int) -> dict:
    log = tmp / "loadgen.log"
    proc = procs.start(argv, log=log, stdout_pipe=True)
    try:
        out, _ = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
        raise BenchError(f"load generator overran its time: {shlex.join(argv)}")
    procs.procs.remove(proc)
    text = out.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("BENCHJSON "):
            return json.loads(line[len("BENCHJSON "):])
    raise BenchError(f"no result from {shlex.join(argv)} (status {proc.returncode}):\n"
                     f"{text[-2000:]}\n{tail(log)}")


def one_run(starter: BalancerStarter, backend: Backend, case: str, run: int,
            args: argparse.Namespace, tmp: Path) -> RunResult:
    clients = args.bulk_clients if case == "bulk" else args.clients
    balancer = starter.start()
    try:
        if args.warmup:
            if case == "bulk":
                run_bulk(starter.procs, tmp, balancer.port, args.warmup, clients)
            else:
                run_wrk(starter.procs, tmp, balancer.port, case, args.warmup, clients)
        if balancer.proc.poll() is not None:
            raise StartError(f"{balancer.name} died during warm-up\n{tail(balancer.log)}")
        self_before = resource.getrusage(resource.RUSAGE_SELF)
        nginx_before = cpu_seconds(backend.proc.pid)
        busy_before = machine_busy()
        loadgen_before = children_cpu()
        cpu_before = cpu_seconds(balancer.proc.pid)
        t0 = time.monotonic()
        if case == "bulk":
            raw = run_bulk(starter.procs, tmp, balancer.port, args.duration, clients)
        else:
            raw = run_wrk(starter.procs, tmp, balancer.port, case, args.duration, clients)
        wall = time.monotonic() - t0
        cpu_after = cpu_seconds(balancer.proc.pid)
        loadgen_after = children_cpu()
        busy_after = machine_busy()
        nginx_after = cpu_seconds(backend.proc.pid)
        self_after = resource.getrusage(resource.RUSAGE_SELF)
        hwm = peak_rss_mib(balancer.proc.pid)
        if balancer.proc.poll() is not None:
            raise StartError(f"{balancer.name} died during the load\n{tail(balancer.log)}")
    finally:
        starter.procs.stop(balancer.proc)

    result = RunResult(balancer.name, case, run, clients=clients)
    result.duration = raw["duration_us"] / 1e6
    result.cpu = cpu_after - cpu_before
    result.wall = wall
    result.hwm_mib = hwm
    result.loadgen_cpu = loadgen_after - loadgen_before
    result.nginx_cpu = nginx_after - nginx_before
    busy = busy_after[0] - busy_before[0]
    total = busy_after[1] - busy_before[1]
    result.machine_busy = busy / total if total else 0.0
    # Task time of the whole machine minus what the benchmark's processes used.
    task_time = (busy_after[2] - busy_before[2]) / CLK_TCK
    own = (self_after.ru_utime + self_after.ru_stime) - (self_before.ru_utime + self_before.ru_stime)
    result.others_cpu = max(0.0, task_time - result.cpu - result.loadgen_cpu - result.nginx_cpu - own)
    if case == "bulk":
        result.count = raw["bytes"]
        result.errors = raw["errors"]
        result.error_detail = raw.get("last_error") or ""
    else:
        result.count = raw["requests"]
        result.errors = sum(raw["errors"].values())
        if result.errors:
            result.error_detail = ", ".join(f"{k} {v}" for k, v in raw["errors"].items() if v)
        result.p50_ms = raw["latency_us"]["p50"] / 1000
        result.p99_ms = raw["latency_us"]["p99"] / 1000
    return result


@dataclasses.dataclass
class IdleResult:
    balancer: str
    run: int
    connections: int = 0
    errors: int = 0
    closed: int = 0
    rss_before_mib: float = 0.0
    rss_mib: float = 0.0

    @property
    def per_connection_kib(self) -> float | None:
        if not self.connections:
            return None
        return (self.rss_mib - self.rss_before_mib) * 1024 / self.connections


def idle_run(starter: BalancerStarter, run: int, args: argparse.Namespace) -> IdleResult:
    """A fresh balancer, ``--idle-connections`` keep-alive connections
    (one request each) held idle for IDLE_SETTLE seconds: its RSS then."""
    balancer = starter.start(idle=True)
    result = IdleResult(balancer.name, run)
    try:
        result.rss_before_mib = peak_rss_mib(balancer.proc.pid, "VmRSS")
        count = (haproxy_idle_connections(args) if balancer.name == "haproxy"
                 else args.idle_connections)
        argv = [sys.executable, str(IDLE_CLIENT), "--port", str(balancer.port),
                "--connections", str(count)]
        if TLS_PEM is not None:
            argv.append("--tls")
        client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, start_new_session=True)
        try:
            ready = client.stdout.readline()
            if not ready.startswith("READY "):
                raise BenchError(f"idle client: {ready!r}")
            time.sleep(IDLE_SETTLE)
            result.rss_mib = peak_rss_mib(balancer.proc.pid, "VmRSS")
            out, _ = client.communicate(input="", timeout=60)  # closes its stdin
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        for line in out.splitlines():
            if line.startswith("BENCHJSON "):
                raw = json.loads(line[len("BENCHJSON "):])
                result.connections = raw["connections"]
                result.errors = raw["errors"]
                result.closed = raw["closed_while_idle"]
        if balancer.proc.poll() is not None:
            raise StartError(f"{balancer.name} died during the idle case\n{tail(balancer.log)}")
    finally:
        starter.procs.stop(balancer.proc)
    return result


# ---------------------------------------------------------------------------
# report


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0, suffix=""):
    if value is None:
        return "—"
    if digits == 0:
        return f"{value:,.0f}{suffix}"
    return f"{value:,.{digits}f}{suffix}"


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def verdict(value, target, higher_is_better=True):
    if value is None:
        return "no lbframe figure"
    ok = value >= target if higher_is_better else value <= target
    return "**met**" if ok else "**not met**"


def build_report(results: list[RunResult], args: argparse.Namespace, cases: list[str],
                 failures: dict[str, str], run_errors: list[tuple[str, str, int, str]],
                 started: datetime.datetime, versions: dict[str, str],
                 idle_results: list | None = None) -> str:
    """failures: balancers dropped for the rest of the run; run_errors: single runs lost."""
    def runs(balancer, case):
        return [r for r in results if r.balancer == balancer and r.case == case]

    def count_note(balancer, case):
        n = len(runs(balancer, case))
        return f" ({n}/{args.runs} runs)" if 0 < n < args.runs else ""

    measured = any(r.balancer == "lbframe" for r in results)
    lb_label = "lbframe" if measured else "lbframe (not measured)"
    lines = [
        f"# lbframe vs HAProxy — {args.mode} path"
        + (f" ({'RSA 2048' if args.key == 'rsa' else 'ECDSA P-256'} certificate)"
           if args.mode == "https" else ""),
        "",
        f"{started:%Y-%m-%d %H:%M:%S %Z}".strip() + f" · {args.runs} run(s) × {args.duration}s per case and balancer"
        f" (+{args.warmup}s warm-up) · medians · {os.cpu_count()} CPUs ({versions['cpu']})"
        + (f" · lbframe workers = {args.workers}, HAProxy nbthread {args.workers}"
           if args.workers > 1 else "")
        + (f" · load generator on CPUs {args.loadgen_cpus}" if args.loadgen_cpus else ""),
        "",
        f"| case | HAProxy | {lb_label} | raw ratio (lbframe/HAProxy) | efficiency ratio | target |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    notes: list[str] = []

    def rate_row(case, title, digits, target_text, target, use_eff):
        hp_runs, lb_runs = runs("haproxy", case), runs("lbframe", case)
        hp = median([r.rate for r in hp_runs])
        lb = median([r.rate for r in lb_runs])
        hp_eff = median([r.efficiency for r in hp_runs])
        lb_eff = median([r.efficiency for r in lb_runs])
        raw, eff = ratio(lb, hp), ratio(lb_eff, hp_eff)
        judged = eff if use_eff else raw
        # The targets are the tcp path's; the other paths are reported, not judged.
        judgement = f"{target_text}: {verdict(judged, target)}" if args.mode == "tcp" else "—"
        lines.append(f"| {title} | {fmt(hp, digits)}{count_note('haproxy', case)} | "
                     f"{fmt(lb, digits)}{count_note('lbframe', case)} | {fmt(raw, 2, '×')} | "
                     f"{fmt(eff, 2, '×')} | {judgement} |")

    if "keepalive" in cases:
        rate_row("keepalive", f"keep-alive, 100 B responses, {args.clients} clients: req/s", 0,
                 f"efficiency ≥ {TARGET_KEEPALIVE_EFF}×", TARGET_KEEPALIVE_EFF, True)
        for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
            hp = median([getattr(r, key) for r in runs("haproxy", "keepalive")])
            lb = median([getattr(r, key) for r in runs("lbframe", "keepalive")])
            lines.append(f"| keep-alive latency {label} (ms, lower is better) | {fmt(hp, 2)} | {fmt(lb, 2)} | "
                         f"{fmt(ratio(lb, hp), 2, '×')} | — | — |")
    if "close" in cases:
        rate_row("close", f"`Connection: close`, {args.clients} clients: connections/s", 0,
                 f"efficiency ≥ {TARGET_CLOSE_EFF}×", TARGET_CLOSE_EFF, True)
    if "bulk" in cases:
        rate_row("bulk", f"64 MiB body, {args.bulk_clients} clients: MiB/s", 0,
                 f"raw ≥ {TARGET_BULK_RAW}×", TARGET_BULK_RAW, False)
    if "rss" in cases:
        rss_runs = [r for r in results if r.case in ("keepalive", "close")]
        hp = max((r.hwm_mib for r in rss_runs if r.balancer == "haproxy"), default=None)
        lb = max((r.hwm_mib for r in rss_runs if r.balancer == "lbframe"), default=None)
        judgement = (f"lbframe ≤ {TARGET_RSS_MIB:g} MiB: "
                     f"{verdict(lb, TARGET_RSS_MIB, higher_is_better=False)}"
                     if args.mode == "tcp" else "—")
        lines.append(f"| peak RSS (VmHWM) at {args.clients} clients: MiB | {fmt(hp, 1)} | {fmt(lb, 1)} | "
                     f"{fmt(ratio(lb, hp), 2, '×')} | — | {judgement} |")

    if "idle" in cases and idle_results:
        n = args.idle_connections
        got = {b: [r for r in idle_results if r.balancer == b] for b in BALANCERS}
        hp = median([r.rss_mib for r in got["haproxy"]])
        lb = median([r.rss_mib for r in got["lbframe"]])
        lines.append(f"| {n:,} idle keep-alive client connections: RSS MiB | {fmt(hp, 1)} | "
                     f"{fmt(lb, 1)} | {fmt(ratio(lb, hp), 2, '×')} | — | lbframe ≤ "
                     f"{TARGET_IDLE_RSS_MIB:g} MiB: "
                     f"{verdict(lb, TARGET_IDLE_RSS_MIB, higher_is_better=False)} |")
        hp = median([r.per_connection_kib for r in got["haproxy"]])
        lb = median([r.per_connection_kib for r in got["lbframe"]])
        lines.append(f"| … per idle connection (RSS growth / connections): KiB | {fmt(hp, 2)} | "
                     f"{fmt(lb, 2)} | {fmt(ratio(lb, hp), 2, '×')} | — | — |")
        held = min((r.connections for r in got["haproxy"]), default=n)
        if held < n:
            notes.append(f"HAProxy held {held:,} idle connections, not {n:,}: it wants two "
                         f"descriptors per maxconn and the descriptor limit here is "
                         f"{idle_fds():,}; compare the per-connection figures")
        for r in idle_results:
            if r.connections < (held if r.balancer == "haproxy" else n) or r.errors or r.closed:
                notes.append(f"{r.balancer} idle run {r.run + 1}: {r.connections:,} of {n:,} "
                             f"connections held, {r.errors} errors, {r.closed} closed while idle")

    lines += [
        "",
        "Raw ratio: lbframe's figure over HAProxy's. Efficiency ratio: (work per CPU second of "
        "the balancer process) for lbframe over HAProxy — wrk, nginx and the balancer share "
        f"{os.cpu_count()} CPUs, so the raw figures also measure who wins the CPU. Peak RSS is the "
        "highest VmHWM of any fresh balancer process after a 50-client case (keep-alive, close).",
    ]

    # warnings worth reading before the numbers
    for name, why in failures.items():
        if why != LEFT_OUT:
            done = "measured no further" if any(r.balancer == name for r in results) else "not measured"
            notes.append(f"**{name} was {done}**: {why.splitlines()[0]}")
    for name, case, run, why in run_errors:
        notes.append(f"**{name} {case} run {run + 1} failed** (the other runs count): {why.splitlines()[0]}")
    for r in results:
        if r.errors:
            notes.append(f"{r.balancer} {r.case} run {r.run + 1}: {r.errors} errors ({r.error_detail})")
        if r.duration and r.loadgen_cpu / r.duration >= 0.9:
            notes.append(f"{r.balancer} {r.case} run {r.run + 1}: the load generator used "
                         f"{r.loadgen_cpu / r.duration:.0%} of a CPU — the raw figure is partly bounded by it")
        if r.duration and r.others_cpu / r.duration >= 0.1:
            notes.append(f"{r.balancer} {r.case} run {r.run + 1}: other processes on this machine used "
                         f"{r.others_cpu / r.duration:.0%} of a CPU during the run — its figures are disturbed")
        if r.duration and r.cpu / r.duration >= 0.95:
            notes.append(f"{r.balancer} {r.case} run {r.run + 1}: the balancer used "
                         f"{r.cpu / r.duration:.0%} of a CPU (saturated)")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]

    lines += [
        "",
        "## Per run",
        "",
        "| balancer | case | run | figure | balancer CPU s | balancer CPU % | work per CPU s | "
        "VmHWM MiB | load generator CPU % | nginx CPU % | other processes CPU % | machine busy % | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    unit = {"keepalive": "req/s", "close": "conn/s", "bulk": "MiB/s"}
    for r in idle_results or ():
        lines.append(f"| {r.balancer} | idle | {r.run + 1} | {r.connections:,} connections: RSS "
                     f"{r.rss_before_mib:.1f} → {r.rss_mib:.1f} MiB | — | — | — | — | — | — | — | — "
                     f"| {r.errors} |")
    for r in sorted(results, key=lambda r: (LOAD_CASES.index(r.case), r.balancer, r.run)):
        dur = r.duration or 1
        lines.append(
            f"| {r.balancer} | {r.case} | {r.run + 1} | {fmt(r.rate)} {unit[r.case]} | {r.cpu:.2f} | "
            f"{r.cpu / dur:.0%} | {fmt(r.efficiency)} | {r.hwm_mib:.1f} | {r.loadgen_cpu / dur:.0%} | "
            f"{r.nginx_cpu / dur:.0%} | {r.others_cpu / dur:.0%} | {r.machine_busy:.0%} | {r.errors} |")

    lines += ["", "## Set-up", ""]
    for key in ("haproxy", "nginx", "wrk", "python", "kernel", "lbframe command"):
        lines.append(f"- {key}: {versions.get(key, '?')}")
    lines.append("- backend: one nginx, `worker_processes 1`, two listen ports = members a and b; "
                 "`/small` is a 100-byte `return 200`, `/big` a 64 MiB static file")
    lines.append(f"- HAProxy: `mode {args.mode}`, `nbthread {args.workers}`, `balance roundrobin`, two servers, "
                 "no tune/splice options")
    lines.append(f"- load: wrk `-t1 -c{args.clients}` (`--latency`; `-H 'Connection: close'` for close); "
                 f"bulk: bench/bulk_client.py, {args.bulk_clients} keep-alive connections, splice to /dev/null")

    failed = [(f"Why {name} was not measured further", why) for name, why in failures.items()
              if why != LEFT_OUT]
    failed += [(f"Why {name} {case} run {run + 1} failed", why) for name, case, run, why in run_errors]
    for title, why in failed:
        lines += ["", f"## {title}", "", "```", why.strip(), "```"]
    if failed:
        lines += ["", "(`bench/run --keep-tmp` keeps the generated configs and logs.)"]
    return "\n".join(lines) + "\n"


def tool_versions(args) -> dict[str, str]:
    def first_line(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not found"
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "haproxy": first_line(["haproxy", "-v"]),
        "nginx": first_line(["nginx", "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "cpu": cpu,
        "lbframe command": f"`{args.lbframe_cmd}` (cwd {Path(args.lbframe_cwd).resolve()})",
    }


# ---------------------------------------------------------------------------
# main


def parse_seconds(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*(s|m)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected whole seconds like 10 or 10s or 1m, not {text!r}")
    value = int(m.group(1)) * (60 if m.group(2) == "m" else 1)
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="Compare lbframe with HAProxy (tcp mode) in front of the same nginx.",
        epilog="Exit status: 0 all measured; 2 HAProxy measured but lbframe not; 1 harness failure.")
    p.add_argument("--duration", type=parse_seconds, default=None,
                   help="measured seconds per run (default 10s)")
    p.add_argument("--runs", type=int, default=None, help="runs per case and balancer (default 3)")
    p.add_argument("--warmup", type=parse_seconds, default=None,
                   help="unmeasured load before each run, on the same fresh process (default 1s, 0 = none)")
    p.add_argument("--quick", action="store_true", help="smoke test: 2s, 1 run (under a minute)")
    p.add_argument("--cases", default=",".join(ALL_CASES),
                   help=f"comma-separated subset of {','.join(ALL_CASES)} (default all)")
    p.add_argument("--balancers", default=",".join(BALANCERS),
                   help="comma-separated subset of lbframe,haproxy (default both)")
    p.add_argument("--lbframe-cmd", default=os.environ.get("LBFRAME_CMD") or default_lbframe_cmd(),
                   help="command that runs lbframe in the foreground; placeholders {config} (required), "
                        "{port}, {python}, {twistd}. Default: $LBFRAME_CMD or "
                        f"'{default_lbframe_cmd()}'")
    p.add_argument("--lbframe-cwd", default=str(REPO_ROOT),
                   help="working directory for lbframe (default: the repository root)")
    p.add_argument("--startup-timeout", type=float, default=20.0,
                   help="seconds a balancer may take to accept and relay (default 20)")
    p.add_argument("--clients", type=int, default=50, help="wrk connections (default 50)")
    p.add_argument("--bulk-clients", type=int, default=4, help="bulk connections (default 4)")
    p.add_argument("--idle-connections", type=int, default=IDLE_CONNECTIONS,
                   help=f"idle case: keep-alive connections held (default {IDLE_CONNECTIONS})")
    p.add_argument("--mode", choices=("tcp", "http", "https", "udp"), default="tcp",
                   help="tcp: L4 relay (HAProxy mode tcp, lbframe protocol tcp); http: L7 "
                        "(HAProxy mode http, lbframe protocol http), each request balanced; "
                        "https: http with TLS terminated by the balancer (close = handshakes/s); "
                        "udp: lbframe protocol udp against nginx's stream module (bench/udp_bench.py)")
    p.add_argument("--key", choices=("rsa", "ec"), default="ec",
                   help="--mode https: RSA 2048 or ECDSA P-256 certificate (default ec)")
    p.add_argument("--output", default=None, help="markdown report path "
                   "(default bench/results/latest.md, latest-http.md for --mode http)")
    p.add_argument("--workers", type=int, default=1,
                   help="lbframe [lbframe] workers = N, and HAProxy nbthread N (default 1)")
    p.add_argument("--loadgen-cpus", default=None,
                   help="pin the load generator with taskset -c CPUS (e.g. 3 on a 4-core "
                        "machine running --workers 2 on 0-1)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (configs, logs)")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    if args.loadgen_cpus:
        LOADGEN_PREFIX[:] = ["taskset", "-c", args.loadgen_cpus]
    if args.output is None:
        args.output = str(DEFAULT_OUTPUT if args.mode == "tcp"
                          else DEFAULT_OUTPUT.with_name(f"latest-{args.mode}.md"
                                                        if args.mode == "http" else
                                                        f"latest-https-{args.key}.md"))
    if args.duration is None:
        args.duration = 2 if args.quick else 10
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.warmup is None:
        args.warmup = 1
    if args.duration < 1 or args.runs < 1:
        p.error("--duration and --runs must be at least 1")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if cases == ["all"]:
        cases = list(ALL_CASES)
    bad = [c for c in cases if c not in ALL_CASES]
    if bad or not cases:
        p.error(f"unknown case(s) {bad}; choose from {','.join(ALL_CASES)}")
    args.case_list = [c for c in ALL_CASES if c in cases]
    if args.mode == "tcp" and "idle" in args.case_list:
        # Each idle tcp client holds a member connection too (nginx's
        # worker_connections bound that); the case is about the http path.
        args.case_list.remove("idle")
    balancers = [b.strip() for b in args.balancers.split(",") if b.strip()]
    if not balancers or any(b not in BALANCERS for b in balancers):
        p.error("--balancers takes lbframe and/or haproxy")
    args.balancer_list = balancers
    return args


def check_tools(args) -> None:
    missing = [t for t in ("nginx", "wrk") + (("haproxy",) if "haproxy" in args.balancer_list else ())
               if not (shutil.which(t) or Path("/usr/sbin", t).exists())]
    if missing:
        raise BenchError(f"missing: {', '.join(missing)} — apt-get install haproxy nginx-light wrk")


def clean_up(procs, tmp: str, keep_tmp: bool) -> None:
    """The end of a run, however it ends: signals ignored so that the
    clean-up finishes, every process stopped, the scratch folder removed
    (or kept and named, with ``--keep-tmp``)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.alarm(0)
    procs.stop_all()
    if keep_tmp:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--mode=udp" in argv or any(a == "--mode" and b == "udp" for a, b in zip(argv, argv[1:])):
        import udp_bench  # lbframe against nginx's stream module: its own harness
        return udp_bench.main(argv)
    args = parse_args(argv)
    # SIGINT explicitly too: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    started = datetime.datetime.now().astimezone()
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="lbframe-bench-"))
    failures: dict[str, str] = {}  # balancer -> why it was dropped
    run_errors: list[tuple[str, str, int, str]] = []  # single failed runs
    consecutive = dict.fromkeys(BALANCERS, 0)
    results: list[RunResult] = []
    try:
        check_tools(args)
        versions = tool_versions(args)
        load_cases = [c for c in LOAD_CASES if c in args.case_list]
        if "rss" in args.case_list and not {"keepalive", "close"} & set(load_cases):
            load_cases.insert(0, "keepalive")  # RSS is read from the 50-client runs
        shown_cases = sorted(set(args.case_list) | set(load_cases), key=ALL_CASES.index)

        log(f"temporary directory {tmp}")
        if args.mode == "https":
            global TLS_PEM
            TLS_PEM = make_certificate(tmp / "bench.pem", args.key)
            if "bulk" in load_cases:
                load_cases.remove("bulk")  # bulk_client speaks plain http only
                log("https: the bulk case is left out")
        backend = start_nginx(procs, tmp)
        log(f"nginx up on {HOST}:{backend.ports[0]} and {HOST}:{backend.ports[1]}")
        starters = {name: BalancerStarter(name, procs, tmp, backend, args) for name in args.balancer_list}
        for name in BALANCERS:
            if name not in args.balancer_list:
                failures[name] = LEFT_OUT

        for case in load_cases:
            for run in range(args.runs):
                order = BALANCERS if run % 2 == 0 else tuple(reversed(BALANCERS))
                for name in order:
                    if name in failures:
                        continue
                    log(f"{case} run {run + 1}/{args.runs}: {name} …")
                    try:
                        r = one_run(starters[name], backend, case, run, args, tmp)
                    except StartError as exc:
                        # Never worked (e.g. lbframe not written yet) or keeps failing: drop it.
                        # Otherwise (a crash, a half-saved file) lose only this run.
                        consecutive[name] += 1
                        if consecutive[name] >= 3 or not any(r.balancer == name for r in results):
                            failures[name] = str(exc)
                            log(f"{name} FAILED, not measured further: {exc}")
                        else:
                            run_errors.append((name, case, run, str(exc)))
                            log(f"{name} {case} run {run + 1} FAILED: {exc}")
                        continue
                    consecutive[name] = 0
                    results.append(r)
                    extra = f", p99 {r.p99_ms:.2f} ms" if r.p99_ms is not None else ""
                    log(f"  {r.rate:,.0f} {'MiB/s' if case == 'bulk' else '/s'}{extra}, "
                        f"balancer CPU {r.cpu:.2f}s ({r.cpu / (r.duration or 1):.0%}), "
                        f"VmHWM {r.hwm_mib:.1f} MiB, errors {r.errors}")
        idle_results = []
        if "idle" in args.case_list:
            raise_fd_limit(3 * args.idle_connections)
            for run in range(args.runs):
                order = BALANCERS if run % 2 == 0 else tuple(reversed(BALANCERS))
                for name in order:
                    if name in failures:
                        continue
                    log(f"idle run {run + 1}/{args.runs}: {name} …")
                    try:
                        r = idle_run(starters[name], run, args)
                    except (StartError, BenchError) as exc:
                        run_errors.append((name, "idle", run, str(exc)))
                        log(f"{name} idle run {run + 1} FAILED: {exc}")
                        continue
                    idle_results.append(r)
                    log(f"  {r.connections:,} idle connections: RSS {r.rss_before_mib:.1f} → "
                        f"{r.rss_mib:.1f} MiB, errors {r.errors}, closed {r.closed}")
        if backend.proc.poll() is not None:
            raise BenchError("nginx exited during the benchmark")

        report = build_report(results, args, shown_cases, failures, run_errors, started, versions,
                              idle_results)
        print(report)
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        log(f"written to {out}")
        lost = {name for name, *_ in run_errors} | {n for n, why in failures.items() if why != LEFT_OUT}
        if "haproxy" in lost:
            return 1
        return 2 if "lbframe" in lost else 0
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    finally:
        clean_up(procs, tmp, args.keep_tmp)


if __name__ == "__main__":
    sys.exit(main())
