"""``protocol = ssl`` and ``ssl-session-id`` end to end, with real TLS.

Members are ``openssl s_server -www`` processes (each with its own
certificate, so a client knows which one answered; ``-www`` answers a GET
with a page saying whether the session was reused). Clients are Python's
``ssl`` in a thread, so the reactor keeps running lbframe meanwhile.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet import reactor, threads
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbframe.balancer import Balancer
from lbframe.config import parse_site
from lbframe.errors import ConfigError
from lbframe.plugins import load_plugins
from lbframe.protocols import proxy_protocol
from lbframe.service import build_runtime
from lbframe.tls.hello import parse_server_hello
from tests.helpers import free_port
from tests.tlskit import cert_pem, key_pem, make_ca, write

OPENSSL = shutil.which("openssl")
#: how long a blocking client waits for anything
IO_TIMEOUT = 5.0


def _make_cert(directory: str, name: str) -> tuple[str, str, bytes]:
    """A self-signed certificate for ``name``: (cert file, key file, DER)."""
    key, cert = make_ca(name)
    certfile = write(os.path.join(directory, f"{name}.crt"), cert_pem(cert))
    keyfile = write(os.path.join(directory, f"{name}.key"), key_pem(key))
    return certfile, keyfile, cert.public_bytes(Encoding.DER)


class Members:
    """``openssl s_server`` processes on free loopback ports."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="lbframe-ssl-")
        self.procs: list[subprocess.Popen] = []
        self.ports: dict[str, int] = {}
        self.by_cert: dict[bytes, str] = {}

    def start(self, name: str, *flags: str) -> None:
        certfile, keyfile, der = _make_cert(self.dir, name)
        self.by_cert[der] = name
        out = os.path.join(self.dir, f"{name}.out")
        for _ in range(3):  # a free port may be taken between the probe and the bind
            port = free_port()
            with open(out, "wb") as f:
                proc = subprocess.Popen([OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}",
                                         "-cert", certfile, "-key", keyfile, "-www", *flags],
                                        stdin=subprocess.DEVNULL, stdout=f,
                                        stderr=subprocess.STDOUT)
            self.procs.append(proc)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                with open(out, "rb") as f:
                    if b"ACCEPT" in f.read():
                        self.ports[name] = port
                        return
                time.sleep(0.01)
            proc.kill()
            proc.wait()
        raise RuntimeError(f"openssl s_server {name} did not start: {open(out).read()}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def client_context(max_version=ssl.TLSVersion.TLSv1_2) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.maximum_version = max_version
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


def tls_get(ctx, port: int, session=None, sni="Shop.Example"):
    """One GET over TLS through lbframe: (peer cert DER, session, reused, page)."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni, session=session) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            page = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
                    break
                if not chunk:
                    break
                page += chunk
            return s.getpeercert(binary_form=True), s.session, s.session_reused, page


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the connection is closed (or IO_TIMEOUT)."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
        s.sendall(data)
        got = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return got
            if not chunk:
                return got
            got += chunk


def client_hello_bytes(sni="shop.example") -> bytes:
    """A real ClientHello (TLS 1.2), from a memory BIO."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context().wrap_bio(inc, out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


class SSLPassthroughTests(TestCase):
    timeout = 60

    def start_members(self, names) -> Members:
        if OPENSSL is None:
            self.skipTest("openssl is needed for these tests")
        members = self.members = Members()
        self.addCleanup(members.stop)
        for name in names:
            if name == "modern":
                members.start(name)  # TLS 1.3 and tickets: openssl's defaults
            else:
                members.start(name, "-no_ticket", "-no_tls1_3")
        return members

    def serve(self, members=("a", "b", "c"), virtual_lines="",
              persistence="persistence = sess"):
        self.start_members(members)
        port = free_port()
        pool = "\n".join(f"member {m} = 127.0.0.1:{self.members.ports[m]}" for m in members)
        site = parse_site(f"""
[virtual v]
listen = tcp:{port}:interface=127.0.0.1
protocol = ssl
pool = p
{persistence}
{virtual_lines}

[pool p]
scheduler = round-robin
{pool}

[persistence sess]
method = ssl-session-id
timeout = 5m
""")
        runtime = build_runtime(site, load_plugins(entry_points=False), reactor)
        svc = runtime.protocols["v"].make_service(runtime.balancers["v"], reactor)
        svc.startService()
        self.addCleanup(svc.stopService)
        return port, runtime, svc

    def who(self, cert: bytes) -> str:
        return self.members.by_cert[cert]

    def test_resumptions_go_to_the_member_that_issued_the_session(self):
        port, runtime, svc = self.serve()
        contexts = []
        choose = Balancer.choose

        def recording_choose(balancer, context, *args, **kw):
            contexts.append((context.tls_sni, context.tls_session_id))
            return choose(balancer, context, *args, **kw)

        self.patch(Balancer, "choose", recording_choose)
        ctx = client_context()

        def run():
            cert, session, reused, page = tls_get(ctx, port)
            first = (self.who(cert), session, reused, page)
            resumed = []
            for _ in range(10):
                cert, session, reused, page = tls_get(ctx, port, session=first[1])
                resumed.append((self.who(cert), reused, page))
            return first, resumed

        def check(result):
            (member, session, reused, page), resumed = result
            self.assertFalse(reused)
            self.assertIn(b"New, TLSv1.2", page)
            self.assertEqual([m for m, _, _ in resumed], [member] * 10)
            self.assertEqual([r for _, r, _ in resumed], [True] * 10)
            for _, _, page in resumed:
                self.assertIn(b"Reused, TLSv1.2", page)
            profile = runtime.balancers["v"].persistence
            self.assertEqual(profile.hits, 10)
            self.assertEqual(profile.store.get(session.id.hex()), member)
            self.assertEqual(len(profile.store), 1)
            # the contexts carried SNI (lower case) and the offered session id
            self.assertEqual(contexts[0], ("shop.example", b""))
            self.assertEqual(contexts[1:], [("shop.example", session.id)] * 10)
            self.assertEqual(svc.virtual.refused, 0)

        return threads.deferToThread(run).addCallback(check)

    def test_new_sessions_spread_and_each_sticks(self):
        port, runtime, svc = self.serve()
        ctx = client_context()

        def run():
            sessions = []
            for _ in range(6):
                cert, session, reused, _ = tls_get(ctx, port)
                sessions.append((self.who(cert), session, reused))
            # in reverse, so that round-robin alone would not match by chance
            again = [(self.who(tls_get(ctx, port, session=s)[0]), m)
                     for m, s, _ in reversed(sessions)]
            return sessions, again

        def check(result):
            sessions, again = result
            self.assertEqual(sorted(m for m, _, _ in sessions), ["a", "a", "b", "b", "c", "c"])
            self.assertFalse(any(r for _, _, r in sessions))
            self.assertEqual([got for got, _ in again], [want for _, want in again])
            self.assertEqual(len(runtime.balancers["v"].persistence.store), 6)

        return threads.deferToThread(run).addCallback(check)

    def test_without_persistence_resumption_fails_on_other_members(self):
        """The control: round-robin alone scatters the resumptions."""
        port, runtime, svc = self.serve(persistence="")
        ctx = client_context()

        def run():
            cert, session, _, _ = tls_get(ctx, port)
            return [tls_get(ctx, port, session=session)[2] for _ in range(3)]

        # three members in turn: only the one that issued the session resumes it
        return threads.deferToThread(run).addCallback(
            lambda reused: self.assertEqual(sorted(reused), [False, False, True]))

    def test_a_tls13_capable_client_resuming_a_tls12_session(self):
        """Offering TLS 1.3 (with a random session id) to TLS 1.2 members:
        the member's id is learned, the random one is not kept."""
        port, runtime, svc = self.serve()
        ctx = client_context(ssl.TLSVersion.TLSv1_3)

        def run():
            cert, session, _, _ = tls_get(ctx, port)
            return self.who(cert), session, [tls_get(ctx, port, session=session)
                                             for _ in range(4)]

        def check(result):
            member, session, resumed = result
            self.assertEqual([(self.who(c), r) for c, _, r, _ in resumed], [(member, True)] * 4)
            profile = runtime.balancers["v"].persistence
            self.assertEqual([key for key, _, _ in profile.items()], [session.id.hex()])

        return threads.deferToThread(run).addCallback(check)

    def test_not_tls_is_closed_and_counted(self):
        port, runtime, svc = self.serve()
        attempts = [
            b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n",             # plain HTTP
            b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00",                   # a ServerHello
            b"\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10" + b"\x00" * 37,  # SSLv2-style
            b"\x16\x03\x01\x00\x00",                                       # empty record
            os.urandom(64).replace(b"\x16", b"\x17"),                      # noise
        ]

        def run():
            return [raw_exchange(port, data) for data in attempts]

        def check(answers):
            self.assertEqual(answers, [b""] * len(attempts))
            self.assertEqual(svc.virtual.refused, len(attempts))
            self.assertEqual(svc.virtual.active, 0)
            for member in runtime.pools["p"].members.values():
                self.assertEqual(member.total, 0)
            self.assertEqual(svc.connection_count(), 0)

        return threads.deferToThread(run).addCallback(check)

    def test_a_client_too_slow_with_its_hello_is_closed(self):
        port, runtime, svc = self.serve(virtual_lines="timeout_client = 300ms")
        hello = client_hello_bytes()

        def run():
            with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
                s.sendall(hello[:20])
                start = time.monotonic()
                got = s.recv(100)
                return got, time.monotonic() - start

        def check(result):
            got, waited = result
            self.assertEqual(got, b"")
            self.assertLess(waited, 3.0)
            self.assertEqual(svc.virtual.refused, 1)

        return threads.deferToThread(run).addCallback(check)

    def test_accept_proxy_then_client_hello_in_one_write(self):
        port, runtime, svc = self.serve(members=("a",), virtual_lines="accept_proxy = yes")
        header = proxy_protocol.build_v1(("203.0.113.7", 40000), ("198.51.100.1", 443))
        hello = client_hello_bytes()

        def run():
            with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
                s.sendall(header + hello)
                got = b""
                while True:
                    got += s.recv(65536)
                    answer = parse_server_hello(got)
                    if answer is not None:
                        return answer

        def check(answer):
            self.assertEqual(len(answer.session_id), 32)
            self.assertEqual(runtime.pools["p"].members["a"].total, 1)

        return threads.deferToThread(run).addCallback(check)

    def test_tls13_and_tickets_fall_back_to_the_scheduler_and_say_so_once(self):
        port, runtime, svc = self.serve(members=("modern",))
        events = []

        def observe(event):
            if event.get("log_namespace") == "lbframe.persistence":
                events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        ctx13 = client_context(ssl.TLSVersion.TLSv1_3)

        def run():
            return [tls_get(ctx13, port)[3] for _ in range(3)]

        def check(pages):
            for page in pages:
                self.assertIn(b"TLSv1.3", page)
            profile = runtime.balancers["v"].persistence
            # the random session ids TLS 1.3 clients send are not kept
            self.assertEqual(len(profile.store), 0)
            self.assertEqual(profile.written, 0)
            tls13 = [e for e in events if "TLS 1.3" in str(e.get("why", ""))]
            self.assertEqual(len(tls13), 1)
            self.assertEqual(tls13[0]["virtual"], "v")

        return threads.deferToThread(run).addCallback(check)


class ConfigTests(SynchronousTestCase):
    SITE = """
[virtual v]
listen = {listen}
protocol = {protocol}
pool = p
persistence = sess
{extra}

[pool p]
member a = 127.0.0.1:8443

[persistence sess]
method = ssl-session-id
"""

    def build(self, listen="tcp:8443:interface=127.0.0.1", protocol="ssl", extra=""):
        site = parse_site(self.SITE.format(listen=listen, protocol=protocol, extra=extra))
        return build_runtime(site, load_plugins(entry_points=False), reactor)

    def test_a_good_site(self):
        runtime = self.build()
        self.assertEqual(type(runtime.balancers["v"].persistence.method).__name__,
                         "SSLSessionID")

    def test_ssl_session_id_needs_protocol_ssl(self):
        for protocol in ("tcp", "http"):
            with self.assertRaises(ConfigError) as caught:
                self.build(protocol=protocol)
            self.assertEqual(str(caught.exception),
                             "site.ini:6: [virtual v] persistence: persistence 'sess' uses "
                             "method ssl-session-id, which needs protocol = ssl "
                             f"(this virtual server is {protocol})")

    def test_protocol_ssl_passes_tls_through(self):
        directory = self.mktemp()
        os.makedirs(directory)
        certfile, keyfile, _ = _make_cert(directory, "shop")
        with self.assertRaises(ConfigError) as caught:
            self.build(listen=f"ssl:8443:privateKey={keyfile}:certKey={certfile}")
        self.assertIn("[virtual v] listen: endpoint 'ssl:8443", str(caught.exception))
        self.assertIn("passes TLS through", str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            self.build(extra=f"certificates = {os.path.dirname(__file__)}")
        self.assertIn("[virtual v] certificates: protocol ssl passes TLS through",
                      str(caught.exception))


class MethodTests(SynchronousTestCase):
    """The ssl-session-id method on hand-made hellos."""

    def setUp(self):
        from lbframe.persistence.ssl_session_id import SSLSessionID
        from tests.tls.test_hello import client_hello, server_hello

        class Spec:
            name = "sess"

        self.method = SSLSessionID(Spec, {})
        self.client_hello, self.server_hello = client_hello, server_hello
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def context(self, **kw):
        from lbframe.balancer import RequestContext
        from lbframe.tls.hello import parse_client_hello

        hello = parse_client_hello(self.client_hello(**kw))
        return RequestContext("192.0.2.1", 5000, "v", tls_sni=hello.server_name,
                              tls_session_id=hello.session_id, tls_hello=hello)

    def warnings(self, words):
        return [e for e in self.events if words in str(e.get("why", ""))]

    def test_keys(self):
        self.assertEqual(self.method.key_for(self.context(session_id=b"\xab" * 32)), "ab" * 32)
        self.assertIsNone(self.method.key_for(self.context(session_id=b"")))
        self.assertEqual(self.warnings("ticket"), [])

    def test_a_presented_ticket_or_psk_gives_no_key_and_says_so_once(self):
        for _ in range(3):
            ctx = self.context(session_id=b"\x01" * 32, extensions=((35, b"opaque ticket"),))
            self.assertIsNone(self.method.key_for(ctx))
        ctx = self.context(session_id=b"\x01" * 32, extensions=((41, b"\x00\x01x"),))
        self.assertIsNone(self.method.key_for(ctx))
        self.assertEqual(len(self.warnings("session ticket")), 1)

    def test_learning(self):
        from lbframe.tls.hello import parse_server_hello

        ctx = self.context(session_id=b"")
        hello = parse_server_hello(self.server_hello(session_id=b"\x02" * 32))
        self.assertEqual(self.method.learn(ctx, hello), ("02" * 32,))
        empty = parse_server_hello(self.server_hello(session_id=b""))
        for _ in range(2):
            self.assertEqual(self.method.learn(ctx, empty), ())
        self.assertEqual(len(self.warnings("empty session id")), 1)
        tls13 = parse_server_hello(self.server_hello(extensions=((43, b"\x03\x04"),)))
        self.assertEqual(self.method.learn(ctx, tls13), ())
        self.assertEqual(len(self.warnings("TLS 1.3")), 1)
