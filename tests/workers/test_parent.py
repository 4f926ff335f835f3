"""``workers = N`` end to end: a parent (in this process, under trial's
reactor) and real worker processes on 127.0.0.1.

Each test starts its own site (two workers, members served by this
process), so a worker's behaviour is seen from outside: the responses it
gives, ``/api/status`` and ``/metrics`` from the parent's admin server.
Every wait has a deadline; every load is bounded in count and time.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time

from twisted.internet import defer, reactor, task, threads
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from twisted.web import resource, server

from lbframe.site import make_service, reload as reload_site
from lbframe.workers.parent import ParentService

DEADLINE = 20.0


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Member(resource.Resource):
    """Answers ``member NAME``; ``/slow`` answers after ``delay`` seconds."""

    isLeaf = True

    def __init__(self, name: str, delay: float = 1.5):
        super().__init__()
        self.name, self.delay, self.hits = name, delay, 0

    def render_GET(self, request):
        self.hits += 1
        body = f"member {self.name}".encode()
        if request.path == b"/slow":
            reactor.callLater(self.delay, lambda: (request.write(body), request.finish()))
            return server.NOT_DONE_YET
        return body


def get(port: int, path: str = "/", timeout: float = 10.0) -> tuple[int, str]:
    """One request on a new connection (blocking: run it in a thread)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def tcp_roundtrip(port: int) -> str:
    """An HTTP request through a ``protocol = tcp`` virtual server."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode()


class WorkersCase(unittest.TestCase):
    timeout = 90

    members = ("a", "b")
    extra = ""

    def setUp(self):
        self.backends = {}
        self.ports = []
        for name in self.members:
            site = server.Site(Member(name))
            site.noisy = False
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
            self.ports.append(port)
            self.backends[name] = (port.getHost().port, site.resource)
        self.http_port, self.tcp_port, admin = free_port(), free_port(), free_port()
        self.admin_port = admin
        self.path = os.path.abspath(self.mktemp() + ".ini")
        self.write_site()
        self.svc = make_service(self.path, reactor)
        self.assertIsInstance(self.svc, ParentService)
        self.svc.privilegedStartService()
        self.svc.startService()
        self.addCleanup(self._stop)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        return self.until(lambda: all(s.ready for s in self.svc.workers.slots))

    sections = ""

    def write_site(self, weights=None, extra_members="", workers=2, raw_listen=None):
        raw_listen = raw_listen or f"tcp:{self.tcp_port}:interface=127.0.0.1"
        weights = weights or {}
        members = "\n".join(f"member {n} = 127.0.0.1:{p} weight={weights.get(n, 1)}"
                            for n, (p, _) in self.backends.items())
        with open(self.path, "w") as f:
            f.write(f"""
[lbframe]
workers = {workers}
admin = tcp:{self.admin_port}:interface=127.0.0.1
stop_grace = 5

[virtual web]
listen = tcp:{self.http_port}:interface=127.0.0.1
protocol = http
pool = app
{self.extra}

[virtual raw]
listen = {raw_listen}
protocol = tcp
pool = app

[pool app]
{members}
{extra_members}
{self.sections}
""")

    @defer.inlineCallbacks
    def _stop(self):
        if self.svc.running:
            yield self.svc.stopService()
        for port in self.ports:
            yield port.stopListening()

    @defer.inlineCallbacks
    def until(self, condition, deadline: float = DEADLINE, what: str = ""):
        """Poll ``condition`` (no arguments) every 50 ms until true, or fail."""
        end = time.monotonic() + deadline
        while True:
            result = condition()
            if isinstance(result, defer.Deferred):
                result = yield result
            if result:
                return result
            if time.monotonic() > end:
                self.fail(f"not within {deadline}s: {what or condition}")
            yield task.deferLater(reactor, 0.05, lambda: None)

    def fetch(self, path="/"):
        return threads.deferToThread(get, self.http_port, path)

    def admin(self, path: str):
        def call():
            status, body = get(self.admin_port, path)
            assert status == 200, (status, body)
            return body
        return threads.deferToThread(call)

    @defer.inlineCallbacks
    def status(self):
        body = yield self.admin("/api/status")
        return json.loads(body)

    def in_step(self):
        digest = self.svc.workers.state_digest()
        return all(s.state_digest == digest for s in self.svc.workers.slots)


class ServingTests(WorkersCase):

    @defer.inlineCallbacks
    def test_counters_add_up_in_status_and_metrics(self):
        """Requests served by both workers (http and tcp) are counted once
        each in the parent's /api/status and /metrics."""
        n = 30
        # Concurrent clients, so that both workers accept some.
        results = yield defer.gatherResults([self.fetch() for _ in range(n)])
        self.assertEqual([s for s, _ in results], [200] * n)
        raw = yield defer.gatherResults([threads.deferToThread(tcp_roundtrip, self.tcp_port)
                                         for _ in range(5)])
        self.assertTrue(all("member" in r for r in raw))

        def counted():
            return self.status().addCallback(
                lambda s: s["virtuals"]["web"]["requests"] == n
                and s["virtuals"]["raw"]["connections_total"] == 5 and s)

        status = yield self.until(counted, what="/api/status counting every request")
        members = status["pools"]["app"]["members"]
        total = sum(m["connections_total"] for m in members.values())
        self.assertGreaterEqual(total, n + 5)
        self.assertEqual(status["virtuals"]["web"]["responses"]["2xx"], n)
        self.assertEqual(len(status["workers"]), 2)
        self.assertTrue(all(w["ready"] for w in status["workers"]))
        metrics = yield self.admin("/metrics")
        line = [l for l in metrics.splitlines()
                if l.startswith("lbframe_virtual_requests_total") and 'virtual="web"' in l]
        self.assertTrue(line, metrics[:2000])
        self.assertEqual(float(line[0].split()[-1]), n)
        self.assertIn('lbframe_worker_up{worker="2"} 1.0', metrics)
        # Each worker's own report: together they are the whole.
        live = self.svc.workers.counters.live
        self.assertEqual(sum(v.get("v/web/requests", 0) for v in live.values()), n)

    @defer.inlineCallbacks
    def test_admin_change_reaches_every_worker(self):
        """A member disabled in the parent (admin API) gets no new request
        from any worker; enabled again, it gets them again."""
        yield self.until(self.in_step, what="workers in step at start")

        def post(path, body):
            def call():
                conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
                conn.request("POST", path, body=json.dumps(body),
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                return r.status, r.read()
            return threads.deferToThread(call)

        status, body = yield post("/api/pools/app/members/a", {"state": "disable"})
        self.assertEqual(status, 200, body)
        self.assertEqual(self.svc.runtime.pools["app"].members["a"].admin, "disabled")
        yield self.until(self.in_step, what="every worker has member a disabled")
        results = yield defer.gatherResults([self.fetch() for _ in range(20)])
        self.assertEqual({body for _, body in results}, {"member b"})
        status = yield self.status()
        self.assertTrue(all(w["in_step"] for w in status["workers"]))

        self.svc.runtime.pools["app"].set_weight(self.svc.runtime.pools["app"].members["b"], 0)
        self.svc.runtime.pools["app"].set_admin(self.svc.runtime.pools["app"].members["a"],
                                                "enabled")
        yield self.until(self.in_step, what="every worker has a enabled, b at weight 0")
        results = yield defer.gatherResults([self.fetch() for _ in range(20)])
        self.assertEqual({body for _, body in results}, {"member a"})

    @defer.inlineCallbacks
    def test_health_from_the_parent_reaches_every_worker(self):
        """A member a monitor in the parent marks down (here: its check
        state, through the pool) is down in every worker."""
        pool = self.svc.runtime.pools["app"]
        member = pool.members["b"]
        old = member.state
        member.healthy = False
        pool._changed(member, old, "test: down")
        yield self.until(self.in_step, what="every worker has member b down")
        results = yield defer.gatherResults([self.fetch() for _ in range(20)])
        self.assertEqual({body for _, body in results}, {"member a"})

    @defer.inlineCallbacks
    def test_killed_worker_is_replaced(self):
        """SIGKILL to a worker: it is started again (a log line says so)
        and the site goes on serving."""
        slot = self.svc.workers.slots[0]
        pid = slot.pid
        os.kill(pid, signal.SIGKILL)
        yield self.until(lambda: slot.pid not in (None, pid) and slot.ready,
                         what="worker 1 started again")
        self.assertEqual(slot.restarts, 1)
        died = [e for e in self.events if e.get("lbframe_event") == "worker_died"]
        self.assertEqual(len(died), 1)
        self.assertEqual(died[0]["pid"], pid)
        results = yield defer.gatherResults([self.fetch() for _ in range(10)])
        self.assertEqual([s for s, _ in results], [200] * 10)
        # Counted totals do not go back when a worker dies.
        status = yield self.status()
        self.assertGreaterEqual(status["virtuals"]["web"]["requests"], 0)


class ReloadTests(WorkersCase):

    @defer.inlineCallbacks
    def test_reload_under_load_loses_no_request(self):
        """Four clients send requests on new connections without pause
        while the site is reloaded three times (weights, a member added,
        then removed): every request gets its 200, and every worker ends
        up with the new pool."""
        stop_at = time.monotonic() + 6.0
        failures, done = [], []

        def client():
            while time.monotonic() < stop_at and len(done) < 4000:
                try:
                    status, _ = get(self.http_port, timeout=5)
                    (done if status == 200 else failures).append(status)
                except OSError as e:
                    failures.append(repr(e))

        clients = defer.gatherResults([threads.deferToThread(client) for _ in range(4)])
        c_port = self.backends["a"][0]
        steps = [dict(weights={"a": 3}),
                 dict(weights={"a": 3}, extra_members=f"member c = 127.0.0.1:{c_port}"),
                 dict(weights={"b": 2})]
        for step in steps:
            yield task.deferLater(reactor, 1.0, lambda: None)
            self.write_site(**step)
            self.assertTrue(reload_site(self.svc))
            yield self.until(self.in_step, what="workers in step after the reload")
        yield clients
        self.assertEqual(failures, [])
        self.assertGreater(len(done), 50)
        self.assertEqual(self.svc.runtime.pools["app"].members["b"].weight, 2)
        # Each worker applied each reload itself.
        reloaded = [e for e in self.events if e.get("worker_event") == "reload"]
        self.assertEqual(len(reloaded), 2 * len(steps))

    @defer.inlineCallbacks
    def test_reload_adds_a_listen_address_keeping_the_first(self):
        """A reload that gives a virtual server a second address re-binds it
        in every process; the first address, held open by the workers, is
        taken over (not bound again, which would fail) and serves throughout."""
        second = free_port()
        first = f"tcp:{self.tcp_port}:interface=127.0.0.1"
        self.write_site(raw_listen=f"{first}, tcp:{second}:interface=127.0.0.1")
        self.assertTrue(reload_site(self.svc))
        yield self.until(lambda: [e for e in self.events
                                  if e.get("worker_event") == "reload"][1:],
                         what="both workers reloaded")
        for port in (self.tcp_port, second):
            replies = yield defer.gatherResults(
                [threads.deferToThread(tcp_roundtrip, port) for _ in range(6)])
            self.assertTrue(all("member" in r for r in replies), replies)
        failed = [e for e in self.events if e.get("lbframe_event") == "listener_failed"]
        self.assertEqual(failed, [])

    @defer.inlineCallbacks
    def test_reload_changes_the_number_of_workers(self):
        """workers = 2 → 3 → 2 in reloads: one more worker starts and serves,
        then the last one stops gracefully."""
        self.write_site(workers=3)
        self.assertTrue(reload_site(self.svc))
        slots = self.svc.workers.slots
        self.assertEqual(len(slots), 3)
        yield self.until(lambda: all(s.ready for s in slots), what="three workers ready")
        third = slots[2].pid
        self.write_site(workers=2)
        self.assertTrue(reload_site(self.svc))
        self.assertEqual(len(self.svc.workers.slots), 2)
        yield self.until(lambda: not os.path.exists(f"/proc/{third}"), what="worker 3 gone")
        results = yield defer.gatherResults([self.fetch() for _ in range(10)])
        self.assertEqual([s for s, _ in results], [200] * 10)
        stopped = [e for e in self.events if e.get("lbframe_event") == "worker_stopped"]
        self.assertEqual([e["worker"] for e in stopped], [3])

    @defer.inlineCallbacks
    def test_graceful_stop_drains_every_worker(self):
        """A stop while requests are in flight in the workers: each gets its
        answer, the workers exit, then the parent's stop fires."""
        pids = [s.pid for s in self.svc.workers.slots]
        slow = defer.gatherResults([self.fetch("/slow") for _ in range(4)])
        yield self.until(lambda: sum(b[1].hits for b in self.backends.values()) >= 4,
                         what="the slow requests reached the members")
        yield self.svc.stopService()
        results = yield slow
        self.assertEqual([s for s, _ in results], [200] * 4)
        for pid in pids:
            self.assertRaises(ProcessLookupError, os.kill, pid, 0)
        stopped = [e for e in self.events if e.get("lbframe_event") == "worker_stopped"]
        self.assertEqual(len(stopped), 2)


class PersistenceTests(WorkersCase):
    """``store = memory`` with workers: the parent holds the table."""

    extra = "persistence = sticky"
    sections = """
[persistence sticky]
method = source-ip
"""

    @defer.inlineCallbacks
    def test_source_ip_is_kept_across_workers(self):
        """Every request from 127.0.0.1 goes to the one member the first was
        given, whichever worker accepts it: both workers read the table in
        the parent (round-robin alone would alternate)."""
        first = yield self.fetch()
        results = yield defer.gatherResults([self.fetch() for _ in range(30)])
        self.assertEqual({body for _, body in results}, {first[1]})
        live = self.svc.workers.counters.live
        yield self.until(lambda: sum(v.get("v/web/requests", 0)
                                     for v in self.svc.workers.counters.live.values()) == 31)
        served = [v.get("v/web/requests", 0) for v in live.values()]
        self.assertEqual(len(served), 2)
        store = self.svc.runtime.profiles["sticky"].store
        self.assertEqual(len(store), 1)
