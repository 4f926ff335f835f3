"""The tcp path end to end on 127.0.0.1: real sockets, real reactor."""

from __future__ import annotations

import hashlib
import socket
import threading
import urllib.request

from twisted.internet import defer, protocol, reactor, task, threads
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.trial.unittest import TestCase
from twisted.web import resource, server
from zope.interface import implementer

from lbframe.config import parse_site
from lbframe.plugins import load_plugins
from lbframe.service import SiteService, build_runtime
from tests.helpers import free_port


class Named(resource.Resource):
    isLeaf = True

    def __init__(self, name):
        super().__init__()
        self.name = name.encode()

    def render_GET(self, request):
        return self.name


@implementer(IHalfCloseableProtocol)
class BackpressuredEcho(protocol.Protocol):
    """Echo that stops reading while its own writes are backed up, and
    closes (after flushing) when the client has finished sending."""

    def connectionMade(self):
        self.transport.registerProducer(self.transport, True)

    def dataReceived(self, data):
        self.transport.write(data)

    def readConnectionLost(self):
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass


def http_get(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        return r.read()


class SiteTestCase(TestCase):
    def start_site(self, text: str) -> SiteService:
        site = parse_site(text, "site.ini")
        svc = SiteService(build_runtime(site, load_plugins(entry_points=False), reactor), reactor)
        svc.startService()
        self.addCleanup(svc.stopService)
        return svc

    def listen(self, factory) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port


class MemberFailureTests(SiteTestCase):
    @defer.inlineCallbacks
    def test_killed_member_marked_down_and_no_request_fails(self):
        ports = {n: self.listen(server.Site(Named(n))) for n in "abc"}
        vport = free_port()
        interval, fall = 0.2, 2
        svc = self.start_site(f"""
[virtual web]
listen = tcp:{vport}:interface=127.0.0.1
pool = web

[pool web]
monitor = alive
""" + "".join(f"member {n} = 127.0.0.1:{p.getHost().port}\n" for n, p in ports.items()) + f"""
[monitor alive]
type = tcp
interval = {interval}
timeout = 0.5
fall = {fall}
rise = 2
""")
        pool = svc.runtime.pools["web"]
        went_down = []
        pool.on_state_change.append(
            lambda p, m, old, new, why: went_down.append((m, new, reactor.seconds())))

        answers = []
        for _ in range(6):
            answers.append((yield threads.deferToThread(http_get, vport)))
        self.assertEqual(sorted(answers), [b"a", b"a", b"b", b"b", b"c", b"c"])

        yield ports["b"].stopListening()
        killed = reactor.seconds()
        # Requests go on while the monitor notices: none may fail.
        deadline = killed + interval * fall + interval + 0.5 + 1.0
        after = []
        while reactor.seconds() < deadline and len(after) < 400:
            after.append((yield threads.deferToThread(http_get, vport)))
        self.assertNotIn(b"b", after)
        self.assertEqual(set(after), {b"a", b"c"})
        self.assertEqual([(m, s) for m, s, _ in went_down], [("b", "down")])
        # within interval × fall, plus the first probe's wait and the probe timeout
        self.assertLess(went_down[0][2] - killed, interval * fall + interval + 0.5)
        # Whichever noticed first — passive health (3 refused connects) or
        # the monitor (on a loaded machine few requests run before it
        # probes) — took it out, and the monitor agrees soon after.
        reason = pool.members["b"].down_reason
        self.assertTrue(reason.startswith(("passive: 3 failures", "alive:")), reason)
        deadline = reactor.seconds() + 5.0
        while pool.members["b"].checks["alive"].up and reactor.seconds() < deadline:
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertFalse(pool.members["b"].checks["alive"].up)
        if reason.startswith("passive"):
            self.assertGreaterEqual(pool.members["b"].failures, 3)


class BulkTests(SiteTestCase):
    @defer.inlineCallbacks
    def test_64mib_intact_both_ways(self):
        echo = self.listen(protocol.Factory.forProtocol(BackpressuredEcho))
        vport = free_port()
        self.start_site(f"""
[virtual bulk]
listen = tcp:{vport}:interface=127.0.0.1
pool = echo

[pool echo]
member e = 127.0.0.1:{echo.getHost().port}
""")
        size = 64 * 1024 * 1024

        def transfer():
            block = hashlib.sha256(b"seed").digest() * 4096  # 128 KiB pattern
            sent_hash, got_hash = hashlib.sha256(), hashlib.sha256()
            s = socket.create_connection(("127.0.0.1", vport), timeout=30)

            def send():
                n = 0
                while n < size:
                    chunk = block[: min(len(block), size - n)]
                    chunk = bytes([n // len(block) % 251]) + chunk[1:]
                    s.sendall(chunk)
                    sent_hash.update(chunk)
                    n += len(chunk)
                s.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send)
            sender.start()
            got = 0
            while True:
                data = s.recv(1 << 20)
                if not data:
                    break
                got_hash.update(data)
                got += len(data)
            sender.join()
            s.close()
            return got, sent_hash.hexdigest(), got_hash.hexdigest()

        got, sent_digest, got_digest = yield threads.deferToThread(transfer)
        self.assertEqual(got, size)
        self.assertEqual(got_digest, sent_digest)
