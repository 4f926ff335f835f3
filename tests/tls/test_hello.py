"""lbframe.tls.hello: the ClientHello/ServerHello parser of ``protocol = ssl``.

Real hellos (Python's ssl through memory BIOs), generated ones (hypothesis)
that parse back field for field however they are fragmented into records,
and hostile input (truncations, a wrong length at every level, SSLv2
hellos, random bytes): the answer is a hello, None (need more), or
HelloError — never another exception.
"""

from __future__ import annotations

import os
import ssl
import struct
import tempfile
import time

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lbframe.tls import hello as H
from lbframe.tls.hello import HelloError, parse_client_hello, parse_server_hello
from tests.tlskit import cert_pem, key_pem, make_ca, write

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- building hellos, remembering where every length field is ---------------------

class Msg:
    """Bytes plus the (offset, size) of each length field written."""

    def __init__(self):
        self.data = bytearray()
        self.lengths: list[tuple[int, int]] = []

    def raw(self, b: bytes) -> "Msg":
        self.data += b
        return self

    def uint(self, value: int, size: int) -> "Msg":
        self.data += value.to_bytes(size, "big")
        return self

    def vector(self, size: int, content: "bytes | Msg") -> "Msg":
        self.lengths.append((len(self.data), size))
        inner = content.data if isinstance(content, Msg) else content
        if isinstance(content, Msg):
            base = len(self.data) + size
            self.lengths += [(base + o, s) for o, s in content.lengths]
        self.uint(len(inner), size)
        self.data += inner
        return self


def ext_block(extensions) -> Msg:
    block = Msg()
    for kind, data in extensions:
        block.uint(kind, 2).vector(2, data)
    return block


def sni(*names: bytes, name_type: int = 0) -> Msg:
    lst = Msg()
    for name in names:
        lst.uint(name_type, 1).vector(2, name)
    return Msg().vector(2, lst)


def versions(*vs: int) -> Msg:
    return Msg().vector(1, b"".join(struct.pack("!H", v) for v in vs))


def client_body(version=0x0303, random=b"R" * 32, session_id=b"", suites=(0xC02F, 0x009C),
                compression=b"\x00", extensions=((0, sni(b"shop.example")),)) -> Msg:
    m = Msg().uint(version, 2).raw(random).vector(1, session_id)
    m.vector(2, b"".join(struct.pack("!H", s) for s in suites)).vector(1, compression)
    if extensions is not None:
        m.vector(2, ext_block(extensions))
    return m


def server_body(version=0x0303, random=b"S" * 32, session_id=b"I" * 32, suite=0xC02F,
                extensions=()) -> Msg:
    m = Msg().uint(version, 2).raw(random).vector(1, session_id).uint(suite, 2).uint(0, 1)
    if extensions is not None:
        m.vector(2, ext_block(extensions))
    return m


def handshake(kind: int, body: Msg) -> Msg:
    m = Msg().uint(kind, 1)
    m.lengths.append((1, 3))
    m.uint(len(body.data), 3)
    m.lengths += [(4 + o, s) for o, s in body.lengths]
    m.data += body.data
    return m


def records(message: Msg, cuts=(), record_version=0x0301) -> Msg:
    """``message`` split at ``cuts`` into handshake records."""
    data = bytes(message.data)
    points = [0] + sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]
    out = Msg()
    for start, end in zip(points, points[1:]):
        out.uint(22, 1).uint(record_version, 2)
        out.lengths.append((len(out.data), 2))
        out.uint(end - start, 2)
        out.lengths += [(o - start + len(out.data), s) for o, s in message.lengths
                        if start <= o and o + s <= end]
        out.data += data[start:end]
    return out


def client_hello(**kw) -> bytes:
    return bytes(records(handshake(1, client_body(**kw))).data)


def server_hello(**kw) -> bytes:
    return bytes(records(handshake(2, server_body(**kw))).data)


def outcome(parse, data: bytes):
    """What ``parse`` says, with HelloError as a value; anything else raises."""
    try:
        return parse(data)
    except HelloError as e:
        return e


# -- real hellos ----------------------------------------------------------------

def _cert_files(directory: str) -> tuple[str, str]:
    key, cert = make_ca("shop.example")
    return (write(os.path.join(directory, "c.pem"), cert_pem(cert)),
            write(os.path.join(directory, "k.pem"), key_pem(key)))


def real_hellos(max_version, server_name="Shop.Example.", tickets=True):
    """(ClientHello bytes, ServerHello flight bytes) of an in-memory handshake."""
    with tempfile.TemporaryDirectory() as d:
        certfile, keyfile = _cert_files(d)
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(certfile, keyfile)
    sctx.maximum_version = max_version
    if not tickets:
        sctx.options |= ssl.OP_NO_TICKET
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname, cctx.verify_mode = False, ssl.CERT_NONE
    cctx.maximum_version = max_version
    cin, cout, sin, sout = (ssl.MemoryBIO() for _ in range(4))
    client = cctx.wrap_bio(cin, cout, server_hostname=server_name)
    server = sctx.wrap_bio(sin, sout, server_side=True)
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    first = cout.read()
    sin.write(first)
    try:
        server.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return first, sout.read()


class RealHelloTests(SynchronousTestCase):
    def test_tls12_client_and_server(self):
        ch, sh = real_hellos(ssl.TLSVersion.TLSv1_2, tickets=False)
        hello = parse_client_hello(ch)
        self.assertEqual(hello.server_name, "shop.example")  # lower case, no trailing dot
        self.assertFalse(hello.offers_tls13)
        self.assertEqual(hello.end, len(ch))
        server = parse_server_hello(sh)
        self.assertEqual(server.negotiated_version, H.TLS12)
        self.assertFalse(server.is_tls13)
        self.assertEqual(len(server.session_id), 32)
        self.assertIn(server.cipher_suite, hello.cipher_suites)
        self.assertFalse(server.session_ticket)
        self.assertLess(server.end, len(sh))  # Certificate etc. follow in the flight

    def test_tls12_server_issuing_a_ticket_sends_no_session_id(self):
        ch, sh = real_hellos(ssl.TLSVersion.TLSv1_2, tickets=True)
        server = parse_server_hello(sh)
        self.assertEqual(server.session_id, b"")
        self.assertTrue(server.session_ticket)

    def test_tls13_client_and_server(self):
        ch, sh = real_hellos(ssl.TLSVersion.TLSv1_3)
        hello = parse_client_hello(ch)
        self.assertTrue(hello.offers_tls13)
        self.assertEqual(hello.max_version, H.TLS13)
        self.assertEqual(hello.session_ticket, b"")  # supports tickets, presents none
        server = parse_server_hello(sh)
        self.assertTrue(server.is_tls13)
        self.assertEqual(server.version, H.TLS12)  # the legacy field lies, by design
        self.assertEqual(server.session_id, hello.session_id)  # 1.3 echoes it
        self.assertFalse(server.retry_request)

    def test_every_prefix_needs_more(self):
        ch, sh = real_hellos(ssl.TLSVersion.TLSv1_2)
        for i in range(len(ch)):
            self.assertIsNone(parse_client_hello(ch[:i]), i)
        end = parse_server_hello(sh).end
        for i in range(end):
            self.assertIsNone(parse_server_hello(sh[:i]), i)

    def test_parse_time(self):
        """Measured: printed, and bounded generously (a slow CI machine)."""
        ch, sh = real_hellos(ssl.TLSVersion.TLSv1_3)
        n = 2000
        start = time.perf_counter()
        for _ in range(n):
            parse_client_hello(ch)
        each = (time.perf_counter() - start) / n
        start = time.perf_counter()
        for _ in range(n):
            parse_server_hello(sh)
        each_server = (time.perf_counter() - start) / n
        print(f"\nClientHello ({len(ch)} B) parse: {each * 1e6:.1f} us; "
              f"ServerHello: {each_server * 1e6:.1f} us")
        self.assertLess(each, 2e-3)


# -- hand-made shapes -------------------------------------------------------------

class ShapeTests(SynchronousTestCase):
    def assertError(self, data: bytes, words: str, parse=parse_client_hello):
        with self.assertRaises(HelloError) as caught:
            parse(data)
        self.assertIn(words, str(caught.exception))

    def test_fields(self):
        data = client_hello(session_id=b"\x07" * 32, extensions=(
            (0, sni(b"WWW.Shop.Example")), (43, versions(0x0a0a, 0x0304, 0x0303)),
            (35, b"ticket!"), (0xFFAA, b""), (41, b"\x00\x01x")))
        hello = parse_client_hello(data)
        self.assertEqual(hello.session_id, b"\x07" * 32)
        self.assertEqual(hello.server_name, "www.shop.example")
        self.assertEqual(hello.supported_versions, (0x0a0a, 0x0304, 0x0303))
        self.assertTrue(hello.offers_tls13)
        self.assertEqual(hello.session_ticket, b"ticket!")
        self.assertTrue(hello.pre_shared_key)
        self.assertEqual(hello.extensions, (0, 43, 35, 0xFFAA, 41))
        self.assertEqual(hello.cipher_suites, (0xC02F, 0x009C))

    def test_no_extensions_at_all(self):
        hello = parse_client_hello(client_hello(extensions=None))
        self.assertIsNone(hello.server_name)
        self.assertIsNone(hello.session_ticket)
        self.assertEqual(hello.extensions, ())
        self.assertIsNotNone(parse_server_hello(server_hello(extensions=None)))

    def test_server_fields(self):
        sh = parse_server_hello(server_hello(session_id=b"", extensions=((35, b""),)))
        self.assertEqual(sh.session_id, b"")
        self.assertTrue(sh.session_ticket)
        sh = parse_server_hello(server_hello(random=H.HELLO_RETRY_RANDOM,
                                             extensions=((43, b"\x03\x04"),)))
        self.assertTrue(sh.retry_request)
        self.assertTrue(sh.is_tls13)

    def test_not_tls(self):
        self.assertError(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n", "plain HTTP?")
        self.assertError(b"G", "not TLS")
        self.assertError(b"\x15\x03\x03\x00\x02\x02\x28", "alert")
        self.assertError(b"\x17\x03\x03\x00\x01x", "application_data")
        self.assertError(b"\x16\x02\x00", "major version must be 3")
        self.assertError(b"\x16\x03\x09", "not SSL 3.0 to TLS 1.3")
        self.assertError(b"\x00", "first byte 0x00")

    def test_sslv2_hellos(self):
        # SSLv2 CLIENT-HELLO (2-byte header, type 1, version 0.2) and the
        # SSLv2-compatible hello of old SSLv3/TLS 1.0 clients (version 3.1).
        v2 = b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + b"\x07\x00\xc0" * 7 + b"C" * 16
        compat = b"\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10" + b"\x00\x00\x2f" * 7 + b"C" * 16
        for data in (v2, compat, v2[:3]):
            self.assertError(data, "SSLv2")
            self.assertError(data, "SSLv2", parse_server_hello)

    def test_wrong_handshake_type(self):
        self.assertError(server_hello(), "not ClientHello")
        self.assertError(client_hello(), "not ServerHello", parse_server_hello)
        self.assertError(b"\x16\x03\x01\x00\x10\x02", "not ClientHello")  # known from 6 bytes

    def test_record_bounds(self):
        body = client_body(extensions=((0xFFAA, b"x" * 16000),))
        message = bytes(handshake(1, body).data)
        self.assertGreater(len(message), H.MAX_FRAGMENT - 400)
        ok = records(handshake(1, body), cuts=[8000])
        self.assertIsNotNone(parse_client_hello(bytes(ok.data)))
        whole = b"\x16\x03\x01" + struct.pack("!H", H.MAX_FRAGMENT + 1) + message
        self.assertError(whole, "at most 16384")
        self.assertError(b"\x16\x03\x01\x00\x00", "zero-length")

    def test_message_bounds(self):
        def sized(total):  # a ClientHello whose handshake message is ``total`` bytes
            plain = len(handshake(1, client_body(extensions=((0xFFAA, b""),))).data)
            return records(handshake(1, client_body(extensions=((0xFFAA, b"x" * (total - plain)),))),
                           cuts=[10000])
        self.assertIsNotNone(parse_client_hello(bytes(sized(H.MAX_HANDSHAKE).data)))
        self.assertEqual(len(sized(H.MAX_HANDSHAKE).data), H.MAX_HANDSHAKE + 10)
        self.assertError(bytes(sized(H.MAX_HANDSHAKE + 1).data)[:20], "at most 16384")

    def test_record_count_bound(self):
        message = handshake(1, client_body())
        n = len(message.data)
        eight = records(message, cuts=[1, 2, 3, 4, 5, 6, 7])
        self.assertIsNotNone(parse_client_hello(bytes(eight.data)))
        nine = records(message, cuts=[1, 2, 3, 4, 5, 6, 7, 8])
        self.assertLess(8, n)
        self.assertError(bytes(nine.data), "more than 8 records")

    def test_interrupted_by_another_record(self):
        data = records(handshake(1, client_body()), cuts=[20]).data
        first = 5 + 20
        broken = bytes(data[:first]) + b"\x17" + bytes(data[first + 1:])
        self.assertError(broken, "interrupted by a record of type 23")

    def test_field_rules(self):
        self.assertError(client_hello(session_id=b"x" * 33), "session id of 33 bytes")
        self.assertError(client_hello(suites=()), "cipher suites list of 0 bytes")
        self.assertError(client_hello(compression=b"\x01"), "lack null compression")
        self.assertError(client_hello(version=0x0203), "major version must be 3")
        self.assertError(client_hello(extensions=((0, b""), (0, b""))), "appears twice")
        self.assertError(client_hello(extensions=((0, sni(b"a", b"b")),)), "two host names")
        self.assertError(client_hello(extensions=((0, sni(b"a b")),)), "not an ASCII DNS name")
        self.assertError(client_hello(extensions=((0, sni(b"\xc3\xa9.example")),)),
                         "not an ASCII DNS name")
        self.assertError(client_hello(extensions=((0, sni(b"")),)), "1 to 255")
        self.assertError(client_hello(extensions=((0, sni(b"a" * 256)),)), "1 to 255")
        self.assertError(client_hello(extensions=((0, Msg().vector(2, b"")),)),
                         "empty server name list")
        self.assertError(client_hello(extensions=((41, b"\x00\x01x"), (0, sni(b"a")))),
                         "pre_shared_key is not the last")
        self.assertError(client_hello(extensions=((43, versions()),)), "supported_versions")
        self.assertError(server_hello(session_id=b"x" * 33), "session id of 33 bytes",
                         parse_server_hello)
        self.assertError(server_hello(extensions=((43, b"\x03\x04\x00"),)), "stray bytes",
                         parse_server_hello)
        # other name types are skipped; a host name of 255 bytes is fine
        hello = parse_client_hello(client_hello(extensions=((0, sni(b"x", name_type=7)),)))
        self.assertIsNone(hello.server_name)
        self.assertEqual(len(parse_client_hello(
            client_hello(extensions=((0, sni(b"a" * 255)),))).server_name), 255)

    def test_extension_framing_at_the_bounds(self):
        good = client_body(extensions=((0xFFAA, b"12345"),))
        data = bytes(handshake(1, good).data)
        # the extensions block is the end of the body: its length field is at -11
        block_len = len(data) - 11
        for delta, words in ((1, "runs past the end"), (-1, "stray bytes")):
            broken = bytearray(data)
            struct.pack_into("!H", broken, block_len, 9 + delta)
            broken_records = bytes(records(Msg().raw(bytes(broken))).data)
            self.assertError(broken_records, words)
        # an extension header cut after 2 bytes, with the block length honest
        cut = bytearray(data[:-7])
        struct.pack_into("!H", cut, block_len, 2)
        cut[1:4] = (len(cut) - 4).to_bytes(3, "big")
        self.assertError(bytes(records(Msg().raw(bytes(cut))).data), "extension header")


# -- generated hellos ----------------------------------------------------------------

_names = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}",
                       fullmatch=True)
_other_ext = st.tuples(st.integers(0, 0xFFFF).filter(lambda t: t not in (0, 35, 41, 43)),
                       st.binary(max_size=40))


@st.composite
def client_hellos(draw):
    name = draw(st.none() | _names)
    exts = draw(st.lists(_other_ext, max_size=6, unique_by=lambda e: e[0]))
    if name is not None:
        exts.insert(draw(st.integers(0, len(exts))), (0, sni(name.encode())))
    vs = draw(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=8))
    if draw(st.booleans()):
        exts.insert(draw(st.integers(0, len(exts))), (43, versions(*vs)))
    ticket = draw(st.none() | st.binary(max_size=64))
    if ticket is not None:
        exts.insert(draw(st.integers(0, len(exts))), (35, ticket))
    psk = draw(st.booleans())
    if psk:
        exts.append((41, draw(st.binary(min_size=1, max_size=40))))
    no_ext = not exts and draw(st.booleans())
    fields = dict(
        version=draw(st.integers(0x0300, 0x03FF)),
        random=draw(st.binary(min_size=32, max_size=32)),
        session_id=draw(st.binary(max_size=32)),
        suites=tuple(draw(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=40))),
        compression=bytes([0]) + draw(st.binary(max_size=3)),
        extensions=None if no_ext else tuple(exts))
    message = handshake(1, client_body(**fields))
    cuts = draw(st.lists(st.integers(1, len(message.data) - 1), max_size=H.MAX_RECORDS - 1))
    framed = records(message, cuts=cuts, record_version=draw(st.sampled_from(
        [0x0300, 0x0301, 0x0303])))
    expect = dict(fields, server_name=name,
                  supported_versions=tuple(vs) if any(e[0] == 43 for e in exts) else (),
                  session_ticket=ticket, pre_shared_key=psk)
    return framed, expect


@st.composite
def server_hellos(draw):
    exts = draw(st.lists(_other_ext, max_size=5, unique_by=lambda e: e[0]))
    selected = draw(st.none() | st.integers(0, 0xFFFF))
    if selected is not None:
        exts.insert(draw(st.integers(0, len(exts))), (43, struct.pack("!H", selected)))
    fields = dict(version=draw(st.integers(0x0300, 0x0304)),
                  random=draw(st.binary(min_size=32, max_size=32)),
                  session_id=draw(st.binary(max_size=32)),
                  suite=draw(st.integers(0, 0xFFFF)),
                  extensions=None if not exts and draw(st.booleans()) else tuple(exts))
    message = handshake(2, server_body(**fields))
    trailer = draw(st.binary(max_size=20))  # e.g. the Certificate message in the same record
    message.data += trailer
    cuts = draw(st.lists(st.integers(1, len(message.data) - 1), max_size=H.MAX_RECORDS - 1))
    return records(message, cuts=cuts), dict(fields, selected_version=selected)


class GeneratedTests(SynchronousTestCase):
    @FUZZ
    @given(client_hellos(), st.data())
    def test_client_hellos_parse_back(self, built, data):
        framed, expect = built
        raw = bytes(framed.data)
        hello = parse_client_hello(raw)
        self.assertIsInstance(hello, H.ClientHello)
        self.assertEqual(hello.end, len(raw))
        for key, value in expect.items():
            got = getattr(hello, {"suites": "cipher_suites",
                                  "compression": "compression_methods"}.get(key, key))
            if key == "extensions":
                continue
            self.assertEqual(got, value, key)
        # More bytes after the hello (early data) change nothing.
        self.assertEqual(parse_client_hello(raw + b"\x17\x03\x03\x00\x01x"), hello)
        # Every prefix needs more bytes (a sample of them).
        for cut in data.draw(st.lists(st.integers(0, len(raw) - 1), max_size=20)):
            self.assertIsNone(parse_client_hello(raw[:cut]))

    @FUZZ
    @given(server_hellos())
    def test_server_hellos_parse_back(self, built):
        framed, expect = built
        hello = parse_server_hello(bytes(framed.data))
        for key, value in expect.items():
            if key == "extensions":
                continue
            self.assertEqual(getattr(hello, {"suite": "cipher_suite"}.get(key, key)), value, key)

    @FUZZ
    @given(client_hellos(), st.data())
    def test_a_wrong_length_at_any_level(self, built, data):
        """Every length field (record, handshake, vectors, extensions, SNI
        list and name): set to another value, the parser answers None (it
        waits for bytes that would never come) or HelloError; with the input
        padded so that no read can run off the end, never anything else."""
        framed, _ = built
        raw = bytearray(framed.data)
        offset, size = data.draw(st.sampled_from(framed.lengths))
        old = int.from_bytes(raw[offset:offset + size], "big")
        new = data.draw(st.sampled_from([old + 1, old - 1, 0, (1 << (8 * size)) - 1])
                        | st.integers(0, (1 << (8 * size)) - 1))
        assume(0 <= new < (1 << (8 * size)) and new != old)
        raw[offset:offset + size] = new.to_bytes(size, "big")
        pad = data.draw(st.sampled_from([b"", b"\x00" * 64, b"\x16\x03\x01\x00\x01\x00"]))
        result = outcome(parse_client_hello, bytes(raw) + pad)
        self.assertTrue(result is None or isinstance(result, (HelloError, H.ClientHello)),
                        result)

    @FUZZ
    @given(client_hellos(), st.data())
    def test_mutations_and_truncations(self, built, data):
        framed, _ = built
        raw = bytearray(framed.data)
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(raw)))
        for parse in (parse_client_hello, parse_server_hello):
            result = outcome(parse, bytes(raw[:cut]))
            self.assertTrue(result is None or isinstance(result, (HelloError, H.ClientHello,
                                                                  H.ServerHello)), result)

    @FUZZ
    @given(st.binary(max_size=300) | st.builds(lambda b: b"\x16\x03\x01" + b,
                                                st.binary(max_size=300))
           | st.builds(lambda b: b"\x16\x03\x03\x00\x40\x01\x00\x00\x3c\x03\x03" + b,
                       st.binary(max_size=300)))
    def test_random_bytes(self, raw):
        for parse in (parse_client_hello, parse_server_hello):
            result = outcome(parse, raw)
            self.assertTrue(result is None or isinstance(result, (HelloError, H.ClientHello,
                                                                  H.ServerHello)), result)

    @FUZZ
    @given(st.binary(min_size=3, max_size=200))
    def test_sslv2_style_hellos_are_refused(self, rest):
        raw = bytes([0x80 | (len(rest) >> 8 & 0x7F), len(rest) & 0xFF, 1]) + rest
        with self.assertRaises(HelloError) as caught:
            parse_client_hello(raw)
        self.assertIn("SSLv2", str(caught.exception))
