#!/usr/bin/env python3
"""Bulk-transfer load generator for bench/bench.py (the "64 MiB body" case).

Keeps N keep-alive HTTP/1.1 connections to 127.0.0.1:PORT, each fetching PATH
again and again for DURATION seconds, and prints one JSON line:
``BENCHJSON {"bytes": ..., "responses": ..., "duration_us": ..., "errors": ...}``.

Why not wrk: wrk reads with an 8 KiB buffer, so at ~1 GiB/s it spends a whole
core in read(2) and becomes the bottleneck on a 2-core machine. This client
moves the body from the socket to /dev/null with splice(2) through a 1 MiB
pipe (falling back to recv_into a 1 MiB buffer), so the bytes never enter
user space and the client costs as little CPU as a reader can.

Bounded: the main thread stops the count at DURATION and then shuts every
socket down, so the client always ends by itself. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import threading
import time

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ exists only from Python 3.10 on some builds
CHUNK = 1 << 20
HOST = "127.0.0.1"


class Worker(threading.Thread):
    def __init__(self, port: int, path: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "User-Agent: lbframe-bench\r\n\r\n"
        ).encode("ascii")
        self.stop = stop
        self.bytes = 0
        self.responses = 0
        self.errors = 0
        self.error_text: str | None = None
        self.sock: socket.socket | None = None
        self.method = "splice"
        self.splice_ok = False

    # -- plumbing ---------------------------------------------------------
    def _open_sink(self) -> None:
        self.pipe_r, self.pipe_w = os.pipe()
        self.pipe_size = 65536
        try:
            fcntl.fcntl(self.pipe_w, F_SETPIPE_SZ, CHUNK)
            self.pipe_size = CHUNK
        except OSError:
            pass
        self.null = os.open(os.devnull, os.O_WRONLY)
        self.buf = memoryview(bytearray(CHUNK))
        if not hasattr(os, "splice"):
            self.method = "recv_into"

    def _close_sink(self) -> None:
        for fd in (self.pipe_r, self.pipe_w, self.null):
            os.close(fd)

    def _read_body(self, sock: socket.socket, remaining: int) -> None:
        fd = sock.fileno()
        while remaining > 0 and not self.stop.is_set():
            if self.method == "splice":
                try:
                    n = os.splice(fd, self.pipe_w, min(self.pipe_size, remaining))
                except OSError as exc:  # e.g. EINVAL on an odd kernel: fall back
                    if not self.splice_ok:
                        self.method = "recv_into"
                        continue
                    raise ConnectionError(str(exc)) from exc
                self.splice_ok = True
                if n:
                    drained = 0
                    while drained < n:
                        drained += os.splice(self.pipe_r, self.null, n - drained)
            else:
                n = sock.recv_into(self.buf, min(CHUNK, remaining))
            if not n:
                raise ConnectionError("connection closed in the middle of a body")
            remaining -= n
            self.bytes += n

    def _read_head(self, sock: socket.socket) -> tuple[int, int, bytes]:
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed before a response head")
            self.bytes += len(data)
            head += data
            if len(head) > 65536:
                raise ConnectionError("response head too large")
        head, _, rest = head.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = -1
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length < 0:
            raise ConnectionError("response without Content-Length")
        return status, length, rest

    # -- main loop --------------------------------------------------------
    def run(self) -> None:
        self._open_sink()
        try:
            while not self.stop.is_set():
                try:
                    if self.sock is None:
                        self.sock = socket.create_connection((HOST, self.port), timeout=5)
                        self.sock.settimeout(None)  # splice needs a blocking socket
                    self.sock.sendall(self.request)
                    status, length, rest = self._read_head(self.sock)
                    self._read_body(self.sock, length - len(rest))
                    if self.stop.is_set():
                        break
                    if status != 200:
                        raise ConnectionError(f"status {status}")
                    self.responses += 1
                except (OSError, ValueError, IndexError) as exc:
                    if self.stop.is_set():
                        break
                    self.errors += 1
                    self.error_text = f"{type(exc).__name__}: {exc}"
                    if self.sock is not None:
                        self.sock.close()
                        self.sock = None
                    time.sleep(0.01)
        finally:
            self._close_sink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/big")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()

    stop = threading.Event()
    workers = [Worker(args.port, args.path, stop) for _ in range(args.connections)]
    start = time.monotonic()
    for worker in workers:
        worker.start()
    time.sleep(args.duration)
    stop.set()
    elapsed = time.monotonic() - start
    total = sum(w.bytes for w in workers)  # counted at the stop instant
    for worker in workers:
        if worker.sock is not None:
            try:
                worker.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    for worker in workers:
        worker.join(timeout=5)
    result = {
        "bytes": total,
        "responses": sum(w.responses for w in workers),
        "duration_us": round(elapsed * 1e6),
        "errors": sum(w.errors for w in workers),
        "last_error": next((w.error_text for w in workers if w.error_text), None),
        "method": workers[0].method if workers else None,
    }
    print("BENCHJSON " + json.dumps(result), flush=True)
    os._exit(0)  # do not wait for a worker stuck in a syscall


if __name__ == "__main__":
    main()
