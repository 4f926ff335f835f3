"""The fuzz targets (fuzz/targets/, docs/fuzzing.md) as tests.

For every target: each committed corpus file (``fuzz/corpus/<target>/``)
goes through its ``TestOneInput``, and so do inputs hypothesis makes by
mutating the corpus (bounded per target, so the suite stays quick). A target
raises when its parser breaks its contract, so these fail on a finding.

Known findings (fuzz.common.KNOWN, left to the owners of the code) pass
silently in those runs; each has its own ``todo`` test here that runs its
reproducer (``fuzz/corpus/<target>/finding-*``) strictly (``fixed-*`` once fixed). The oracle tests at
the end plant a bug in a parser and check that the target sees it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from twisted.trial.unittest import SynchronousTestCase

from fuzz import common
from fuzz.corpus_io import corpus, corpus_dir, inputs, target_function
from fuzz.targets import TARGETS

#: examples per target and test run; the admin target makes three HTTP
#: exchanges per input, site.ini builds a runtime: they get fewer
EXAMPLES = {"admin_api": 60, "site_ini": 80}
DEFAULT_EXAMPLES = 150


def _flush_known(case: SynchronousTestCase) -> None:
    """A known admin finding is a 500 that twisted.web logs as an error;
    it was met on purpose, so it does not fail the test."""
    if common.seen_known():
        case.flushLoggedErrors()


def _corpus_test(target: str):
    def test(self):
        function = target_function(target)
        seeds = corpus(target)
        self.assertGreaterEqual(len(seeds), 5, f"fuzz/corpus/{target} is nearly empty")
        for name, data in seeds:
            try:
                function(data)
            except AssertionError as e:
                self.fail(f"fuzz/corpus/{target}/{name}: {e}")
        _flush_known(self)
    test.__name__ = f"test_corpus_{target}"
    test.__doc__ = f"Every seed of fuzz/corpus/{target} passes the {target} oracle."
    return test


def _generated_test(target: str):
    seeds = [data for _, data in corpus(target)]

    @settings(max_examples=EXAMPLES.get(target, DEFAULT_EXAMPLES), deadline=None,
              database=None, suppress_health_check=list(HealthCheck))
    @given(inputs(seeds))
    def test(self, data):
        target_function(target)(data)
        _flush_known(self)
    test.__name__ = f"test_generated_{target}"
    test.__doc__ = f"Mutated seeds and random bytes pass the {target} oracle."
    return test


class FuzzTargetTests(SynchronousTestCase):
    for _target in TARGETS:
        locals()[f"test_corpus_{_target}"] = _corpus_test(_target)
        locals()[f"test_generated_{_target}"] = _generated_test(_target)
    del _target


# -- known findings, reported to the owners of the code ---------------------------


def _finding_test(target: str, name: str, finding: str, reason: str):
    def test(self):
        with open(os.path.join(corpus_dir(target), name), "rb") as f:
            data = f.read()
        try:
            with common.strict(only={finding}):
                target_function(target)(data)
        finally:
            self.flushLoggedErrors()
    test.__name__ = f"test_{name.replace('-', '_')}"
    test.__doc__ = f"fuzz/corpus/{target}/{name} ({finding}) passes the {target} oracle."
    test.todo = reason
    return test


#: (target, corpus file, finding name, why it is open); none open now
FINDINGS: list[tuple[str, str, str, str]] = []


class KnownFindingTests(SynchronousTestCase):
    for _target, _name, _finding, _reason in FINDINGS:
        locals()[f"test_{_name.replace('-', '_')}"] = _finding_test(_target, _name, _finding,
                                                                    _reason)
    locals().pop("_target", None), locals().pop("_name", None)
    locals().pop("_finding", None), locals().pop("_reason", None)

    def test_every_known_finding_has_a_todo_test(self):
        """KNOWN and FINDINGS name the same findings: nothing is silenced
        without a visible todo."""
        self.assertEqual(common.KNOWN, {finding for _, _, finding, _ in FINDINGS})


# -- the oracles have teeth: a planted bug is a finding ---------------------------


class OracleTests(SynchronousTestCase):
    """Each target is run on a parser with a bug planted in it (patched for
    the test): the target must report it. Without these, a target that
    checked nothing would pass every test above."""

    def assertFinding(self, target: str, data: bytes, *names: str) -> None:
        """The target reports one of ``names`` (the first check to see the bug wins)."""
        with common.strict():
            error = self.assertRaises(common.Finding, target_function(target), data)
        self.assertIn(error.name, names, str(error))

    def test_http_request_sees_a_lost_body_byte(self):
        from fuzz.targets import http_request
        from lbframe.protocols.http.parser import RequestParser

        class Lossy(RequestParser):
            def on_body(self, body):  # drops the last byte of every piece
                super().on_body(body[:-1])
        self.patch(http_request, "RequestParser", Lossy)
        self.assertFinding("http_request", b"POST / HTTP/1.1\r\nHost: h\r\n"
                           b"Content-Length: 5\r\n\r\nhello", "http-body-length",
                           "http-split-dependent")

    def test_http_request_sees_an_ambiguous_head_announced(self):
        from fuzz.targets import http_request
        from lbframe.protocols.http import parser

        class Lenient(parser.RequestParser):
            def _headers_done(self):  # forgets the Transfer-Encoding check
                self.te = []
                super()._headers_done()
        self.patch(http_request, "RequestParser", Lenient)
        self.assertFinding("http_request", b"POST / HTTP/1.1\r\nHost: h\r\n"
                           b"Transfer-Encoding: gzip, chunked\r\n\r\n", "http-te-not-chunked")

    def test_http_response_sees_wrong_framing(self):
        from fuzz.targets import http_response
        from lbframe.protocols.http.parser import ResponseParser

        class Wrong(ResponseParser):
            def on_headers_complete(self):  # a HEAD answer framed by its Content-Length
                self.head_only = False
                super().on_headers_complete()
        self.patch(http_response, "ResponseParser", Wrong)
        self.assertFinding("http_response", b"\x01HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                           "http-response-framing")

    def test_chunked_sees_a_changed_body(self):
        from fuzz.targets import http_chunked
        from lbframe.protocols.http.parser import RequestParser

        class Upper(RequestParser):
            def on_body(self, body):
                super().on_body(bytes(body).upper())
        self.patch(http_chunked, "RequestParser", Upper)
        self.assertFinding("http_chunked", b"\x003\r\nabc\r\n0\r\n\r\n", "http-chunked-body")

    def test_client_hello_fields_must_come_from_the_input(self):
        import attrs

        from fuzz.targets import tls_client_hello
        from lbframe.tls.hello import parse_client_hello

        def forged(data):
            hello = parse_client_hello(data)
            return hello and attrs.evolve(hello, random=b"\0" * 32)
        self.patch(tls_client_hello, "parse_client_hello", forged)
        seed = dict(corpus("tls_client_hello"))["made_default"]
        self.assertFinding("tls_client_hello", seed, "hello-fields")

    def test_built_client_hellos_must_parse_back(self):
        import attrs

        from fuzz.targets import tls_client_hello
        from lbframe.tls.hello import parse_client_hello

        def no_versions(data):  # forgets supported_versions
            hello = parse_client_hello(data)
            return hello and attrs.evolve(hello, supported_versions=())
        self.patch(tls_client_hello, "parse_client_hello", no_versions)
        # version, random, no session id, 1 suite, no extra compression, 1 extension: 43
        choices = b"\x03" + b"R" * 32 + b"\x00\x00\xc0\x2f\x00\x01\x01\x01\x03\x04"
        self.assertFinding("tls_client_hello", b"\0" + choices, "hello-built")

    def test_server_hello_end_must_be_exact(self):
        import attrs

        from fuzz.targets import tls_server_hello
        from lbframe.tls.hello import parse_server_hello

        def late(data):
            hello = parse_server_hello(data)
            return hello and attrs.evolve(hello, end=hello.end - 1)
        self.patch(tls_server_hello, "parse_server_hello", late)
        seed = dict(corpus("tls_server_hello"))["made_default"]
        self.assertFinding("tls_server_hello", seed + b"more", "hello-end", "hello-prefix")

    def test_proxy_consumed_must_be_the_header(self):
        from fuzz.targets import proxy_parse
        from lbframe.protocols.proxy_protocol import parse

        def greedy(data):
            found = parse(data)
            return found and (found[0], found[1] + 1)
        self.patch(proxy_parse, "parse", greedy)
        self.assertFinding("proxy_parse", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET /",
                           "proxy-prefix")

    def test_proxy_roundtrip_sees_a_builder_bug(self):
        from fuzz.targets import proxy_roundtrip
        from lbframe.protocols.proxy_protocol import build_v1

        def swapped(source, destination):
            return build_v1(destination, source)
        self.patch(proxy_roundtrip, "build_v1", swapped)
        self.assertFinding("proxy_roundtrip", b"\x00\x01\x02\x03\x04\x00\x05"
                           b"\x06\x07\x08\x09\x00\x0a", "proxy-roundtrip")

    def test_site_ini_traceback_is_a_finding(self):
        from fuzz.targets import site_ini

        def broken(path):
            raise KeyError("boom")
        self.patch(site_ini, "load_site", broken)
        error = self.assertRaises(common.Finding, target_function("site_ini"), b"[lbframe]\n")
        self.assertTrue(error.name.startswith("config-crash:KeyError:"), error.name)

    def _plant_status_000(self) -> bytes:
        """Undo the fix of finding http-status (fuzz/corpus/http_response/
        fixed-status-000): a status below 100 is accepted again."""
        from lbframe.protocols.http.parser import ResponseParser
        self.patch(ResponseParser, "_check_status_line", lambda parser, status: None)
        return dict(corpus("http_response"))["fixed-status-000"]

    def test_known_findings_are_quiet_unless_strict(self):
        data = self._plant_status_000()
        self.patch(common, "KNOWN", {"http-status"})
        target_function("http_response")(data)  # known: no exception
        self.assertIn("http-status", common.seen_known())
        with common.strict(only={"something-else"}):
            target_function("http_response")(data)
        common.seen_known()
        with common.strict():
            self.assertRaises(common.Finding, target_function("http_response"), data)


class RunnerTests(SynchronousTestCase):
    """python -m fuzz.run without atheris: the hypothesis fallback, and --replay."""

    def test_fallback_run(self):
        from fuzz import run
        self.assertEqual(run.run_hypothesis("proxy_roundtrip", 0, self.mktemp()), 0)

    def test_replay_shows_a_finding(self):
        from fuzz import run
        OracleTests._plant_status_000(self)
        path = os.path.join(corpus_dir("http_response"), "fixed-status-000")
        self.assertRaises(common.Finding, run.replay, "http_response", path)
