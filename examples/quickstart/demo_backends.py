"""The quickstart's demo backends: one small HTTP server per member of the
pool ``web``, each in its own process, so that you can stop one and watch
lbframe take it out (and start it again and watch it come back).

    python examples/quickstart/demo_backends.py [--config examples/quickstart/site.ini]

reads the members' addresses from the site's ``site.ini`` (so moved ports
move them too), starts them, prints each one's process id, and runs until
interrupted (then stops them all). Each answers ``hello from backend NAME``.
``--serve NAME HOST PORT`` runs a single one in the foreground (what each
process is; also how to start a stopped one again).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
POOL = "web"


def serve(name: str, host: str, port: int) -> None:
    """One backend, until SIGTERM or SIGINT."""

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"hello from backend {name}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        address_family = __import__("socket").AF_INET6 if ":" in host else \
            __import__("socket").AF_INET
        daemon_threads = True

    httpd = Server((host, port), Hello)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


def members(config: str) -> list[tuple[str, str, int]]:
    from lbframe.config import load_site

    site = load_site(config)
    return [(m.name, m.address.host, m.address.port) for m in site.pools[POOL].members]


def wait_for(backends: list[tuple[str, str, int]], seconds: float) -> int:
    """Wait until every backend accepts a connection (``run`` starts lbframe
    only then, so that its first checks do not fail)."""
    import socket

    deadline = time.monotonic() + seconds
    for name, host, port in backends:
        while True:
            try:
                socket.create_connection((host, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    print(f"demo backend {name} does not answer on {host}:{port}",
                          file=sys.stderr)
                    return 1
                time.sleep(0.05)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Start the quickstart's demo backends, a "
                                            "process each.")
    p.add_argument("--config", default=os.path.join(HERE, "site.ini"),
                   help="the site.ini whose pool 'web' lists them (default: the quickstart's)")
    p.add_argument("--serve", nargs=3, metavar=("NAME", "HOST", "PORT"),
                   help="run one backend in the foreground")
    p.add_argument("--wait", type=float, metavar="SECONDS",
                   help="only wait until every backend answers (at most SECONDS): "
                        "exit 0 when they do, 1 if not")
    args = p.parse_args(argv)
    if args.wait is not None:
        return wait_for(members(args.config), args.wait)
    if args.serve:
        name, host, port = args.serve
        serve(name, host, int(port))
        return 0
    procs = []
    for name, host, port in members(args.config):
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", name,
                                 host, str(port)])
        procs.append(proc)
        print(f"demo backend {name} on {host}:{port}, pid {proc.pid} "
              f"(stop it: kill {proc.pid})", flush=True)
    print(f"to start a stopped one again: {sys.executable} {os.path.abspath(__file__)} "
          "--serve NAME HOST PORT", flush=True)

    def stop(*_):
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)
    while True:
        # Stopped ones stay stopped (that is the point); run until told to stop.
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
