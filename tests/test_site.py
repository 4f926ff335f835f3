"""The site's lifecycle (lbframe.site): start, and reload (SIGHUP) as a
difference applied to the running site, state carried over; a reload
touches only what changed; listen failures at start and on reload.

Real sockets on 127.0.0.1 and the real reactor: backends are Twisted
servers that answer ``name`` with their name and ``bulk`` with
:data:`BULK_SIZE` bytes of position-dependent data.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import os
import signal
import socket
import tempfile

from twisted.application import service
from twisted.internet import defer, protocol, reactor
from twisted.internet.interfaces import IPullProducer
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from lbframe.cli import main as cli_main
from lbframe.interfaces import IListener
from lbframe.service import SiteService
from lbframe.site import make_service, reload as reload_site, reload_in_thread
from tests.helpers import free_port

BULK_SIZE = 48 * 1024 * 1024
CHUNK = 64 * 1024


def chunk(i: int) -> bytes:
    """Chunk ``i`` of the bulk data: different for every position."""
    return hashlib.sha256(i.to_bytes(8, "big")).digest() * (CHUNK // 32)


def bulk_digest() -> str:
    h = hashlib.sha256()
    for i in range(BULK_SIZE // CHUNK):
        h.update(chunk(i))
    return h.hexdigest()


@implementer(IPullProducer)
class BulkProducer:
    def __init__(self, transport):
        self.transport = transport
        self.i = 0

    def resumeProducing(self):
        if self.i * CHUNK >= BULK_SIZE:
            self.transport.unregisterProducer()
            self.transport.loseConnection()
            return
        self.transport.write(chunk(self.i))
        self.i += 1

    def stopProducing(self):
        pass


class Backend(protocol.Protocol):
    """``name\\n`` → the backend's name; ``bulk\\n`` → the bulk data."""

    def connectionMade(self):
        self.factory.connections += 1
        self.buf = b""

    def dataReceived(self, data):
        self.buf += data
        if b"\n" not in self.buf:
            return
        cmd = self.buf.split(b"\n", 1)[0]
        if cmd == b"bulk":
            self.transport.registerProducer(BulkProducer(self.transport), False)
        else:
            self.transport.write(self.factory.name.encode() + b"\n")
            self.transport.loseConnection()


class BackendFactory(protocol.Factory):
    protocol = Backend

    def __init__(self, name):
        self.name = name
        self.connections = 0


class Ask(protocol.Protocol):
    """Sends one command, collects the answer until the member closes."""

    def __init__(self, command: bytes):
        self.command = command
        self.data = b""
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.command + b"\n")

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback(self.data)


class SlowReader(protocol.Protocol):
    """Reads the bulk data only while told to: :meth:`read_until` resumes
    reading until ``n`` bytes arrived, then pauses again."""

    def __init__(self):
        self.hash = hashlib.sha256()
        self.received = 0
        self.until = 0
        self.waiting = None
        self.closed = defer.Deferred()

    def connectionMade(self):
        self.transport.pauseProducing()
        self.transport.write(b"bulk\n")

    def dataReceived(self, data):
        self.hash.update(data)
        self.received += len(data)
        if self.waiting is not None and self.received >= self.until:
            self.transport.pauseProducing()
            d, self.waiting = self.waiting, None
            d.callback(self.received)

    def read_until(self, n: int) -> defer.Deferred:
        self.until = n
        self.waiting = defer.Deferred()
        self.transport.resumeProducing()
        return self.waiting

    def read_all(self) -> defer.Deferred:
        self.until = float("inf")
        self.transport.resumeProducing()
        return self.closed

    def connectionLost(self, reason):
        self.closed.callback(self.received)


def connect(port: int, proto: protocol.Protocol) -> defer.Deferred:
    return protocol.ClientCreator(reactor, lambda: proto).connectTCP("127.0.0.1", port)


@defer.inlineCallbacks
def ask(port: int, command: bytes = b"name") -> defer.Deferred:
    p = Ask(command)
    yield connect(port, p)
    answer = yield p.done
    return answer.decode().strip()


def refused(port: int) -> bool:
    s = socket.socket()
    try:
        return s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        s.close()


class ReloadCase(TestCase):
    """A site written to a file, started, and reloaded from it."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lbframe-reload-")
        self.path = os.path.join(self.dir, "site.ini")
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def backend(self, name: str) -> tuple[int, BackendFactory]:
        factory = BackendFactory(name)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port, factory

    def write(self, text: str) -> None:
        with open(self.path, "w") as f:
            f.write(text)

    def start(self, text: str, **kw) -> SiteService:
        self.write(text)
        svc = make_service(self.path, reactor, **kw)
        svc.startService()
        self.addCleanup(svc.stopService)
        return svc

    def reload(self, svc: SiteService, text: str) -> bool:
        self.write(text)
        return reload_site(svc)

    def logged(self, event: str) -> list[dict]:
        return [e for e in self.events if e.get("lbframe_event") == event]


def site(vport: int, members: dict[str, int], *, scheduler="round-robin", extra_pool="",
         extra="", listen=None, stop_grace="30s") -> str:
    lines = "\n".join(f"member {n} = 127.0.0.1:{p}" for n, p in members.items())
    return f"""
[lbframe]
stop_grace = {stop_grace}

[virtual web]
listen = {listen or f"tcp:{vport}:interface=127.0.0.1"}
pool = web

[pool web]
scheduler = {scheduler}
{lines}
{extra_pool}
{extra}
"""


class TransferDuringReloadTests(ReloadCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_bulk_transfer_survives_two_reloads(self):
        """A 48 MiB transfer read slowly: a reload adds a member, a second
        reload brings a broken file. The transfer arrives intact on its old
        member, the new member gets new connections, the broken file is
        refused with the ``lbframe check`` message and the site keeps
        serving."""
        pa, fa = self.backend("a")
        pb, fb = self.backend("b")
        vport = free_port()
        svc = self.start(site(vport, {"a": pa}))
        listener = svc.listeners["web"]

        reader = SlowReader()
        yield connect(vport, reader)
        got = yield reader.read_until(4 * 1024 * 1024)
        self.assertLess(got, BULK_SIZE)
        member_a = svc.runtime.pools["web"].members["a"]
        self.assertEqual(member_a.active, 1)

        # Reload 1: add member b.
        self.assertTrue(self.reload(svc, site(vport, {"a": pa, "b": pb})))
        self.assertIs(svc.listeners["web"], listener, "unchanged listener kept")
        self.assertIs(svc.runtime.pools["web"].members["a"], member_a)
        names = []
        for _ in range(4):
            names.append((yield ask(vport)))
        self.assertEqual(sorted(names), ["a", "a", "b", "b"])
        self.assertEqual(fb.connections, 2)
        got = yield reader.read_until(16 * 1024 * 1024)
        self.assertLess(got, BULK_SIZE)

        # Reload 2: a broken file is refused and explained.
        broken = site(vport, {"a": pa, "b": pb}, scheduler="round-robbin")
        self.assertFalse(self.reload(svc, broken))
        refusals = self.logged("reload_refused")
        self.assertEqual(len(refusals), 1)
        error = refusals[0]["error"]
        self.assertIn(f"{self.path}:", error)
        self.assertIn("[pool web] scheduler:", error)
        self.assertIn("round-robbin", error)
        # ... the same words `lbframe check` prints.
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = cli_main(["check", self.path])
        self.assertEqual(rc, 1)
        self.assertEqual(err.getvalue().strip(), error)
        # The old site keeps serving, both members.
        self.assertEqual(svc.runtime.site.pools["web"].scheduler, "round-robin")
        names = []
        for _ in range(2):
            names.append((yield ask(vport)))
        self.assertEqual(sorted(names), ["a", "b"])

        total = yield reader.read_all()
        self.assertEqual(total, BULK_SIZE)
        self.assertEqual(reader.hash.hexdigest(), bulk_digest())
        for _ in range(100):
            if member_a.active == 0:
                break
            yield deferLater(0.02)
        self.assertEqual(member_a.active, 0)
        self.assertEqual(len(self.logged("reload")), 1)


class CarryStateTests(ReloadCase):
    @defer.inlineCallbacks
    def test_unchanged_members_keep_state_and_counters(self):
        pa, _ = self.backend("a")
        pb, _ = self.backend("b")
        pc, _ = self.backend("c")
        vport = free_port()
        svc = self.start(site(vport, {"a": pa, "b": pb, "c": pc}))
        pool = svc.runtime.pools["web"]
        a, b, c = (pool.members[n] for n in "abc")
        for _ in range(3):
            yield ask(vport)
        pool.set_admin(b, "draining")
        pool.set_weight(a, 7)
        scheduler = pool.scheduler
        totals = (a.total, b.total)

        # c is removed, d added, the weight of nobody changed in the file.
        pd, _ = self.backend("d")
        self.assertTrue(self.reload(svc, site(vport, {"a": pa, "b": pb, "d": pd})))
        self.assertIs(svc.runtime.pools["web"], pool)
        self.assertIs(pool.scheduler, scheduler)
        self.assertEqual(list(pool.members), ["a", "b", "d"])
        self.assertIs(pool.members["a"], a)
        self.assertIs(pool.members["b"], b)
        self.assertEqual((a.total, b.total), totals)
        self.assertEqual(b.state, "draining")
        self.assertEqual(a.weight, 7, "a weight set by the admin survives an unchanged file")
        self.assertTrue(c.removed)
        names = set()
        for _ in range(4):
            names.add((yield ask(vport)))
        self.assertEqual(names, {"a", "d"})

        reload = self.logged("reload")[-1]
        self.assertEqual(reload["changes"]["members"], {"added": ["web/d"], "removed": ["web/c"]})
        self.assertEqual(reload["changes"]["pools"], {"changed": ["web"]})

    def test_changed_weight_and_scheduler(self):
        vport = free_port()
        svc = self.start(site(vport, {"a": 1001, "b": 1002}))
        pool = svc.runtime.pools["web"]
        a = pool.members["a"]
        old_scheduler = pool.scheduler
        new = site(vport, {"a": 1001, "b": 1002}, scheduler="weighted").replace(
            "127.0.0.1:1001", "127.0.0.1:1001 weight=3")
        self.assertTrue(self.reload(svc, new))
        self.assertIs(pool.members["a"], a)
        self.assertEqual(a.weight, 3)
        self.assertEqual(a.spec.weight, 3)
        self.assertIsNot(pool.scheduler, old_scheduler)
        self.assertEqual(type(pool.scheduler).__name__, type(
            svc.runtime.plugins.schedulers.get("weighted").factory(pool.spec, {})).__name__)
        # The new scheduler knows both members: 3 a for every b.
        from lbframe.balancer import RequestContext
        picks = [pool.scheduler.pick(RequestContext("127.0.0.1", 1, "web")).name
                 for _ in range(8)]
        self.assertEqual(picks.count("a"), 6)

    def test_changed_address_is_a_new_member(self):
        vport = free_port()
        svc = self.start(site(vport, {"a": 1001}))
        a = svc.runtime.pools["web"].members["a"]
        self.assertTrue(self.reload(svc, site(vport, {"a": 1003})))
        a2 = svc.runtime.pools["web"].members["a"]
        self.assertIsNot(a2, a)
        self.assertTrue(a.removed)
        self.assertEqual(a2.address.port, 1003)

    def test_monitor_checks_carried_replaced_and_removed(self):
        pa, _ = self.backend("a")
        vport = free_port()
        monitor = "[monitor alive]\ntype = tcp\ninterval = {}\n"
        svc = self.start(site(vport, {"a": pa, "b": 1}, extra_pool="monitor = alive",
                              extra=monitor.format("30s")))
        pool = svc.runtime.pools["web"]
        b = pool.members["b"]
        # b is down by its check (without waiting for the monitor's clock).
        pool.report_check(b, "alive", False, "connect refused", rise=1, fall=1, now=1.0)
        self.assertEqual(b.state, "down")
        checks = {(c.member.name, c.spec.name): c for c in svc.monitor_runner.checks}
        self.assertEqual(set(checks), {("a", "alive"), ("b", "alive")})

        # Same monitor: the checks go on, b stays down (no flap).
        self.assertTrue(self.reload(svc, site(vport, {"a": pa, "b": 1}, extra_pool="monitor = alive",
                                              extra=monitor.format("30s"))))
        self.assertEqual({(c.member.name, c.spec.name): c for c in svc.monitor_runner.checks},
                         checks)
        self.assertEqual(b.state, "down")

        # A changed interval: new checks, but the result so far is kept.
        self.assertTrue(self.reload(svc, site(vport, {"a": pa, "b": 1}, extra_pool="monitor = alive",
                                              extra=monitor.format("20s"))))
        now = {(c.member.name, c.spec.name): c for c in svc.monitor_runner.checks}
        self.assertEqual(set(now), set(checks))
        self.assertNotIn(now[("b", "alive")], checks.values())
        self.assertFalse(checks[("b", "alive")].running)
        self.assertEqual(now[("b", "alive")].spec.interval, 20)
        self.assertEqual(b.state, "down")

        # The monitor taken off the pool: b counts as up again.
        self.assertTrue(self.reload(svc, site(vport, {"a": pa, "b": 1})))
        self.assertEqual(svc.monitor_runner.checks, [])
        self.assertEqual(b.state, "up")
        self.assertEqual(b.checks, {})

    def test_refused_file_changes_nothing(self):
        vport = free_port()
        svc = self.start(site(vport, {"a": 1001}))
        runtime = svc.runtime
        self.write("[virtual web]\nlisten = tcp:1:interface=127.0.0.1\npool = nowhere\n")
        self.assertFalse(reload_site(svc))
        self.assertIs(svc.runtime, runtime)
        [event] = self.logged("reload_refused")
        self.assertIn("site.ini:3: [virtual web] pool:", event["error"])

    def test_site_reloaded_hook(self):
        out = os.path.join(self.dir, "hook.out")
        plugin = os.path.join(self.dir, "hookplugin.py")
        with open(plugin, "w") as f:
            f.write(f"""
from lbframe import hookimpl

@hookimpl
def lbframe_site_reloaded(old, new):
    with open({out!r}, "a") as f:
        f.write(" ".join(m.name for m in old.pools["web"].members)
                + " -> " + " ".join(m.name for m in new.pools["web"].members) + "\\n")
""")
        vport = free_port()
        extra = f"[lbframe]\nplugins = {plugin}\n"
        text = site(vport, {"a": 1001}).replace("[lbframe]\n", extra)
        svc = self.start(text)
        self.assertTrue(self.reload(svc, site(vport, {"a": 1001, "b": 1002}).replace(
            "[lbframe]\n", extra)))
        with open(out) as f:
            self.assertEqual(f.read(), "a -> a b\n")


class ListenerReloadTests(ReloadCase):
    @defer.inlineCallbacks
    def test_changed_listen_rebinds_and_old_connections_finish(self):
        pa, _ = self.backend("a")
        v1, v2 = free_port(), free_port()
        svc = self.start(site(v1, {"a": pa}))
        old_listener = svc.listeners["web"]
        reader = SlowReader()
        yield connect(v1, reader)
        yield reader.read_until(1024 * 1024)

        self.assertTrue(self.reload(svc, site(v2, {"a": pa})))
        self.assertIsNot(svc.listeners["web"], old_listener)
        self.assertTrue(refused(v1))
        self.assertEqual((yield ask(v2)), "a")
        self.assertIn(old_listener, svc.retiring)
        # The connection on the old listener goes on to the end.
        total = yield reader.read_all()
        self.assertEqual(total, BULK_SIZE)
        self.assertEqual(reader.hash.hexdigest(), bulk_digest())
        # ... after which the old listener leaves the tree.
        for _ in range(50):
            if old_listener not in svc.retiring:
                break
            yield deferLater(0.05)
        self.assertNotIn(old_listener, svc.retiring)
        self.assertNotIn(old_listener, list(svc))
        self.assertTrue(old_listener.running is False or old_listener.running == 0)

    @defer.inlineCallbacks
    def test_removed_virtual_stops_listening(self):
        pa, _ = self.backend("a")
        v1, v2 = free_port(), free_port()
        two = site(v1, {"a": pa}) + f"\n[virtual api]\nlisten = tcp:{v2}:interface=127.0.0.1\npool = web\n"
        svc = self.start(two)
        self.assertEqual((yield ask(v2)), "a")
        self.assertTrue(self.reload(svc, site(v1, {"a": pa})))
        self.assertNotIn("api", svc.listeners)
        self.assertTrue(refused(v2))
        self.assertEqual((yield ask(v1)), "a")
        self.assertNotIn("api", svc.runtime.virtuals)

    @defer.inlineCallbacks
    def test_sighup_reloads(self):
        pa, _ = self.backend("a")
        pb, _ = self.backend("b")
        vport = free_port()
        before = signal.getsignal(signal.SIGHUP)
        svc = self.start(site(vport, {"a": pa}), signals=True)
        self.write(site(vport, {"b": pb}))
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if self.logged("reload"):
                break
            yield deferLater(0.02)
        self.assertEqual(list(svc.runtime.pools["web"].members), ["b"])
        self.assertEqual((yield ask(vport)), "b")
        yield svc.stopService()
        self.assertIs(signal.getsignal(signal.SIGHUP), before)


def deferLater(seconds: float) -> defer.Deferred:
    from twisted.internet import task
    return task.deferLater(reactor, seconds, lambda: None)


class ListenerTurnTests(ReloadCase):
    @defer.inlineCallbacks
    def test_a_reload_while_a_listener_is_still_closing_acts_after_it(self):
        """An endpoint whose close answers later (stop_listening's Deferred):
        a second reload that moves the virtual server again waits its turn,
        so exactly one listener is left, on the last endpoint."""
        pa, _ = self.backend("a")
        v1, v2, v3 = free_port(), free_port(), free_port()
        svc = self.start(site(v1, {"a": pa}))
        first = svc.listeners["web"]
        real, gate = first.stop_listening, defer.Deferred()
        first.stop_listening = lambda: real().addCallback(lambda _: gate)
        self.assertTrue(self.reload(svc, site(v2, {"a": pa})))
        self.assertNotIn("web", svc.listeners, "the new one waits for the old one's close")
        self.assertTrue(self.reload(svc, site(v3, {"a": pa})))
        gate.callback(None)
        yield deferLater(0)
        self.assertEqual([a.port for a in svc.listeners["web"].addresses()], [v3])
        self.assertEqual((yield ask(v3)), "a")
        self.assertTrue(refused(v2), "the listener of the first reload was retired in turn")
        self.assertTrue(refused(v1))
        self.assertEqual(svc._rebinding, {})


class AdminReloadTests(ReloadCase):
    @defer.inlineCallbacks
    def test_admin_follows_the_reload(self):
        from twisted.internet.threads import deferToThread

        from lbframe.admin.client import AdminClientError, change_member, fetch_status

        aport, vport = free_port(), free_port()

        def text(token, members):
            return site(vport, members).replace(
                "[lbframe]\n", f"[lbframe]\nadmin = tcp:{aport}:interface=127.0.0.1\n"
                               f"admin_token = {token}\n")

        svc = self.start(text("one", {"a": 1001}))
        admin = svc.admin
        url = f"http://127.0.0.1:{aport}"
        self.assertTrue(self.reload(svc, text("two", {"a": 1001, "b": 1002})))
        self.assertIs(svc.admin, admin, "same endpoint: same admin server")
        status = yield deferToThread(fetch_status, url)
        self.assertEqual(sorted(status["pools"]["web"]["members"]), ["a", "b"])
        # The new token counts, the old one no longer.
        d = deferToThread(change_member, url, "one", "web", "b", "drain")
        error = yield self.assertFailure(d, AdminClientError)
        self.assertIn("refused the token", str(error))
        answer = yield deferToThread(change_member, url, "two", "web", "b", "drain")
        self.assertEqual(answer["state"], "draining")
        self.assertEqual(svc.runtime.pools["web"].members["b"].state, "draining")


# -- persistence stores and profiles -----------------------------------------

PLUGIN = '''
from zope.interface import implementer
from lbframe import hookimpl
from lbframe.interfaces import IPersistenceStore

LOG = {log!r}


@implementer(IPersistenceStore)
class Store:
    asynchronous = False

    def __init__(self, url, profile, reactor):
        self.label = f"{{profile.name}}/{{profile.timeout:g}}"
        self.table = {{}}

    def __len__(self):
        return len(self.table)

    def get(self, key):
        return self.table.get(key)

    def set(self, key, name):
        self.table[key] = name

    def touch(self, key):
        pass

    def delete(self, key):
        self.table.pop(key, None)

    def close(self):
        with open(LOG, "a") as f:
            f.write(self.label + "\\n")


@hookimpl
def lbframe_register_persistence_stores(registry):
    registry.add("remote", lambda url, profile, reactor: Store(url, profile, reactor))
'''


class DroppedStoreTests(ReloadCase):
    """A reload that drops a persistence store (its section changed or went
    away) closes it, so a remote store's connection does not outlive it."""

    def text(self, vport, timeout, with_profile=True):
        plugin = os.path.join(self.dir, "remotestore.py")
        extra = f"[lbframe]\nplugins = {plugin}\n"
        profile = (f"[persistence p]\nmethod = source-ip\nstore = remote://127.0.0.1:1\n"
                   f"timeout = {timeout}\n") if with_profile else ""
        text = site(vport, {"a": 1001}, extra=profile).replace("[lbframe]\n", extra)
        if with_profile:
            text = text.replace("pool = web\n", "pool = web\npersistence = p\n", 1)
        return text

    def closed(self):
        try:
            with open(self.log) as f:
                return f.read().split()
        except FileNotFoundError:
            return []

    def test_changed_and_removed_profiles_close_their_stores(self):
        self.log = os.path.join(self.dir, "closed.log")
        with open(os.path.join(self.dir, "remotestore.py"), "w") as f:
            f.write(PLUGIN.format(log=self.log))
        vport = free_port()
        svc = self.start(self.text(vport, "30m"))
        self.assertTrue(self.reload(svc, self.text(vport, "30m")))
        self.assertEqual(self.closed(), [])  # unchanged: carried, still open
        self.assertTrue(self.reload(svc, self.text(vport, "10m")))
        self.assertEqual(self.closed(), ["p/1800"])
        self.assertTrue(self.reload(svc, self.text(vport, "10m", with_profile=False)))
        self.assertEqual(self.closed(), ["p/1800", "p/600"])


class ProfileCarryTests(ReloadCase):
    """A reload that keeps a persistence section keeps its profile: the
    store's table and the counters /metrics shows."""

    def text(self, vport, timeout):
        profile = f"[persistence sticky]\nmethod = source-ip\ntimeout = {timeout}\n"
        return site(vport, {"a": 1001, "b": 1002}, extra=profile).replace(
            "pool = web\n", "pool = web\npersistence = sticky\n", 1)

    def test_counters_survive_an_unchanged_profile_and_reset_with_a_changed_one(self):
        from lbframe.balancer import RequestContext

        vport = free_port()
        svc = self.start(self.text(vport, "30m"))
        balancer = svc.runtime.balancers["web"]
        for _ in range(3):
            balancer.choose(RequestContext("192.0.2.1", 1000, "web"))
        profile = balancer.persistence
        self.assertEqual((profile.lookups, profile.hits), (3, 2))
        self.assertTrue(self.reload(svc, self.text(vport, "30m")))
        self.assertIs(svc.runtime.balancers["web"].persistence, profile)
        self.assertEqual((profile.lookups, profile.hits), (3, 2))
        self.assertTrue(self.reload(svc, self.text(vport, "10m")))
        changed = svc.runtime.balancers["web"].persistence
        self.assertIsNot(changed, profile)
        self.assertIsNot(changed.store, profile.store)
        self.assertEqual(changed.lookups, 0)


# -- a reload costs what changed ------------------------------------------------

MONITORED = """
[monitor alive]
type = tcp
interval = 1h
"""


def spy_on(scheduler) -> list[tuple[str, str]]:
    """Record every event ``scheduler`` is told: (method, member name)."""
    seen = []
    for method in ("member_added", "member_removed", "member_changed"):
        real = getattr(scheduler, method)

        def told(member, real=real, method=method):
            seen.append((method, member.name))
            return real(member)

        setattr(scheduler, method, told)
    return seen


class WhatChangedTests(ReloadCase):
    """The one reload function (lbframe.site.apply) touches what the
    difference names and nothing else."""

    def many(self, vport, n, weight7=1, extra=None):
        members = {f"m{i}": 2000 + i for i in range(n)}
        if extra:
            members[extra] = 1999
        text = site(vport, members, extra_pool="monitor = alive", extra=MONITORED)
        return text.replace("member m7 = 127.0.0.1:2007", f"member m7 = 127.0.0.1:2007 weight={weight7}")

    def test_nothing_changed_touches_nothing(self):
        vport = free_port()
        svc = self.start(self.many(vport, 50))
        runtime = svc.runtime
        pool = runtime.pools["web"]
        scheduler, members = pool.scheduler, dict(pool.members)
        checks = [(c, c.call) for c in svc.monitor_runner.checks]
        listener = svc.listeners["web"]
        address = listener.addresses()
        balancer, monitor = runtime.balancers["web"], runtime.monitors["alive"]
        redundancy = svc.redundancy_service
        applied = []
        real_apply = listener.apply
        listener.apply = lambda b, p: (applied.append(b), real_apply(b, p))
        seen = spy_on(scheduler)

        self.assertTrue(self.reload(svc, self.many(vport, 50)))
        self.assertIs(pool.scheduler, scheduler, "no scheduler rebuilt")
        self.assertEqual(seen, [], "the scheduler was told nothing")
        self.assertIs(svc.runtime.pools["web"], pool)
        self.assertEqual(pool.members, members)
        for name, member in members.items():
            self.assertIs(pool.members[name], member)
        self.assertEqual([(c, c.call) for c in svc.monitor_runner.checks], checks,
                         "no check restarted (same checks, same scheduled calls)")
        self.assertIs(svc.runtime.monitors["alive"], monitor)
        self.assertIs(svc.listeners["web"], listener, "no listener re-bound")
        self.assertEqual(listener.addresses(), address)
        self.assertIs(svc.runtime.balancers["web"], balancer, "no balancer rebuilt")
        # The listener is handed its same balancer and its protocol built
        # again (a reload reads certificate files again): nothing it serves changes.
        self.assertEqual(applied, [balancer])
        self.assertIs(svc.redundancy_service, redundancy)
        [event] = self.logged("reload")
        self.assertEqual(event["changes"], {})
        self.assertEqual(event["summary"], "nothing changed")
        self.assertEqual((event["checks_kept"], event["checks_started"]), (50, 0))

    def test_one_weight_and_one_member_touch_those_two(self):
        vport = free_port()
        svc = self.start(self.many(vport, 400))
        pool = svc.runtime.pools["web"]
        scheduler = pool.scheduler
        seen = spy_on(scheduler)
        before = {c: c.call for c in svc.monitor_runner.checks}

        self.assertTrue(self.reload(svc, self.many(vport, 400, weight7=3, extra="new")))
        self.assertIs(pool.scheduler, scheduler)
        self.assertEqual(sorted({name for _, name in seen}), ["m7", "new"])
        self.assertEqual(pool.members["m7"].weight, 3)
        self.assertEqual(list(pool.members)[-1], "new")
        after = svc.monitor_runner.checks
        self.assertEqual(len(after), 401)
        for check in after:
            if check.member.name != "new":
                self.assertIn(check, before)
                self.assertIs(check.call, before[check], "its schedule goes on")
        [event] = self.logged("reload")
        self.assertEqual(event["changes"]["members"], {"added": ["web/new"], "changed": ["web/m7"]})
        self.assertEqual((event["checks_kept"], event["checks_started"]), (400, 1))

        # And back: the member goes, its check stops, the others go on.
        self.assertTrue(self.reload(svc, self.many(vport, 400)))
        self.assertNotIn("new", pool.members)
        self.assertEqual(len(svc.monitor_runner.checks), 400)
        self.assertNotIn("new", {c.member.name for c in svc.monitor_runner.checks})

    def test_a_config_error_found_while_building_changes_nothing(self):
        """The parser accepts the file; a plugin refuses it (an unknown
        scheduler): nothing of the file is applied, its members neither."""
        vport = free_port()
        svc = self.start(site(vport, {"a": 1001}))
        runtime, pool = svc.runtime, svc.runtime.pools["web"]
        self.assertFalse(self.reload(svc, site(vport, {"a": 1001, "d": 1004},
                                                 scheduler="no-such-scheduler")))
        self.assertIs(svc.runtime, runtime)
        self.assertEqual(list(pool.members), ["a"])
        self.assertEqual(pool.spec.scheduler, "round-robin")
        [event] = self.logged("reload_refused")
        self.assertIn("no-such-scheduler", event["error"])


class ReloadInThreadTests(ReloadCase):
    """SIGHUP's way: read and compare in a worker thread, apply on the reactor."""

    @defer.inlineCallbacks
    def test_applies_refuses_and_runs_again_when_asked_meanwhile(self):
        pa, _ = self.backend("a")
        pb, _ = self.backend("b")
        vport = free_port()
        svc = self.start(site(vport, {"a": pa}))
        self.write(site(vport, {"a": pa, "b": pb}))
        self.assertTrue((yield reload_in_thread(svc)))
        self.assertEqual(list(svc.runtime.pools["web"].members), ["a", "b"])

        self.write("[virtual web]\nlisten = tcp:1\n")
        self.assertFalse((yield reload_in_thread(svc)))
        self.assertEqual(list(svc.runtime.pools["web"].members), ["a", "b"])
        self.assertEqual(len(self.logged("reload_refused")), 1)

        self.write(site(vport, {"b": pb}))
        first = reload_in_thread(svc)
        second, third = reload_in_thread(svc), reload_in_thread(svc)
        self.assertIsNot(second, first)
        # Written (whole, as editors save) while the first one reads: the
        # second (one more reload, for both callers) sees it.
        with open(self.path + ".new", "w") as f:
            f.write(site(vport, {"a": pa}))
        os.replace(self.path + ".new", self.path)
        results = yield defer.gatherResults([first, second, third])
        self.assertEqual(results, [True, True, True])
        self.assertEqual(list(svc.runtime.pools["web"].members), ["a"])
        self.assertEqual((yield ask(vport)), "a")
        self.assertIsNone(svc.reload_pending)
        self.assertTrue(gc.isenabled(), "the collector runs again after a reload")


# -- listening ----------------------------------------------------------------

class ListenFailureTests(ReloadCase):
    def busy_port(self) -> int:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        self.addCleanup(s.close)
        return s.getsockname()[1]

    def test_a_busy_port_at_start_is_one_line_and_exit_status_1(self):
        port = self.busy_port()
        self.write(site(port, {"a": 1001}))
        svc = make_service(self.path, reactor)
        e = self.assertRaises(SystemExit, svc.privilegedStartService)
        self.assertEqual(str(e), f"virtual web: cannot listen on tcp:{port}:"
                                 f"interface=127.0.0.1: Address already in use")
        self.assertNotEqual(e.code, 0)

    def test_twistd_with_a_busy_port_prints_one_line_and_exits_1(self):
        import subprocess

        from tests.examples.test_quickstart import ROOT, TWISTD

        port = self.busy_port()
        self.write(site(port, {"a": 1001}))
        done = subprocess.run(TWISTD + ["-n", "--pidfile=", "lbframe", "--config", self.path],
                              cwd=self.dir, env=dict(os.environ, PYTHONPATH=ROOT),
                              capture_output=True, text=True, timeout=60)
        output = done.stdout + done.stderr
        self.assertEqual(done.returncode, 1, output)
        # twistd has started logging by then: its stderr goes to the log.
        line = f"virtual web: cannot listen on tcp:{port}:interface=127.0.0.1: Address already in use"
        self.assertEqual(output.count(line), 1, output)
        self.assertTrue(output.rstrip().endswith(line), output)
        self.assertNotIn("Traceback", output)

    @defer.inlineCallbacks
    def test_an_admin_port_taken_on_reload_is_logged_and_the_site_serves(self):
        pa, _ = self.backend("a")
        vport, aport, busy = free_port(), free_port(), self.busy_port()

        def text(port):
            return site(vport, {"a": pa}).replace(
                "[lbframe]\n", f"[lbframe]\nadmin = tcp:{port}:interface=127.0.0.1\n")

        svc = self.start(text(aport))
        self.assertTrue(self.reload(svc, text(busy)))
        [event] = self.logged("service_failed")
        self.assertIn("admin: cannot start after the reload", event["log_format"].format(**event))
        self.assertIsNone(svc.admin)
        self.assertNotIn("admin", svc.namedServices)
        self.assertEqual((yield ask(vport)), "a")
        # The next reload that fixes it starts it.
        self.assertTrue(self.reload(svc, text(aport)))
        self.assertIsNotNone(svc.admin)
        self.assertTrue(svc.admin.running)

    @defer.inlineCallbacks
    def test_a_busy_port_on_reload_is_logged_and_the_rest_serves(self):
        pa, _ = self.backend("a")
        vport, aport, busy = free_port(), free_port(), self.busy_port()
        api = "[virtual api]\nlisten = tcp:{}:interface=127.0.0.1\npool = web\n"
        svc = self.start(site(vport, {"a": pa}, extra=api.format(aport)))
        self.assertTrue(self.reload(svc, site(vport, {"a": pa}, extra=api.format(busy))))
        yield deferLater(0)
        [event] = self.logged("listener_failed")
        self.assertIn(f"virtual api: cannot listen on tcp:{busy}:interface=127.0.0.1: "
                      "Address already in use", event["log_format"].format(**event))
        self.assertNotIn("api", svc.listeners)
        self.assertTrue(refused(aport), "the old endpoint was retired")
        self.assertEqual((yield ask(vport)), "a", "the rest of the site serves")


@implementer(IListener)
class LateListener(service.Service):
    """A listener whose endpoint answers later (as StreamServerEndpointService allows)."""

    def __init__(self):
        self.binding = defer.Deferred()
        self.outcome = []
        self.binding.addBoth(self._settle)
        self.waiters = []

    def _settle(self, result):
        self.outcome.append(result)
        for d in self.waiters:
            (d.errback if isinstance(result, Failure) else d.callback)(result)

    def start_listening(self):
        d = defer.Deferred()
        if self.outcome:
            r = self.outcome[0]
            (d.errback if isinstance(r, Failure) else d.callback)(r)
        else:
            self.waiters.append(d)
        return d

    def addresses(self):
        return []

    def apply(self, balancer, protocol):
        pass

    def stop_listening(self):
        return defer.succeed(None)

    def connection_count(self):
        return 0

    def close_all(self, reason):
        pass

    def pause_accepting(self):
        pass

    def resume_accepting(self):
        pass


class LateListenFailureTests(ReloadCase):
    def test_a_late_failure_at_start_is_logged_and_stops_the_process(self):
        from twisted.internet.testing import MemoryReactorClock

        from lbframe.errors import ListenError
        from lbframe.service import SiteService
        from lbframe.site import load

        self.write(site(free_port(), {"a": 1001}))
        clock = MemoryReactorClock()
        svc = SiteService(load(self.path, clock), clock, config_path=self.path)
        late = svc.listeners["web"] = LateListener()
        svc.privilegedStartService()
        svc.startService()
        self.assertFalse(clock.hasStopped, "listening is still under way")
        late.binding.errback(ListenError("web", "tcp:80", "Permission denied"))
        [event] = self.logged("listener_failed")
        self.assertEqual(event["error"], "virtual web: cannot listen on tcp:80: Permission denied")
        clock.advance(0)
        self.assertTrue(clock.hasStopped)
