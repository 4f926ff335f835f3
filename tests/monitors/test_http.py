"""The http and https monitors against real servers on 127.0.0.1.

twisted.web serves the well-behaved cases; small raw protocols play members
that misbehave (close early, hang, answer garbage, never stop talking).
HTTPS uses a CA and server certificate made here with ``cryptography``.
"""

from __future__ import annotations

import datetime
import os
import random

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, protocol, reactor, ssl, task
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server
from zope.interface.verify import verifyObject

from lbframe import __version__
from lbframe.config import parse_site
from lbframe.config.model import Monitor, Source
from lbframe.errors import OptionError
from lbframe.interfaces import IMonitor
from lbframe.monitoring import CheckResult, MonitorRunner
from lbframe.monitors._http_client import BODY_LIMIT
from lbframe.monitors.http import HTTPMonitor, HTTPSMonitor
from lbframe.plugins import load_plugins
from lbframe.schedulers.round_robin import RoundRobin
from tests.helpers import free_port, member_spec, pool_state


# -- a member's web server ------------------------------------------------------

class Page(resource.Resource):
    """Answers ``code`` with ``body`` and records every request it saw."""

    isLeaf = True

    def __init__(self, seen, code=200, body=b"hello"):
        super().__init__()
        self.seen, self.code, self.body = seen, code, body

    def render(self, request):
        self.seen.append({
            "method": request.method,
            "path": request.uri,
            "body": request.content.read(),
            "headers": {k.decode().lower(): v
                        for k, v in request.requestHeaders.getAllRawHeaders()},
            "version": request.clientproto,
        })
        request.setResponseCode(self.code)
        if self.code == 302:
            request.setHeader(b"Location", b"/")
        return self.body


class DBCheck(resource.Resource):
    """``POST /dbcheck.cgi`` of a three-tier site: OK only for the agreed body."""

    isLeaf = True

    def __init__(self, seen, healthy=True):
        super().__init__()
        self.seen, self.healthy = seen, healthy

    def render_POST(self, request):
        body = request.content.read()
        self.seen.append({"body": body, "ua": request.getHeader(b"user-agent"),
                          "type": request.getHeader(b"content-type"),
                          "length": request.getHeader(b"content-length")})
        if body != b"q=ping":
            request.setResponseCode(400)
            return b"bad request"
        return b"<html>DB status: OK</html>" if self.healthy else b"<html>DB status: NG</html>"


class Chunked(resource.Resource):
    """A dynamic page sent with chunked transfer-encoding."""

    isLeaf = True

    def render_GET(self, request):
        request.write(b"status: ")
        reactor.callLater(0, lambda: (request.write(b"O"), request.write(b"K"), request.finish()))
        return server.NOT_DONE_YET


def web_root(seen):
    root = resource.Resource()
    root.putChild(b"", Page(seen))
    root.putChild(b"dbcheck.cgi", DBCheck(seen))
    root.putChild(b"dbdown.cgi", DBCheck(seen, healthy=False))
    root.putChild(b"error", Page(seen, 500, b"Internal Server Error"))
    root.putChild(b"moved", Page(seen, 302, b""))
    root.putChild(b"missing", Page(seen, 404, b"not found"))
    root.putChild(b"headers", Page(seen))
    root.putChild(b"chunked", Chunked())
    big = b"x" * (BODY_LIMIT + 10) + b"OK"
    root.putChild(b"big", Page(seen, 200, big))
    return root


# -- misbehaving members --------------------------------------------------------

class Scripted(protocol.Protocol):
    """Waits for the end of the request head, then does ``factory.answer``."""

    def connectionMade(self):
        self.factory.connections.append(self)
        self.buffer = b""
        self.lost = defer.Deferred()
        self.factory.connected.callback(self) if not self.factory.connected.called else None

    def dataReceived(self, data):
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and not getattr(self, "answered", False):
            self.answered = True
            self.factory.answer(self)
            if not self.factory.request.called:
                self.factory.request.callback(self.buffer)

    def connectionLost(self, reason):
        self.lost.callback(None)


class Silent(Scripted):
    """Reads the first bytes and never answers, not even a TLS handshake."""

    def dataReceived(self, data):
        if not self.factory.request.called:
            self.factory.request.callback(data)


def scripted_factory(answer, kind=Scripted):
    factory = protocol.Factory.forProtocol(kind)
    factory.answer = answer
    factory.connections = []
    factory.connected = defer.Deferred()
    factory.request = defer.Deferred()
    return factory


def close_now(p):
    p.transport.loseConnection()


def close_mid_body(p):
    p.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    p.transport.loseConnection()


def garbage(p):
    p.transport.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    p.transport.loseConnection()


def huge_head(p):
    p.transport.write(b"HTTP/1.1 200 OK\r\n")
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    p.transport.write(line * 100)  # 100 KB of headers, never ending them


def endless_body(p):
    p.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\nOK" + b"y" * 200000)


def hang(p):
    pass


class HTTPTestCase(TestCase):
    def setUp(self):
        self.seen = []
        root = web_root(self.seen)
        self.dbdown = root.children[b"dbdown.cgi"]
        site = server.Site(root)
        site.displayTracebacks = False
        self.port = self.listen(site)

    def listen(self, factory):
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def member(self, port):
        pool = pool_state(RoundRobin(), member_spec("a", port))
        return pool.members["a"]

    def check(self, member_port=None, cls=HTTPMonitor, options=None, **spec):
        mon = cls(Monitor("web", cls.scheme, **spec), options or {}, reactor)
        return mon.check(self.member(member_port or self.port))

    def closed_connections(self, factory):
        """Wait until the server saw every connection close (no leaks)."""
        return defer.gatherResults([p.lost for p in factory.connections])


class HTTPMonitorTests(HTTPTestCase):
    @defer.inlineCallbacks
    def test_get_root_passes(self):
        result = yield self.check()
        self.assertEqual(result, CheckResult(True))
        (req,) = self.seen
        self.assertEqual((req["method"], req["path"], req["version"]), (b"GET", b"/", b"HTTP/1.1"))
        self.assertEqual(req["headers"]["connection"], [b"close"])
        self.assertEqual(req["headers"]["host"], [f"127.0.0.1:{self.port}".encode()])
        self.assertEqual(req["headers"]["user-agent"], [f"lbframe-monitor/{__version__}".encode()])

    @defer.inlineCallbacks
    def test_post_dbcheck_must_return_ok(self):
        """F7h: a dynamic page that exercises the AP and DB tiers."""
        spec = dict(request_method="POST", request_path="/dbcheck.cgi", body="q=ping",
                    headers=(("Content-Type", "application/x-www-form-urlencoded"),),
                    expect="OK")
        result = yield self.check(**spec)
        self.assertEqual(result, CheckResult(True))
        (req,) = self.seen
        self.assertEqual(req["body"], b"q=ping")
        self.assertEqual(req["length"], b"6")
        self.assertEqual(req["type"], b"application/x-www-form-urlencoded")
        self.assertTrue(req["ua"].startswith(b"lbframe-monitor/"))  # F7g

        spec["request_path"] = "/dbdown.cgi"
        result = yield self.check(**spec)
        self.assertEqual(result, CheckResult(False, "body does not match 'OK' (POST /dbdown.cgi)"))

    @defer.inlineCallbacks
    def test_wrong_status(self):
        result = yield self.check(request_method="POST", request_path="/error")
        self.assertEqual(result, CheckResult(False, "HTTP 500 from POST /error"))

    @defer.inlineCallbacks
    def test_wrong_body(self):
        result = yield self.check(expect="^OK$")
        self.assertEqual(result, CheckResult(False, "body does not match '^OK$' (GET /)"))
        result = yield self.check(expect="h[aeiou]llo")
        self.assertEqual(result, CheckResult(True))

    @defer.inlineCallbacks
    def test_expect_status_ranges(self):
        ranges = ((200, 299), (302, 302))
        self.assertEqual((yield self.check(request_path="/moved", expect_status=ranges)),
                         CheckResult(True))
        self.assertEqual((yield self.check(request_path="/missing", expect_status=ranges)),
                         CheckResult(False, "HTTP 404 from GET /missing"))
        self.assertEqual((yield self.check(request_path="/moved", expect_status=((200, 200),))),
                         CheckResult(False, "HTTP 302 from GET /moved"))
        # the default, 200-399, takes the redirect and refuses 404
        self.assertEqual((yield self.check(request_path="/moved")), CheckResult(True))
        self.assertEqual((yield self.check(request_path="/missing")),
                         CheckResult(False, "HTTP 404 from GET /missing"))

    @defer.inlineCallbacks
    def test_custom_headers_and_host(self):
        headers = (("Host", "www.example.test"), ("X-Health-Check", "lb1"),
                   ("User-Agent", "my-check/2"))
        result = yield self.check(request_path="/headers?deep=1", headers=headers)
        self.assertEqual(result, CheckResult(True))
        (req,) = self.seen
        self.assertEqual(req["path"], b"/headers?deep=1")
        self.assertEqual(req["headers"]["host"], [b"www.example.test"])
        self.assertEqual(req["headers"]["x-health-check"], [b"lb1"])
        self.assertEqual(req["headers"]["user-agent"], [b"my-check/2"])

    @defer.inlineCallbacks
    def test_check_port_overrides_member_port(self):
        mon = HTTPMonitor(Monitor("web", "http", port=self.port), {}, reactor)
        result = yield mon.check(self.member(free_port()))
        self.assertEqual(result, CheckResult(True))

    @defer.inlineCallbacks
    def test_chunked_response(self):
        result = yield self.check(request_path="/chunked", expect="status: OK")
        self.assertEqual(result, CheckResult(True))

    @defer.inlineCallbacks
    def test_connect_refused(self):
        result = yield self.check(member_port=free_port())
        self.assertEqual(result, CheckResult(False, "connect refused"))

    @defer.inlineCallbacks
    def test_server_closes_before_the_response(self):
        factory = scripted_factory(close_now)
        result = yield self.check(member_port=self.listen(factory))
        self.assertEqual(result, CheckResult(False, "connection closed before the response"))

    @defer.inlineCallbacks
    def test_server_closes_mid_response(self):
        factory = scripted_factory(close_mid_body)
        result = yield self.check(member_port=self.listen(factory))
        self.assertEqual(result, CheckResult(
            False, "connection closed before the end of the response"))

    @defer.inlineCallbacks
    def test_bad_http_response(self):
        factory = scripted_factory(garbage)
        result = yield self.check(member_port=self.listen(factory))
        self.assertFalse(result.ok)
        self.assertEqual(result.reason,
                         "bad HTTP response: wrong number of parts: 'SSH-2.0-OpenSSH_9.6'")

    @defer.inlineCallbacks
    def test_head_is_bounded(self):
        factory = scripted_factory(huge_head)
        result = yield self.check(member_port=self.listen(factory))
        self.assertEqual(result, CheckResult(
            False, "bad HTTP response: status line and headers longer than 64 KiB"))
        yield self.closed_connections(factory)

    @defer.inlineCallbacks
    def test_body_is_bounded(self):
        """Only the first 64 KiB are read: a match beyond them is not seen,
        and a member that never stops sending is hung up on."""
        result = yield self.check(request_path="/big", expect="OK")
        self.assertEqual(result, CheckResult(False, "body does not match 'OK' (GET /big)"))
        result = yield self.check(request_path="/big", expect="x{1000}")
        self.assertEqual(result, CheckResult(True))

        factory = scripted_factory(endless_body)
        result = yield self.check(member_port=self.listen(factory), expect="^OK")
        self.assertEqual(result, CheckResult(True))
        yield self.closed_connections(factory)

    @defer.inlineCallbacks
    def test_cancel_while_waiting_closes_the_connection(self):
        """The runner enforces ``timeout`` by cancelling: a member that never
        answers must see the connection close."""
        factory = scripted_factory(hang)
        d = self.check(member_port=self.listen(factory))
        request = yield factory.request
        self.assertTrue(request.startswith(b"GET / HTTP/1.1\r\n"))
        self.assertNoResult(d)
        d.cancel()
        self.assertEqual(self.successResultOf(d), CheckResult(False, "check cancelled"))
        yield self.closed_connections(factory)

    @defer.inlineCallbacks
    def test_cancel_while_reading_the_body_closes_the_connection(self):
        factory = scripted_factory(lambda p: p.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nOK"))
        exchanges = []

        class Spy(HTTPMonitor):
            def new_exchange(self, member, port):
                exchanges.append(super().new_exchange(member, port))
                return exchanges[-1]

        d = Spy(Monitor("web", "http", expect="OK"), {}, reactor).check(
            self.member(self.listen(factory)))
        yield factory.request
        for _ in range(1000):  # until the client has read the head
            if exchanges[0].head_done:
                break
            yield task.deferLater(reactor, 0.001, lambda: None)
        self.assertTrue(exchanges[0].head_done)
        self.assertNoResult(d)
        d.cancel()
        self.assertEqual(self.successResultOf(d), CheckResult(False, "check cancelled"))
        yield self.closed_connections(factory)

    @defer.inlineCallbacks
    def test_cancel_while_connecting(self):
        factory = scripted_factory(hang)
        d = self.check(member_port=self.listen(factory))
        d.cancel()
        self.assertEqual(self.successResultOf(d), CheckResult(False, "check cancelled"))
        yield self.closed_connections(factory)  # none, or closed


class TwoMonitorsTests(HTTPTestCase):
    """A web check and a three-tier check on one pool (F7h): the member is up
    only while both pass. The runner's clock is a Clock; the checks are real."""

    @defer.inlineCallbacks
    def run_round(self, clock, member):
        before = {name: cs.checks_total for name, cs in member.checks.items()}
        clock.advance(10)
        for _ in range(2000):
            if all(member.checks.get(n) and member.checks[n].checks_total > before.get(n, 0)
                   for n in ("alive", "dbcheck")):
                return
            yield task.deferLater(reactor, 0.001, lambda: None)
        self.fail("checks did not finish")

    @defer.inlineCallbacks
    def test_member_up_only_while_both_pass(self):
        pool = pool_state(RoundRobin(), member_spec("a", self.port))
        member = pool.members["a"]
        clock = task.Clock()
        runner = MonitorRunner(clock, random.Random(3))
        alive = Monitor("alive", "http", fall=1, rise=1)
        db = Monitor("dbcheck", "http", fall=1, rise=1, request_method="POST",
                     request_path="/dbdown.cgi", body="q=ping", expect="OK")
        for spec in (alive, db):
            runner.add(pool, member, spec, HTTPMonitor(spec, {}, reactor))
        runner.startService()
        self.addCleanup(runner.stopService)

        yield self.run_round(clock, member)
        self.assertEqual(member.state, "down")
        self.assertEqual(member.down_reason,
                         "dbcheck: body does not match 'OK' (POST /dbdown.cgi) (1/1)")
        self.assertTrue(member.checks["alive"].last_ok)
        self.assertIsNotNone(member.checks["alive"].last_duration)  # feeds response time

        self.dbdown.healthy = True  # the DB tier recovers
        yield self.run_round(clock, member)
        self.assertEqual(member.state, "up")


class HTTPOptionTests(SynchronousTestCase):
    def test_unknown_option(self):
        with self.assertRaises(OptionError) as e:
            HTTPMonitor(Monitor("web", "http"), {"tls_verify": "no"}, reactor)
        self.assertEqual(e.exception.key, "tls_verify")
        self.assertEqual(e.exception.message, "unknown key 'tls_verify' for monitor type http")

    def test_headers_the_check_owns(self):
        for name in ("Connection", "content-length", "Transfer-Encoding"):
            with self.assertRaises(OptionError) as e:
                HTTPMonitor(Monitor("web", "http", headers=((name, "x"),)), {}, reactor)
            self.assertEqual(e.exception.key, "headers")
            self.assertIn(name, e.exception.message)

    def test_https_options(self):
        bad = [({"tls_verify": "maybe"}, "tls_verify"),
               ({"tls_server_name": "bad name"}, "tls_server_name"),
               ({"tls_ca": "/nonexistent/ca.pem"}, "tls_ca"),
               ({"tls_ca": __file__}, "tls_ca"),  # not PEM
               ({"tls_verfiy": "no"}, "tls_verfiy")]
        for options, key in bad:
            with self.assertRaises(OptionError) as e:
                HTTPSMonitor(Monitor("web", "https"), options, reactor)
            self.assertEqual(e.exception.key, key)
        self.assertEqual(
            str(self.assertRaises(OptionError, HTTPSMonitor, Monitor("web", "https"),
                                  {"tls_ca": "/nonexistent/ca.pem"}, reactor)),
            "cannot read CA bundle '/nonexistent/ca.pem': No such file or directory")
        self.assertEqual(
            str(self.assertRaises(OptionError, HTTPSMonitor, Monitor("web", "https"),
                                  {"tls_verfiy": "no"}, reactor)),
            "unknown key 'tls_verfiy' for monitor type https (did you mean 'tls_verify'?)")

    def test_option_error_in_site_points_at_the_line(self):
        from lbframe.service import build_runtime
        from lbframe.errors import ConfigError
        site = parse_site("[virtual v]\nlisten = tcp:0:interface=127.0.0.1\npool = web\n\n"
                          "[pool web]\nmonitor = db\nmember a = 127.0.0.1:80\n\n"
                          "[monitor db]\ntype = http\nrequest = GET /\ntls_verify = no\n")
        with self.assertRaises(ConfigError) as e:
            build_runtime(site, load_plugins(entry_points=False), reactor)
        self.assertEqual(str(e.exception),
                         "site.ini:12: [monitor db] tls_verify: "
                         "unknown key 'tls_verify' for monitor type http")

    def test_registered_and_provide_imonitor(self):
        plugins = load_plugins(entry_points=False)
        for name, cls in (("http", HTTPMonitor), ("https", HTTPSMonitor)):
            self.assertIs(plugins.monitors.get(name).factory, cls)
            self.assertTrue(verifyObject(IMonitor, cls(Monitor("m", name), {}, reactor)))


# -- https -----------------------------------------------------------------------

def make_ca(name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_server_cert(ca_key, ca_cert, dns_name):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


class HTTPSMonitorTests(HTTPTestCase):
    def setUp(self):
        self.seen = []
        tmp = self.mktemp()
        os.makedirs(tmp)
        ca_key, ca_cert = make_ca("lbframe test CA")
        key, cert = make_server_cert(ca_key, ca_cert, "member.test")
        self.ca_file = os.path.join(tmp, "ca.pem")
        with open(self.ca_file, "wb") as f:
            f.write(pem(ca_cert))
        _, other_ca = make_ca("some other CA")
        self.other_ca_file = os.path.join(tmp, "other-ca.pem")
        with open(self.other_ca_file, "wb") as f:
            f.write(pem(other_ca))
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        options = ssl.PrivateCertificate.loadPEM(pem(cert) + key_pem).options()
        self.sni = []
        options.getContext().set_tlsext_servername_callback(
            lambda conn: self.sni.append(conn.get_servername()))
        site = server.Site(web_root(self.seen))
        port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def https(self, options, **spec):
        return self.check(cls=HTTPSMonitor, options=options, **spec)

    @defer.inlineCallbacks
    def test_verified_with_ca_and_server_name(self):
        result = yield self.https({"tls_ca": self.ca_file, "tls_server_name": "member.test"},
                                  request_method="POST", request_path="/dbcheck.cgi",
                                  body="q=ping", expect="OK")
        self.assertEqual(result, CheckResult(True))
        self.assertEqual(self.sni, [b"member.test"])
        self.assertEqual(self.seen[0]["body"], b"q=ping")
        self.assertTrue(self.seen[0]["ua"].startswith(b"lbframe-monitor/"))

    @defer.inlineCallbacks
    def test_host_header_is_the_server_name(self):
        result = yield self.https({"tls_ca": self.ca_file, "tls_server_name": "member.test"},
                                  request_path="/headers")
        self.assertEqual(result, CheckResult(True))
        self.assertEqual(self.seen[0]["headers"]["host"], [f"member.test:{self.port}".encode()])

    @defer.inlineCallbacks
    def test_untrusted_ca_fails(self):
        result = yield self.https({"tls_ca": self.other_ca_file,
                                   "tls_server_name": "member.test"})
        self.assertEqual(result, CheckResult(False, "TLS: certificate verify failed (unable to get local issuer certificate)"))
        self.assertEqual(self.seen, [])

    @defer.inlineCallbacks
    def test_system_trust_store_is_the_default(self):
        result = yield self.https({"tls_server_name": "member.test"})
        self.assertEqual(result, CheckResult(
            False, "TLS: certificate verify failed (unable to get local issuer certificate)"))

    @defer.inlineCallbacks
    def test_wrong_name_fails(self):
        result = yield self.https({"tls_ca": self.ca_file, "tls_server_name": "other.test"})
        self.assertEqual(result, CheckResult(False, "TLS: certificate does not match other.test"))
        # by default the name checked is the member's host
        result = yield self.https({"tls_ca": self.ca_file})
        self.assertEqual(result, CheckResult(False, "TLS: certificate does not match 127.0.0.1"))
        self.assertEqual(self.seen, [])

    @defer.inlineCallbacks
    def test_no_verify(self):
        result = yield self.https({"tls_verify": "no"}, expect="hello")
        self.assertEqual(result, CheckResult(True))
        result = yield self.https({"tls_verify": "no", "tls_server_name": "member.test"},
                                  request_path="/error")
        self.assertEqual(result, CheckResult(False, "HTTP 500 from GET /error"))
        self.assertEqual(self.sni, [None, b"member.test"])  # no SNI for an IP address

    @defer.inlineCallbacks
    def test_plain_http_to_a_tls_member(self):
        result = yield self.check()
        self.assertEqual(result, CheckResult(False, "connection closed before the response"))

    @defer.inlineCallbacks
    def test_cancel_during_the_handshake_closes_the_connection(self):
        factory = scripted_factory(hang, Silent)
        d = self.https({"tls_ca": self.ca_file, "tls_server_name": "member.test"},
                       member_port=self.listen(factory))
        hello = yield factory.request
        self.assertEqual(hello[:1], b"\x16")  # a TLS handshake record
        self.assertNoResult(d)
        d.cancel()
        self.assertEqual(self.successResultOf(d), CheckResult(False, "check cancelled"))
        yield self.closed_connections(factory)

    @defer.inlineCallbacks
    def test_tls_ca_relative_to_the_site_file(self):
        site_file = os.path.join(os.path.dirname(self.ca_file), "site.ini")
        spec = Monitor("web", "https", source=Source(site_file, "monitor web", 1))
        mon = HTTPSMonitor(spec, {"tls_ca": "ca.pem", "tls_server_name": "member.test"}, reactor)
        result = yield mon.check(self.member(self.port))
        self.assertEqual(result, CheckResult(True))
