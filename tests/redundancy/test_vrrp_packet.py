"""VRRP advertisements: bytes keepalived 2.2.7 sent (captured with tcpdump in a
namespace), the RFC 5798 pseudo-header checksum, and hypothesis round trips."""

from __future__ import annotations

import struct

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lbframe.redundancy.vrrp import packet
from lbframe.redundancy.vrrp.packet import Advert, PacketError

# IPv4 datagrams from keepalived 2.2.7 (vrid 51, priority 150, advert_int 1,
# VIPs 198.18.0.10 and 198.18.0.11, from 198.18.0.1), master then its stop.
KEEPALIVED_V3 = bytes.fromhex(
    "45c0002400010000ff701483c6120001e0000012"
    "3133960200640585c612000ac612000b")
KEEPALIVED_V3_STOP = bytes.fromhex(
    "45c0002400040000ff701480c6120001e0000012"
    "3133000200649b85c612000ac612000b")
KEEPALIVED_V2 = bytes.fromhex(
    "45c0002c00010000ff70147bc6120001e0000012"
    "213396020001bc8ec612000ac612000b0000000000000000")
KEEPALIVED_V2_STOP = bytes.fromhex(
    "45c0002c00040000ff701478c6120001e0000012"
    "213300020001528fc612000ac612000b0000000000000000")
VIPS = ("198.18.0.10", "198.18.0.11")


class KeepalivedBytesTests(SynchronousTestCase):
    def test_v3_decoded_field_by_field(self):
        header, payload = packet.split_ipv4(KEEPALIVED_V3)
        self.assertEqual((header.source, header.destination, header.ttl, header.protocol),
                         ("198.18.0.1", "224.0.0.18", 255, 112))
        self.assertEqual(packet.decode(payload, header.source),
                         Advert(51, 150, 1.0, VIPS, 3))

    def test_v3_priority_zero_on_stop(self):
        header, payload = packet.split_ipv4(KEEPALIVED_V3_STOP)
        self.assertEqual(packet.decode(payload, header.source).priority, 0)

    def test_v2_decoded_field_by_field(self):
        header, payload = packet.split_ipv4(KEEPALIVED_V2)
        self.assertEqual(packet.decode(payload, header.source),
                         Advert(51, 150, 1.0, VIPS, 2, auth_type=0))
        header, payload = packet.split_ipv4(KEEPALIVED_V2_STOP)
        self.assertEqual(packet.decode(payload, header.source).priority, 0)

    def test_we_encode_what_keepalived_sends(self):
        """Byte for byte, checksum included."""
        for datagram, advert in ((KEEPALIVED_V3, Advert(51, 150, 1.0, VIPS, 3)),
                                 (KEEPALIVED_V3_STOP, Advert(51, 0, 1.0, VIPS, 3)),
                                 (KEEPALIVED_V2, Advert(51, 150, 1.0, VIPS, 2)),
                                 (KEEPALIVED_V2_STOP, Advert(51, 0, 1.0, VIPS, 2))):
            self.assertEqual(packet.encode(advert, "198.18.0.1"), datagram[20:])

    def test_v3_checksum_covers_the_pseudo_header(self):
        """The same message from another source fails: the source is in the sum."""
        payload = KEEPALIVED_V3[20:]
        with self.assertRaisesRegex(PacketError, "checksum"):
            packet.decode(payload, "198.18.0.2")
        with self.assertRaisesRegex(PacketError, "checksum"):
            packet.decode(payload, "198.18.0.1", destination="224.0.0.19")

    def test_v2_checksum_does_not(self):
        payload = KEEPALIVED_V2[20:]
        self.assertEqual(packet.decode(payload, "203.0.113.9").vrid, 51)


class ChecksumTests(SynchronousTestCase):
    def test_rfc1071_example(self):
        """RFC 1071 §3's example words sum to ddf2; the checksum is its complement."""
        data = bytes.fromhex("0001f203f4f5f6f7")
        self.assertEqual(packet.checksum(data), ~0xDDF2 & 0xFFFF)

    def test_odd_length_padded(self):
        self.assertEqual(packet.checksum(b"\x01"), packet.checksum(b"\x01\x00"))


class MalformedTests(SynchronousTestCase):
    def good(self):
        return bytearray(KEEPALIVED_V3[20:])

    def test_each_field_checked(self):
        cases = {
            "shorter than a VRRP header": bytes(self.good()[:7]),
            "version 1": bytes([0x11]) + bytes(self.good()[1:]),
            "type 2": bytes([0x32]) + bytes(self.good()[1:]),
            "needed for 2 addresses": bytes(self.good()[:12]),
            "no address": bytes(self.good()[:3]) + b"\0" + bytes(self.good()[4:]),
            "VRID 0": bytes(self.good()[:1]) + b"\0" + bytes(self.good()[2:]),
        }
        for reason, data in cases.items():
            with self.assertRaisesRegex(PacketError, reason):
                packet.decode(data, "198.18.0.1")

    def test_flipped_bit_fails_the_checksum(self):
        data = self.good()
        data[3] ^= 0  # untouched: fine
        packet.decode(bytes(data), "198.18.0.1")
        data[9] ^= 0x10
        with self.assertRaisesRegex(PacketError, "checksum"):
            packet.decode(bytes(data), "198.18.0.1")

    def test_short_ip_header(self):
        with self.assertRaises(PacketError):
            packet.split_ipv4(KEEPALIVED_V3[:19])
        with self.assertRaises(PacketError):
            packet.split_ipv4(b"\x60" + KEEPALIVED_V3[1:])

    def test_encode_refuses_what_cannot_be_sent(self):
        for advert in (Advert(0, 100, 1.0, VIPS), Advert(1, 256, 1.0, VIPS),
                       Advert(1, 100, 41.0, VIPS), Advert(1, 100, 1.5, VIPS, 2),
                       Advert(1, 100, 1.0, ())):
            with self.assertRaises(ValueError):
                packet.encode(advert, "198.18.0.1")


addresses = st.lists(st.integers(0, 2**32 - 1).map(
    lambda n: ".".join(str(b) for b in struct.pack("!I", n))), min_size=1, max_size=20)
sources = st.integers(1, 2**32 - 1).map(lambda n: ".".join(str(b) for b in struct.pack("!I", n)))


class PropertyTests(SynchronousTestCase):
    @given(st.integers(1, 255), st.integers(0, 255), st.integers(1, 4095), addresses, sources)
    def test_v3_round_trip(self, vrid, priority, centis, addrs, source):
        advert = Advert(vrid, priority, centis / 100, tuple(addrs), 3)
        data = packet.encode(advert, source)
        self.assertEqual(len(data), 8 + 4 * len(addrs))
        self.assertEqual(packet.decode(data, source), advert)

    @given(st.integers(1, 255), st.integers(0, 255), st.integers(1, 255), addresses, sources)
    def test_v2_round_trip(self, vrid, priority, seconds, addrs, source):
        advert = Advert(vrid, priority, float(seconds), tuple(addrs), 2)
        data = packet.encode(advert, source)
        self.assertEqual(len(data), 16 + 4 * len(addrs))
        self.assertEqual(packet.decode(data, source), advert)

    @given(st.binary(max_size=200), sources)
    def test_decode_never_raises_anything_else(self, data, source):
        try:
            packet.decode(data, source)
        except PacketError:
            pass

    @given(st.binary(max_size=100))
    def test_split_never_raises_anything_else(self, data):
        try:
            packet.split_ipv4(data)
        except PacketError:
            pass

    @given(st.integers(1, 255), st.integers(1, 4095), addresses, sources,
           st.integers(0, 7), st.data())
    def test_any_single_bit_flip_is_caught(self, vrid, centis, addrs, source, bit, data):
        wire = bytearray(packet.encode(Advert(vrid, 100, centis / 100, tuple(addrs)), source))
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] ^= 1 << bit
        with self.assertRaises(PacketError):
            packet.decode(bytes(wire), source)
