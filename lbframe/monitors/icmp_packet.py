"""ICMP and ICMPv6 echo packets, built and parsed in pure Python.

Kept apart from the socket code so that it can be tested (and fuzzed) without
privileges. :func:`parse` reads whatever a socket hands over and never raises:
anything it does not understand is ``None``.

What the kernel gives us differs by socket:

- a raw IPv4 socket delivers the IP header too (``ip_header=True``);
- raw ICMPv6 and unprivileged ``SOCK_DGRAM`` ping sockets deliver the ICMP
  message only;
- ICMPv6 checksums cover a pseudo-header with the source address, which we do
  not know before sending, so the kernel fills them in (RFC 3542 §3.1) and we
  send zero.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

import attrs

ECHO_REPLY_V4, DEST_UNREACHABLE_V4, ECHO_REQUEST_V4, TIME_EXCEEDED_V4 = 0, 3, 8, 11
DEST_UNREACHABLE_V6, TIME_EXCEEDED_V6, ECHO_REQUEST_V6, ECHO_REPLY_V6 = 1, 3, 128, 129

_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence

#: operator-facing words for the destination-unreachable codes we can name
_UNREACHABLE_V4 = {0: "network unreachable", 1: "host unreachable",
                   2: "protocol unreachable", 3: "port unreachable",
                   9: "network administratively prohibited",
                   10: "host administratively prohibited",
                   13: "administratively prohibited"}
_UNREACHABLE_V6 = {0: "network unreachable", 1: "administratively prohibited",
                   3: "host unreachable", 4: "port unreachable"}


@attrs.frozen
class Echo:
    """An echo request or reply."""

    reply: bool
    ident: int
    seq: int
    payload: bytes


@attrs.frozen
class Error:
    """An ICMP error about an echo request we (or someone) sent.

    ``original`` is the quoted echo request (its payload may be cut short by
    the router), ``destination`` the address it was sent to.
    """

    type: int
    code: int
    original: Echo
    destination: str

    @property
    def reason(self) -> str:
        """Words for the operator, e.g. ``host unreachable``."""
        v6 = ":" in self.destination
        if self.type == (DEST_UNREACHABLE_V6 if v6 else DEST_UNREACHABLE_V4):
            table = _UNREACHABLE_V6 if v6 else _UNREACHABLE_V4
            return table.get(self.code, f"destination unreachable (code {self.code})")
        return "TTL exceeded"


def checksum(data: bytes) -> int:
    """The internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_echo(family: int, ident: int, seq: int, payload: bytes, reply: bool = False) -> bytes:
    """An echo request (or reply, for tests and fakes) ready for ``sendto``."""
    if family == socket.AF_INET6:
        # The kernel computes ICMPv6 checksums.
        type_ = ECHO_REPLY_V6 if reply else ECHO_REQUEST_V6
        return _HEADER.pack(type_, 0, 0, ident, seq) + payload
    type_ = ECHO_REPLY_V4 if reply else ECHO_REQUEST_V4
    body = _HEADER.pack(type_, 0, 0, ident, seq) + payload
    return _HEADER.pack(type_, 0, checksum(body), ident, seq) + payload


def build_ipv4_header(source: str, destination: str, payload_length: int,
                      protocol: int = socket.IPPROTO_ICMP, ttl: int = 64) -> bytes:
    """A minimal IPv4 header, as a raw socket delivers it (for tests and error quotes)."""
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_length, 0, 0, ttl, protocol, 0,
                         socket.inet_aton(source), socket.inet_aton(destination))
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:]


def build_error(family: int, type_: int, code: int, quoted: bytes) -> bytes:
    """An ICMP error quoting ``quoted`` (the original IP packet)."""
    body = struct.pack("!BBHI", type_, code, 0, 0) + quoted
    if family == socket.AF_INET6:
        return body
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def parse(family: int, data: bytes, ip_header: bool = False) -> Echo | Error | None:
    """The echo or error in ``data``, or ``None`` for anything else (never raises)."""
    try:
        if family == socket.AF_INET6:
            return _parse_v6(data)
        if ip_header:
            data = _strip_ipv4(data)
            if data is None:
                return None
        return _parse_v4(data)
    except (struct.error, ValueError, IndexError):  # pragma: no cover - defence in depth
        return None


def _strip_ipv4(data: bytes) -> bytes | None:
    """The payload of an IPv4 packet carrying ICMP, or ``None``."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) * 4
    if ihl < 20 or len(data) < ihl or data[9] != socket.IPPROTO_ICMP:
        return None
    return data[ihl:]


def _parse_v4(data: bytes) -> Echo | Error | None:
    if len(data) < 8 or checksum(data) != 0:
        return None
    type_, code, _, ident, seq = _HEADER.unpack_from(data)
    if type_ in (ECHO_REPLY_V4, ECHO_REQUEST_V4):
        return Echo(type_ == ECHO_REPLY_V4, ident, seq, data[8:]) if code == 0 else None
    if type_ not in (DEST_UNREACHABLE_V4, TIME_EXCEEDED_V4):
        return None
    # The error quotes the original IP header and at least 8 bytes after it.
    quoted = data[8:]
    if len(quoted) < 20 or quoted[0] >> 4 != 4 or quoted[9] != socket.IPPROTO_ICMP:
        return None
    ihl = (quoted[0] & 0x0F) * 4
    inner = quoted[ihl:]
    if ihl < 20 or len(inner) < 8:
        return None
    itype, icode, _, iident, iseq = _HEADER.unpack_from(inner)
    if itype != ECHO_REQUEST_V4 or icode != 0:
        return None
    destination = socket.inet_ntoa(quoted[16:20])
    return Error(type_, code, Echo(False, iident, iseq, inner[8:]), destination)


def _parse_v6(data: bytes) -> Echo | Error | None:
    if len(data) < 8:
        return None
    type_, code, _, ident, seq = _HEADER.unpack_from(data)
    if type_ in (ECHO_REPLY_V6, ECHO_REQUEST_V6):
        return Echo(type_ == ECHO_REPLY_V6, ident, seq, data[8:]) if code == 0 else None
    if type_ not in (DEST_UNREACHABLE_V6, TIME_EXCEEDED_V6):
        return None
    # The error quotes as much of the original packet as fits; we only follow
    # an IPv6 header directly followed by ICMPv6 (no extension headers).
    quoted = data[8:]
    if len(quoted) < 48 or quoted[0] >> 4 != 6 or quoted[6] != socket.IPPROTO_ICMPV6:
        return None
    inner = quoted[40:]
    itype, icode, _, iident, iseq = _HEADER.unpack_from(inner)
    if itype != ECHO_REQUEST_V6 or icode != 0:
        return None
    destination = str(ipaddress.IPv6Address(quoted[24:40]))
    return Error(type_, code, Echo(False, iident, iseq, inner[8:]), destination)
