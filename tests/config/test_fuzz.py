"""Property: whatever a site.ini says, loading it gives a model or one
:class:`ConfigError` — never another exception, never a traceback in
``lbframe check`` (issue 13, item 7).

The inputs are the shipped examples (``examples/*/site.ini``) with a few
mutations each: values of known keys replaced by random or hostile ones
(malformed endpoints, regexes too large to compile, lone backslashes, huge
numbers), keys added to sections, lines deleted, doubled or garbled.
"""

from __future__ import annotations

import glob
import os
import re
import shutil

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from lbframe.config import KEYS, ConfigError, Site, load_site
from lbframe.errors import PluginError
from tests.config.test_parser import _write_tls_pair

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*", "site.ini")))

#: keys of the built-in plugins, which ``lbframe check`` (not ``load_site``) checks
PLUGIN_KEYS = {
    "virtual": ("max_request_line", "max_head_size", "timeout_keepalive", "timeout_tunnel",
                "member_keepalive", "member_idle_timeout", "retry_after", "client_ca",
                "client_cert"),
    "monitor": ("tls_verify", "tls_ca", "tls_server_name", "starttls", "ehlo", "socket"),
}

#: values that broke ``lbframe check`` once, and their relatives
HOSTILE = [
    "a=b", "=", ":", "tcp:", "tcp:notaport", "tcp:99999", "foo:1", "tcp:80\\", "\\", "\\\\",
    "tcp:80:interface=localhost", "tcp6:80:interface=localhost", "tcp:80:interface=",
    "tcp:80:interface=::1", "ssl:443:privateKey=\\", "ssl:443:privateKey=/", "unix:",
    "udp:", "udp:53:interface=localhost", "tcp:80:backlog=0", "tcp:80:=x", "tcp::::",
    "path ~ a{99999999999}", "path ~ " + "(" * 3000 + ")" * 3000, "path ~ \\", "path ~ [",
    "a{99999999999}", "(" * 3000 + ")" * 3000, "(?P<x>a)(?P<x>b)",
    "1e999", "-1", "0", "99999999999999999999999999", "9" * 5000, "nan", "inf", "1e309s",
    "0.0000001ms", "ms", "::", "[::1]:0", "[:::1]:80", "[::1]", "127.0.0.1:65536",
    "127.0.0.1:8080 weight=257", "127.0.0.1:8080 weight=99999999999999999999",
    "127.0.0.1:8080 weight=", "127.0.0.1:8080 weight=1 weight=2", "x" * 300,
    "page:", "page:/", "memory://", "redis://:pw@[::1", "192.0.2.1/33", "udp:host",
    "GET", "GET /a b", "Name", "200-100", "999", "%", "%(x)s", "\x00", "\udcff",
]

# A value: hostile, printable junk, or endpoint-like strings built from the
# characters endpoint strings are made of.
VALUES = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
            max_size=30),
    st.text(alphabet="tcpsluxdi6:=\\0123456789.,[] localhostinterface~^$", max_size=40),
    st.integers(-2**70, 2**70).map(str),
)


def _known_keys(kind: str) -> list[str]:
    return [*KEYS.get(kind, ()), *PLUGIN_KEYS.get(kind, ())] + (
        ["member fuzz"] if kind == "pool" else [])


_HEADER = re.compile(r"\s*\[([^\]]*)\]")
_KEY_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_ .-]*?)\s*[=:]")


@st.composite
def mutated(draw, text: str) -> str:
    """``text`` with one to four mutations."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "set", "set", "add", "add", "delete", "double",
                                   "garble", "truncate"]))
        index = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if op == "set" and lines:
            keyed = [i for i, line in enumerate(lines)
                     if _KEY_LINE.match(line) and not _HEADER.match(line)]
            if keyed:
                i = draw(st.sampled_from(keyed))
                key = _KEY_LINE.match(lines[i])[1]
                lines[i] = f"{key} = {draw(VALUES)}"
        elif op == "add":
            headers = [(i, m[1].split()[0].lower() if m[1].split() else "")
                       for i, m in ((i, _HEADER.match(line)) for i, line in enumerate(lines))
                       if m]
            if headers:
                i, kind = draw(st.sampled_from(headers))
                keys = _known_keys(kind) or ["x"]
                key = draw(st.one_of(st.sampled_from(keys),
                                     st.from_regex(r"[a-z_]{1,12}", fullmatch=True)))
                lines.insert(i + 1, f"{key} = {draw(VALUES)}")
        elif op == "delete" and lines:
            del lines[index]
        elif op == "double" and lines:
            lines.insert(index, lines[index])
        elif op == "garble" and lines:
            lines[index] = draw(st.text(max_size=20).map(lambda t: t.replace("\r", "")))
        elif op == "truncate":
            cut = draw(st.integers(0, sum(len(line) + 1 for line in lines)))
            return "\n".join(lines)[:cut]
    return "\n".join(lines) + "\n"


class ExampleMutationTests(SynchronousTestCase):
    def setUp(self):
        """A copy of each example, with the certificate the web example makes itself."""
        self.examples = []
        top = os.path.abspath(self.mktemp())
        for path in EXAMPLES:
            source = os.path.dirname(path)
            folder = os.path.join(top, os.path.basename(source))
            shutil.copytree(source, folder)
            os.makedirs(os.path.join(folder, "certs"), exist_ok=True)
            _write_tls_pair(os.path.join(folder, "certs"))
            with open(os.path.join(folder, "certs", "shop.pem"), "wb") as pem:
                for name in ("key.pem", "cert.pem"):
                    with open(os.path.join(folder, "certs", name), "rb") as part:
                        pem.write(part.read())
            with open(path, encoding="utf-8") as handle:
                self.examples.append((folder, handle.read()))

    def test_examples_load(self):
        self.assertEqual(len(self.examples), 5)  # quickstart, web, ap-tier, routed-web, dns
        for folder, _ in self.examples:
            self.assertIsInstance(load_site(os.path.join(folder, "site.ini")), Site)

    def write(self, folder: str, text: str) -> str:
        path = os.path.join(folder, "mutated.ini")
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as handle:
            handle.write(text)
        return path

    def assertOneLineError(self, error: ConfigError, path: str) -> None:
        self.assertEqual(error.path, path)
        self.assertNotIn("\n", str(error).strip())
        # Every error names its line, but the two about the whole file.
        if error.line is None:
            self.assertTrue(error.message.startswith(("no [virtual NAME] section",
                                                      "cannot read", "not UTF-8")),
                            str(error))

    @settings(max_examples=400, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def test_load_site_gives_a_model_or_a_config_error(self, data):
        folder, text = data.draw(st.sampled_from(self.examples))
        path = self.write(folder, data.draw(mutated(text)))
        try:
            site = load_site(path)
        except ConfigError as error:
            self.assertOneLineError(error, path)
        else:
            self.assertIsInstance(site, Site)

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def test_check_gives_a_runtime_or_a_config_error(self, data):
        """What ``lbframe check`` runs: the loader, the plugins and their keys."""
        from lbframe.tap import load

        folder, text = data.draw(st.sampled_from(self.examples))
        path = self.write(folder, data.draw(mutated(text)))
        try:
            load(path, MemoryReactorClock())
        except ConfigError as error:
            self.assertOneLineError(error, path)
        except PluginError:
            pass

    @settings(max_examples=200, deadline=None, database=None)
    @given(kind=st.sampled_from(sorted(KEYS)), data=st.data())
    def test_every_known_key_with_any_value(self, kind, data):
        """Each key of each section, alone with a random value, in a minimal site."""
        folder = self.examples[0][0]
        key = data.draw(st.sampled_from(_known_keys(kind)))
        value = data.draw(VALUES)
        header = f"[{kind} x]" if kind in ("virtual", "pool", "monitor", "persistence", "rule") \
            else f"[{kind}]"
        text = (f"{header}\n{key} = {value}\n\n[virtual web]\n"
                "listen = tcp:18080:interface=127.0.0.1\npool = web\n\n"
                "[pool web]\nmember a = 127.0.0.1:18081\n")
        path = self.write(folder, text)
        try:
            load_site(path)
        except ConfigError as error:
            self.assertOneLineError(error, path)
