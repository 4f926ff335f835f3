"""VRRP advertisements on the wire: RFC 5798 (version 3) and RFC 3768 (version 2).

Only IPv4 is carried (protocol 112 to 224.0.0.18). Version 3 checksums the
advert together with an IPv4 pseudo-header (source, destination, zero,
protocol, length: RFC 5798 §5.2.8), so the checksum depends on which
addresses the IP header carries; version 2 checksums the advert alone and
carries an authentication type and 8 bytes of authentication data, which we
send as type 0 (none) and zeros, as RFC 3768 §5.3.6 leaves them.

:func:`decode` refuses anything malformed with :class:`PacketError` and a
reason a log line can carry; it never trusts a length field beyond the bytes
it was given.
"""

from __future__ import annotations

import ipaddress
import struct

import attrs

PROTOCOL = 112
GROUP = "224.0.0.18"
TTL = 255
ADVERTISEMENT = 1
#: version 3's Max Adver Int is 12 bits of centiseconds
MAX_V3_CENTIS = 0x0FFF
V2_AUTH_DATA = 8
HEADER = struct.Struct("!BBBBHH")
IPV4_HEADER_MIN = 20


class PacketError(ValueError):
    """A packet that is not a valid VRRP advertisement (the message says why)."""


@attrs.frozen
class Advert:
    """One advertisement. ``interval`` is in seconds (v3: a multiple of 0.01,
    v2: whole seconds); ``addresses`` are IPv4 address strings."""

    vrid: int
    priority: int
    interval: float
    addresses: tuple[str, ...]
    version: int = 3
    #: v2 only: authentication type (0: none) as received
    auth_type: int = 0


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's
    complement sum of 16-bit words, an odd byte padded with zero."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(source: str, destination: str, length: int) -> bytes:
    """The IPv4 pseudo-header VRRPv3 checksums with (RFC 5798 §5.2.8)."""
    return (ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address(destination).packed
            + struct.pack("!BBH", 0, PROTOCOL, length))


def encode(advert: Advert, source: str, destination: str = GROUP) -> bytes:
    """The VRRP message (no IP header) for ``advert`` sent from ``source``."""
    if not 1 <= advert.vrid <= 255:
        raise ValueError(f"VRID {advert.vrid} out of 1-255")
    if not 0 <= advert.priority <= 255:
        raise ValueError(f"priority {advert.priority} out of 0-255")
    if not 1 <= len(advert.addresses) <= 255:
        raise ValueError("an advert carries 1 to 255 addresses")
    addresses = b"".join(ipaddress.IPv4Address(a).packed for a in advert.addresses)
    first = (advert.version << 4) | ADVERTISEMENT
    count = len(advert.addresses)
    if advert.version == 3:
        centis = round(advert.interval * 100)
        if not 1 <= centis <= MAX_V3_CENTIS:
            raise ValueError(f"VRRPv3 interval {advert.interval}s out of 0.01-40.95s")
        body = HEADER.pack(first, advert.vrid, advert.priority, count, centis, 0) + addresses
        total = checksum(pseudo_header(source, destination, len(body)) + body)
    elif advert.version == 2:
        seconds = int(advert.interval)
        if seconds != advert.interval or not 1 <= seconds <= 255:
            raise ValueError(f"VRRPv2 interval {advert.interval}s is not a whole 1-255s")
        head = struct.pack("!BBBBBBH", first, advert.vrid, advert.priority, count,
                           advert.auth_type, seconds, 0)
        body = head + addresses + b"\0" * V2_AUTH_DATA
        total = checksum(body)
    else:
        raise ValueError(f"VRRP version {advert.version} (2 or 3)")
    return body[:6] + struct.pack("!H", total) + body[8:]


def decode(data: bytes, source: str, destination: str = GROUP) -> Advert:
    """The advert in a VRRP message (no IP header) received from ``source``
    to ``destination``; raises :class:`PacketError`."""
    if len(data) < HEADER.size:
        raise PacketError(f"{len(data)} bytes is shorter than a VRRP header")
    first, vrid, priority, count, word, _ = HEADER.unpack_from(data)
    version, kind = first >> 4, first & 0x0F
    if version not in (2, 3):
        raise PacketError(f"version {version} (2 or 3 expected)")
    if kind != ADVERTISEMENT:
        raise PacketError(f"type {kind} is not an advertisement")
    if vrid == 0:
        raise PacketError("VRID 0")
    if count == 0:
        raise PacketError("no address")
    need = HEADER.size + 4 * count + (V2_AUTH_DATA if version == 2 else 0)
    if len(data) < need:
        raise PacketError(f"{len(data)} bytes, {need} needed for {count} addresses")
    if version == 3:
        # the length of the pseudo-header is that of the VRRP message we were given
        if checksum(pseudo_header(source, destination, len(data)) + data) != 0:
            raise PacketError("bad checksum")
        interval = (word & MAX_V3_CENTIS) / 100
        if interval == 0:
            raise PacketError("advertisement interval 0")
        auth = 0
    else:
        if checksum(data) != 0:
            raise PacketError("bad checksum")
        auth, seconds = word >> 8, word & 0xFF
        if seconds == 0:
            raise PacketError("advertisement interval 0")
        interval = float(seconds)
    addresses = tuple(str(ipaddress.IPv4Address(data[i:i + 4]))
                      for i in range(HEADER.size, HEADER.size + 4 * count, 4))
    return Advert(vrid, priority, interval, addresses, version, auth)


@attrs.frozen
class IPv4Header:
    """What the receiver checks in the IP header of an advert."""

    source: str
    destination: str
    ttl: int
    protocol: int
    header_length: int
    total_length: int


def split_ipv4(packet: bytes) -> tuple[IPv4Header, bytes]:
    """A raw socket's IPv4 datagram: its header and its payload; raises
    :class:`PacketError` when the header is short or inconsistent."""
    if len(packet) < IPV4_HEADER_MIN:
        raise PacketError(f"{len(packet)} bytes is shorter than an IPv4 header")
    if packet[0] >> 4 != 4:
        raise PacketError("not IPv4")
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    if ihl < IPV4_HEADER_MIN or len(packet) < ihl:
        raise PacketError(f"IPv4 header length {ihl}")
    # Linux hands raw sockets the datagram as received; trust the bytes we
    # have, bounded by the header's total length.
    end = min(len(packet), total) if total >= ihl else len(packet)
    header = IPv4Header(str(ipaddress.IPv4Address(packet[12:16])),
                        str(ipaddress.IPv4Address(packet[16:20])),
                        packet[8], packet[9], ihl, total)
    return header, packet[ihl:end]
