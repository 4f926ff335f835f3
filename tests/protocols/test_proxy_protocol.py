"""PROXY protocol v1/v2: building, strict parsing, incremental parsing."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lbframe.protocols.proxy_protocol import (V2_SIGNATURE, ProxyHeaderError, ProxyInfo,
                                              build_v1, build_v2, parse)

SIG = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A"
APP = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"


def v2(ver_cmd: int, fam: int, block: bytes, length: int | None = None) -> bytes:
    """A v2 header from its parts; ``length`` overrides the honest one."""
    return SIG + bytes([ver_cmd, fam]) + struct.pack(
        "!H", len(block) if length is None else length) + block


V4_BLOCK = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack("!HH", 1234, 80)
V6_BLOCK = (ipaddress.IPv6Address("2001:db8::1").packed
            + ipaddress.IPv6Address("2001:db8::2").packed + struct.pack("!HH", 1234, 80))
V4_INFO = ProxyInfo(2, "PROXY", ("10.0.0.1", 1234), ("10.0.0.2", 80))
V6_INFO = ProxyInfo(2, "PROXY", ("2001:db8::1", 1234), ("2001:db8::2", 80))
LOCAL_V1 = ProxyInfo(1, "LOCAL", None, None)
LOCAL_V2 = ProxyInfo(2, "LOCAL", None, None)

#: (header, what parse() says about it) for every valid shape we know of
VALID = [
    (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
     ProxyInfo(1, "PROXY", ("192.168.0.1", 56324), ("192.168.0.11", 443))),
    (b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::2 0 65535\r\n",
     ProxyInfo(1, "PROXY", ("2001:db8::1", 0), ("::2", 65535))),
    (b"PROXY UNKNOWN\r\n", LOCAL_V1),
    (b"PROXY UNKNOWN ffff:f::f 1.2.3.4 whatever\r\n", LOCAL_V1),
    (v2(0x21, 0x11, V4_BLOCK), V4_INFO),
    (v2(0x21, 0x12, V4_BLOCK), V4_INFO),                       # UDP over IPv4
    (v2(0x21, 0x21, V6_BLOCK), V6_INFO),
    (v2(0x21, 0x11, V4_BLOCK + b"\x04\x00\x03abc"), V4_INFO),  # a NOOP TLV, skipped
    (v2(0x20, 0x00, b""), LOCAL_V2),
    (v2(0x20, 0x11, V4_BLOCK), LOCAL_V2),                      # LOCAL: addresses ignored
    (v2(0x20, 0x21, b""), LOCAL_V2),                           # LOCAL: family ignored
    (v2(0x21, 0x00, b"xyz"), ProxyInfo(2, "PROXY", None, None)),
    (v2(0x21, 0x31, b"/a".ljust(108, b"\0") + b"/b".ljust(108, b"\0")),
     ProxyInfo(2, "PROXY", None, None)),                       # AF_UNIX
]


class SpecExamples(SynchronousTestCase):
    """Byte-exact headers from proxy-protocol.txt (and one HAProxy sent)."""

    def test_signature(self):
        self.assertEqual(V2_SIGNATURE, SIG)

    def test_v1_example(self):
        data = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n"
        info, used = parse(data)
        self.assertEqual(info, ProxyInfo(1, "PROXY", ("192.168.0.1", 56324),
                                         ("192.168.0.11", 443)))
        self.assertEqual(data[used:], b"GET / HTTP/1.1\r\n")
        self.assertEqual(build_v1(("192.168.0.1", 56324), ("192.168.0.11", 443)),
                         data[:used])

    def test_v1_longest_lines(self):
        """The spec's worst cases: 104 bytes for TCP6, 107 for UNKNOWN."""
        f = ":".join(["ffff"] * 8)
        tcp6 = f"PROXY TCP6 {f} {f} 65535 65535\r\n".encode()
        self.assertEqual(len(tcp6), 104)
        self.assertEqual(parse(tcp6)[1], 104)
        unknown = f"PROXY UNKNOWN {f} {f} 65535 65535\r\n".encode()
        self.assertEqual(len(unknown), 107)
        self.assertEqual(parse(unknown), (LOCAL_V1, 107))
        self.assertEqual(parse(b"PROXY UNKNOWN\r\n"), (LOCAL_V1, 15))

    def test_v2_tcp4_from_haproxy(self):
        """What HAProxy's ``send-proxy-v2`` put in front of a request."""
        data = bytes.fromhex("0d0a0d0a000d0a515549540a 2111000c ac130001 ac130003 a652 0050"
                             ) + b"GET / HTTP/1.1\r\n"
        info, used = parse(data)
        self.assertEqual(info, ProxyInfo(2, "PROXY", ("172.19.0.1", 42578), ("172.19.0.3", 80)))
        self.assertEqual(used, 28)
        self.assertEqual(build_v2(("172.19.0.1", 42578), ("172.19.0.3", 80)), data[:28])

    def test_v2_tcp6(self):
        """``\\x21`` TCP over IPv6: 2*16 + 2*2 = 36 address bytes."""
        header = build_v2(("2001:db8::1", 1234), ("2001:db8::2", 80))
        self.assertEqual(header, SIG + b"\x21\x21\x00\x24" + V6_BLOCK)
        self.assertEqual(parse(header + APP), (V6_INFO, 52))

    def test_v2_local_health_check(self):
        self.assertEqual(parse(SIG + b"\x20\x00\x00\x00" + APP), (LOCAL_V2, 16))

    def test_v2_tlvs_skipped(self):
        tlvs = b"\x03\x00\x04\x01\x02\x03\x04" + b"\x05\x00\x02id"  # CRC32C, UNIQUE_ID
        header = v2(0x21, 0x11, V4_BLOCK + tlvs)
        self.assertEqual(parse(header + APP), (V4_INFO, 16 + 12 + len(tlvs)))


class Build(SynchronousTestCase):
    def test_v1_family_from_literal(self):
        self.assertEqual(build_v1(("::1", 5), ("::2", 6)), b"PROXY TCP6 ::1 ::2 5 6\r\n")
        self.assertEqual(build_v1(("0:0::0001", 5), ("1.2.3.4", 6)),
                         b"PROXY TCP6 ::1 ::ffff:102:304 5 6\r\n")

    def test_scope_id_dropped(self):
        self.assertEqual(build_v1(("fe80::1%eth0", 5), ("fe80::2", 6)),
                         b"PROXY TCP6 fe80::1 fe80::2 5 6\r\n")

    def test_mixed_families_sent_as_ipv6(self):
        info, _ = parse(build_v2(("192.0.2.1", 5), ("2001:db8::1", 80)))
        self.assertEqual(info.source, ("::ffff:c000:201", 5))

    def test_rejects(self):
        for source in [("example.com", 80), ("1.2.3.4", 65536), ("1.2.3.4", -1),
                       ("1.2.3.4", "80")]:
            for build in (build_v1, build_v2):
                self.assertRaises(ValueError, build, source, ("1.2.3.4", 80))


#: (bytes, words the error must contain)
MALFORMED = [
    (b"GET / HTTP/1.1\r\n", "not a PROXY header"),
    (b"\x16\x03\x01", "not a PROXY header"),                     # a TLS ClientHello
    (b"PROXY\r\n", "not a PROXY header"),
    (b"proxy TCP4", "not a PROXY header"),
    (b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n", "'TCP5' is not TCP4, TCP6 or UNKNOWN"),
    (b"PROXY  TCP4 1.2.3.4 1.2.3.4 1 2\r\n", "is not TCP4"),
    (b"PROXY UNKNOWNX\r\n", "'UNKNOWNX' is not"),
    (b"PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n", "empty destination address"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n", "got more"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n", "got more"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", "takes 4 fields"),
    (b"PROXY TCP4\r\n", "got 0"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "lone CR or LF"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX", "lone CR or LF"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r\r\n", "lone CR or LF"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.256 1 2\r\n", "destination address '1.2.3.256'"),
    (b"PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n", "source address '01.2.3.4' is not an IPv4"),
    (b"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", "is not an IPv4 address"),
    (b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n", "'::1' is IPv6 in a TCP4 header"),
    (b"PROXY TCP6 ::1 1.2.3.4 1 2\r\n", "'1.2.3.4' is IPv4 in a TCP6 header"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "'fe80::1%eth0' is not an IPv6 address"),
    (b"PROXY TCP6 ::g ::1 1 2\r\n", "is not an IPv6 address"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", "source port '65536'"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 02\r\n", "destination port '02'"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n", "without sign"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n", "without sign"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 \xd9\xa1 2\r\n", "source port '\\xd9\\xa1'"),
    (b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", "no CRLF within the first 107 bytes"),
    (SIG[:5] + b"\x0a", "not a PROXY header"),
    (SIG + b"\x11\x11\x00\x0c" + V4_BLOCK, "version 1, expected 2"),
    (SIG + b"\x22\x11\x00\x0c" + V4_BLOCK, "command 0x2"),
    (SIG + b"\x21\x41\x00\x0c" + V4_BLOCK, "address family 0x4"),
    (SIG + b"\x21\x13\x00\x0c" + V4_BLOCK, "transport 0x3"),
]

#: beginnings of headers that are already wrong: parse() must not wait for more
MALFORMED_EARLY = [
    (b"PROXY TCP5", "'TCP5' is not TCP4"),
    (b"PROXY UNK ", "'UNK' is not TCP4"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 ", "got more"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 123456", "source port '123456'..."),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 -", "destination port '-'..."),
    (b"PROXY TCP4 1.2.3.4:", "has characters no IPv4 address has"),
    (b"PROXY TCP6 ::1%", "has characters no IPv6 address has"),
    (b"PROXY TCP6 ::1 ::1 1 00", "destination port '00'..."),
    (b"PROXY TCP4 1.2.3.4\n", "lone CR or LF"),
    (b"PROXY UNKNOWN " + b"x" * 100, "no CRLF within the first 107 bytes"),
    (SIG + b"\x11", "version 1, expected 2"),
    (SIG + b"\x2f", "command 0xf"),
    (SIG + b"\x21\x51", "address family 0x5"),
    (SIG + b"\x21\x11\x10\x01", "length 4097 is over the 4096-byte limit"),
    (SIG + b"\x21\x11\xff\xff", "length 65535 is over"),
    (SIG + b"\x21\x11\x00\x0b", "length 11 is too short for AF_INET addresses (12 bytes)"),
    (SIG + b"\x21\x21\x00\x0c", "length 12 is too short for AF_INET6 addresses (36 bytes)"),
    (SIG + b"\x21\x31\x00\x24", "too short for AF_UNIX"),
]


class Malformed(SynchronousTestCase):
    def test_each_raises_with_reason(self):
        for data, words in MALFORMED:
            with self.subTest(data=data):
                err = self.assertRaises(ProxyHeaderError, parse, data + APP)
                self.assertIn(words, str(err))
                self.assertIsInstance(err, ValueError)

    def test_each_raises_before_application_bytes(self):
        """The verdict does not wait for bytes the header cannot contain."""
        for data, words in MALFORMED + MALFORMED_EARLY:
            with self.subTest(data=data):
                self.assertIn(words, str(self.assertRaises(ProxyHeaderError, parse, data)))

    def test_v2_length_limit_is_inclusive(self):
        header = v2(0x21, 0x11, V4_BLOCK + b"\xe0" + struct.pack("!H", 4081) + b"\0" * 4081)
        self.assertEqual(len(header), 16 + 4096)
        self.assertEqual(parse(header + APP), (V4_INFO, 16 + 4096))


class Incremental(SynchronousTestCase):
    def test_every_split(self):
        """Any prefix of a header is "need more"; from the full header on, the answer."""
        for header, info in VALID:
            data = header + APP
            for cut in range(len(data) + 1):
                with self.subTest(header=header, cut=cut):
                    got = parse(data[:cut])
                    self.assertEqual(got, None if cut < len(header) else (info, len(header)))

    def test_accepts_bytearray_and_memoryview(self):
        header, info = VALID[0]
        self.assertEqual(parse(bytearray(header + APP)), (info, len(header)))
        self.assertEqual(parse(memoryview(header + APP)), (info, len(header)))

    def test_empty(self):
        self.assertIsNone(parse(b""))


ports = st.integers(0, 65535)
endpoint_v4 = st.tuples(st.ip_addresses(v=4).map(str), ports)
endpoint_v6 = st.tuples(st.ip_addresses(v=6).map(str), ports)


def expected(source, destination, version) -> ProxyInfo:
    canon = lambda e: (ipaddress.ip_address(e[0]).compressed, e[1])  # noqa: E731
    return ProxyInfo(version, "PROXY", canon(source), canon(destination))


def mutate(header: bytes, edits) -> bytes:
    data = bytearray(header)
    for position, value, action in edits:
        position %= len(data) + 1
        if action == "set" and position < len(data):
            data[position] = value
        elif action == "insert":
            data.insert(position, value)
        elif position < len(data):
            del data[position]
    return bytes(data)


edit = st.tuples(st.integers(0, 200), st.integers(0, 255), st.sampled_from(["set", "insert", "del"]))
valid_header = st.sampled_from([h for h, _ in VALID])
messy_bytes = st.one_of(
    st.binary(max_size=150),
    st.builds(lambda b: b"PROXY " + b, st.binary(max_size=120)),
    st.builds(lambda b: SIG + b, st.binary(max_size=120)),
    st.builds(lambda h, e, tail: mutate(h, e) + tail,
              valid_header, st.lists(edit, min_size=1, max_size=3), st.binary(max_size=20)),
    st.builds(lambda parts: b" ".join(parts) + b"\r\n",
              st.lists(st.sampled_from([b"PROXY", b"TCP4", b"TCP6", b"UNKNOWN", b"1.2.3.4",
                                        b"::1", b"0", b"65535", b"", b"01"]), max_size=7)),
)


class Properties(SynchronousTestCase):
    @given(endpoint_v4, endpoint_v4)
    def test_ipv4_round_trip(self, source, destination):
        for version, build in ((1, build_v1), (2, build_v2)):
            header = build(source, destination)
            self.assertEqual(parse(header + APP),
                             (expected(source, destination, version), len(header)))

    @given(endpoint_v6, endpoint_v6)
    def test_ipv6_round_trip(self, source, destination):
        for version, build in ((1, build_v1), (2, build_v2)):
            header = build(source, destination)
            self.assertEqual(parse(header + APP),
                             (expected(source, destination, version), len(header)))

    @settings(max_examples=500)
    @given(messy_bytes)
    def test_random_bytes(self, data):
        """Only ProxyHeaderError, never a count past the data, and prefixes agree.

        Feeding ``data`` a byte at a time gives "need more" until either an
        error (which every longer prefix repeats) or an answer (which every
        longer prefix repeats, consuming the same bytes).
        """
        verdict = None
        for cut in range(len(data) + 1):
            try:
                got = parse(data[:cut])
            except ProxyHeaderError as err:
                self.assertTrue(str(err))
                got = "error"
            if verdict is None:
                verdict = got
                if got not in (None, "error"):
                    info, used = got
                    self.assertIsInstance(info, ProxyInfo)
                    self.assertEqual(used, cut)   # known as soon as its last byte came
            else:
                self.assertEqual(got, verdict)
