"""The TLS policy lbframe offers clients (issue 13, item 10): a modern
default, the keys that change it, OCSP stapling, and an RSA and an ECDSA
certificate for the same name. Real handshakes with ``openssl s_client``
on 127.0.0.1."""

from __future__ import annotations

import datetime
import io
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
from contextlib import redirect_stderr, redirect_stdout

from OpenSSL import SSL
from twisted.internet import defer, reactor, threads
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase

from lbframe.cli import main
from lbframe.config import parse_site
from lbframe.errors import ConfigError
from lbframe.plugins import load_plugins
from lbframe.service import build_runtime
from lbframe.tls import ocsp
from tests.helpers import free_port
from tests.httpkit import HTTPSiteMixin
from tests.tlskit import (cert_pem, key_pem, make_ca, make_cert, make_ocsp_response, write,
                          write_bundle)

#: suites a scanner finds in library defaults and that must stay refused
CBC_SUITE = "ECDHE-RSA-AES128-SHA"          # CBC (LUCKY13 class)
CBC_SHA256_SUITE = "ECDHE-RSA-AES128-SHA256"
STATIC_RSA_SUITE = "AES128-GCM-SHA256"       # no forward secrecy
GOOD_SUITE = "ECDHE-RSA-AES128-GCM-SHA256"


def s_client(port: int, *args: str, server_name: str = "www.test") -> tuple[bool, str]:
    """One handshake with ``openssl s_client`` (blocking; run in a thread):
    (whether it completed, everything it printed)."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", server_name,
         *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=20)
    out = done.stdout.decode("utf-8", "replace")
    established = done.returncode == 0 and "Cipher is (NONE)" not in out \
        and "New, (NONE)" not in out
    return established, out


def renegotiate(port: int) -> str:
    """A TLS 1.2 client that asks to renegotiate after the handshake
    (blocking; run in a thread): the error it gets, or ``""``."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.setblocking(True)  # pyOpenSSL wants a blocking socket; bounded by:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 5, 0))
        connection = SSL.Connection(context, raw)
        connection.set_connect_state()
        connection.do_handshake()
        connection.renegotiate()
        try:
            connection.do_handshake()
            connection.send(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            while connection.recv(65536):
                pass
        except SSL.ZeroReturnError:
            return "closed"
        except SSL.Error as e:
            return str(e)
    return ""


class TLSPolicyMixin(HTTPSiteMixin):
    def setUp(self):
        if shutil.which("openssl") is None:
            raise SkipTest("openssl is not installed")
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.ca = make_ca()
        self.folder = os.path.join(self.dir, "certs")

    def add_cert(self, filename: str, kind: str = "rsa", name: str = "www.test"):
        key, cert = make_cert(self.ca, name, kind=kind)
        write_bundle(os.path.join(self.folder, filename), key, cert, self.ca)
        return cert

    def serve(self, virtual_lines: str = "") -> int:
        mport, self.recorder = self.member()
        self.serve_http(f"member a = 127.0.0.1:{mport}",
                        f"certificates = {self.folder}\n{virtual_lines}")
        return self.service.addresses()[0].port

    def handshake(self, port, *args, **kw):
        return threads.deferToThread(s_client, port, *args, **kw)


class DefaultPolicyTests(TLSPolicyMixin, TestCase):
    """With no key set: TLS 1.2 forward-secret AEAD suites only, TLS 1.3,
    nothing older."""

    @defer.inlineCallbacks
    def test_cbc_and_static_rsa_suites_are_refused(self):
        self.add_cert("default.pem")
        port = self.serve()
        for suite in (CBC_SUITE, CBC_SHA256_SUITE, STATIC_RSA_SUITE):
            ok, out = yield self.handshake(port, "-tls1_2", "-cipher", f"{suite}@SECLEVEL=0")
            self.assertFalse(ok, f"{suite} was accepted:\n{out}")
        ok, out = yield self.handshake(port, "-tls1_2", "-cipher", GOOD_SUITE)
        self.assertTrue(ok, out)
        self.assertIn(GOOD_SUITE, out)

    @defer.inlineCallbacks
    def test_tls_1_1_is_refused_and_1_3_is_offered(self):
        self.add_cert("default.pem")
        port = self.serve()
        ok, out = yield self.handshake(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
        self.assertFalse(ok, out)
        ok, out = yield self.handshake(port, "-tls1_3")
        self.assertTrue(ok, out)
        self.assertIn("TLSv1.3", out)

    @defer.inlineCallbacks
    def test_client_renegotiation_is_refused(self):
        """A guard more than a fix: OpenSSL 3 already refuses renegotiation
        asked by clients by default; lbframe sets OP_NO_RENEGOTIATION so it
        does not depend on the library's default."""
        self.add_cert("default.pem")
        port = self.serve()
        error = yield threads.deferToThread(renegotiate, port)
        self.assertIn("no renegotiation", error)

    @defer.inlineCallbacks
    def test_only_six_tls12_suites_are_offered(self):
        """Every TLS 1.2 suite this OpenSSL knows, one handshake each: the
        ones accepted are Mozilla intermediate's six ECDHE AEAD suites
        (testssl.sh found 27 with the library defaults)."""
        self.add_cert("default.pem", kind="rsa")
        self.add_cert("default.ecdsa.pem", kind="ec")
        port = self.serve()
        listed = subprocess.run(["openssl", "ciphers", "-tls1_2", "ALL:COMPLEMENTOFALL@SECLEVEL=0"],
                                capture_output=True, timeout=10).stdout.decode().strip()
        suites = [s for s in listed.split(":") if not s.startswith("TLS_")
                  and "PSK" not in s and "SRP" not in s]
        accepted = []
        for suite in suites:
            ok, _ = yield self.handshake(port, "-tls1_2", "-cipher", f"{suite}@SECLEVEL=0")
            if ok:
                accepted.append(suite)
        self.assertEqual(sorted(accepted), sorted([
            "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"]))


class PolicyKeyTests(TLSPolicyMixin, TestCase):
    """``ssl_ciphers``, ``ssl_ciphersuites``, ``ssl_min_version``."""

    @defer.inlineCallbacks
    def test_ssl_ciphers_changes_what_is_accepted(self):
        self.add_cert("default.pem")
        port = self.serve("ssl_ciphers = ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-SHA256")
        ok, out = yield self.handshake(port, "-tls1_2", "-cipher", CBC_SHA256_SUITE)
        self.assertTrue(ok, out)
        ok, out = yield self.handshake(port, "-tls1_2", "-cipher", GOOD_SUITE)
        self.assertFalse(ok, out)

    @defer.inlineCallbacks
    def test_ssl_ciphersuites_changes_tls13(self):
        self.add_cert("default.pem")
        port = self.serve("ssl_ciphersuites = TLS_CHACHA20_POLY1305_SHA256")
        ok, out = yield self.handshake(port, "-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256")
        self.assertFalse(ok, out)
        ok, out = yield self.handshake(port, "-tls1_3")
        self.assertTrue(ok, out)
        self.assertIn("TLS_CHACHA20_POLY1305_SHA256", out)

    @defer.inlineCallbacks
    def test_min_version_tls13_refuses_tls12(self):
        self.add_cert("default.pem")
        port = self.serve("ssl_min_version = TLSv1.3")
        ok, out = yield self.handshake(port, "-tls1_2")
        self.assertFalse(ok, out)
        ok, out = yield self.handshake(port, "-tls1_3")
        self.assertTrue(ok, out)

    @defer.inlineCallbacks
    def test_server_preference_on_request(self):
        """The client's order by default (Mozilla intermediate); the
        server's with ``ssl_prefer_server_ciphers = yes``."""
        self.add_cert("default.pem")
        client_order = "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384"
        lines = "ssl_ciphers = ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305"
        port = self.serve(lines)
        ok, out = yield self.handshake(port, "-tls1_2", "-cipher", client_order)
        self.assertIn("ECDHE-RSA-CHACHA20-POLY1305", out)
        yield self.service.stopService()
        port = self.serve(lines + "\nssl_prefer_server_ciphers = yes")
        ok, out = yield self.handshake(port, "-tls1_2", "-cipher", client_order)
        self.assertIn("ECDHE-RSA-AES256-GCM-SHA384", out)

    @defer.inlineCallbacks
    def test_ssl_endpoint_follows_the_policy(self):
        key, cert = make_cert(self.ca, "www.test", kind="rsa")
        key_file = write(os.path.join(self.dir, "key.pem"), key_pem(key))
        cert_file = write(os.path.join(self.dir, "cert.pem"), cert_pem(cert))
        mport, _ = self.member()
        self.serve_http(f"member a = 127.0.0.1:{mport}", "ssl_min_version = TLSv1.3", listen=(
            f"ssl:0:privateKey={key_file}:certKey={cert_file}:interface=127.0.0.1"))
        port = self.service.addresses()[0].port
        ok, out = yield self.handshake(port, "-tls1_2")
        self.assertFalse(ok, out)
        ok, out = yield self.handshake(port, "-tls1_3")
        self.assertTrue(ok, out)


class DualCertificateTests(TLSPolicyMixin, TestCase):
    """``NAME.rsa.pem`` + ``NAME.ecdsa.pem``: OpenSSL picks per client."""

    @defer.inlineCallbacks
    def test_client_sigalgs_choose_the_certificate(self):
        self.add_cert("www.test.rsa.pem", kind="rsa")
        self.add_cert("www.test.ecdsa.pem", kind="ec")
        self.add_cert("default.pem", kind="rsa", name="default.test")
        port = self.serve()
        cases = [("-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256"),
                 ("-tls1_2", "-sigalgs", "ecdsa_secp256r1_sha256"),
                 ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")]
        for args in cases:
            ok, out = yield self.handshake(port, *args)
            self.assertTrue(ok, out)
            self.assertIn("Server public key is 256 bit", out, args)
        cases = [("-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256"),
                 ("-tls1_2", "-sigalgs", "rsa_pkcs1_sha256:rsa_pss_rsae_sha256"),
                 ("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")]
        for args in cases:
            ok, out = yield self.handshake(port, *args)
            self.assertTrue(ok, out)
            self.assertIn("Server public key is 2048 bit", out, args)

    @defer.inlineCallbacks
    def test_each_certificate_keeps_its_own_chain(self):
        """Two certificates from different CAs: each is sent with its own
        CA, not the other's."""
        self.add_cert("www.test.rsa.pem", kind="rsa")
        other = make_ca("other CA")
        key, cert = make_cert(other, "www.test", kind="ec")
        write_bundle(os.path.join(self.folder, "www.test.ecdsa.pem"), key, cert, other)
        port = self.serve()
        ok, out = yield self.handshake(port, "-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256",
                                       "-showcerts")
        self.assertTrue(ok, out)
        self.assertIn("CN=other CA", out.replace(" = ", "="))
        ok, out = yield self.handshake(port, "-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256",
                                       "-showcerts")
        self.assertTrue(ok, out)
        self.assertIn("CN=lbframe test CA", out.replace(" = ", "="))
        self.assertNotIn("CN=other CA", out.replace(" = ", "="))

    def test_two_certificates_of_one_key_type_are_an_error(self):
        self.add_cert("www.test.pem", kind="rsa")
        self.add_cert("www.test.rsa.pem", kind="rsa")
        with self.assertRaises(ConfigError) as caught:
            self.serve()
        self.assertIn("a second RSA certificate", str(caught.exception))

    def test_suffix_must_match_the_key(self):
        self.add_cert("www.test.ecdsa.pem", kind="rsa")
        with self.assertRaises(ConfigError) as caught:
            self.serve()
        self.assertIn("www.test.ecdsa.pem: holds an RSA key", str(caught.exception))


class OCSPStaplingTests(TLSPolicyMixin, TestCase):
    """``NAME.pem.ocsp`` beside the certificate: stapled when asked."""

    def setUp(self):
        super().setUp()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def logged(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("log_namespace") == "lbframe.tls"]

    @defer.inlineCallbacks
    def test_status_request_gets_the_response(self):
        cert = self.add_cert("www.test.pem")
        write(os.path.join(self.folder, "www.test.pem.ocsp"), make_ocsp_response(self.ca, cert))
        port = self.serve()
        for version in ("-tls1_2", "-tls1_3"):
            ok, out = yield self.handshake(port, version, "-status")
            self.assertTrue(ok, out)
            self.assertIn("OCSP Response Status: successful", out)
            self.assertIn("Cert Status: good", out)
        ok, out = yield self.handshake(port, "-tls1_3")  # not asked: not sent
        self.assertNotIn("OCSP response:", out)

    @defer.inlineCallbacks
    def test_ssl_endpoint_certificate_staples_cert_key_dot_ocsp(self):
        key, cert = make_cert(self.ca, "www.test", kind="rsa")
        key_file = write(os.path.join(self.dir, "key.pem"), key_pem(key))
        cert_file = write(os.path.join(self.dir, "cert.pem"), cert_pem(cert))
        write(cert_file + ".ocsp", make_ocsp_response(self.ca, cert))
        mport, _ = self.member()
        self.serve_http(f"member a = 127.0.0.1:{mport}", listen=(
            f"ssl:0:privateKey={key_file}:certKey={cert_file}:interface=127.0.0.1"))
        ok, out = yield self.handshake(self.service.addresses()[0].port, "-status")
        self.assertTrue(ok, out)
        self.assertIn("Cert Status: good", out)

    @defer.inlineCallbacks
    def test_dual_certificates_staple_their_own_response(self):
        rsa_cert = self.add_cert("www.test.rsa.pem", kind="rsa")
        ec_cert = self.add_cert("www.test.ecdsa.pem", kind="ec")
        write(os.path.join(self.folder, "www.test.rsa.pem.ocsp"),
              make_ocsp_response(self.ca, rsa_cert))
        write(os.path.join(self.folder, "www.test.ecdsa.pem.ocsp"),
              make_ocsp_response(self.ca, ec_cert))
        port = self.serve()
        for sigalg, cert in (("ecdsa_secp256r1_sha256", ec_cert),
                             ("rsa_pss_rsae_sha256", rsa_cert)):
            ok, out = yield self.handshake(port, "-tls1_3", "-status", "-sigalgs", sigalg)
            self.assertTrue(ok, out)
            stapled = re.search(r"Serial Number: ([0-9A-Fa-f]+)", out)
            self.assertIsNotNone(stapled, out)
            self.assertEqual(int(stapled.group(1), 16), cert.serial_number, sigalg)

    @defer.inlineCallbacks
    def test_stale_or_mismatched_responses_are_not_stapled(self):
        cert = self.add_cert("a.test.pem", name="a.test")
        write(os.path.join(self.folder, "a.test.pem.ocsp"), make_ocsp_response(
            self.ca, cert, this_update=datetime.datetime.now(datetime.timezone.utc)
            - datetime.timedelta(days=10),
            next_update=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)))
        cert = self.add_cert("b.test.pem", name="b.test")
        write(os.path.join(self.folder, "b.test.pem.ocsp"),
              make_ocsp_response(self.ca, cert, serial=cert.serial_number + 1))
        self.add_cert("c.test.pem", name="c.test")
        write(os.path.join(self.folder, "c.test.pem.ocsp"), b"garbage")
        port = self.serve()
        for name in ("a.test", "b.test", "c.test"):
            ok, out = yield self.handshake(port, "-status", server_name=name)
            self.assertTrue(ok, out)
            self.assertIn("OCSP response: no response sent", out)
        logged = self.logged()
        self.assertTrue(any("a.test.pem.ocsp: OCSP response not stapled: expired" in line
                            for line in logged), logged)
        self.assertTrue(any("b.test.pem.ocsp: OCSP response not stapled: it is about another"
                            in line for line in logged), logged)
        self.assertTrue(any("c.test.pem.ocsp: OCSP response not stapled: not a DER" in line
                            for line in logged), logged)
        self.assertEqual(len(logged), 3, logged)

    @defer.inlineCallbacks
    def test_response_that_expires_while_running_stops_being_stapled(self):
        cert = self.add_cert("default.pem")
        write(os.path.join(self.folder, "default.pem.ocsp"), make_ocsp_response(self.ca, cert))
        port = self.serve()
        ok, out = yield self.handshake(port, "-status")
        self.assertIn("Cert Status: good", out)
        expired = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
        self.patch(ocsp, "_now", lambda: expired)
        for _ in range(2):
            ok, out = yield self.handshake(port, "-status")
            self.assertTrue(ok, out)
            self.assertIn("OCSP response: no response sent", out)
        lines = [line for line in self.logged() if "no longer stapled" in line]
        self.assertEqual(len(lines), 1, self.logged())


class CheckTimeTests(TestCase):
    """Bad values are configuration errors naming file, line, section and key."""

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        ca = make_ca()
        key, cert = make_cert(ca, "www.test")
        self.folder = os.path.dirname(write_bundle(os.path.join(self.dir, "certs", "default.pem"),
                                                   key, cert, ca))

    def load(self, lines: str, protocol: str = "http", certificates: bool = True):
        text = f"""[virtual v]
listen = tcp:{free_port()}:interface=127.0.0.1
protocol = {protocol}
pool = p
{f"certificates = {self.folder}" if certificates else ""}
{lines}

[pool p]
member a = 127.0.0.1:1
"""
        path = os.path.join(self.dir, "site.ini")
        return build_runtime(parse_site(text, path), load_plugins(entry_points=False), reactor)

    def error(self, lines: str, **kw) -> str:
        with self.assertRaises(ConfigError) as caught:
            self.load(lines, **kw)
        return str(caught.exception)

    def test_bad_values(self):
        cases = [
            ("ssl_ciphers = ECDHE+AESGCM:ECDHE+AESGMC", "'ECDHE+AESGMC' matches no cipher suite"),
            ("ssl_ciphers = !ECDHE", "leaves no TLS 1.2 cipher suite"),
            ("ssl_ciphers = TLS_AES_128_GCM_SHA256", "those go in ssl_ciphersuites"),
            ("ssl_ciphersuites = TLS_AES_128_GCM_SHA256:TLS_BOGUS",
             "unknown TLS 1.3 cipher suite 'TLS_BOGUS'"),
            ("ssl_min_version = TLSv1.1", "TLS 1.1 and older are not offered"),
            ("ssl_min_version = 1.2", "use TLSv1.2 or TLSv1.3"),
            ("ssl_prefer_server_ciphers = maybe", "ssl_prefer_server_ciphers"),
        ]
        for line, wanted in cases:
            message = self.error(line)
            key = line.split(" = ")[0]
            self.assertIn("site.ini:6: [virtual v] " + key, message, line)
            self.assertIn(wanted, message, line)

    def test_keys_without_tls_termination_are_refused(self):
        message = self.error("ssl_min_version = TLSv1.3", certificates=False)
        self.assertIn("[virtual v] ssl_min_version: ssl_min_version needs a virtual server "
                      "that terminates TLS", message)
        message = self.error("ssl_ciphers = HIGH", protocol="tcp", certificates=False)
        self.assertIn("ssl_ciphers needs a virtual server that terminates TLS", message)

    def test_good_values_load(self):
        self.load("ssl_ciphers = ECDHE+AESGCM:!aNULL:!RC4\nssl_min_version = tlsv1.3\n"
                  "ssl_ciphersuites = TLS_AES_256_GCM_SHA384\nssl_prefer_server_ciphers = yes")

    def test_lbframe_check_shows_the_error_without_a_traceback(self):
        path = os.path.join(self.dir, "site.ini")
        with open(path, "w") as f:
            f.write(f"""[virtual v]
listen = tcp:8443:interface=127.0.0.1
protocol = http
pool = p
certificates = {self.folder}
ssl_ciphers = ECDHE-RSA-AES128-GCM-SHA256:NOT-A-SUITE

[pool p]
member a = 127.0.0.1:1
""")
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            rc = main(["check", path])
        output = out.getvalue() + err.getvalue()
        self.assertEqual(rc, 1, output)
        self.assertIn("site.ini:6: [virtual v] ssl_ciphers: 'NOT-A-SUITE' matches no cipher",
                      output)
        self.assertNotIn("Traceback", output)



class MemberSideTests(HTTPSiteMixin, TestCase):
    """``tls = yes`` pools: lbframe offers members the same policy, not
    Twisted's client defaults (CBC and static-RSA suites, TLS 1.0)."""

    def setUp(self):
        if shutil.which("openssl") is None:
            raise SkipTest("openssl is not installed")
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        ca = make_ca()
        self.ca_file = write(os.path.join(self.dir, "ca.pem"), cert_pem(ca[1]))
        key, cert = make_cert(ca, "member.test", kind="rsa")
        self.key_file = write(os.path.join(self.dir, "mk.pem"), key_pem(key))
        self.cert_file = write(os.path.join(self.dir, "mc.pem"), cert_pem(cert))

    def start_member(self, *args: str) -> defer.Deferred:
        """``openssl s_server`` answering HTTP, with ``args`` (e.g. a cipher)."""
        self.port = free_port()
        server = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-key", self.key_file,
             "-cert", self.cert_file, "-www", "-quiet", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

        def stop():
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)
        self.addCleanup(stop)
        return self.wait_until(self._listening)

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def get(self, pool_lines: str = ""):
        port = self.serve_http(f"member a = 127.0.0.1:{self.port}\ntls = yes\n"
                               f"tls_ca = {self.ca_file}\ntls_server_name = member.test\n"
                               f"{pool_lines}")
        return self.exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")

    @defer.inlineCallbacks
    def test_a_member_offering_only_cbc_is_not_spoken_to(self):
        yield self.start_member("-tls1_2", "-cipher", CBC_SUITE)
        client = yield self.get()
        self.assertEqual(client.responses[0].status, 502)

    @defer.inlineCallbacks
    def test_without_verification_too(self):
        yield self.start_member("-tls1_2", "-cipher", CBC_SUITE)
        client = yield self.get("tls_verify = no")
        self.assertEqual(client.responses[0].status, 502)

    @defer.inlineCallbacks
    def test_tls_ciphers_lets_a_legacy_member_in(self):
        yield self.start_member("-tls1_2", "-cipher", CBC_SUITE)
        client = yield self.get(f"tls_ciphers = {GOOD_SUITE}:{CBC_SUITE}")
        self.assertEqual(client.responses[0].status, 200)

    @defer.inlineCallbacks
    def test_tls_min_version_tls13(self):
        yield self.start_member("-tls1_2")
        client = yield self.get("tls_min_version = TLSv1.3")
        self.assertEqual(client.responses[0].status, 502)

    def test_bad_pool_values_are_config_errors(self):
        text = """[virtual v]
listen = tcp:8080:interface=127.0.0.1
protocol = http
pool = p

[pool p]
member a = 127.0.0.1:1
tls = yes
tls_ciphers = NOPE
"""
        with self.assertRaises(ConfigError) as caught:
            parse_site(text, os.path.join(self.dir, "site.ini"))
        self.assertIn("site.ini:9: [pool p] tls_ciphers: 'NOPE' matches no cipher suite",
                      str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            parse_site(text.replace("tls = yes\n", ""), os.path.join(self.dir, "site.ini"))
        self.assertIn("has no effect without tls = yes", str(caught.exception))


class ReloadTests(HTTPSiteMixin, TestCase):
    """A reload (SIGHUP) reads OCSP responses and the policy again."""

    def setUp(self):
        if shutil.which("openssl") is None:
            raise SkipTest("openssl is not installed")
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "site.ini")
        self.vport = free_port()
        self.ca = make_ca()
        self.folder = os.path.join(self.dir, "certs")
        key, self.cert = make_cert(self.ca, "www.test", kind="rsa")
        write_bundle(os.path.join(self.folder, "default.pem"), key, self.cert, self.ca)

    def write_site(self, extra: str = "") -> None:
        with open(self.path, "w") as f:
            f.write(f"""[virtual web]
listen = tcp:{self.vport}:interface=127.0.0.1
protocol = http
pool = p
certificates = {self.folder}
{extra}

[pool p]
member a = 127.0.0.1:{self.mport}
""")

    @defer.inlineCallbacks
    def test_reload_reads_the_ocsp_response_and_the_policy(self):
        from lbframe.service import SiteService
        from lbframe.site import load, reload as reload_site

        self.mport, _ = self.member("a")
        self.write_site()
        svc = SiteService(load(self.path, reactor), reactor, config_path=self.path)
        svc.startService()
        self.addCleanup(svc.stopService)
        ok, out = yield threads.deferToThread(s_client, self.vport, "-status", "-tls1_2")
        self.assertTrue(ok, out)
        self.assertIn("OCSP response: no response sent", out)

        # Only the response file is new: a reload staples it.
        write(os.path.join(self.folder, "default.pem.ocsp"),
              make_ocsp_response(self.ca, self.cert))
        self.assertTrue(reload_site(svc))
        ok, out = yield threads.deferToThread(s_client, self.vport, "-status", "-tls1_2")
        self.assertTrue(ok, out)
        self.assertIn("Cert Status: good", out)

        self.write_site("ssl_min_version = TLSv1.3")
        self.assertTrue(reload_site(svc))
        ok, out = yield threads.deferToThread(s_client, self.vport, "-status", "-tls1_2")
        self.assertFalse(ok, out)
        ok, out = yield threads.deferToThread(s_client, self.vport, "-status", "-tls1_3")
        self.assertTrue(ok, out)
        self.assertIn("Cert Status: good", out)

        # A bad cipher string at reload is refused; the running policy stays.
        self.write_site("ssl_min_version = TLSv1.3\nssl_ciphers = NOPE")
        self.assertFalse(reload_site(svc))
        ok, out = yield threads.deferToThread(s_client, self.vport, "-tls1_2")
        self.assertFalse(ok, out)
