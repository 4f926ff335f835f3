"""Tests for :mod:`lbframe.config`: site.ini → model, and every kind of error.

Error tests assert the exact line ``lbframe check`` prints, line number
included: the message is the user interface here.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import textwrap

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lbframe.config.parser import read_sections
from lbframe.config import (
    Address, ConfigError, Global, MemberSpec, Redundancy, Virtual, check_options, load_site,
    parse_address, parse_duration, parse_endpoint, parse_list, parse_site,
)

#: Six lines every error test can build on; added sections start at line 7.
MINIMAL = """\
[virtual web]
listen = tcp:8080:interface=127.0.0.1
pool = web

[pool web]
member a = 127.0.0.1:8081
"""


def _ini(text: str) -> str:
    return textwrap.dedent(text)


def _write_tls_pair(folder: str) -> None:
    """A throw-away self-signed key.pem/cert.pem for ssl: endpoints."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    with open(os.path.join(folder, "key.pem"), "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    with open(os.path.join(folder, "cert.pem"), "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))


class _ConfigTestCase(SynchronousTestCase):
    def folder(self) -> str:
        """A fresh absolute folder for a site.ini and the files it names."""
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    def write(self, folder: str, name: str, content: str = "x\n") -> str:
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(content)
        return path

    def fails(self, text: str, expected: str, path: str = "site.ini") -> None:
        error = self.assertRaises(ConfigError, parse_site, _ini(text), path)
        self.assertEqual(str(error), expected)

    def fails_after_minimal(self, extra: str, expected: str) -> None:
        """``extra`` is appended to MINIMAL, so its first line is line 7."""
        self.fails(MINIMAL + _ini(extra), expected)


FULL = """\
; a site using every section and key
[lbframe]
admin = ssl:8404:privateKey=key.pem:certKey=cert.pem:interface=192.0.2.1
admin_token_file = secrets/token
plugins = lbframe_extra, plugins/local.py
access_log = logs/access.log
log_format = json
stop_grace = 45s

[virtual web]
listen = tcp:8080:interface=127.0.0.1
         ssl:8443:privateKey=key.pem:certKey=cert.pem:interface=127.0.0.1
protocol = http
pool = web
persistence = sticky
rules = api, static
sorry = page:sorry.html
sorry_status = 502
max_connections = 1000
accept_proxy = yes
timeout_connect = 250ms
timeout_client = 2m
timeout_server = 1h
forwarded_for = no
certificates = certs
compression = gzip    ; a plugin's key

[virtual dns]
listen = udp:5353:interface=127.0.0.1
protocol = udp
pool = dns
sorry = web

[pool web]
member a = 127.0.0.1:8081 weight=4
member B = [::1]:8082 weight=0 priority=2 maxconn=50 backup
scheduler = priority
monitor = http-check, tcp-check
priority_threshold = 20
queue_timeout = 5s
send_proxy = v2
slow_start = 30s
tls = yes
tls_ca = ca.pem
tls_verify = no
tls_server_name = www.example.com
hash_key = source

[pool dns]
member ns1 = ns1.example.com:53

[pool api]
member x = 10.0.0.1:9000

[pool static]
member y = 10.0.0.2:80

[monitor http-check]
type = http
interval = 5s
timeout = 1s
fall = 2
rise = 4
port = 8000
request = POST /dbcheck.cgi
body = {"ping": true}
headers = Host: www.example.com
          X-Check: lbframe
expect_status = 200,204,300-302
expect = ^OK
user = probe
password = secret
tls_sni = yes

[monitor tcp-check]
type = tcp

[monitor db]
type = script
command = /usr/local/bin/check-db --fast

[persistence sticky]
method = source-ip
timeout = 10m
cookie = SRV
parameter = sid
mask = 24
store = redis://127.0.0.1:6379/0
ttl_jitter = 5s

[rule api]
match = header:X-Api-Version ~ ^v[0-9]+
pool = api

[rule static]
match = path ^= /static/
pool = static

[redundancy]
driver = vrrp
vips = 192.0.2.10/24, 2001:db8::10/64
interface = eth0
vrid = 51
priority = 150
advert_interval = 500ms
preempt = no
version = 3
peer = udp:192.0.2.2:694
interval = 2s
dead_after = 10s
failback = auto
garp_repeat = 3
"""


class FullSiteTests(_ConfigTestCase):
    """Every section and key of the contract, read into the model."""

    def setUp(self):
        self.dir = self.folder()
        os.chmod(self.write(self.dir, "secrets/token", "  s3cret-token \n"), 0o600)
        self.write(self.dir, "plugins/local.py", "")
        os.makedirs(os.path.join(self.dir, "logs"))
        os.makedirs(os.path.join(self.dir, "certs"))
        self.write(self.dir, "sorry.html", "<h1>back soon</h1>")
        self.write(self.dir, "ca.pem")
        _write_tls_pair(self.dir)
        self.path = self.write(self.dir, "site.ini", FULL)
        self.site = load_site(self.path)

    def in_dir(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def test_global(self):
        self.assertEqual(self.site.path, self.path)
        self.assertEqual(self.site.lbframe, Global(
            admin=f"ssl:8404:privateKey={self.in_dir('key.pem')}"
                  f":certKey={self.in_dir('cert.pem')}:interface=192.0.2.1",
            admin_token="s3cret-token",
            plugins=("lbframe_extra", self.in_dir("plugins/local.py")),
            access_log=self.in_dir("logs/access.log"),
            log_format="json",
            stop_grace=45.0,
        ))
        self.assertEqual(self.site.lbframe.source.line, 2)

    def test_virtual(self):
        web = self.site.virtuals["web"]
        self.assertEqual(web, Virtual(
            name="web",
            listen=("tcp:8080:interface=127.0.0.1",
                    f"ssl:8443:privateKey={self.in_dir('key.pem')}"
                    f":certKey={self.in_dir('cert.pem')}:interface=127.0.0.1"),
            pool="web",
            protocol="http",
            persistence="sticky",
            rules=("api", "static"),
            sorry_page=self.in_dir("sorry.html"),
            sorry_status=502,
            max_connections=1000,
            accept_proxy=True,
            timeout_connect=0.25,
            timeout_client=120.0,
            timeout_server=3600.0,
            forwarded_for=False,
            certificates=self.in_dir("certs"),
            options={"compression": "gzip"},
        ))
        self.assertEqual(list(self.site.virtuals), ["web", "dns"])
        dns = self.site.virtuals["dns"]
        self.assertEqual((dns.listen, dns.protocol, dns.sorry_pool, dns.sorry_page),
                         (("udp:5353:interface=127.0.0.1",), "udp", "web", None))

    def test_pool(self):
        web = self.site.pools["web"]
        self.assertEqual(web.members, (
            MemberSpec("a", Address("127.0.0.1", 8081), weight=4),
            MemberSpec("B", Address("::1", 8082), weight=0, priority=2, maxconn=50,
                       backup=True),
        ))
        self.assertEqual(
            (web.scheduler, web.monitors, web.priority_threshold, web.queue_timeout,
             web.send_proxy, web.slow_start, web.tls, web.tls_ca, web.tls_verify,
             web.tls_server_name, web.options),
            ("priority", ("http-check", "tcp-check"), 20, 5.0, "v2", 30.0, True,
             self.in_dir("ca.pem"), False, "www.example.com", {"hash_key": "source"}))
        self.assertEqual(self.site.pools["dns"].members[0].address,
                         Address("ns1.example.com", 53))
        self.assertEqual(list(self.site.pools), ["web", "dns", "api", "static"])

    def test_monitor(self):
        check = self.site.monitors["http-check"]
        self.assertEqual(
            (check.type, check.interval, check.timeout, check.fall, check.rise, check.port,
             check.request_method, check.request_path, check.body, check.headers,
             check.expect_status, check.expect, check.user, check.password, check.options),
            ("http", 5.0, 1.0, 2, 4, 8000, "POST", "/dbcheck.cgi", '{"ping": true}',
             (("Host", "www.example.com"), ("X-Check", "lbframe")),
             ((200, 200), (204, 204), (300, 302)), "^OK", "probe", "secret",
             {"tls_sni": "yes"}))
        self.assertEqual(self.site.monitors["db"].command, "/usr/local/bin/check-db --fast")
        tcp = self.site.monitors["tcp-check"]
        self.assertEqual((tcp.interval, tcp.timeout, tcp.fall, tcp.rise, tcp.expect_status),
                         (10.0, 3.0, 3, 2, ((200, 399),)))

    def test_persistence(self):
        sticky = self.site.persistence["sticky"]
        self.assertEqual(
            (sticky.method, sticky.timeout, sticky.cookie, sticky.parameter, sticky.mask,
             sticky.store, sticky.options),
            ("source-ip", 600.0, "SRV", "sid", 24, "redis://127.0.0.1:6379/0",
             {"ttl_jitter": "5s"}))

    def test_rules(self):
        api, static = self.site.rules["api"], self.site.rules["static"]
        self.assertEqual((api.subject, api.subject_arg, api.op, api.value, api.pool),
                         ("header", "X-Api-Version", "~", "^v[0-9]+", "api"))
        self.assertEqual((static.subject, static.subject_arg, static.op, static.value),
                         ("path", None, "^=", "/static/"))

    def test_redundancy(self):
        self.assertEqual(self.site.redundancy, Redundancy(
            driver="vrrp", vips=("192.0.2.10/24", "2001:db8::10/64"), interface="eth0",
            vrid=51, priority=150, advert_interval=0.5, preempt=False, version=3,
            peer="udp:192.0.2.2:694", interval=2.0, dead_after=10.0, failback="auto",
            options={"garp_repeat": "3"}))

    def test_lines(self):
        """Every section and key knows its line, continuation lines skipped."""
        web = self.site.virtuals["web"].source
        self.assertEqual((web.path, web.section, web.line), (self.path, "virtual web", 10))
        self.assertEqual(web.line_of("listen"), 11)
        self.assertEqual(web.line_of("protocol"), 13)
        self.assertEqual(web.line_of("compression"), 26)
        self.assertEqual(self.site.pools["web"].source.line_of("member b"), 36)
        self.assertEqual(self.site.monitors["http-check"].source.line_of("expect_status"), 69)
        self.assertEqual(self.site.redundancy.source.line, 99)
        self.assertEqual(self.site.redundancy.source.line_of("garp_repeat"), 112)


class DefaultsTests(_ConfigTestCase):
    def test_minimal(self):
        """One virtual server and one pool; everything else the contract's defaults."""
        site = parse_site(MINIMAL)
        self.assertEqual(site.lbframe, Global())
        self.assertEqual(site.redundancy, Redundancy())
        self.assertEqual(site.virtuals["web"], Virtual(
            name="web", listen=("tcp:8080:interface=127.0.0.1",), pool="web"))
        pool = site.pools["web"]
        self.assertEqual((pool.scheduler, pool.monitors, pool.send_proxy, pool.tls,
                          pool.tls_verify, pool.queue_timeout, pool.options),
                         ("round-robin", (), "no", False, True, 0.0, {}))
        self.assertEqual((site.monitors, site.persistence, site.rules), ({}, {}, {}))

    def test_monitor_defaults(self):
        site = parse_site(MINIMAL + "[monitor m]\ntype = http\n")
        monitor = site.monitors["m"]
        self.assertEqual((monitor.request_method, monitor.request_path, monitor.port,
                          monitor.headers, monitor.expect_status, monitor.body),
                         ("GET", "/", None, (), ((200, 399),), None))

    def test_persistence_defaults(self):
        site = parse_site(MINIMAL + _ini("""\
            [persistence insert]
            method = cookie-insert
            [persistence ip]
            method = source-ip
            """))
        insert, ip = site.persistence["insert"], site.persistence["ip"]
        self.assertEqual((insert.cookie, insert.timeout, insert.store, insert.parameter),
                         ("LBSERVER", 1800.0, "memory", "jsessionid"))
        self.assertEqual((ip.cookie, ip.mask), (None, None))

    def test_heartbeat(self):
        site = parse_site(MINIMAL + _ini("""\
            [redundancy]
            driver = heartbeat
            vips = 192.0.2.10/24
            interface = eth1
            peer = /dev/ttyS0
            """))
        redundancy = site.redundancy
        self.assertEqual((redundancy.driver, redundancy.peer, redundancy.interval,
                          redundancy.dead_after, redundancy.failback, redundancy.vrid),
                         ("heartbeat", "/dev/ttyS0", 1.0, 3.0, "manual", None))

    def test_plugin_driver(self):
        """A plugin's redundancy driver needs nothing the built-ins need."""
        site = parse_site(MINIMAL + "[redundancy]\ndriver = carp\nadvskew = 10\n")
        self.assertEqual((site.redundancy.driver, site.redundancy.options),
                         ("carp", {"advskew": "10"}))


class SyntaxTests(_ConfigTestCase):
    """configparser's semantics: comments, continuation lines, case."""

    def test_continuation_lines(self):
        site = parse_site(_ini("""\
            [virtual web]
            listen = tcp:8080:interface=127.0.0.1
              tcp:8081:interface=127.0.0.1,
              tcp:8082:interface=127.0.0.1
            pool = web
            [pool web]
            member a = 127.0.0.1:8081
            [monitor m]
            type = http
            headers =
                Host: example.com

                X-Long: a value: with colons
            body = line one
                line two
            """))
        self.assertEqual(site.virtuals["web"].listen,
                         ("tcp:8080:interface=127.0.0.1", "tcp:8081:interface=127.0.0.1",
                          "tcp:8082:interface=127.0.0.1"))
        monitor = site.monitors["m"]
        self.assertEqual(monitor.headers,
                         (("Host", "example.com"), ("X-Long", "a value: with colons")))
        self.assertEqual(monitor.body, "line one\nline two")
        self.assertEqual(site.virtuals["web"].source.line_of("pool"), 5)
        self.assertEqual(monitor.source.line_of("body"), 14)

    def test_comments(self):
        """``;`` and ``#`` start comments, inline only after whitespace."""
        site = parse_site(_ini("""\
            # a comment
            ; another
            [virtual web]   ; the web site
            listen = tcp:8080:interface=127.0.0.1  # loopback only
               # an indented comment line
            pool = web
            [pool web]
            member a = 127.0.0.1:8081 ; weight comes later
            [monitor m]
            type = http
            expect = ^OK#[0-9]+
            """))
        self.assertEqual(site.virtuals["web"].listen, ("tcp:8080:interface=127.0.0.1",))
        self.assertEqual(site.virtuals["web"].source.line, 3)
        self.assertEqual(site.virtuals["web"].source.line_of("pool"), 6)
        self.assertEqual(site.monitors["m"].expect, "^OK#[0-9]+")

    def test_semicolon_without_space_is_kept(self):
        self.fails("[virtual web]\nlisten = tcp:8080:interface=127.0.0.1\npool = web;x\n",
                   "site.ini:3: [virtual web] pool: bad name 'web;x' "
                   "(use letters, digits, '.', '-' and '_')")

    def test_case_insensitive_keys(self):
        site = parse_site(_ini("""\
            [Virtual web]
            LISTEN = tcp:8080:interface=127.0.0.1
            Pool = web
            [POOL web]
            Member Web1 = 127.0.0.1:8081 WEIGHT=3 Backup
            """))
        self.assertEqual(site.virtuals["web"].pool, "web")
        self.assertEqual(site.pools["web"].members,
                         (MemberSpec("Web1", Address("127.0.0.1", 8081), weight=3, backup=True),))
        self.assertEqual(site.pools["web"].source.line_of("member web1"), 5)

    def test_indented_keys(self):
        """Keys may be indented alike; only deeper indentation continues a value."""
        site = parse_site(_ini("""\
            [virtual web]
              listen = tcp:8080:interface=127.0.0.1
              pool = web
            [pool web]
              member a = 127.0.0.1:8081
              member b = 127.0.0.1:8082
            """))
        self.assertEqual([m.name for m in site.pools["web"].members], ["a", "b"])
        self.assertEqual(site.pools["web"].source.line_of("member b"), 6)

    def test_crlf_line_numbers(self):
        text = MINIMAL.replace("\n", "\r\n") + "[monitor m]\r\ninterval = 1s\r\n"
        error = self.assertRaises(ConfigError, parse_site, text)
        self.assertEqual(str(error), "site.ini:7: [monitor m] type: required key is missing")

    def test_delimiter_colon(self):
        site = parse_site(MINIMAL + "[monitor m]\ntype: http\nheaders: X-A: b\n")
        self.assertEqual(site.monitors["m"].headers, (("X-A", "b"),))

    def test_no_interpolation(self):
        site = parse_site(MINIMAL + "[monitor m]\ntype = http\nexpect = 100%(x)s\n")
        self.assertEqual(site.monitors["m"].expect, "100%(x)s")


_BODY_LINES = st.sampled_from(
    ["{k} = v", "{k}: v", "\t{k} = v ; comment", "{k} =", "  continued", "    deeper = x",
     "", "# comment", "   ; indented comment", "  [pool x{k}]", "[monitor m{k}]", "{k} = a#b"])


class LocateTests(SynchronousTestCase):
    """The line finder must agree with configparser on what is a header or a key."""

    @settings(max_examples=300)
    @given(st.lists(st.lists(_BODY_LINES, max_size=8), min_size=1, max_size=4))
    def test_agrees_with_configparser(self, bodies):
        lines = []
        for number, body in enumerate(bodies):
            lines += [f"[virtual v{number}]", f"first{number} = x"]
            lines += [line.format(k=f"key{len(lines)}") for line in body]
        try:
            sections = read_sections("\n".join(lines) + "\n", "t.ini")
        except ConfigError:
            return  # e.g. "  continued" right after a header: configparser refuses it too
        for section in sections:
            source = section.source
            self.assertTrue(lines[source.line - 1].strip().startswith(f"[{source.section}]"))
            for key, line in source.key_lines.items():
                self.assertTrue(lines[line - 1].strip().lower().startswith(key), (key, line))


class FileTests(_ConfigTestCase):
    def test_missing_file(self):
        path = os.path.join(self.folder(), "nope.ini")
        error = self.assertRaises(ConfigError, load_site, path)
        self.assertEqual(str(error), f"{path}: cannot read: No such file or directory")

    def test_not_utf8(self):
        folder = self.folder()
        path = os.path.join(folder, "site.ini")
        with open(path, "wb") as handle:
            handle.write(MINIMAL.encode() + b"[monitor m]\ntype = \xff\n")
        error = self.assertRaises(ConfigError, load_site, path)
        self.assertEqual(str(error), f"{path}:8: not UTF-8 text (byte 0xff)")

    def test_utf8_bom(self):
        path = self.write(self.folder(), "site.ini", "\ufeff" + MINIMAL)
        self.assertEqual(list(load_site(path).virtuals), ["web"])

    def test_relative_to_site_folder(self):
        """Relative paths are resolved against site.ini's folder, not the cwd."""
        folder = self.folder()
        self.write(folder, "pages/sorry.html")
        path = self.write(folder, "site.ini", MINIMAL.replace(
            "pool = web\n", "pool = web\nprotocol = http\nsorry = page:pages/sorry.html\n"))
        site = load_site(path)
        self.assertEqual(site.virtuals["web"].sorry_page,
                         os.path.join(folder, "pages", "sorry.html"))


class SyntaxErrorTests(_ConfigTestCase):
    def test_key_outside_section(self):
        self.fails("# site\nlisten = tcp:80\n",
                   "site.ini:2: 'listen = tcp:80' is outside any section "
                   "(start with a header such as [virtual NAME])")

    def test_garbage_line(self):
        self.fails_after_minimal("[pool api]\nmember a = 127.0.0.1:80\njust words\n",
                                 "site.ini:9: cannot parse 'just words' (expected "
                                 "'key = value', '[section]' or an indented continuation line)")

    def test_duplicate_section(self):
        self.fails_after_minimal("\n[pool web]\nmember b = 127.0.0.1:8082\n",
                                 "site.ini:8: [pool web] duplicate section (first at line 5)")

    def test_duplicate_section_other_spelling(self):
        self.fails_after_minimal("[POOL web]\nmember b = 127.0.0.1:8082\n",
                                 "site.ini:7: [POOL web] duplicate pool 'web' (first at line 5)")

    def test_duplicate_key(self):
        self.fails("[virtual web]\nlisten = tcp:80\npool = web\nPool = api\n",
                   "site.ini:4: [virtual web] pool: duplicate key (first at line 3)")

    def test_duplicate_member(self):
        self.fails_after_minimal("member A = 127.0.0.1:8082\n",
                                 "site.ini:7: [pool web] member a: duplicate key (first at line 6)")

    def test_duplicate_lbframe(self):
        self.fails("[lbframe]\n[LBFRAME]\n",
                   "site.ini:2: [LBFRAME] duplicate section (first at line 1)")

    def test_text_after_header(self):
        self.fails("[virtual web] x\nlisten = tcp:80\n",
                   "site.ini:1: [virtual web] unexpected text 'x' after the section header")

    def test_unknown_section(self):
        self.fails_after_minimal("\n[pol api]\nmember a = 127.0.0.1:8081\n",
                                 "site.ini:8: [pol api] unknown section 'pol' "
                                 "(did you mean 'pool'?)")

    def test_default_section_is_not_special(self):
        self.fails("[DEFAULT]\nlisten = tcp:80\n" + MINIMAL,
                   "site.ini:1: [DEFAULT] unknown section 'DEFAULT'")

    def test_virtual_without_name(self):
        self.fails("[virtual]\nlisten = tcp:80\n",
                   "site.ini:1: [virtual] needs a name: [virtual NAME]")

    def test_empty_header(self):
        self.fails("[ ]\n", "site.ini:1: [] empty section header")

    def test_lbframe_with_name(self):
        self.fails("[lbframe main]\n", "site.ini:1: [lbframe main] takes no name: write [lbframe]")

    def test_bad_section_name(self):
        self.fails("[pool web/api]\nmember a = 127.0.0.1:80\n",
                   "site.ini:1: [pool web/api] bad name 'web/api' "
                   "(use letters, digits, '.', '-' and '_')")

    def test_no_virtual(self):
        self.fails("[pool web]\nmember a = 127.0.0.1:8081\n",
                   "site.ini: no [virtual NAME] section: nothing to serve")

    def test_empty_value(self):
        self.fails("[virtual web]\nlisten = tcp:8080\npool =\n",
                   "site.ini:3: [virtual web] pool: "
                   "empty value (remove the key to get the default)")

    def test_misspelt_required(self):
        """A missing required key next to a key that looks like it is a typo."""
        self.fails("[virtual web]\nlistn = tcp:80\npool = web\n",
                   "site.ini:2: [virtual web] listn: unknown key 'listn' "
                   "(did you mean 'listen'?)")

    def test_missing_required(self):
        self.fails("\n[virtual web]\npool = web\n",
                   "site.ini:2: [virtual web] listen: required key is missing")


class GlobalErrorTests(_ConfigTestCase):
    def test_unknown_key(self):
        self.fails("[lbframe]\nlog_fromat = json\n" + MINIMAL,
                   "site.ini:2: [lbframe] log_fromat: unknown key 'log_fromat' "
                   "(did you mean 'log_format'?)")

    def test_admin_bad_endpoint(self):
        self.fails("[lbframe]\nadmin = tcp:8404:interfase=127.0.0.1\n",
                   "site.ini:2: [lbframe] admin: bad endpoint 'tcp:8404:interfase=127.0.0.1': "
                   "unknown option 'interfase' for tcp: (did you mean 'interface'?)")

    def test_admin_not_loopback_without_token(self):
        self.fails("[lbframe]\nadmin = tcp:8404\n",
                   "site.ini:2: [lbframe] admin: 'tcp:8404' is reachable from other hosts, so it "
                   "needs admin_token or admin_token_file (or interface=127.0.0.1)")

    def test_admin_loopback_needs_no_token(self):
        for admin in ("tcp:8404:interface=127.0.0.1", "tcp6:8404:interface=\\:\\:1",
                      "unix:/run/lbframe.sock"):
            site = parse_site(f"[lbframe]\nadmin = {admin}\n" + MINIMAL)
            self.assertEqual((site.lbframe.admin, site.lbframe.admin_token), (admin, None))

    def test_admin_token(self):
        site = parse_site("[lbframe]\nadmin = tcp:8404\nadmin_token = t0ken\n"
                          "admin_insecure = yes\n" + MINIMAL)
        self.assertEqual(site.lbframe.admin_token, "t0ken")

    def test_admin_udp(self):
        self.fails("[lbframe]\nadmin = udp:8404:interface=127.0.0.1\n",
                   "site.ini:2: [lbframe] admin: the admin server needs a stream endpoint "
                   "(tcp:, ssl:, unix:), not udp:")

    def test_both_tokens(self):
        self.fails("[lbframe]\nadmin_token = a\nadmin_token_file = t\n",
                   "site.ini:3: [lbframe] admin_token_file: "
                   "set admin_token or admin_token_file, not both")

    def test_token_file_missing(self):
        folder = self.folder()
        path = self.write(folder, "site.ini", "[lbframe]\nadmin_token_file = token\n")
        error = self.assertRaises(ConfigError, load_site, path)
        self.assertEqual(str(error), f"{path}:2: [lbframe] admin_token_file: cannot read "
                                     f"token file '{folder}/token': No such file or directory")

    def test_token_file_empty(self):
        folder = self.folder()
        os.chmod(self.write(folder, "token", "\n"), 0o600)
        path = self.write(folder, "site.ini", "[lbframe]\nadmin_token_file = token\n")
        error = self.assertRaises(ConfigError, load_site, path)
        self.assertEqual(str(error), f"{path}:2: [lbframe] admin_token_file: "
                                     f"token file '{folder}/token' is empty")

    def test_log_format(self):
        self.fails("[lbframe]\nlog_format = jsn\n",
                   "site.ini:2: [lbframe] log_format: unknown log format 'jsn' "
                   "(did you mean 'json'?)")
        self.fails("[lbframe]\nlog_format = xml\n",
                   "site.ini:2: [lbframe] log_format: unknown log format 'xml' "
                   "(use text or json)")

    def test_plugins(self):
        self.fails("[lbframe]\nplugins = good.module, bad-module\n",
                   "site.ini:2: [lbframe] plugins: bad plugin 'bad-module' "
                   "(use a module name, a path to a .py file or a plugin package's folder)")

    def test_plugin_package_folder(self):
        """A plugin package's folder is a plugin (used from a checkout); a
        folder that is not a package says so."""
        folder = self.folder()
        os.makedirs(os.path.join(folder, "mine_pkg"))
        with open(os.path.join(folder, "mine_pkg", "__init__.py"), "w"):
            pass
        os.makedirs(os.path.join(folder, "empty"))
        path = self.write(folder, "site.ini", "[lbframe]\nplugins = ./mine_pkg\n"
                          "[virtual v]\nlisten = tcp:0:interface=127.0.0.1\npool = p\n"
                          "[pool p]\nmember a = 127.0.0.1:1\n")
        self.assertEqual(load_site(path).lbframe.plugins, (os.path.join(folder, "mine_pkg"),))
        path = self.write(folder, "site.ini", "[lbframe]\nplugins = ./empty\n")
        error = self.assertRaises(ConfigError, load_site, path)
        self.assertEqual(str(error), f"{path}:2: [lbframe] plugins: plugin folder "
                                     f"'{folder}/empty' is not a Python package (a folder "
                                     "named like a module, with an __init__.py)")

    def test_plugin_file_missing(self):
        folder = self.folder()
        path = self.write(folder, "site.ini", "[lbframe]\nplugins = mine.py\n")
        error = self.assertRaises(ConfigError, load_site, path)
        self.assertEqual(str(error), f"{path}:2: [lbframe] plugins: cannot read plugin file "
                                     f"'{folder}/mine.py': No such file or directory")

    def test_access_log_folder_missing(self):
        self.fails("[lbframe]\naccess_log = /nonexistent/dir/access.log\n",
                   "site.ini:2: [lbframe] access_log: folder '/nonexistent/dir' does not exist")

    def test_bad_duration(self):
        self.fails("[lbframe]\nstop_grace = 10x\n",
                   "site.ini:2: [lbframe] stop_grace: bad duration '10x' "
                   "(use 250ms, 10s, 2m, 1h)")

    def test_negative_duration(self):
        self.fails("[lbframe]\nstop_grace = -5s\n",
                   "site.ini:2: [lbframe] stop_grace: bad duration '-5s' (must not be negative)")


class VirtualErrorTests(_ConfigTestCase):
    def virtual(self, extra: str, expected: str) -> None:
        """``extra`` keys follow listen and pool, so they start at line 4."""
        self.fails("[virtual web]\nlisten = tcp:8080:interface=127.0.0.1\npool = web\n"
                   + extra + "[pool web]\nmember a = 127.0.0.1:8081\n", expected)

    def test_misspelt_endpoint_option(self):
        self.fails("[virtual web]\nlisten = tcp:80:interfase=1.2.3.4\n",
                   "site.ini:2: [virtual web] listen: bad endpoint 'tcp:80:interfase=1.2.3.4': "
                   "unknown option 'interfase' for tcp: (did you mean 'interface'?)")

    def test_unknown_endpoint_type(self):
        self.fails("[virtual web]\nlisten = tpc:80\n",
                   "site.ini:2: [virtual web] listen: bad endpoint 'tpc:80': "
                   "unknown endpoint type 'tpc' (did you mean 'tcp'?)")

    def test_bad_port(self):
        self.fails("[virtual web]\nlisten = tcp:http\n",
                   "site.ini:2: [virtual web] listen: bad endpoint 'tcp:http': "
                   "port 'http' is not a number from 0 to 65535")

    def test_ssl_key_missing(self):
        folder = self.folder()
        path = self.write(folder, "site.ini",
                          "[virtual web]\nlisten = ssl:8443:privateKey=key.pem\n")
        error = self.assertRaises(ConfigError, load_site, path)
        self.assertEqual(str(error), f"{path}:2: [virtual web] listen: bad endpoint "
                                     f"'ssl:8443:privateKey=key.pem': cannot read "
                                     f"'{folder}/key.pem': No such file or directory")

    def test_udp_bad_option(self):
        self.fails("[virtual dns]\nlisten = udp:5353:interface=127.0.0.1:backlog=5\n",
                   "site.ini:2: [virtual dns] listen: bad endpoint "
                   "'udp:5353:interface=127.0.0.1:backlog=5': unknown option 'backlog' for udp:")

    def test_udp_bad_port(self):
        self.fails("[virtual dns]\nlisten = udp:70000\n",
                   "site.ini:2: [virtual dns] listen: bad endpoint 'udp:70000': "
                   "port '70000' is not a number from 0 to 65535")

    def test_udp_bad_interface(self):
        self.fails("[virtual dns]\nlisten = udp:53:interface=eth0\n",
                   "site.ini:2: [virtual dns] listen: bad endpoint 'udp:53:interface=eth0': "
                   "interface 'eth0' is not an IP address (or localhost)")

    def test_listed_twice(self):
        self.fails("[virtual web]\nlisten = tcp:80, tcp:80\n",
                   "site.ini:2: [virtual web] listen: 'tcp:80' is listed twice")

    def test_udp_listen_for_tcp(self):
        self.fails("[virtual dns]\nlisten = udp:53\npool = dns\n",
                   "site.ini:2: [virtual dns] listen: 'udp:53' is a udp: endpoint, "
                   "but protocol is tcp (set protocol = udp)")

    def test_tcp_listen_for_udp(self):
        self.fails("[virtual dns]\nlisten = tcp:53\npool = dns\nprotocol = udp\n",
                   "site.ini:2: [virtual dns] listen: protocol udp needs udp: endpoints, "
                   "not 'tcp:53'")

    def test_sorry_page_missing(self):
        folder = self.folder()
        path = self.write(folder, "site.ini",
                          "[virtual web]\nlisten = tcp:80\npool = web\nprotocol = http\n"
                          "sorry = page:sorry.html\n")
        error = self.assertRaises(ConfigError, load_site, path)
        self.assertEqual(str(error), f"{path}:5: [virtual web] sorry: cannot read sorry page "
                                     f"'{folder}/sorry.html': No such file or directory")

    def test_sorry_page_needs_http(self):
        folder = self.folder()
        self.write(folder, "sorry.html")
        path = self.write(folder, "site.ini",
                          "[virtual web]\nlisten = tcp:80\npool = web\nsorry = page:sorry.html\n")
        error = self.assertRaises(ConfigError, load_site, path)
        self.assertEqual(str(error), f"{path}:4: [virtual web] sorry: a sorry page needs "
                                     "protocol http (this virtual server is tcp); "
                                     "name a pool instead")

    def test_sorry_own_pool(self):
        self.virtual("sorry = web\n", "site.ini:4: [virtual web] sorry: "
                                      "the sorry pool is the virtual server's own pool 'web'")

    def test_sorry_status(self):
        self.virtual("sorry_status = 700\n", "site.ini:4: [virtual web] sorry_status: "
                                             "700 is out of range (expected a whole number "
                                             "from 100 to 599)")

    def test_max_connections(self):
        self.virtual("max_connections = lots\n",
                     "site.ini:4: [virtual web] max_connections: bad number 'lots' "
                     "(expected a whole number of at least 1)")

    def test_bad_boolean(self):
        self.virtual("accept_proxy = maybe\n",
                     "site.ini:4: [virtual web] accept_proxy: bad boolean 'maybe' (use yes or no)")

    def test_zero_timeout(self):
        self.virtual("timeout_client = 0\n",
                     "site.ini:4: [virtual web] timeout_client: bad duration '0' "
                     "(must be more than 0)")

    def test_rules_need_http(self):
        self.virtual("rules = api\n",
                     "site.ini:4: [virtual web] rules: rules need protocol http "
                     "(this virtual server is tcp)")

    def test_certificates_missing(self):
        folder = self.folder()
        self.write(folder, "certs")  # a file, not a folder
        path = self.write(folder, "site.ini", "[virtual web]\nlisten = tcp:80\npool = web\n"
                                              "certificates = certs\n")
        error = self.assertRaises(ConfigError, load_site, path)
        self.assertEqual(str(error), f"{path}:4: [virtual web] certificates: "
                                     f"certificates folder '{folder}/certs' is not a folder")


class PoolErrorTests(_ConfigTestCase):
    def pool(self, keys: str, expected: str) -> None:
        """The pool's header is line 5, its first key line 6."""
        self.fails(MINIMAL.replace("member a = 127.0.0.1:8081\n", keys), expected)

    def test_no_members(self):
        self.pool("scheduler = weighted\n",
                  "site.ini:5: [pool web] needs at least one member: member NAME = ADDRESS")

    def test_member_without_name(self):
        self.pool("member = 127.0.0.1:80\n",
                  "site.ini:6: [pool web] member: needs a name: member NAME = ADDRESS")

    def test_member_bad_name(self):
        self.pool("member a/b = 127.0.0.1:80\n",
                  "site.ini:6: [pool web] member a/b: bad member name 'a/b' "
                  "(use letters, digits, '.', '-' and '_')")

    def test_misspelt_member_key(self):
        self.pool("member a = 127.0.0.1:80\nmemebr b = 127.0.0.1:81\n",
                  "site.ini:7: [pool web] memebr b: unknown key 'memebr b' "
                  "(did you mean 'member b'?)")

    def test_bad_address(self):
        self.pool("member a = 127.0.0.1\n",
                  "site.ini:6: [pool web] member a: bad address '127.0.0.1' "
                  "(missing port: use HOST:PORT)")

    def test_ipv6_without_brackets(self):
        self.pool("member a = ::1:8080\n",
                  "site.ini:6: [pool web] member a: bad address '::1:8080' "
                  "(write IPv6 addresses in brackets: [::1]:8080)")

    def test_member_option(self):
        self.pool("member a = 127.0.0.1:80 wieght=3\n",
                  "site.ini:6: [pool web] member a: unknown member option 'wieght=3' "
                  "(did you mean 'weight'?)")

    def test_member_weight_range(self):
        self.pool("member a = 127.0.0.1:80 weight=300\n",
                  "site.ini:6: [pool web] member a: weight: 300 is out of range "
                  "(expected a whole number from 0 to 256)")

    def test_member_option_twice(self):
        self.pool("member a = 127.0.0.1:80 backup backup\n",
                  "site.ini:6: [pool web] member a: member option 'backup' is given twice")

    def test_send_proxy(self):
        self.pool("member a = 127.0.0.1:80\nsend_proxy = v3\n",
                  "site.ini:7: [pool web] send_proxy: unknown PROXY protocol version 'v3' "
                  "(use v1, v2 or no)")

    def test_tls_ca_without_tls(self):
        self.pool("member a = 127.0.0.1:80\ntls_verify = no\n",
                  "site.ini:7: [pool web] tls_verify: has no effect without tls = yes")

    def test_tls_ca_missing(self):
        folder = self.folder()
        path = self.write(folder, "site.ini", MINIMAL + "tls = yes\ntls_ca = ca.pem\n")
        error = self.assertRaises(ConfigError, load_site, path)
        self.assertEqual(str(error), f"{path}:8: [pool web] tls_ca: cannot read CA bundle "
                                     f"'{folder}/ca.pem': No such file or directory")

    def test_monitor_listed_twice(self):
        self.pool("member a = 127.0.0.1:80\nmonitor = m m\n",
                  "site.ini:7: [pool web] monitor: 'm' is listed twice")


class MonitorErrorTests(_ConfigTestCase):
    def monitor(self, keys: str, expected: str) -> None:
        """The monitor's header is line 7, ``type = http`` line 8, ``keys`` from line 9."""
        self.fails_after_minimal("[monitor m]\ntype = http\n" + keys, expected)

    def test_type_required(self):
        self.fails_after_minimal("[monitor m]\ninterval = 5s\n",
                                 "site.ini:7: [monitor m] type: required key is missing")

    def test_bad_duration(self):
        self.monitor("interval = 10x\n",
                     "site.ini:9: [monitor m] interval: bad duration '10x' "
                     "(use 250ms, 10s, 2m, 1h)")

    def test_fall(self):
        self.monitor("fall = 0\n", "site.ini:9: [monitor m] fall: 0 is out of range "
                                   "(expected a whole number of at least 1)")

    def test_request(self):
        self.monitor("request = /health\n",
                     "site.ini:9: [monitor m] request: bad request '/health' "
                     "(use METHOD PATH, e.g. GET /health)")

    def test_header_line(self):
        self.monitor("headers = Host: a\n   X-Broken\n",
                     "site.ini:9: [monitor m] headers: bad header line 'X-Broken' "
                     "(use 'Name: value', one per line)")

    def test_expect_status(self):
        self.monitor("expect_status = 200,2xx\n",
                     "site.ini:9: [monitor m] expect_status: bad status '2xx' "
                     "(use 200, 200-399 or a list such as 200,204,300-302)")

    def test_expect_status_reversed(self):
        self.monitor("expect_status = 399-200\n",
                     "site.ini:9: [monitor m] expect_status: bad status '399-200' "
                     "(use 200, 200-399 or a list such as 200,204,300-302)")

    def test_regex(self):
        self.monitor("expect = (OK\n",
                     "site.ini:9: [monitor m] expect: bad regex '(OK': "
                     "missing ), unterminated subpattern at position 0")

    def test_script_needs_command(self):
        self.fails_after_minimal("[monitor m]\ntype = script\n",
                                 "site.ini:7: [monitor m] command: required for type script")

    def test_password_needs_user(self):
        self.monitor("password = x\n", "site.ini:9: [monitor m] password: needs user")

    def test_port(self):
        self.monitor("port = 0\n", "site.ini:9: [monitor m] port: 0 is out of range "
                                   "(expected a whole number from 1 to 65535)")


class PersistenceErrorTests(_ConfigTestCase):
    def persistence(self, keys: str, expected: str) -> None:
        """Header at line 7, ``method = source-ip`` at 8, ``keys`` from line 9."""
        self.fails_after_minimal("[persistence p]\nmethod = source-ip\n" + keys, expected)

    def test_method_required(self):
        self.fails_after_minimal("[persistence p]\ntimeout = 5m\n",
                                 "site.ini:7: [persistence p] method: required key is missing")

    def test_mask(self):
        self.persistence("mask = 129\n", "site.ini:9: [persistence p] mask: 129 is out of range "
                                         "(expected a whole number from 0 to 128)")

    def test_store(self):
        self.persistence("store = redis\n",
                         "site.ini:9: [persistence p] store: bad store 'redis' "
                         "(use memory or a URL such as redis://127.0.0.1:6379/0)")

    def test_cookie_learn_needs_cookie(self):
        self.fails_after_minimal("[persistence p]\nmethod = cookie-learn\n",
                                 "site.ini:7: [persistence p] cookie: required for method "
                                 "cookie-learn (the application's cookie, e.g. JSESSIONID)")

    def test_cookie_name(self):
        self.persistence("cookie = my cookie\n",
                         "site.ini:9: [persistence p] cookie: bad cookie name 'my cookie'")


class RuleErrorTests(_ConfigTestCase):
    def rule(self, match: str, expected: str) -> None:
        """Header at line 7, ``match`` at line 8."""
        self.fails_after_minimal(f"[rule r]\nmatch = {match}\npool = web\n", expected)

    def test_unknown_key(self):
        self.fails_after_minimal("[rule r]\nmatch = path = /\npool = web\nweight = 2\n",
                                 "site.ini:10: [rule r] weight: unknown key 'weight'")

    def test_unknown_key_close(self):
        self.fails_after_minimal("[rule r]\nmatch = path = /\npools = web\n",
                                 "site.ini:9: [rule r] pools: unknown key 'pools' "
                                 "(did you mean 'pool'?)")
        self.fails_after_minimal("[rule r]\nmatch = path = /\npool = web\nmach = x\n",
                                 "site.ini:10: [rule r] mach: unknown key 'mach' "
                                 "(did you mean 'match'?)")

    def test_too_short(self):
        self.rule("path ^=", "site.ini:8: [rule r] match: bad match 'path ^=' "
                             "(use SUBJECT OP VALUE on one line, e.g. path ^= /api/)")

    def test_unknown_operator(self):
        self.rule("path == /api", "site.ini:8: [rule r] match: unknown operator '==' "
                                  "(use =, ~, ^= or $=)")

    def test_unknown_subject(self):
        self.rule("pth = /api", "site.ini:8: [rule r] match: unknown subject 'pth' "
                                "(did you mean 'path'?)")

    def test_subject_needs_name(self):
        self.rule("header = x", "site.ini:8: [rule r] match: subject 'header' needs a name: "
                                "header:NAME")

    def test_regex(self):
        self.rule("path ~ /api/[", "site.ini:8: [rule r] match: bad regex '/api/[': "
                                   "unterminated character set at position 5")

    def test_value_with_spaces(self):
        site = parse_site(MINIMAL + "[rule r]\nmatch = header:User-Agent $= Mobile Safari\n"
                                    "pool = web\n")
        rule = site.rules["r"]
        self.assertEqual((rule.subject, rule.subject_arg, rule.op, rule.value),
                         ("header", "User-Agent", "$=", "Mobile Safari"))


class RedundancyErrorTests(_ConfigTestCase):
    VRRP = "[redundancy]\ndriver = vrrp\nvips = 192.0.2.10/24\ninterface = eth0\nvrid = 5\n"

    def redundancy(self, keys: str, expected: str) -> None:
        """Header at line 7, VRRP keys 8-11, ``keys`` from line 12."""
        self.fails_after_minimal(self.VRRP + keys, expected)

    def test_vrrp_needs_vrid(self):
        self.fails_after_minimal(self.VRRP.replace("vrid = 5\n", ""),
                                 "site.ini:7: [redundancy] vrid: required for driver vrrp")

    def test_heartbeat_needs_peer(self):
        self.fails_after_minimal("[redundancy]\ndriver = heartbeat\nvips = 192.0.2.10/24\n"
                                 "interface = eth0\n",
                                 "site.ini:7: [redundancy] peer: required for driver heartbeat")

    def test_vrid(self):
        self.fails_after_minimal(self.VRRP.replace("vrid = 5", "vrid = 256"),
                                 "site.ini:11: [redundancy] vrid: 256 is out of range "
                                 "(expected a whole number from 1 to 255)")

    def test_vip(self):
        self.fails_after_minimal(self.VRRP.replace("192.0.2.10/24", "192.0.2.10"),
                                 "site.ini:9: [redundancy] vips: bad VIP '192.0.2.10' "
                                 "(use CIDR form, e.g. 192.0.2.10/24)")

    def test_peer(self):
        self.redundancy("peer = udp:192.0.2.2\n",
                        "site.ini:12: [redundancy] peer: bad address '192.0.2.2' "
                        "(missing port: use HOST:PORT)")
        self.redundancy("peer = ttyS0\n",
                        "site.ini:12: [redundancy] peer: bad peer 'ttyS0' "
                        "(use udp:HOST:PORT or a serial device path such as /dev/ttyS0)")

    def test_dead_after(self):
        self.redundancy("interval = 5s\n",
                        "site.ini:7: [redundancy] dead_after: must be longer than interval")

    def test_advert_interval(self):
        self.redundancy("version = 2\nadvert_interval = 500ms\n",
                        "site.ini:13: [redundancy] advert_interval: "
                        "VRRPv2 adverts go every whole second, 1s to 255s")

    def test_failback(self):
        self.redundancy("failback = never\n",
                        "site.ini:12: [redundancy] failback: unknown failback 'never' "
                        "(use manual or auto)")

    def test_with_name(self):
        self.fails_after_minimal("[redundancy pair]\n",
                                 "site.ini:7: [redundancy pair] takes no name: write [redundancy]")


class ReferenceErrorTests(_ConfigTestCase):
    def test_virtual_pool(self):
        self.fails("[virtual web]\nlisten = tcp:80\npool = webb\n[pool web]\n"
                   "member a = 127.0.0.1:80\n",
                   "site.ini:3: [virtual web] pool: pool 'webb' does not exist "
                   "(did you mean 'web'?)")

    def test_sorry_pool(self):
        self.fails(MINIMAL.replace("pool = web\n", "pool = web\nsorry = sory\n")
                   + "[pool sorry]\nmember s = 127.0.0.1:9\n",
                   "site.ini:4: [virtual web] sorry: pool 'sory' does not exist "
                   "(did you mean 'sorry'?)")

    def test_persistence(self):
        self.fails(MINIMAL.replace("pool = web\n", "pool = web\npersistence = stick\n"),
                   "site.ini:4: [virtual web] persistence: persistence 'stick' does not exist")

    def test_rules(self):
        self.fails(MINIMAL.replace("pool = web\n", "pool = web\nprotocol = http\n"
                                                   "rules = api, stattic\n")
                   + "[rule api]\nmatch = path ^= /api\npool = web\n"
                   + "[rule static]\nmatch = path ^= /static\npool = web\n",
                   "site.ini:5: [virtual web] rules: rule 'stattic' does not exist "
                   "(did you mean 'static'?)")

    def test_rule_pool(self):
        self.fails_after_minimal("[rule api]\nmatch = path ^= /api\npool = api\n",
                                 "site.ini:9: [rule api] pool: pool 'api' does not exist")

    def test_pool_monitor(self):
        self.fails(MINIMAL + "monitor = http-chek\n[monitor http-check]\ntype = http\n",
                   "site.ini:7: [pool web] monitor: monitor 'http-chek' does not exist "
                   "(did you mean 'http-check'?)")

    def test_first_in_file_order(self):
        self.fails("[rule r]\nmatch = path = /\npool = nope\n" + MINIMAL.replace(
                   "pool = web", "pool = nope2"),
                   "site.ini:3: [rule r] pool: pool 'nope' does not exist")


class CheckOptionsTests(_ConfigTestCase):
    def test_plugin_keys(self):
        site = parse_site(MINIMAL + "scheduler = maglev\ntable_size = 65537\nintervall = 5s\n")
        pool = site.pools["web"]
        self.assertEqual(pool.options, {"table_size": "65537", "intervall": "5s"})
        check_options(site.virtuals["web"], ())
        error = self.assertRaises(ConfigError, check_options, pool, ["table_size", "interval"])
        self.assertEqual(str(error), "site.ini:9: [pool web] intervall: unknown key "
                                     "'intervall' (did you mean 'interval'?)")


class ValueTests(SynchronousTestCase):
    """The value forms on their own."""

    def test_durations(self):
        for text, seconds in [("250ms", 0.25), ("10s", 10.0), ("2m", 120.0), ("1h", 3600.0),
                              ("1.5", 1.5), ("0", 0.0), ("10 s", 10.0)]:
            self.assertEqual(parse_duration(text), seconds)

    @given(st.integers(min_value=0, max_value=10**9),
           st.sampled_from([("ms", 1 / 1000), ("s", 1), ("m", 60), ("h", 3600), ("", 1)]))
    def test_duration_round_trip(self, number, unit):
        suffix, factor = unit
        expected = number / 1000 if suffix == "ms" else number * factor
        self.assertEqual(parse_duration(f"{number}{suffix}"), expected)

    @given(st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False))
    def test_duration_float_seconds(self, seconds):
        self.assertEqual(parse_duration(f"{seconds:f}s"), float(f"{seconds:f}"))

    @given(st.ip_addresses(), st.integers(min_value=1, max_value=65535))
    def test_address_round_trip(self, ip, port):
        address = Address(str(ip), port)
        self.assertEqual(parse_address(str(address)), address)
        self.assertEqual(str(parse_address(str(address))), str(address))

    @given(st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9](\.[a-z][a-z0-9]{0,10}){0,3}",
                         fullmatch=True),
           st.integers(min_value=1, max_value=65535))
    def test_hostname_round_trip(self, host, port):
        self.assertEqual(parse_address(f"{host}:{port}"), Address(host, port))

    def test_ipv6_normalised(self):
        self.assertEqual(parse_address("[0:0::1]:80"), Address("::1", 80))
        self.assertTrue(parse_address("[::1]:80").is_loopback)

    def test_bad_addresses(self):
        for text, message in [
            ("1.2.3.999:80", "bad address '1.2.3.999:80': '1.2.3.999' is not an IPv4 address"),
            ("[x]:80", "bad address '[x]:80': 'x' is not an IPv6 address"),
            ("h:0", "bad address 'h:0': port '0' is not a number from 1 to 65535"),
            ("a b:80", "bad address 'a b:80': 'a b' is neither an IP address nor a host name"),
        ]:
            error = self.assertRaises(ValueError, parse_address, text)
            self.assertEqual(str(error), message)

    def test_list(self):
        self.assertEqual(parse_list(" a, b  c,\n d,,"), ("a", "b", "c", "d"))
        self.assertEqual(parse_list(""), ())

    def test_endpoint_escapes(self):
        """Twisted's backslash escapes are understood (an IPv6 interface)."""
        self.assertEqual(parse_endpoint("tcp6:8080:interface=\\:\\:1"),
                         "tcp6:8080:interface=\\:\\:1")

    def test_no_reactor(self):
        """Loading a site never imports (and so never installs) the global reactor."""
        code = ("import sys; from lbframe.config import parse_site\n"
                f"parse_site({MINIMAL!r})\n"
                "print('twisted.internet.reactor' in sys.modules)")
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        output = subprocess.run([sys.executable, "-c", code], cwd=root, check=True,
                                capture_output=True, text=True).stdout
        self.assertEqual(output.strip(), "False")


class DocsTests(_ConfigTestCase):
    """The reference's complete example must stay a valid site."""

    def test_complete_example(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with open(os.path.join(root, "docs", "configuration.md"), encoding="utf-8") as handle:
            doc = handle.read()
        example = doc.split("## A complete example", 1)[1].split("```ini\n", 1)[1]
        example = example.split("```", 1)[0]
        folder = self.folder()
        os.makedirs(os.path.join(folder, "tls"))
        _write_tls_pair(os.path.join(folder, "tls"))
        os.rename(os.path.join(folder, "tls", "key.pem"), os.path.join(folder, "tls", "www.key"))
        os.rename(os.path.join(folder, "tls", "cert.pem"), os.path.join(folder, "tls", "www.crt"))
        os.chmod(self.write(folder, "admin.token", "t0ken\n"), 0o600)
        self.write(folder, "maintenance.html")
        # the example logs to /var/log/lbframe, which need not exist here
        example = example.replace("/var/log/lbframe/access.log", "access.log")
        site = load_site(self.write(folder, "site.ini", example))
        self.assertEqual(list(site.virtuals), ["www", "www-tls", "dns"])
        self.assertEqual(site.redundancy.vrid, 51)
