"""TLS on http virtual servers: termination (one certificate, or SNI from a
folder), check-time certificate errors, and re-encryption to members."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess

from twisted.internet import defer, protocol, reactor, threads
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase

from lbframe.config import parse_site
from lbframe.errors import ConfigError
from lbframe.plugins import load_plugins
from lbframe.service import build_runtime
from tests.helpers import free_port
from tests.httpkit import HTTPSiteMixin
from tests.protocols.http.test_stream import MiB, DownloadMember
from tests.tlskit import cert_pem, key_pem, make_ca, make_cert, write, write_bundle


def https_get(port: int, server_name: str | None, ca_file: str, path: str = "/",
              max_version=None) -> dict:
    """A blocking TLS client (run in a thread): what the handshake and the
    response looked like."""
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["http/1.1"])
    if server_name is None:
        context.check_hostname = False
    if max_version is not None:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = max_version
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            tls.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                        % (path.encode(), (server_name or "x").encode()))
            data = b""
            while True:
                piece = tls.recv(65536)
                if not piece:
                    break
                data += piece
            peer = tls.getpeercert()
            return {"data": data, "alpn": tls.selected_alpn_protocol(),
                    "version": tls.version(),
                    "subject": dict(x[0] for x in peer["subject"])["commonName"]}


class TerminationTests(HTTPSiteMixin, TestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.ca = make_ca()
        self.ca_file = write(os.path.join(self.dir, "ca.pem"), cert_pem(self.ca[1]))

    @defer.inlineCallbacks
    def test_ssl_endpoint_terminates_tls_and_says_https(self):
        key, cert = make_cert(self.ca, "www.test", kind="rsa")
        key_file = write(os.path.join(self.dir, "key.pem"), key_pem(key))
        cert_file = write(os.path.join(self.dir, "cert.pem"), cert_pem(cert))
        mport, member = self.member()
        self.serve_http(f"member a = 127.0.0.1:{mport}", listen=(
            f"ssl:0:privateKey={key_file}:certKey={cert_file}:interface=127.0.0.1"))
        port = self.service.addresses()[0].port
        got = yield threads.deferToThread(https_get, port, "www.test", self.ca_file)
        self.assertTrue(got["data"].startswith(b"HTTP/1.1 200"))
        self.assertEqual(got["alpn"], "http/1.1")
        self.assertIn(got["version"], ("TLSv1.2", "TLSv1.3"))
        self.assertIn(b"X-Forwarded-Proto: https\r\n", member.requests[0])

    @defer.inlineCallbacks
    def test_tls_1_1_is_refused(self):
        key, cert = make_cert(self.ca, "www.test")
        bundle = write_bundle(os.path.join(self.dir, "certs", "default.pem"), key, cert, self.ca)
        mport, member = self.member()
        self.serve_http(f"member a = 127.0.0.1:{mport}",
                        f"certificates = {os.path.dirname(bundle)}")
        port = self.service.addresses()[0].port
        with self.assertRaises(ssl.SSLError):
            yield threads.deferToThread(https_get, port, "www.test", self.ca_file,
                                        max_version=ssl.TLSVersion.TLSv1_1)
        self.assertEqual(member.received, b"")

    @defer.inlineCallbacks
    def test_certificate_chosen_by_sni(self):
        folder = os.path.join(self.dir, "certs")
        for filename, name in (("a.test.pem", "a.test"), ("_.wild.test.pem", "*.wild.test"),
                               ("default.pem", "default.test")):
            key, cert = make_cert(self.ca, name)
            write_bundle(os.path.join(folder, filename), key, cert, self.ca)
        mport, member = self.member()
        self.serve_http(f"member a = 127.0.0.1:{mport}", f"certificates = {folder}")
        port = self.service.addresses()[0].port
        cases = [("a.test", "a.test"), ("x.wild.test", "*.wild.test"),
                 ("A.TEST", "a.test"), (None, "default.test")]
        for sni, subject in cases:
            got = yield threads.deferToThread(https_get, port, sni, self.ca_file)
            self.assertEqual(got["subject"], subject, sni)
            self.assertTrue(got["data"].startswith(b"HTTP/1.1 200"))
        # A name no file matches gets the default certificate (and the
        # client's name check fails, as it should).
        with self.assertRaises(ssl.SSLCertVerificationError):
            yield threads.deferToThread(https_get, port, "other.test", self.ca_file)


class CheckTimeTests(TestCase):
    """Bad certificates are configuration errors naming the file."""

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.ca = make_ca()

    def load(self, virtual_lines: str):
        text = f"""
[virtual v]
listen = tcp:{free_port()}:interface=127.0.0.1
protocol = http
pool = p
{virtual_lines}

[pool p]
member a = 127.0.0.1:1
"""
        return build_runtime(parse_site(text, os.path.join(self.dir, "site.ini")),
                             load_plugins(entry_points=False), reactor)

    def folder_with(self, filename: str, *parts: bytes) -> str:
        folder = os.path.join(self.dir, "certs")
        write(os.path.join(folder, filename), *parts)
        return folder

    def test_key_not_matching_its_certificate(self):
        key, cert = make_cert(self.ca, "a.test")
        other_key, _ = make_cert(self.ca, "b.test")
        folder = self.folder_with("a.test.pem", key_pem(other_key), cert_pem(cert))
        with self.assertRaises(ConfigError) as caught:
            self.load(f"certificates = {folder}")
        message = str(caught.exception)
        self.assertIn("[virtual v] certificates", message)
        self.assertIn("a.test.pem", message)
        self.assertIn("does not match", message)

    def test_expired_certificate(self):
        key, cert = make_cert(self.ca, "old.test", expired=True)
        folder = self.folder_with("old.test.pem", key_pem(key), cert_pem(cert))
        with self.assertRaises(ConfigError) as caught:
            self.load(f"certificates = {folder}")
        self.assertIn("old.test.pem", str(caught.exception))
        self.assertIn("expired", str(caught.exception))

    def test_unreadable_file(self):
        folder = self.folder_with("x.test.pem", b"not a certificate\n")
        with self.assertRaises(ConfigError) as caught:
            self.load(f"certificates = {folder}")
        self.assertIn("x.test.pem", str(caught.exception))
        self.assertIn("no PEM certificate", str(caught.exception))

    def test_ssl_endpoint_with_expired_certificate(self):
        key, cert = make_cert(self.ca, "old.test", expired=True)
        key_file = write(os.path.join(self.dir, "k.pem"), key_pem(key))
        cert_file = write(os.path.join(self.dir, "c.pem"), cert_pem(cert))
        text = f"""
[virtual v]
listen = ssl:{free_port()}:privateKey={key_file}:certKey={cert_file}:interface=127.0.0.1
protocol = http
pool = p

[pool p]
member a = 127.0.0.1:1
"""
        with self.assertRaises(ConfigError) as caught:
            build_runtime(parse_site(text, os.path.join(self.dir, "site.ini")),
                          load_plugins(entry_points=False), reactor)
        self.assertIn("[virtual v] listen", str(caught.exception))
        self.assertIn("expired", str(caught.exception))


class ReencryptionTests(HTTPSiteMixin, TestCase):
    """``tls = yes``: lbframe speaks TLS to an ``openssl s_server`` member."""

    def setUp(self):
        if shutil.which("openssl") is None:
            raise SkipTest("openssl is not installed")
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.ca = make_ca()
        self.ca_file = write(os.path.join(self.dir, "ca.pem"), cert_pem(self.ca[1]))
        self.other_ca_file = write(os.path.join(self.dir, "other.pem"), cert_pem(make_ca("x")[1]))
        key, cert = make_cert(self.ca, "member.test")
        self.key_file = write(os.path.join(self.dir, "mk.pem"), key_pem(key))
        self.cert_file = write(os.path.join(self.dir, "mc.pem"), cert_pem(cert))
        self.port = free_port()
        self.server = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-key", self.key_file,
             "-cert", self.cert_file, "-www", "-quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.addCleanup(self._stop_server)
        return self.wait_until(self._listening)

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def _stop_server(self):
        os.killpg(self.server.pid, signal.SIGKILL)
        self.server.wait(5)

    @defer.inlineCallbacks
    def test_trusted_member_answers(self):
        port = self.serve_http(f"member a = 127.0.0.1:{self.port}\ntls = yes\n"
                               f"tls_ca = {self.ca_file}\ntls_server_name = member.test")
        client = yield self.exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(client.responses[0].status, 200)
        self.assertIn(b"s_server", client.responses[0].body)

    @defer.inlineCallbacks
    def test_untrusted_member_is_502_and_a_failure(self):
        port = self.serve_http(f"member a = 127.0.0.1:{self.port}\ntls = yes\n"
                               f"tls_ca = {self.other_ca_file}\ntls_server_name = member.test")
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client = yield self.exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(client.responses[0].status, 502)
        self.assertEqual(self.runtime.pools["p"].members["a"].failures, 1)
        # The failure is logged by the member's pool (lbframe.runtime).
        logged = [formatEvent(e) for e in events
                  if e.get("log_namespace", "").startswith("lbframe")]
        self.assertTrue(any("member p/a: TLS:" in line and "certificate verify failed" in line
                            for line in logged), logged)

    @defer.inlineCallbacks
    def test_wrong_name_is_502(self):
        port = self.serve_http(f"member a = 127.0.0.1:{self.port}\ntls = yes\n"
                               f"tls_ca = {self.ca_file}\ntls_server_name = other.test")
        client = yield self.exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(client.responses[0].status, 502)

    @defer.inlineCallbacks
    def test_no_verify_accepts_any_certificate(self):
        port = self.serve_http(f"member a = 127.0.0.1:{self.port}\ntls = yes\ntls_verify = no")
        client = yield self.exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(client.responses[0].status, 200)


def https_get_with_cert(port: int, ca_file: str, cert_file: str | None, key_file: str | None,
                        extra: bytes = b"") -> bytes:
    """A TLS client presenting ``cert_file`` (or none); the raw response."""
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n" + extra + b"\r\n")
            data = b""
            while True:
                piece = tls.recv(65536)
                if not piece:
                    return data
                data += piece


class ClientCertificateTests(HTTPSiteMixin, TestCase):
    """``client_ca``: client certificates asked for, checked, and their
    subject passed on (never one the client wrote itself)."""

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.ca = make_ca()
        self.ca_file = write(os.path.join(self.dir, "ca.pem"), cert_pem(self.ca[1]))
        key, cert = make_cert(self.ca, "www.test")
        self.folder = os.path.dirname(
            write_bundle(os.path.join(self.dir, "certs", "default.pem"), key, cert, self.ca))
        clients = make_ca("client CA")
        self.client_ca_file = write(os.path.join(self.dir, "clients.pem"), cert_pem(clients[1]))
        key, cert = make_cert(clients, "alice")
        self.alice = (write(os.path.join(self.dir, "alice.crt"), cert_pem(cert)),
                      write(os.path.join(self.dir, "alice.key"), key_pem(key)))
        key, cert = make_cert(make_ca("stranger CA"), "mallory")
        self.mallory = (write(os.path.join(self.dir, "mallory.crt"), cert_pem(cert)),
                        write(os.path.join(self.dir, "mallory.key"), key_pem(key)))

    def serve(self, mode: str):
        self.mport, self.recorder = self.member()
        self.serve_http(f"member a = 127.0.0.1:{self.mport}",
                        f"certificates = {self.folder}\nclient_ca = {self.client_ca_file}\n"
                        f"client_cert = {mode}")
        return self.service.addresses()[0].port

    @defer.inlineCallbacks
    def test_required_certificate_subject_is_passed_on(self):
        port = self.serve("required")
        data = yield threads.deferToThread(
            https_get_with_cert, port, self.ca_file, *self.alice,
            extra=b"X-Client-Cert-Subject: CN=admin\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 200"))
        request = self.recorder.requests[0]
        self.assertIn(b"X-Client-Cert-Subject: CN=alice\r\n", request)
        self.assertNotIn(b"CN=admin", request)

    @defer.inlineCallbacks
    def test_required_refuses_no_certificate_and_a_strangers(self):
        port = self.serve("required")
        for cert in ((None, None), self.mallory):
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                data = yield threads.deferToThread(https_get_with_cert, port, self.ca_file, *cert)
                # TLS 1.3: the server's refusal can arrive after the client's handshake.
                if not data:
                    raise ConnectionError("closed")
        self.assertEqual(self.recorder.received, b"")

    @defer.inlineCallbacks
    def test_optional_lets_clients_without_certificate_in_unlabelled(self):
        port = self.serve("optional")
        data = yield threads.deferToThread(
            https_get_with_cert, port, self.ca_file, None, None,
            extra=b"X-Client-Cert-Subject: CN=admin\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 200"))
        self.assertNotIn(b"X-Client-Cert-Subject", self.recorder.requests[0])

    def test_client_cert_without_client_ca_is_a_config_error(self):
        with self.assertRaises(ConfigError) as caught:
            build_runtime(parse_site(f"""
[virtual v]
listen = tcp:{free_port()}:interface=127.0.0.1
protocol = http
pool = p
client_cert = optional

[pool p]
member a = 127.0.0.1:1
""", os.path.join(self.dir, "site.ini")), load_plugins(entry_points=False), reactor)
        self.assertIn("[virtual v] client_cert: client_cert needs client_ca", str(caught.exception))


class PeerSubjectTests(TestCase):
    def test_control_characters_in_a_subject_are_escaped(self):
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID
        from OpenSSL import crypto

        from lbframe.tls.server import peer_subject
        from tests.tlskit import make_key

        key = make_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil\r\nX-Admin: yes")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(1).not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))

        class Transport:
            def getPeerCertificate(self):
                return crypto.X509.from_cryptography(cert)

        self.assertEqual(peer_subject(Transport()), "CN=evil\\0d\\0aX-Admin: yes")


class TLSBackpressureTests(HTTPSiteMixin, TestCase):
    """A TLS client that does not read pauses the member, as a plain one
    does: the TLS layer's records wait in the stream below, and the
    exchange sees that (send() asks the stream) and makes the member's
    transport the client's producer."""

    timeout = 60

    @defer.inlineCallbacks
    def test_non_reading_tls_client_pauses_the_member(self):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        ca = make_ca()
        ca_file = write(os.path.join(folder, "ca.pem"), cert_pem(ca[1]))
        key, cert = make_cert(ca, "www.test")
        key_file = write(os.path.join(folder, "key.pem"), key_pem(key))
        cert_file = write(os.path.join(folder, "cert.pem"), cert_pem(cert))
        factory = protocol.Factory.forProtocol(DownloadMember)
        factory.size = 256 * MiB
        self.serve_http(f"member a = 127.0.0.1:{self.listen_member(factory)}", listen=(
            f"ssl:0:privateKey={key_file}:certKey={cert_file}:interface=127.0.0.1"))
        port = self.service.addresses()[0].port
        context = ssl.create_default_context(cafile=ca_file)
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        tls = context.wrap_socket(raw, server_hostname="www.test", do_handshake_on_connect=False)
        self.addCleanup(tls.close)
        yield threads.deferToThread(tls.do_handshake)
        yield threads.deferToThread(
            tls.sendall, b"GET /huge HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n")
        # The client reads nothing: the member must be paused.
        yield self.wait_until(lambda: getattr(factory, "producer", None) is not None)
        yield self.wait_until(lambda: factory.producer.paused, timeout=20)
        for _ in range(20):
            d = defer.Deferred()
            reactor.callLater(0.01, d.callback, None)
            yield d
        self.assertLess(factory.producer.sent, 32 * MiB, "the member was not paused")

        def read_all():
            got = 0
            while True:
                piece = tls.recv(1 << 20)
                if not piece:
                    return got
                got += len(piece)

        received = yield threads.deferToThread(read_all)
        self.assertGreater(received, 256 * MiB)  # the head and the whole body
