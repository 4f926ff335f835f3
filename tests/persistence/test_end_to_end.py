"""Persistence end to end: a real lbframe (in this process) on 127.0.0.1,
real members, real clients (http.client in a thread; tcp clients bound to
chosen 127.0.0.x source addresses)."""

from __future__ import annotations

import http.client
import os
import ssl
import subprocess

from twisted.internet import defer, protocol, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from lbframe.config import parse_site
from lbframe.plugins import load_plugins
from lbframe.service import SiteService, build_runtime
from tests.helpers import free_port


class AppServer(resource.Resource):
    """A member: answers its name; issues ``JSESSIONID`` to a client without one."""

    isLeaf = True

    def __init__(self, name):
        super().__init__()
        self.name = name
        self.sessions = 0

    def render_GET(self, request):
        if request.getCookie(b"JSESSIONID") is None:
            self.sessions += 1
            request.addCookie(b"JSESSIONID", f"{self.name}-{self.sessions}".encode(), path=b"/")
        return self.name.encode()


class KillableSite(server.Site):
    """A member's web site whose open connections can be cut (a crash)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.open = set()

    def buildProtocol(self, addr):
        proto = super().buildProtocol(addr)
        self.open.add(proto)
        return proto


class Client:
    """A browser with a cookie jar, blocking, run in a thread."""

    def __init__(self, port, tls=False):
        self.port, self.tls = port, tls
        self.cookies: dict[str, str] = {}

    def get(self, path="/"):
        return threads.deferToThread(self._get, path)

    def _get(self, path):
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            body = r.read().decode()
            set_cookies = r.headers.get_all("Set-Cookie") or []
        finally:
            conn.close()
        for line in set_cookies:
            name, _, value = line.split(";", 1)[0].partition("=")
            self.cookies[name.strip()] = value.strip()
        return body, set_cookies


class Named(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(self.factory.name.encode())
        self.transport.loseConnection()


class Reader(protocol.Protocol):
    def __init__(self):
        self.data, self.done = b"", defer.Deferred()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback(self.data.decode())


@defer.inlineCallbacks
def ask_tcp(port, source):
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5, bindAddress=(source, 0))
    reader = yield connectProtocol(endpoint, Reader())
    return (yield reader.done)


class LiveTestCase(TestCase):
    timeout = 60

    def start_members(self, *names):
        self.member_ports, self.apps, self.listening = {}, {}, {}
        for name in names:
            app = self.apps[name] = AppServer(name)
            site = KillableSite(app)
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
            self.listening[name] = (port, site)
            self.member_ports[name] = port.getHost().port
            self.addCleanup(self.kill, name)
        return "".join(f"member {n} = 127.0.0.1:{p}\n" for n, p in self.member_ports.items())

    def kill(self, name):
        """The member crashes: it stops listening and its connections break."""
        port, site = self.listening[name]
        for proto in site.open:
            channel = getattr(proto, "_channel", proto)  # twisted.web wraps its channel
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.abortConnection()
        site.open.clear()
        return port.stopListening() if port.connected else None

    def start_site(self, text):
        runtime = build_runtime(parse_site(text), load_plugins(entry_points=False), reactor)
        svc = SiteService(runtime, reactor)
        svc.startService()
        return runtime, svc

    def http_site(self, profile, members, vport=None):
        self.vport = vport or free_port()
        text = f"""
[virtual web]
listen = tcp:{self.vport}:interface=127.0.0.1
protocol = http
pool = app
persistence = s

[persistence s]
{profile}

[pool app]
{members}"""
        runtime, svc = self.start_site(text)
        self.addCleanup(svc.stopService)
        return runtime, svc, text


class CookieInsertLive(LiveTestCase):
    @defer.inlineCallbacks
    def test_sticks_survives_restart_and_repicks_when_the_member_dies(self):
        members = self.start_members("a", "b", "c")
        runtime, svc, text = self.http_site("method = cookie-insert\nsecret = t0p", members)
        alice = Client(self.vport)
        first, set_cookies = yield alice.get()
        self.assertEqual(len([c for c in set_cookies if c.startswith("LBSERVER=")]), 1)
        self.assertIn("HttpOnly", set_cookies[0] if "LBSERVER" in set_cookies[0] else
                      set_cookies[1])
        for _ in range(20):
            body, set_cookies = yield alice.get()
            self.assertEqual(body, first)
            self.assertFalse([c for c in set_cookies if c.startswith("LBSERVER=")])
        bob, _ = yield Client(self.vport).get()
        self.assertNotEqual(bob, first)  # a new client: the scheduler's pick

        # lbframe restarts: the cookie still names the same member.
        yield svc.stopService()
        runtime, svc = self.start_site(text)
        self.addCleanup(svc.stopService)
        for _ in range(5):
            self.assertEqual((yield alice.get())[0], first)

        # The member dies: the next request goes elsewhere and sticks there.
        yield self.kill(first)
        moved, set_cookies = yield alice.get()
        self.assertNotEqual(moved, first)
        self.assertTrue([c for c in set_cookies if c.startswith("LBSERVER=")])
        for _ in range(20):
            self.assertEqual((yield alice.get())[0], moved)


class CookieLearnLive(LiveTestCase):
    @defer.inlineCallbacks
    def test_learns_the_application_cookie(self):
        members = self.start_members("a", "b", "c")
        runtime, _, _ = self.http_site("method = cookie-learn\ncookie = JSESSIONID", members)
        alice = Client(self.vport)
        first, _ = yield alice.get()
        self.assertTrue(alice.cookies["JSESSIONID"].startswith(first + "-"))
        for _ in range(20):
            self.assertEqual((yield alice.get())[0], first)
        self.assertEqual(self.apps[first].sessions, 1)  # one session: it never moved
        others = set()
        for _ in range(2):
            others.add((yield Client(self.vport).get())[0])
        self.assertEqual(others | {first}, {"a", "b", "c"})
        self.assertEqual(len(runtime.persistence_stores["s"]), 3)

    @defer.inlineCallbacks
    def test_member_dies_the_new_member_sticks(self):
        members = self.start_members("a", "b", "c")
        self.http_site("method = cookie-learn\ncookie = JSESSIONID", members)
        alice = Client(self.vport)
        first, _ = yield alice.get()
        yield self.kill(first)
        moved, _ = yield alice.get()
        self.assertNotEqual(moved, first)
        for _ in range(20):
            self.assertEqual((yield alice.get())[0], moved)


class URLSessionLive(LiveTestCase):
    @defer.inlineCallbacks
    def test_path_and_query_session_ids(self):
        members = self.start_members("a", "b", "c")
        self.http_site("method = url-session", members)
        client = Client(self.vport)
        first, _ = yield client.get("/cart;jsessionid=S1")
        for i in range(20):
            path = f"/item/{i};jsessionid=S1" if i % 2 else f"/item/{i}?jsessionid=S1"
            self.assertEqual((yield client.get(path))[0], first)
        second, _ = yield client.get("/cart;jsessionid=S2")
        self.assertNotEqual(second, first)
        self.assertEqual((yield client.get("/x?jsessionid=S2"))[0], second)


def make_certificate(folder):
    key, cert = os.path.join(folder, "key.pem"), os.path.join(folder, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=shop.example", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return key, cert


class SharedProfileLive(LiveTestCase):
    @defer.inlineCallbacks
    def test_cart_moves_from_http_to_https(self):
        """F6f: cookie learned on the http virtual server (:80) is honoured
        on the TLS-terminating one (:443)."""
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        key, cert = make_certificate(folder)
        members = self.start_members("a", "b", "c")
        p80, p443 = free_port(), free_port()
        runtime, svc = self.start_site(f"""
[virtual shop]
listen = tcp:{p80}:interface=127.0.0.1
protocol = http
pool = app
persistence = cart

[virtual shop-tls]
listen = ssl:{p443}:privateKey={key}:certKey={cert}:interface=127.0.0.1
protocol = http
pool = app
persistence = cart

[persistence cart]
method = cookie-learn
cookie = JSESSIONID

[pool app]
{members}""")
        self.addCleanup(svc.stopService)
        browser = Client(p80)
        first, _ = yield browser.get("/cart")
        yield Client(p443, tls=True).get()  # another client moves the TLS side's round robin
        checkout = Client(p443, tls=True)
        checkout.cookies = dict(browser.cookies)
        for _ in range(20):
            self.assertEqual((yield checkout.get("/checkout"))[0], first)
        self.assertEqual(self.apps[first].sessions, 1)


class SourceIPLive(LiveTestCase):
    def tcp_members(self, *names):
        ports = {}
        for name in names:
            factory = protocol.Factory.forProtocol(Named)
            factory.name = name
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
            self.addCleanup(lambda p=port: p.stopListening() if p.connected else None)
            ports[name] = port
        return ports

    @defer.inlineCallbacks
    def test_shared_by_two_tcp_virtual_servers(self):
        ports = self.tcp_members("a", "b", "c")
        members = "".join(f"member {n} = 127.0.0.1:{p.getHost().port}\n" for n, p in ports.items())
        v1, v2 = free_port(), free_port()
        runtime, svc = self.start_site(f"""
[virtual one]
listen = tcp:{v1}:interface=127.0.0.1
pool = p
persistence = src

[virtual two]
listen = tcp:{v2}:interface=127.0.0.1
pool = p
persistence = src

[persistence src]
method = source-ip
mask = 24

[pool p]
{members}""")
        self.addCleanup(svc.stopService)
        first = yield ask_tcp(v1, "127.0.0.5")
        for i in range(20):
            # the same /24, either virtual server
            self.assertEqual((yield ask_tcp(v2 if i % 2 else v1, f"127.0.0.{6 + i}")), first)
        self.assertNotEqual((yield ask_tcp(v2, "127.0.1.5")), first)  # another /24
        self.assertEqual(len(runtime.persistence_stores["src"]), 2)

        # The member dies: the next connection is re-picked (its refusal is
        # retried on another member) and the new member sticks.
        yield ports[first].stopListening()
        moved = yield ask_tcp(v1, "127.0.0.5")
        self.assertNotEqual(moved, first)
        for _ in range(20):
            self.assertEqual((yield ask_tcp(v2, "127.0.0.9")), moved)
