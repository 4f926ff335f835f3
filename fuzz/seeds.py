"""Write the seed corpus: ``python -m fuzz.seeds`` (from the repository root).

The seeds are real-ish inputs, most of them taken from the tests (the
smuggling probes of tests/protocols/http/test_strict.py, the PROXY headers of
tests/protocols/test_proxy_protocol.py, real OpenSSL hellos, the example sites), so a
fuzzer starts from inputs that already reach deep into each parser. The
files are committed; this script is how they were made, and rewriting them
is harmless (same names, same content — except the TLS hellos, whose
randoms and keys differ on every run; existing hello files are kept).
Inputs that reproduced a finding are added by hand as ``finding-*`` files and
never rewritten here.
"""

from __future__ import annotations

import os
import re
import ssl
import struct

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def _write(target: str, name: str, data: bytes, keep: bool = False) -> None:
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, re.sub(r"[^A-Za-z0-9_.-]", "_", name))
    if keep and os.path.exists(path):
        return
    with open(path, "wb") as f:
        f.write(data)


def http_seeds() -> None:
    from tests.protocols.http.test_parser import _RESPONSES
    from tests.protocols.http.test_strict import BAD_RESPONSES, CORPUS as BAD_REQUESTS

    good = {
        "get": b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n",
        "get_10": b"GET /index.html HTTP/1.0\r\n\r\n",
        "get_10_keepalive": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                            b"GET /2 HTTP/1.0\r\n\r\n",
        "post_length": b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
        "post_chunked_trailers": b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked"
                                 b"\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n",
        "pipelined": b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\n"
                     b"Content-Length: 2\r\n\r\nokGET /c HTTP/1.1\r\nHost: h\r\n"
                     b"Connection: close\r\n\r\n",
        "websocket": b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket"
                     b"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n"
                     b"\r\n\x81\x05hello",
        "cookies_query": b"GET /cart;jsessionid=A1?item=3&x=%20 HTTP/1.1\r\nHost: shop\r\n"
                         b"Cookie: JSESSIONID=abc; other=1\r\nUser-Agent: curl/8\r\n\r\n",
        "absolute_form": b"GET http://h/admin/../x HTTP/1.1\r\nHost: h\r\n\r\n",
        "expect_continue": b"PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                           b"Content-Length: 3\r\n\r\nabc",
        "upgrade_with_body": b"POST / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
                             b"Upgrade: x\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\n\r\n",
        "options_star": b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        "head": b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n",
    }
    for name, data in good.items():
        _write("http_request", name, data)
    for name, data, _status, _where in BAD_REQUESTS:
        _write("http_request", "bad_" + name, data)

    responses = {
        "ok_length": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
        "chunked_trailers": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"3\r\nabc\r\n0\r\nX: y\r\n\r\n",
        "continue_then_204": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        "close_delimited": b"HTTP/1.0 200 OK\r\n\r\nclose-delimited body",
        "switching": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                     b"Connection: upgrade\r\n\r\nTUNNEL",
        "not_modified": b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
        "set_cookie": b"HTTP/1.1 302 Found\r\nLocation: /x\r\nSet-Cookie: JSESSIONID=a1; Path=/"
                      b"\r\nContent-Length: 0\r\n\r\n",
        "extra_after": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
        "keep_alive_10": b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
        "connection_lists_te": b"HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    }
    for i, data in enumerate(_RESPONSES):
        responses[f"parser_{i}"] = data
    for name, data, _where in BAD_RESPONSES:
        responses["bad_" + name] = data
    for name, data in responses.items():
        _write("http_response", "get_" + name, b"\x00" + data)
        if name in ("ok_length", "chunked_trailers", "extra_after", "not_modified"):
            _write("http_response", "head_" + name, b"\x01" + data)

    raw_bodies = {
        "simple": b"3\r\nabc\r\n0\r\n\r\n",
        "trailers": b"5\r\nhello\r\n0\r\nX-Sum: 1\r\nServer-Timing: a;dur=1\r\n\r\n",
        "extensions": b"3;a=b;c\r\nabc\r\n2 ;q=\"x y\"\r\nde\r\n0;last\r\n\r\n",
        "upper_hex_leading_zeros": b"000A\r\n0123456789\r\n00\r\n\r\n",
        "many_small": b"".join(b"1\r\n%c\r\n" % c for c in b"abcdefgh") + b"0\r\n\r\n",
        "empty": b"0\r\n\r\n",
        "next_request": b"2\r\nok\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        "size_not_hex": b"zz\r\nabc\r\n0\r\n\r\n",
        "data_too_long": b"2\r\nabc\r\n0\r\n\r\n",
        "size_overflow": b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        "bare_lf": b"3\nabc\n0\n\n",
        "big_trailer": b"0\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n",
    }
    for name, data in raw_bodies.items():
        _write("http_chunked", "raw_" + name, b"\x00" + data)
    built = {"text": b"hello, chunked world", "binary": bytes(range(256)),
             "crlf_inside": b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n", "one": b"x",
             "empty": b""}
    for name, data in built.items():
        _write("http_chunked", "built_" + name, b"\x01" + data)


def _handshakes():
    """Real ClientHello / ServerHello flights from Python's ssl (memory BIOs)."""
    from tests.tls.test_hello import real_hellos
    out = {}
    for version, label in ((ssl.TLSVersion.TLSv1_2, "tls12"), (ssl.TLSVersion.TLSv1_3, "tls13")):
        for tickets in (True, False):
            for sni in ("Shop.Example.", "a.b"):
                client, server = real_hellos(version, server_name=sni, tickets=tickets)
                key = f"{label}_{'tickets' if tickets else 'notickets'}_{sni.strip('.').lower()}"
                out[key] = (client, server)
    return out


def tls_seeds() -> None:
    from tests.tls.test_hello import (client_body, client_hello, handshake, records,
                                      server_hello, sni, versions)
    for key, (client, server) in _handshakes().items():
        _write("tls_client_hello", "real_" + key, client, keep=True)
        _write("tls_server_hello", "real_" + key, server, keep=True)
    made = {
        "default": client_hello(),
        "no_extensions": client_hello(extensions=None),
        "session_id": client_hello(session_id=b"S" * 32),
        "tls13_versions": client_hello(extensions=((0, sni(b"x.example")),
                                                   (43, versions(0x0304, 0x0303)))),
        "ticket_and_psk": client_hello(extensions=((35, b"T" * 40), (41, b"\x00\x01x"))),
        "fragmented": records(handshake(1, client_body()), cuts=(3, 20, 60)).data,
        "two_names": client_hello(extensions=((0, sni(b"a.example", b"b.example")),)),
        "plain_http": b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        "sslv2": b"\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10" + bytes(37),
    }
    for name, data in made.items():
        _write("tls_client_hello", "made_" + name, bytes(data))
    # a zero first byte: the rest builds a ClientHello (see the target)
    for i, choices in enumerate([bytes(range(7, 250, 3)), bytes(range(255, 0, -1)) * 2,
                                 b"\x05" * 120, bytes([3, 0, 1, 2, 3, 4, 5, 6]) * 30]):
        _write("tls_client_hello", f"built_{i}", b"\0" + choices)
    made_server = {
        "default": server_hello(),
        "no_extensions": server_hello(extensions=None),
        "tls13": server_hello(extensions=((43, struct.pack("!H", 0x0304)),)),
        "ticket": server_hello(extensions=((35, b""),)),
        "alert": b"\x15\x03\x03\x00\x02\x02\x28",
    }
    for name, data in made_server.items():
        _write("tls_server_hello", "made_" + name, bytes(data))


def proxy_seeds() -> None:
    from tests.protocols.test_proxy_protocol import MALFORMED, MALFORMED_EARLY, VALID
    for i, (data, _info) in enumerate(VALID):
        _write("proxy_parse", f"valid_{i:02d}", data + b"GET / HTTP/1.1\r\n\r\n")
    for i, (data, _words) in enumerate(MALFORMED + MALFORMED_EARLY):
        _write("proxy_parse", f"bad_{i:02d}", data)
    ends = {
        "v1_v4": (0, bytes([192, 0, 2, 1]) + b"\xdc\x04", bytes([198, 51, 100, 7]) + b"\x01\xbb"),
        "v2_v6": (1 | 2 | 4, bytes(15) + b"\x01" + b"\x00\x50", bytes(16) + b"\xff\xff"),
        "v1_mixed": (2, bytes.fromhex("20010db8000000000000000000000001") + b"\x00\x01",
                     bytes([10, 0, 0, 1]) + b"\x00\x02"),
        "v2_mixed": (1 | 4, bytes([127, 0, 0, 1]) + b"\x00\x00",
                     bytes.fromhex("fe800000000000000000000000000001") + b"\x00\x00"),
        "v1_scope": (2 | 4 | 8, bytes.fromhex("fe800000000000000000000000000001") + b"\x12\x34",
                     bytes(16) + b"\x00\x50"),
    }
    for name, (flags, src, dst) in ends.items():
        _write("proxy_roundtrip", name, bytes([flags]) + src + dst + b"payload")


def site_seeds() -> None:
    from tests.config.test_parser import FULL, MINIMAL
    root = os.path.dirname(CORPUS)
    examples = os.path.join(os.path.dirname(root), "examples")

    def plain(text: str) -> bytes:
        # no plugins = lines: the target does not load plugins a file names
        return re.sub(r"(?m)^plugins *=.*\n", "", text).encode("utf-8")

    for name in ("quickstart", "web", "ap-tier"):
        with open(os.path.join(examples, name, "site.ini"), encoding="utf-8") as f:
            _write("site_ini", "example_" + name, plain(f.read()))
    _write("site_ini", "tests_minimal", MINIMAL.encode())
    _write("site_ini", "tests_full", plain(FULL))
    extra = {
        "http_rules": MINIMAL.replace("pool = web\n", "pool = web\nprotocol = http\n"
                                      "rules = api\n") + "[pool api]\nmember x = 127.0.0.1:9\n"
                      "[rule api]\nmatch = path ^= /api\npool = api\n",
        "rule_header": MINIMAL.replace("pool = web\n", "pool = web\nprotocol = http\n"
                                       "rules = h\n") +
                       "[rule h]\nmatch = header:X-Env ~ ^(dev|test)$\npool = web\n",
        "persistence": MINIMAL.replace("pool = web\n", "pool = web\npersistence = p\n") +
                       "[persistence p]\nmethod = source-ip\ntimeout = 10m\n",
        "monitor_http": MINIMAL.replace("member a", "monitor = m\nmember a") +
                        "[monitor m]\ntype = http\nrequest = GET /health\nexpect_status = 200\n",
        "scheduler_weighted": MINIMAL.replace("member a = 127.0.0.1:8081",
                                              "scheduler = weighted\nmember a = 127.0.0.1:8081 "
                                              "weight=10\nmember b = [::1]:8082 weight=0 backup"),
        "ssl_passthrough": MINIMAL.replace("pool = web\n", "pool = web\nprotocol = ssl\n"),
        "global_admin": "[lbframe]\nadmin = tcp:8404:interface=127.0.0.1\nstop_grace = 10s\n"
                        "log_format = json\n" + MINIMAL,
        "redundancy": MINIMAL + "[redundancy]\ndriver = none\n",
        "timeouts": MINIMAL.replace("pool = web\n", "pool = web\ntimeout_client = 30s\n"
                                    "timeout_connect = 250ms\nmax_connections = 10\n"),
        "endpoint_equals": MINIMAL.replace("tcp:8080:interface=127.0.0.1", "a=b"),
        "crlf": MINIMAL.replace("\n", "\r\n"),
        "bom": "\ufeff" + MINIMAL,
    }
    for name, text in extra.items():
        _write("site_ini", name, text.encode("utf-8"))


def admin_seeds() -> None:
    bodies = {
        "state_drain": b'\x00{"state": "drain"}',
        "state_enable_weight": b'\x00{"state": "enable", "weight": 3}',
        "weight_zero": b'\x00{"weight": 0}',
        "weight_string": b'\x00{"weight": "3"}',
        "weight_float": b'\x00{"weight": 2.5}',
        "weight_bool": b'\x00{"weight": true}',
        "unknown_key": b'\x00{"wieght": 3}',
        "empty_object": b"\x00{}",
        "array": b"\x00[1, 2]",
        "not_json": b"\x00state=drain",
        "not_utf8": b'\x00{"state": "\xff"}',
        "nested": b'\x00{"state": {"a": [1, {"b": null}]}}',
        "deep": b"\x00" + b"[" * 5000 + b"]" * 5000,
        "weight_huge": b'\x00{"weight": ' + b"9" * 400 + b"}",
        "weight_over_256": b'\x00{"weight": 100000}',
        "weight_literal": b"\x0512",
        "weight_negative": b"\x05-1",
        "weight_exponent": b"\x051e400",
        "weight_nan": b"\x05NaN",
        "query": b"\x06offset=1&limit=2",
        "query_bad": b"\x06offset=-1&limit=abc",
        "query_huge": b"\x06offset=99999999999999999999999&limit=1000",
        "get_status": b"\x07GET status",
        "get_pools": b"\x07GET pools/web/members",
        "get_unknown_member": b"\x07GET pools/web/members/zz",
        "delete_profile": b"\x07DELETE persistence/sticky",
        "put_status": b"\x07PUT status\n{}",
        "post_root": b'\x07POST \n{"a": 1}',
        "bad_path": b"\x07GET pools/%ff/../x",
    }
    for name, data in bodies.items():
        _write("admin_api", name, data)


def main() -> None:
    http_seeds()
    tls_seeds()
    proxy_seeds()
    site_seeds()
    admin_seeds()
    for target in sorted(os.listdir(CORPUS)):
        print(target, len(os.listdir(os.path.join(CORPUS, target))))


if __name__ == "__main__":
    main()
