"""Refusals counted by reason on a running site (the page's and /metrics'
``refused`` by reason): a bad request, a source over its limit, the sorry
page, a queue that timed out, no member at all."""

from __future__ import annotations

import os
import socket
import time

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread

from tests.helpers import free_port
from tests.test_site import ReloadCase


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, read until the peer closes (at most 5 s)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


class RefusalReasonTests(ReloadCase):
    timeout = 60

    def reasons(self, svc, virtual: str) -> dict:
        v = svc.runtime.virtuals[virtual]
        return {k: n for k, n in v.refusals.items() if n}

    @defer.inlineCallbacks
    def wait_for(self, predicate):
        deadline = time.monotonic() + 10
        while not predicate():
            self.assertLess(time.monotonic(), deadline)
            yield task.deferLater(reactor, 0.02, lambda: None)

    @defer.inlineCallbacks
    def test_http_bad_request_and_sorry_page(self):
        port, _ = self.backend("a")
        page = os.path.join(self.dir, "sorry.html")
        with open(page, "w") as f:
            f.write("<p>back soon</p>\n")
        vport = free_port()
        svc = self.start(f"""
[virtual web]
listen = tcp:{vport}:interface=127.0.0.1
protocol = http
pool = web
sorry = page:{page}

[pool web]
member a = 127.0.0.1:{port}
""")
        answer = yield deferToThread(exchange, vport, b"GET / HTTP/1.1\r\nHost: x\r\n"
                                                       b"Content-Length: 1\r\nContent-Length: 2"
                                                       b"\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 400"), answer[:40])
        web = svc.runtime.pools["web"]
        web.set_admin(web.members["a"], "disabled")
        answer = yield deferToThread(exchange, vport, b"GET / HTTP/1.1\r\nHost: x\r\n"
                                                       b"Connection: close\r\n\r\n")
        self.assertIn(b"back soon", answer)
        self.assertEqual(self.reasons(svc, "web"), {"bad_request": 1, "sorry": 1})
        self.assertEqual(svc.runtime.virtuals["web"].refused, 2)

    @defer.inlineCallbacks
    def test_tcp_source_limit_queue_timeout_and_no_member(self):
        port, _ = self.backend("a")
        vport, gone = free_port(), free_port()
        svc = self.start(f"""
[virtual web]
listen = tcp:{vport}:interface=127.0.0.1
pool = web
max_connections_per_source = 2

[virtual gone]
listen = tcp:{gone}:interface=127.0.0.1
pool = gone

[pool web]
queue_timeout = 0.3s
member a = 127.0.0.1:{port} maxconn=1

[pool gone]
member x = 127.0.0.1:{port}
""")
        gone_pool = svc.runtime.pools["gone"]
        gone_pool.set_admin(gone_pool.members["x"], "disabled")
        yield deferToThread(exchange, gone, b"name\n")
        self.assertEqual(self.reasons(svc, "gone"), {"no_member": 1})

        # One connection holds the member (maxconn=1, the backend answers
        # only after a line); a second waits in the queue and times out; a
        # third is over max_connections_per_source.
        holder = socket.create_connection(("127.0.0.1", vport), timeout=5)
        self.addCleanup(holder.close)
        web = svc.runtime.pools["web"]
        yield self.wait_for(lambda: web.members["a"].active == 1)
        waiter = deferToThread(exchange, vport, b"")
        yield self.wait_for(lambda: len(web.queue) == 1)
        third = yield deferToThread(exchange, vport, b"")
        self.assertEqual(third, b"")
        yield waiter
        self.assertEqual(self.reasons(svc, "web"), {"queue_timeout": 1, "source_limit": 1})
        self.assertEqual(svc.runtime.virtuals["web"].max_active, 2)
