"""Config values that crashed ``lbframe check`` with a traceback, ``localhost``
as loopback, and the admin settings that protect the token (issue 13, item 7
and "Admin")."""

from __future__ import annotations

import os
import signal
import socket
from unittest import SkipTest, mock

from twisted.trial.unittest import SynchronousTestCase

from lbframe.config import ConfigError, load_site, parse_endpoint, parse_site
from lbframe.config.values import is_loopback_endpoint
from tests.config.test_parser import MINIMAL, _write_tls_pair

TOKEN = "Tk-5e6f-secret"

#: each value, in ``listen`` (line 2) or ``admin`` of [lbframe], and the message
BAD_ENDPOINTS = [
    ("a=b", "it does not start with a type (such as tcp:, ssl:, unix:)"),
    ("=", "it does not start with a type (such as tcp:, ssl:, unix:)"),
    ("tcp:", "missing port"),
    ("tcp:notaport", "port 'notaport' is not a number from 0 to 65535"),
    ("nosuchtype:80", "unknown endpoint type 'nosuchtype'"),
    ("tcp:80\\", "it ends with a lone '\\' (write '\\\\' for a backslash)"),
    ("\\", "it ends with a lone '\\' (write '\\\\' for a backslash)"),
    ("ssl:443:privateKey=\\", "it ends with a lone '\\' (write '\\\\' for a backslash)"),
    ("tcp:80:interface=eth0", "interface 'eth0' is not an IP address (or localhost)"),
]

#: each ``match`` of a rule (line 8) and the message
BAD_REGEXES = [
    ("path ~ a{99999999999}", "bad regex 'a{99999999999}': the repetition number is too large"),
    ("path ~ " + "(" * 5000 + ")" * 5000, "bad regex '" + "(" * 60 + "'…: too deeply nested"),
    ("path ~ \\", "bad regex '\\\\': bad escape (end of pattern) at position 0"),
    ("path ~ (?P<x>a)(?P<x>b)", "bad regex '(?P<x>a)(?P<x>b)': redefinition of group name 'x' "
     "as group 2; was group 1 at position 12"),
]


def _with_rule(match: str) -> str:
    return ("[virtual web]\nlisten = tcp:8080:interface=127.0.0.1\npool = web\n"
            "protocol = http\nrules = r\n\n[rule r]\n"
            f"match = {match}\npool = web\n\n[pool web]\nmember a = 127.0.0.1:8081\n")


class BadValueTests(SynchronousTestCase):
    def test_endpoints_in_listen(self):
        for value, message in BAD_ENDPOINTS:
            text = MINIMAL.replace("tcp:8080:interface=127.0.0.1", value)
            error = self.assertRaises(ConfigError, parse_site, text)
            self.assertEqual(str(error), f"site.ini:2: [virtual web] listen: "
                                         f"bad endpoint {value!r}: {message}")

    def test_endpoints_in_admin(self):
        for value, message in BAD_ENDPOINTS:
            error = self.assertRaises(ConfigError, parse_site,
                                      f"[lbframe]\nadmin = {value}\n\n" + MINIMAL)
            self.assertEqual(str(error), f"site.ini:2: [lbframe] admin: "
                                         f"bad endpoint {value!r}: {message}")

    def test_regexes(self):
        for match, message in BAD_REGEXES:
            error = self.assertRaises(ConfigError, parse_site, _with_rule(match))
            self.assertEqual(str(error), f"site.ini:8: [rule r] match: {message}")

    def test_monitor_expect(self):
        error = self.assertRaises(ConfigError, parse_site,
                                  MINIMAL + "\n[monitor m]\ntype = http\nexpect = a{99999999999}\n")
        self.assertEqual(str(error), "site.ini:10: [monitor m] expect: bad regex "
                                     "'a{99999999999}': the repetition number is too large")

    def test_any_converter_failure_is_located(self):
        """The net under every converter: an exception no converter expected
        (here a bug planted in parse_duration) is still one line at the key."""
        text = MINIMAL.replace("pool = web\n", "pool = web\ntimeout_client = 5s\n", 1)
        with mock.patch("lbframe.config.parser.parse_duration", side_effect=KeyError("boom")):
            error = self.assertRaises(ConfigError, parse_site, text)
        self.assertEqual(str(error), "site.ini:4: [virtual web] timeout_client: "
                                     "bad value: 'boom'")

    def test_section_builder_failure_is_located(self):
        with mock.patch("lbframe.config.parser.is_udp_endpoint", side_effect=TypeError("x")):
            error = self.assertRaises(ConfigError, parse_site, MINIMAL)
        self.assertEqual(str(error), "site.ini:1: [virtual web] bad section: x")


class LocalhostTests(SynchronousTestCase):
    """``interface=localhost`` is loopback: bound as 127.0.0.1 (::1 for tcp6),
    never looked up."""

    def setUp(self):
        # No test may do DNS: any lookup fails the test.
        def no_dns(*args, **kwargs):
            raise AssertionError(f"DNS lookup of {args[:1]}")
        for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
            patcher = mock.patch.object(socket, name, no_dns)
            patcher.start()
            self.addCleanup(patcher.stop)

    def test_listen(self):
        for written, bound in [
            ("tcp:8080:interface=localhost", "tcp:8080:interface=127.0.0.1"),
            ("tcp:8080:interface=LocalHost", "tcp:8080:interface=127.0.0.1"),
            ("tcp6:8080:interface=localhost", "tcp6:8080:interface=\\:\\:1"),
            ("udp:5353:interface=localhost", "udp:5353:interface=127.0.0.1"),
        ]:
            self.assertEqual(parse_endpoint(written), bound)

    def test_ssl(self):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        _write_tls_pair(folder)
        self.assertEqual(
            parse_endpoint("ssl:8443:privateKey=key.pem:certKey=cert.pem:interface=localhost",
                           folder),
            f"ssl:8443:privateKey={folder}/key.pem:certKey={folder}/cert.pem"
            ":interface=127.0.0.1")

    def test_admin_on_localhost_is_loopback(self):
        site = parse_site("[lbframe]\nadmin = tcp:8404:interface=localhost\n\n" + MINIMAL)
        self.assertEqual((site.lbframe.admin, site.lbframe.admin_token),
                         ("tcp:8404:interface=127.0.0.1", None))
        self.assertTrue(is_loopback_endpoint("tcp:8404:interface=localhost"))
        self.assertTrue(is_loopback_endpoint("ssl:8404:interface=localhost"))
        self.assertFalse(is_loopback_endpoint("tcp:8404:interface=localhost.example"))
        self.assertFalse(is_loopback_endpoint("a=b"))


class AdminTransportTests(SynchronousTestCase):
    """A non-loopback ``admin`` must be ``ssl:`` unless ``admin_insecure = yes``."""

    def test_plain_tcp_refused(self):
        for admin in ("tcp:8404", "tcp:8404:interface=0.0.0.0", "tcp6:8404",
                      "tcp:8404:interface=192.0.2.1"):
            error = self.assertRaises(
                ConfigError, parse_site,
                f"[lbframe]\nadmin = {admin}\nadmin_token = {TOKEN}\n\n" + MINIMAL)
            self.assertEqual(str(error), f"site.ini:2: [lbframe] admin: {admin!r} is reachable "
                                         "from other hosts without TLS: the token would cross "
                                         "the network in clear. Use an ssl: endpoint or "
                                         "interface=127.0.0.1, or set admin_insecure = yes")
            self.assertNotIn(TOKEN, str(error))

    def test_admin_insecure(self):
        site = parse_site(f"[lbframe]\nadmin = tcp:8404\nadmin_token = {TOKEN}\n"
                          "admin_insecure = yes\n\n" + MINIMAL)
        self.assertEqual((site.lbframe.admin, site.lbframe.admin_insecure), ("tcp:8404", True))

    def test_ssl_needs_no_admin_insecure(self):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        _write_tls_pair(folder)
        site = parse_site(f"[lbframe]\nadmin = ssl:8404:privateKey=key.pem:certKey=cert.pem\n"
                          f"admin_token = {TOKEN}\n\n" + MINIMAL, os.path.join(folder, "site.ini"))
        self.assertFalse(site.lbframe.admin_insecure)

    def test_loopback_needs_neither(self):
        for admin in ("tcp:8404:interface=127.0.0.1", "unix:/run/lbframe.sock",
                      "tcp6:8404:interface=\\:\\:1"):
            site = parse_site(f"[lbframe]\nadmin = {admin}\n\n" + MINIMAL)
            self.assertEqual(site.lbframe.admin, admin)

    def test_admin_insecure_without_admin(self):
        error = self.assertRaises(ConfigError, parse_site,
                                  "[lbframe]\nadmin_insecure = yes\n\n" + MINIMAL)
        self.assertEqual(str(error), "site.ini:2: [lbframe] admin_insecure: "
                                     "has no effect without admin")

    def test_shipped_examples_still_load(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        for name in ("quickstart", "ap-tier"):  # web needs the certificate it makes
            site = load_site(os.path.join(root, "examples", name, "site.ini"))
            self.assertTrue(site.lbframe.admin)


class TokenTests(SynchronousTestCase):
    """``admin_token_file`` must be private, like an ssh key; no message shows a token."""

    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.token = os.path.join(self.folder, "admin.token")
        self.site = os.path.join(self.folder, "site.ini")
        with open(self.site, "w") as f:
            f.write("[lbframe]\nadmin = tcp:8404:interface=127.0.0.1\n"
                    "admin_token_file = admin.token\n\n" + MINIMAL)

    def write_token(self, content: str | bytes, mode: int = 0o600) -> None:
        with open(self.token, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
        os.chmod(self.token, mode)

    def fails(self, message: str) -> None:
        error = self.assertRaises(ConfigError, load_site, self.site)
        self.assertEqual(str(error), f"{self.site}:3: [lbframe] admin_token_file: {message}")
        self.assertNotIn(TOKEN, str(error))

    def test_private_modes_accepted(self):
        for mode in (0o600, 0o400):
            self.write_token(f"  {TOKEN}\n", mode)
            self.assertEqual(load_site(self.site).lbframe.admin_token, TOKEN)

    def test_open_modes_refused(self):
        for mode in (0o644, 0o640, 0o604, 0o660, 0o620, 0o602, 0o610, 0o601):
            self.write_token(TOKEN, mode)
            self.fails(f"token file {self.token!r} is open to group or others "
                       f"(mode {mode:04o}): run chmod 600 {self.token}")

    def test_token_content(self):
        position = len(TOKEN) + 1
        for content, message in [
            (f"{TOKEN} more", f"the token in {self.token!r} has a character that cannot be "
                              f"sent in an HTTP header at position {position} "
                              "(use visible ASCII, no blanks)"),
            (f"{TOKEN}\nsecond line", f"the token in {self.token!r} has a character that "
                                      f"cannot be sent in an HTTP header at position "
                                      f"{position} (use visible ASCII, no blanks)"),
            (f"{TOKEN}é", f"the token in {self.token!r} has a character that cannot be sent "
                          f"in an HTTP header at position {position} "
                          "(use visible ASCII, no blanks)"),
            (TOKEN.encode() + b"\xff", f"token file {self.token!r} is not UTF-8 text"),
            ("x" * 5000, f"token file {self.token!r} is larger than 4096 bytes"),
        ]:
            self.write_token(content)
            self.fails(message)

    def test_device_refused_unread(self):
        """/dev/zero never ends: refused as not a regular file, not read."""
        if not os.path.exists("/dev/zero"):
            raise SkipTest("no /dev/zero")
        with open(self.site, "w") as f:
            f.write("[lbframe]\nadmin = tcp:8404:interface=127.0.0.1\n"
                    "admin_token_file = /dev/zero\n\n" + MINIMAL)
        self.fails("token file '/dev/zero' is not a regular file")

    def test_fifo_refused_without_blocking(self):
        """A FIFO would block the open until a writer came: refused unopened."""
        if not hasattr(os, "mkfifo"):
            raise SkipTest("no FIFOs here")
        os.mkfifo(self.token, 0o600)

        def blocked(signum, frame):
            raise AssertionError("loading the site blocked on the FIFO")
        # Bounded: a blocking open fails the test instead of hanging the suite.
        previous = signal.signal(signal.SIGALRM, blocked)
        self.addCleanup(signal.signal, signal.SIGALRM, previous)
        signal.setitimer(signal.ITIMER_REAL, 5)
        self.addCleanup(signal.setitimer, signal.ITIMER_REAL, 0)
        self.fails(f"token file {self.token!r} is not a regular file")

    def test_inline_token_checked_too(self):
        error = self.assertRaises(ConfigError, parse_site,
                                  f"[lbframe]\nadmin_token = {TOKEN} x\n\n" + MINIMAL)
        self.assertEqual(str(error), "site.ini:2: [lbframe] admin_token: admin_token has a "
                                     "character that cannot be sent in an HTTP header at "
                                     f"position {len(TOKEN) + 1} (use visible ASCII, no blanks)")
        self.assertNotIn(TOKEN, str(error))
