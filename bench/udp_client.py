#!/usr/bin/env python3
"""Closed-loop UDP request/response load: ``--clients`` sockets, each with
one request outstanding, for ``--duration`` seconds; prints one
``BENCHJSON {...}`` line (requests, lost, duration_us, latency_us p50/p99).

Each client socket keeps its source port, so each is one flow through the
balancer. A request unanswered after ``--timeout`` is counted lost and
sent again. Standard library only (epoll).
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--timeout", type=float, default=1.0)
    args = p.parse_args()
    payload = b"q" * args.size
    target = (args.host, args.port)
    ep = select.epoll()
    socks = {}
    sent_at = {}
    for _ in range(args.clients):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect(target)  # replies must come from the VIP itself
        socks[s.fileno()] = s
        ep.register(s.fileno(), select.EPOLLIN)
    samples: list[float] = []
    lost = errors = 0
    start = time.monotonic()
    end = start + args.duration
    now = start
    for fd, s in socks.items():
        s.send(payload)
        sent_at[fd] = now
    next_sweep = start + args.timeout / 4
    while now < end:
        events = ep.poll(0.05)
        now = time.monotonic()
        for fd, _ in events:
            s = socks[fd]
            while True:
                try:
                    s.recv(65536)
                except BlockingIOError:
                    break
                except OSError:
                    errors += 1
                    break
                samples.append(now - sent_at[fd])
                sent_at[fd] = now
                try:
                    s.send(payload)
                except OSError:
                    errors += 1
        if now >= next_sweep:
            next_sweep = now + args.timeout / 4
            for fd, t in sent_at.items():
                if now - t > args.timeout:
                    lost += 1
                    sent_at[fd] = now
                    try:
                        socks[fd].send(payload)
                    except OSError:
                        errors += 1
    duration = time.monotonic() - start
    samples.sort()

    def pct(q):
        return samples[min(len(samples) - 1, int(q * len(samples)))] * 1e6 if samples else 0.0

    print("BENCHJSON " + json.dumps({
        "requests": len(samples), "lost": lost, "errors": errors,
        "duration_us": duration * 1e6,
        "latency_us": {"p50": pct(0.50), "p99": pct(0.99)},
    }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
