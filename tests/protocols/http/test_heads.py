"""Heads written out again (lbframe.protocols.http.heads): the bytes a
member receives, compared by property with the writer as it was before the
HTTP/1.0 keep-alive change (issue 18), which is kept here as the reference."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from lbframe.messages import RequestHead
from lbframe.protocols.http import heads

_ALWAYS_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade"))
_PROTECTED = frozenset((b"content-length", b"transfer-encoding", b"host"))


def reference_request_bytes(head, forwarded_for, proto, upgrade, client_cert=False) -> bytes:
    """heads.request_bytes before issue 18, written plainly."""
    listed = set()
    for name, value in head.headers:
        if name.lower() == b"connection":
            for token in value.split(b","):
                token = token.strip(b" \t").lower()
                if token:
                    listed.add(token)
    dropped = _ALWAYS_HOP | (listed - _PROTECTED)
    if forwarded_for is not None:
        dropped |= {b"x-forwarded-proto"}
    if client_cert is not False:
        dropped |= {b"x-client-cert-subject"}
    out = [b"%s %s HTTP/%s\r\n" % (head.method.encode(), head.target.encode("latin-1"),
                                    head.version.encode())]
    for name, value in head.headers:
        lower = name.lower()
        if lower in dropped and not (upgrade and lower == b"upgrade"):
            continue
        out.append(b"%s: %s\r\n" % (name, value))
    if upgrade:
        out.append(b"Connection: Upgrade\r\n")
    if forwarded_for is not None:
        out.append(b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n"
                   % (forwarded_for.encode(), proto))
    if client_cert:
        out.append(b"X-Client-Cert-Subject: %s\r\n" % client_cert.encode())
    out.append(b"\r\n")
    return b"".join(out)


_NAMES = [b"Host", b"Connection", b"connection", b"Keep-Alive", b"Proxy-Connection", b"TE",
          b"Upgrade", b"Content-Length", b"Transfer-Encoding", b"X-Forwarded-Proto",
          b"X-Forwarded-For", b"X-Client-Cert-Subject", b"Cookie", b"Accept", b"X-Custom",
          b"x-custom", b"Via", b"Trailer", b"Date"]
_TOKENS = [b"close", b"keep-alive", b"upgrade", b"x-custom", b"via", b"host",
           b"content-length", b"Transfer-Encoding", b"te", b" Cookie ", b"", b"\tDate"]


def _value(name):
    if name.lower() == b"connection":
        return st.lists(st.sampled_from(_TOKENS), max_size=4).map(b",".join)
    return st.binary(max_size=12).map(
        lambda b: bytes(c for c in b if 0x21 <= c < 0x7f) or b"v")


headers = st.lists(st.sampled_from(_NAMES).flatmap(
    lambda n: _value(n).map(lambda v: (n, v))), max_size=10)
request_heads = st.builds(
    RequestHead,
    method=st.sampled_from(["GET", "POST", "HEAD", "PUT", "OPTIONS"]),
    target=st.sampled_from(["/", "/a?b=c", "*", "http://h/x", "/%2e%2e/x;y"]),
    version=st.sampled_from(["1.1", "1.0"]),
    headers=headers)


class RequestBytesTests(TestCase):
    @settings(max_examples=500, deadline=None, database=None)
    @given(request_heads, st.sampled_from([None, "192.0.2.1", "2001:db8::1"]),
           st.sampled_from([b"http", b"https"]), st.booleans(),
           st.sampled_from([False, None, "CN=client"]), st.booleans())
    def test_same_bytes_as_before_but_the_http10_keep_alive(self, head, forwarded, proto,
                                                            upgrade, cert, member_keep_alive):
        got = heads.request_bytes(head, forwarded, proto, upgrade, cert, member_keep_alive)
        before = reference_request_bytes(head, forwarded, proto, upgrade, cert)
        if member_keep_alive and head.version == "1.0" and not upgrade:
            # The one difference: a 1.0 request asks the member to keep the
            # connection, after the client's headers and before ours.
            suffix = b""
            if forwarded is not None:
                suffix += b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n" % (
                    forwarded.encode(), proto)
            if cert:
                suffix += b"X-Client-Cert-Subject: %s\r\n" % cert.encode()
            suffix += b"\r\n"
            self.assertTrue(before.endswith(suffix))
            expected = before[:-len(suffix)] + b"Connection: keep-alive\r\n" + suffix
            self.assertEqual(got, expected)
        else:
            self.assertEqual(got, before)

    def test_http10_keep_alive_line_sits_before_our_forwarded_headers(self):
        head = RequestHead("GET", "/", "1.0", [(b"Connection", b"keep-alive"), (b"A", b"b")])
        self.assertEqual(heads.request_bytes(head, "192.0.2.1", b"http", False, False, True),
                         b"GET / HTTP/1.0\r\nA: b\r\nConnection: keep-alive\r\n"
                         b"X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\n\r\n")
        self.assertEqual(heads.request_bytes(head, None, b"http", False, False, False),
                         b"GET / HTTP/1.0\r\nA: b\r\n\r\n")
