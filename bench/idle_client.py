#!/usr/bin/env python3
"""Open N keep-alive connections to a balancer, one request on each, then hold them idle.

Used by ``bench/run --cases idle``: once every connection has had its answer
the client prints ``READY {json}`` and keeps the connections open until its
standard input closes (or a line arrives), so that the harness can read the
balancer's memory with N idle client connections. 127.0.0.1 only; every wait
is bounded (``--timeout``).
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import ssl
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--path", default="/small")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--batch", type=int, default=200, help="connections opened at a time")
    args = p.parse_args()
    request = (f"GET {args.path} HTTP/1.1\r\nHost: bench\r\n\r\n").encode()
    context = None
    if args.tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the bench's own self-signed certificate
    deadline = time.monotonic() + args.timeout
    held: list = []
    errors = 0
    sel = selectors.DefaultSelector()
    pending = 0
    # Batches of connections: each connects, sends its request and reads a
    # whole answer (the 100-byte body ends it) before the next batch.
    while len(held) + errors < args.connections and time.monotonic() < deadline:
        batch = min(args.batch, args.connections - len(held) - errors)
        for _ in range(batch):
            try:
                s = socket.create_connection(("127.0.0.1", args.port), timeout=10)
                if context is not None:
                    s = context.wrap_socket(s)
                s.sendall(request)
                s.setblocking(False)
            except OSError:
                errors += 1
                continue
            sel.register(s, selectors.EVENT_READ, [b""])
            pending += 1
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1.0):
                s, buf = key.fileobj, key.data
                try:
                    data = s.recv(65536)
                except (BlockingIOError, ssl.SSLWantReadError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(s)
                    s.close()
                    errors += 1
                    pending -= 1
                    continue
                buf[0] += data
                head, sep, body = buf[0].partition(b"\r\n\r\n")
                if sep and len(body) >= 100:
                    sel.unregister(s)
                    held.append(s)
                    pending -= 1
    print("READY " + json.dumps({"connections": len(held), "errors": errors}), flush=True)
    end = time.monotonic() + args.timeout
    sel2 = selectors.DefaultSelector()
    sel2.register(sys.stdin, selectors.EVENT_READ)
    sel2.select(timeout=max(0.0, end - time.monotonic()))
    # How many the balancer closed meanwhile (timeout_keepalive must exceed the wait).
    closed = 0
    for s in held:
        try:
            if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                closed += 1
        except (BlockingIOError, ssl.SSLWantReadError):
            pass
        except OSError:
            closed += 1
        s.close()
    print("BENCHJSON " + json.dumps({"connections": len(held), "errors": errors,
                                     "closed_while_idle": closed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
