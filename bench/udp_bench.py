"""``bench/run --mode udp``: lbframe's udp path against nginx's ``stream``
UDP proxy, in front of the same UDP members, in one run.

HAProxy has no UDP, so the reference is nginx (``worker_processes 1``,
``listen … udp``, round robin over two members, ``proxy_timeout 30s`` as
lbframe's ``timeout_client``). The members are a second nginx answering
every datagram with 100 bytes (``return`` of the stream module). The load
is closed-loop request/response (``bench/udp_client.py``): ``--clients``
sockets, one 64-byte request outstanding each, so each socket is one flow
through the balancer. For each run a fresh balancer is started, checked,
warmed up and loaded; lbframe and nginx alternate (ABBA). Reported:
requests/s, p50/p99, and **datagrams per CPU second of the balancer** (a
request is two datagrams in and two out; the ratio compares like with
like). Debian: ``apt-get install nginx-light libnginx-mod-stream``.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import bench as B

UDP_CLIENT = B.BENCH_DIR / "udp_client.py"
STREAM_MODULE_PATHS = ("/usr/lib/nginx/modules/ngx_stream_module.so",
                       "/usr/share/nginx/modules/ngx_stream_module.so")
REPLY = "r" * 99  # + nginx's nothing: 99 bytes; lbframe forwards it as is
TARGET = 0.5
BALANCERS = ("lbframe", "nginx")


def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def stream_module_line() -> str:
    """``load_module …;`` when the stream module is dynamic (Debian), else ""."""
    out = subprocess.run([nginx_bin(), "-V"], capture_output=True, text=True).stderr
    if "--with-stream=dynamic" not in out and "--with-stream " in out + " ":
        return ""  # built in
    for path in STREAM_MODULE_PATHS:
        if Path(path).exists():
            return f"load_module {path};"
    raise B.BenchError("nginx has no stream module: apt-get install libnginx-mod-stream")


def udp_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((B.HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ask(port: int, timeout: float = 0.5) -> bytes | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.connect((B.HOST, port))
        s.send(b"check")
        return s.recv(65536)
    except OSError:
        return None
    finally:
        s.close()


def wait_udp(port: int, proc, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise B.StartError(f"{what} exited with status {proc.returncode}")
        if ask(port, 0.2) is not None:
            return
    raise B.StartError(f"{what} did not answer on udp {B.HOST}:{port} within {timeout:g}s")


def nginx_conf(tmp: Path, name: str, body: str) -> Path:
    folder = tmp / name
    folder.mkdir(exist_ok=True)
    os.chmod(folder, 0o755)
    conf = folder / "nginx.conf"
    conf.write_text(f"""{stream_module_line()}
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log error;
events {{ worker_connections 16384; }}
stream {{
{body}
}}
""")
    return conf


def start_members(procs, tmp: Path) -> tuple:
    ports = udp_ports(2)
    body = "\n".join(f"    server {{ listen {B.HOST}:{p} udp; return \"{REPLY}\"; }}"
                     for p in ports)
    conf = nginx_conf(tmp, "members", body)
    proc = procs.start([nginx_bin(), "-c", str(conf), "-p", str(conf.parent)],
                       log=tmp / "members.log")
    for p in ports:
        wait_udp(p, proc, 10, "member nginx")
    return proc, ports


def start_balancer(name: str, procs, tmp: Path, members: list[int], args):
    port = udp_ports(1)[0]
    logf = tmp / f"{name}.log"
    if name == "nginx":
        body = f"""    upstream members {{ server {B.HOST}:{members[0]}; server {B.HOST}:{members[1]}; }}
    server {{ listen {B.HOST}:{port} udp; proxy_pass members; proxy_timeout 30s; }}"""
        conf = nginx_conf(tmp, "balancer", body)
        proc = procs.start([nginx_bin(), "-c", str(conf), "-p", str(conf.parent)], log=logf)
    else:
        site = tmp / "site.ini"
        site.write_text(f"""[lbframe]
; the flows of a run would otherwise be waited for (until idle) at its stop
stop_grace = 1s

[virtual bench]
listen = udp:{port}:interface={B.HOST}
protocol = udp
pool = members
timeout_client = 30s

[pool members]
member a = {B.HOST}:{members[0]}
member b = {B.HOST}:{members[1]}
""")
        cmd = args.lbframe_cmd.format(config=site, port=port, python=sys.executable,
                                      twistd=" ".join(B.twistd_argv()))
        import shlex
        cwd = Path(args.lbframe_cwd)
        env = dict(os.environ)  # lbframe from that folder, as bench.py does
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), env.get("PYTHONPATH")]))
        proc = procs.start(shlex.split(cmd), log=logf, cwd=cwd, env=env)
    wait_udp(port, proc, args.startup_timeout, name)
    return proc, port, logf


def run_client(procs, tmp: Path, port: int, seconds: float, clients: int) -> dict:
    argv = [sys.executable, str(UDP_CLIENT), "--port", str(port), "--clients", str(clients),
            "--duration", str(seconds)]
    return B._run_loadgen(procs, tmp, argv, int(seconds))


def one_run(name: str, procs, tmp: Path, members, member_proc, args) -> dict:
    proc, port, logf = start_balancer(name, procs, tmp, members, args)
    try:
        if args.warmup:
            run_client(procs, tmp, port, args.warmup, args.udp_clients)
        cpu0 = B.cpu_seconds(proc.pid)
        mem0 = B.cpu_seconds(member_proc.pid)
        gen0 = B.children_cpu()
        raw = run_client(procs, tmp, port, args.duration, args.udp_clients)
        cpu = B.cpu_seconds(proc.pid) - cpu0
        member_cpu = B.cpu_seconds(member_proc.pid) - mem0
        gen = B.children_cpu() - gen0
        hwm = B.peak_rss_mib(proc.pid)
        if proc.poll() is not None:
            raise B.StartError(f"{name} died during the load\n{B.tail(logf)}")
    finally:
        procs.stop(proc)
    duration = raw["duration_us"] / 1e6
    requests = raw["requests"]
    return {
        "balancer": name, "requests": requests, "duration": duration,
        "rate": requests / duration if duration else 0.0,
        "cpu": cpu, "dgrams_per_cpu_s": (4 * requests / cpu) if cpu > 0 else None,
        "p50_ms": raw["latency_us"]["p50"] / 1000, "p99_ms": raw["latency_us"]["p99"] / 1000,
        "lost": raw["lost"], "errors": raw["errors"], "hwm_mib": hwm,
        "member_cpu": member_cpu, "loadgen_cpu": gen,
    }


def report(results: list[dict], args, versions: dict) -> str:
    def med(name, key):
        return B.median([r[key] for r in results if r["balancer"] == name])

    lines = [f"# lbframe vs nginx — udp path ({datetime.date.today().isoformat()})", "",
             f"{args.runs} run(s) × {args.duration:g} s per balancer, {args.udp_clients} "
             f"client sockets (flows), 64-byte requests, 99-byte replies; medians.", "",
             "| | lbframe | nginx stream | ratio |", "| --- | --- | --- | --- |"]
    rows = (("requests/s", "rate", 0), ("datagrams per balancer CPU second", "dgrams_per_cpu_s", 0),
            ("balancer CPU s", "cpu", 2), ("p50 ms", "p50_ms", 3), ("p99 ms", "p99_ms", 3),
            ("lost (resent after 1 s)", "lost", 0), ("peak RSS MiB", "hwm_mib", 1))
    for title, key, digits in rows:
        a, b = med("lbframe", key), med("nginx", key)
        r = B.ratio(a, b)
        lines.append(f"| {title} | {B.fmt(a, digits)} | {B.fmt(b, digits)} | "
                     f"{'—' if r is None else f'{r:.2f}×'} |")
    eff_a, eff_b = med("lbframe", "dgrams_per_cpu_s"), med("nginx", "dgrams_per_cpu_s")
    verdict = "—"
    if eff_a and eff_b:
        verdict = f"{eff_a / eff_b:.2f}× ({'meets' if eff_a / eff_b >= TARGET else 'misses'} " \
                  f"the ≥ {TARGET}× target)"
    lines += ["", f"Efficiency ratio (datagrams per CPU second, lbframe / nginx): **{verdict}**.",
              "", "- nginx: `worker_processes 1`, `listen … udp`, `proxy_pass` an upstream of "
              "two servers (round robin), `proxy_timeout 30s`.",
              "- lbframe: `protocol = udp`, `udp_mode = flow`, round robin, "
              "`timeout_client = 30s`.",
              "- members: one nginx, two `listen … udp` servers answering `return` 99 bytes.",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="bench/run --mode udp")
    p.add_argument("--mode", choices=("udp",), default="udp")
    p.add_argument("--duration", type=B.parse_seconds, default=None)
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--warmup", type=B.parse_seconds, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--clients", dest="udp_clients", type=int, default=32,
                   help="client sockets (flows), one request outstanding each (default 32)")
    p.add_argument("--balancers", default=",".join(BALANCERS))
    p.add_argument("--lbframe-cmd", default=os.environ.get("LBFRAME_CMD") or B.default_lbframe_cmd())
    p.add_argument("--lbframe-cwd", default=str(B.REPO_ROOT))
    p.add_argument("--startup-timeout", type=float, default=20.0)
    p.add_argument("--output", default=str(B.DEFAULT_OUTPUT.with_name("latest-udp.md")))
    p.add_argument("--keep-tmp", action="store_true")
    args = p.parse_args(argv)
    args.duration = args.duration or (2 if args.quick else 10)
    args.runs = args.runs or (1 if args.quick else 3)
    names = [n for n in args.balancers.split(",") if n]
    if any(n not in BALANCERS for n in names):
        p.error("--balancers takes lbframe and/or nginx")
    import signal
    import tempfile
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, B._raise_interrupt)
    procs = B.Processes()
    tmp = Path(tempfile.mkdtemp(prefix="lbframe-bench-udp-"))
    os.chmod(tmp, 0o755)
    results: list[dict] = []
    try:
        versions = {"nginx": subprocess.run([nginx_bin(), "-v"], capture_output=True,
                                            text=True).stderr.strip().split("/")[-1],
                    "python": sys.version.split()[0]}
        member_proc, members = start_members(procs, tmp)
        B.log(f"members (nginx) on udp {members}")
        for run in range(args.runs):
            order = names if run % 2 == 0 else list(reversed(names))
            for name in order:
                B.log(f"udp run {run + 1}/{args.runs}: {name} …")
                r = one_run(name, procs, tmp, members, member_proc, args)
                B.log(json.dumps(r))
                results.append(r)
        text = report(results, args, versions)
        print(text)
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        B.log(f"written to {out}")
        return 0
    except (B.BenchError, B.StartError) as exc:
        B.log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        B.log("interrupted; stopping everything")
        return 130
    finally:
        B.clean_up(procs, str(tmp), args.keep_tmp)
