#!/usr/bin/env python3
"""The soak's load client: a paced mix of requests, every outcome recorded.

    python bench/soak_load.py PLAN.json

Run by ``bench/soak.py`` (see bench/README.md, "Soak"); standard library only.
wrk counts errors for a whole run; a soak must tell *when* each request
failed and how, to decide whether a member that was just killed explains it.
So this client records every failed request — start and end on the system's
monotonic clock (the same clock in every process on Linux), the stream, the
kind of failure, whether it was sent on a reused connection — and counts the
successful ones per second.

Streams (``PLAN["streams"]``), each a number of workers sharing a rate:

- ``http-ka`` / ``https-ka``: kept-alive connections to the http (or https)
  virtual server; a mix of GET, HEAD, POST with a Content-Length body, POST
  with a chunked body and a 256 KiB GET;
- ``http-close`` / ``https-close``: one connection per request;
- ``tcp-ka``: kept-alive connections through the tcp virtual server (so
  pinned to one member for their whole life);
- ``tcp-close``: one connection per request through the tcp virtual server.

Every answer is checked: status 200, the member's name in ``X-Member``, the
body of a small request is ``NAME URI`` for *this* request's unique URI (a
response meant for another request — a framing bug — is a ``mismatch``),
a big body has its exact length, and a ``tcp-ka`` connection keeps its member.

Workers are paced (no catch-up bursts) and every request has a deadline
(``PLAN["request_timeout"]``). A kept-alive connection the server closed
while it was idle is replaced before sending, without counting a failure;
an answer with ``Connection: close`` closes it after the answer.

Outputs (paths in the plan): ``progress`` is rewritten every second with the
counters so far; at the end ``summary`` holds the counters, per-second
counts and latency percentiles, and ``failures`` one JSON line per failed
request.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import ssl
import sys
import time

HOST = "127.0.0.1"
HEAD_LIMIT = 64 * 1024
POST_BODY = b"p" * 4096
CHUNKS = (b"c" * 1000, b"d" * 3000, b"e" * 100)

# (weight, request kind) for the http streams and for the tcp streams
HTTP_MIX = ((80, "get"), (5, "head"), (7, "post"), (4, "chunked"), (4, "big"))
TCP_MIX = ((92, "get"), (8, "big"))
REQUEST_NAMES = {"get": "GET", "head": "HEAD", "post": "POST (Content-Length body)",
                 "chunked": "POST (chunked body)", "big": "GET 256 KiB"}


class Failure(Exception):
    """A request's outcome other than a correct answer: ``kind`` and detail."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail


class Stats:
    """Counters of one stream; successes per second, failures one by one."""

    def __init__(self, name: str, seconds: int) -> None:
        self.name = name
        self.ok = 0
        self.failed = collections.Counter()
        self.per_second_ok = [0] * (seconds + 30)
        self.per_second_failed = [0] * (seconds + 30)
        self.members = collections.Counter()
        self.latencies: list[float] = []
        self.idle_closed = 0  # kept-alive connections the server closed while idle
        self.connections = 0

    def as_dict(self) -> dict:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None

        return {"ok": self.ok, "failed": dict(self.failed), "members": dict(self.members),
                "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0),
                "idle_closed": self.idle_closed, "connections": self.connections}


class Conn:
    """One client connection and what it has been used for."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = 0
        self.member: str | None = None

    def close(self) -> None:
        try:
            self.writer.transport.abort()
        except Exception:  # already gone
            pass


def build_request(kind: str, uri: str, close: bool) -> tuple[str, bytes]:
    """The method and the bytes of one request of ``kind``."""
    conn = b"Connection: close\r\n" if close else b""
    head = f"Host: soak\r\nUser-Agent: lbframe-soak\r\n".encode() + conn
    if kind == "head":
        return "HEAD", b"HEAD " + uri.encode() + b" HTTP/1.1\r\n" + head + b"\r\n"
    if kind == "post":
        return "POST", (b"POST " + uri.encode() + b" HTTP/1.1\r\n" + head
                        + f"Content-Length: {len(POST_BODY)}\r\n\r\n".encode() + POST_BODY)
    if kind == "chunked":
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in CHUNKS) + b"0\r\n\r\n"
        return "POST", (b"POST " + uri.encode() + b" HTTP/1.1\r\n" + head
                        + b"Transfer-Encoding: chunked\r\n\r\n" + body)
    if kind == "big":
        return "GET", b"GET /big?" + uri.encode() + b" HTTP/1.1\r\n" + head + b"\r\n"
    return "GET", b"GET " + uri.encode() + b" HTTP/1.1\r\n" + head + b"\r\n"


async def read_response(reader: asyncio.StreamReader, method: str
                        ) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise Failure("truncated head", f"{len(exc.partial)} bytes") from None
        raise Failure("closed, no answer") from None
    except asyncio.LimitOverrunError:
        raise Failure("head too big") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise Failure("bad status line", lines[0][:80])
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    try:
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await read_chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await reader.read()  # until close
            headers["connection"] = "close"
    except asyncio.IncompleteReadError as exc:
        raise Failure("truncated body", f"status {status}, {len(exc.partial)} bytes") from None
    return status, headers, body


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class Worker:
    """One paced client: a connection (kept or not) and a request mix."""

    def __init__(self, load: "Load", stream: dict, index: int, rate: float) -> None:
        self.load = load
        self.stats: Stats = load.stats[stream["name"]]
        self.name = f"{stream['name']}#{index}"
        self.port = stream["port"]
        self.tls = stream.get("tls", False)
        self.keepalive = stream.get("keepalive", True)
        self.pinned = stream.get("pinned", False)
        self.mix = TCP_MIX if self.pinned or stream["name"].startswith("tcp") else HTTP_MIX
        self.interval = 1.0 / rate
        self.conn: Conn | None = None
        self.seq = 0
        self.rng = random.Random(self.name)

    def pick(self) -> str:
        total = sum(w for w, _ in self.mix)
        x = self.rng.uniform(0, total)
        for weight, kind in self.mix:
            x -= weight
            if x <= 0:
                return kind
        return self.mix[-1][1]

    async def run(self, end: float) -> None:
        next_at = time.monotonic() + self.rng.uniform(0, self.interval)
        try:
            while True:
                now = time.monotonic()
                if next_at >= end:
                    return
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                next_at = max(next_at + self.interval, time.monotonic() - self.interval)
                await self.one()
        finally:
            if self.conn:
                self.conn.close()

    async def connect(self) -> Conn:
        context = self.load.tls_context if self.tls else None
        try:
            reader, writer = await asyncio.open_connection(
                HOST, self.port, ssl=context, server_hostname="soak" if context else None,
                limit=HEAD_LIMIT)
        except ConnectionRefusedError:
            raise Failure("connect refused") from None
        except ssl.SSLError as exc:
            raise Failure("tls handshake", exc.reason or str(exc)) from None
        except OSError as exc:
            raise Failure("connect error", exc.strerror or str(exc)) from None
        self.stats.connections += 1
        return Conn(reader, writer)

    async def one(self) -> None:
        self.seq += 1
        kind = self.pick()
        uri = f"/s/{self.name.replace('#', '-')}/{self.seq}"
        method, data = build_request(kind, uri, close=not self.keepalive)
        if self.conn is not None and self.conn.reader.at_eof():
            self.stats.idle_closed += 1  # closed while idle: not a failure, reconnect
            self.conn.close()
            self.conn = None
        reused = self.conn is not None
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(self.load.request_timeout):
                if self.conn is None:
                    self.conn = await self.connect()
                conn = self.conn
                conn.writer.write(data)
                await conn.writer.drain()
                status, headers, body = await read_response(conn.reader, method)
            conn.used += 1
            self.check(kind, uri, status, headers, body)
            if not self.keepalive or headers.get("connection", "").lower() == "close":
                conn.close()
                self.conn = None
        except Failure as exc:
            self.fail(t0, exc.kind, exc.detail, reused, kind)
        except TimeoutError:
            self.fail(t0, "timeout", f"no complete answer in {self.load.request_timeout:g}s",
                      reused, kind)
        except ConnectionResetError:
            self.fail(t0, "reset", "", reused, kind)
        except (BrokenPipeError, ConnectionError) as exc:
            self.fail(t0, "send failed", type(exc).__name__, reused, kind)
        except ssl.SSLError as exc:
            self.fail(t0, "tls error", exc.reason or str(exc), reused, kind)
        except OSError as exc:
            self.fail(t0, "socket error", exc.strerror or str(exc), reused, kind)
        else:
            t1 = time.monotonic()
            self.stats.ok += 1
            self.stats.per_second_ok[self.load.second(t1)] += 1
            if len(self.stats.latencies) < 200_000:
                self.stats.latencies.append(t1 - t0)
            elif self.rng.random() < 0.01:
                self.stats.latencies[self.rng.randrange(len(self.stats.latencies))] = t1 - t0

    def check(self, kind: str, uri: str, status: int, headers: dict, body: bytes) -> None:
        """A wrong answer raises Failure; the member is counted."""
        if status != 200:
            raise Failure(f"status {status}", body[:60].decode("latin-1"))
        member = headers.get("x-member", "")
        if not member:
            raise Failure("mismatch", "no X-Member header")
        if kind == "big":
            if len(body) != self.load.big_size:
                raise Failure("mismatch", f"big body of {len(body)} bytes")
        elif kind != "head" and body != f"{member} {uri}\n".encode():
            raise Failure("mismatch", f"expected {member} {uri}, got {body[:60]!r}")
        if self.pinned:
            if self.conn.member is None:
                self.conn.member = member
            elif self.conn.member != member:
                raise Failure("mismatch", f"tcp connection moved {self.conn.member} -> {member}")
        self.stats.members[member] += 1

    def fail(self, t0: float, kind: str, detail: str, reused: bool, request: str) -> None:
        t1 = time.monotonic()
        member = self.conn.member if self.conn is not None else None
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.stats.failed[kind] += 1
        self.stats.per_second_failed[self.load.second(t1)] += 1
        self.load.failures.append({
            "t0": round(t0, 4), "t1": round(t1, 4), "stream": self.stats.name,
            "worker": self.name, "request": REQUEST_NAMES[request], "kind": kind,
            "detail": detail, "reused": reused,
            "pinned_member": member})


class Load:
    def __init__(self, plan: dict) -> None:
        self.plan = plan
        self.start = plan["start"]
        self.seconds = int(plan["seconds"])
        self.request_timeout = plan.get("request_timeout", 10.0)
        self.big_size = plan["big_size"]
        self.stats = {s["name"]: Stats(s["name"], self.seconds) for s in plan["streams"]}
        self.failures: list[dict] = []
        self.tls_context = ssl.create_default_context()
        self.tls_context.check_hostname = False
        self.tls_context.verify_mode = ssl.CERT_NONE  # the soak's own self-signed certificate

    def second(self, t: float) -> int:
        return min(max(0, int(t - self.start)), self.seconds + 29)

    def counters(self) -> dict:
        return {name: {"ok": s.ok, "failed": sum(s.failed.values())}
                for name, s in self.stats.items()}

    async def progress(self, end: float) -> None:
        while time.monotonic() < end + 60:
            write_json(self.plan["progress"], {"t": time.monotonic(), "streams": self.counters()})
            await asyncio.sleep(1.0)

    async def main(self) -> None:
        end = self.start + self.seconds
        delay = self.start - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        workers = []
        for stream in self.plan["streams"]:
            n = stream["workers"]
            workers += [Worker(self, stream, i, stream["rate"] / n) for i in range(n)]
        reporter = asyncio.ensure_future(self.progress(end))
        await asyncio.gather(*(w.run(end) for w in workers))
        reporter.cancel()
        write_json(self.plan["progress"], {"t": time.monotonic(), "streams": self.counters()})
        with open(self.plan["failures"], "w") as f:
            for record in self.failures:
                f.write(json.dumps(record) + "\n")
        write_json(self.plan["summary"], {
            "streams": {name: s.as_dict() for name, s in self.stats.items()},
            "per_second_ok": [sum(s.per_second_ok[i] for s in self.stats.values())
                              for i in range(self.seconds + 30)],
            "per_second_failed": [sum(s.per_second_failed[i] for s in self.stats.values())
                                  for i in range(self.seconds + 30)],
            "cpu_seconds": sum(os.times()[:2]),
        })


def write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def main() -> int:
    with open(sys.argv[1]) as f:
        plan = json.load(f)
    asyncio.run(Load(plan).main())
    return 0


if __name__ == "__main__":
    sys.exit(main())
