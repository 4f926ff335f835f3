"""The PROXY protocol, versions 1 and 2 (HAProxy's ``proxy-protocol.txt``).

A balancer that relays bytes replaces the client's address with its own, so a
member behind it sees every connection coming from the balancer. The PROXY
protocol puts one header in front of the relayed bytes that names the client
(and the address it connected to): ``send_proxy = v1|v2`` on a pool writes it
towards members, ``accept_proxy = yes`` on a virtual server reads it from a
balancer in front of lbframe.

Version 1 is one line of ASCII::

    PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\\r\\n

version 2 a binary block: a 12-byte signature, a version/command byte, a
family/transport byte, a 16-bit length and that many bytes of addresses
(optionally followed by TLVs, which this module skips).

The parser is strict because the header is the *only* thing that decides what
client address the rest of lbframe (logs, persistence, source-hash, ACLs)
believes: anything that does not match the specification exactly is rejected,
and as early as the bytes seen so far allow, so a confused or hostile peer is
dropped without waiting for a timeout.
"""

from __future__ import annotations

import ipaddress
import re
import struct

import attrs

__all__ = ["ProxyInfo", "ProxyHeaderError", "build_v1", "build_v2", "parse"]

V1_PREFIX = b"PROXY "
#: the longest v1 line, CRLF included ("PROXY UNKNOWN" + two full IPv6 + ports)
V1_MAX_LINE = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: signature, version/command, family/transport, 16-bit length
V2_FIXED = 16
#: the largest address+TLV block accepted; real headers are far smaller, and a
#: bound keeps a peer from making us buffer 64 KiB before we can judge it
V2_MAX_BLOCK = 4096
#: the longest header there can be (v2 with the largest address block)
MAX_HEADER = V2_FIXED + V2_MAX_BLOCK

_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_UNSPEC, _STREAM, _DGRAM = 0x0, 0x1, 0x2
#: bytes of addresses (and ports) each family needs in the v2 block
_V2_FAMILY_LENGTH = {_AF_UNSPEC: 0, _AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}
_V2_FAMILY_NAME = {_AF_UNSPEC: "AF_UNSPEC", _AF_INET: "AF_INET",
                   _AF_INET6: "AF_INET6", _AF_UNIX: "AF_UNIX"}

_V1_PROTOCOLS = (b"TCP4", b"TCP6", b"UNKNOWN")
#: a port without sign or leading zero: "0" or 1-5 digits starting 1-9
_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
#: characters an address literal may contain (no scope ids, no spaces), and
#: those an IPv4 one may, to reject a half-received one early
_ADDRESS_CHARS = re.compile(rb"[0-9A-Fa-f:.]*")
_GROWING_CHARS = {b"TCP4": re.compile(rb"[0-9.]*"), b"TCP6": _ADDRESS_CHARS}


class ProxyHeaderError(ValueError):
    """The bytes cannot be a valid PROXY protocol header; the message says why."""


@attrs.frozen
class ProxyInfo:
    """What a PROXY header says about the connection it precedes.

    ``source``/``destination`` are ``(host, port)`` with the host in canonical
    form, or ``None`` when the header carries no usable address (v1
    ``UNKNOWN``, v2 ``LOCAL``, ``AF_UNSPEC``, ``AF_UNIX``): the receiver then
    uses the real connection's addresses, as the specification says.
    """

    version: int
    command: str
    source: tuple[str, int] | None
    destination: tuple[str, int] | None


# -- building ---------------------------------------------------------------

def _addresses(source, destination):
    """Both ends as ``ipaddress`` objects of one family.

    A mixed pair (an IPv4 client reported next to an IPv6 VIP, as dual-stack
    sockets can) is sent as IPv6 with the IPv4 end IPv4-mapped: a header has one
    family, and mapping loses nothing. Scope ids (``fe80::1%eth0``) are dropped;
    they mean nothing to the member.
    """
    ends = []
    for what, (host, port) in (("source", source), ("destination", destination)):
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"PROXY {what} {host!r} is not an IP address literal") from None
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"PROXY {what} port {port!r} is not in 0-65535")
        if addr.version == 6:
            addr = ipaddress.IPv6Address(int(addr))
        ends.append((addr, port))
    (src, sport), (dst, dport) = ends
    if src.version != dst.version:
        src, dst = (ipaddress.IPv6Address(f"::ffff:{a}") if a.version == 4 else a
                    for a in (src, dst))
    return src, dst, sport, dport


def build_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """The v1 line for a TCP connection from ``source`` to ``destination``."""
    src, dst, sport, dport = _addresses(source, destination)
    family = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {family} {src.compressed} {dst.compressed} {sport} {dport}\r\n".encode("ascii")


def build_v2(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """The v2 header (command PROXY, STREAM over INET/INET6, no TLVs)."""
    src, dst, sport, dport = _addresses(source, destination)
    family = _AF_INET if src.version == 4 else _AF_INET6
    block = src.packed + dst.packed + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | _V2_PROXY, family << 4 | _STREAM,
                                      len(block)) + block


# -- parsing ----------------------------------------------------------------

def parse(data: bytes) -> tuple[ProxyInfo, int] | None:
    """Read a PROXY header (v1 or v2) from the start of ``data``.

    Returns ``None`` while ``data`` is a valid but incomplete beginning of a
    header, ``(info, consumed)`` once it is complete (``data[consumed:]``
    belongs to the application), and raises :class:`ProxyHeaderError` as soon
    as the bytes seen cannot start a valid header, so the caller can drop the
    connection without waiting for more.
    """
    # No header is longer than this; copying more would only cost time.
    data = bytes(data[:V2_FIXED + V2_MAX_BLOCK])
    if data[:1] == V1_PREFIX[:1]:
        if not data.startswith(V1_PREFIX[:len(data)]):
            raise ProxyHeaderError(f"not a PROXY header: starts with {_show(data[:6])}, "
                                   f"expected 'PROXY ' (v1) or the v2 signature")
        return _parse_v1(data) if len(data) >= len(V1_PREFIX) else None
    if not data.startswith(V2_SIGNATURE[:len(data)]):
        raise ProxyHeaderError(f"not a PROXY header: starts with {_show(data[:12])}, "
                               f"expected 'PROXY ' (v1) or the v2 signature")
    return _parse_v2(data) if len(data) >= len(V2_SIGNATURE) else None


def _show(raw: bytes) -> str:
    """Received bytes quoted for a log line: printable ASCII as is, the rest escaped."""
    return repr(raw)[1:]  # repr without the b prefix


def _v1_error(what: str) -> ProxyHeaderError:
    return ProxyHeaderError(f"bad PROXY v1 header: {what}")


def _parse_v1(data: bytes) -> tuple[ProxyInfo, int] | None:
    """Version 1: wait for the CRLF (within 107 bytes), then check every field."""
    end = data.find(b"\r\n", 0, V1_MAX_LINE)
    if end < 0:
        partial = data[:V1_MAX_LINE]
        _check_v1_line(partial, complete=False)
        if len(data) >= V1_MAX_LINE:
            raise _v1_error(f"no CRLF within the first {V1_MAX_LINE} bytes")
        return None
    return _check_v1_line(data[:end], complete=True), end + 2


def _check_v1_line(line: bytes, complete: bool) -> ProxyInfo | None:
    """Validate a v1 line (without its CRLF), or as much of one as has arrived.

    When ``complete`` is false the last field may still be growing, so it is
    only checked for what it could still become; every earlier field is final
    and gets the full check. This is what lets ``parse`` fail on
    ``PROXY TCP5`` or ``PROXY TCP4 1.2.3.4  `` without waiting for the CRLF.
    """
    body = line if complete or not line.endswith(b"\r") else line[:-1]
    if b"\r" in body or b"\n" in body:
        raise _v1_error("a lone CR or LF inside the line (it must end with CRLF)")
    fields = body.split(b" ")
    final = fields if complete else fields[:-1]
    growing = None if complete else fields[-1]

    protocol = fields[1]
    if len(final) < 2:
        if not any(p.startswith(protocol) for p in _V1_PROTOCOLS):
            raise _v1_error(f"protocol {_show(protocol)} is not TCP4, TCP6 or UNKNOWN")
        return None
    if protocol == b"UNKNOWN":
        # The specification tells receivers to ignore whatever follows UNKNOWN.
        return ProxyInfo(1, "LOCAL", None, None)
    if protocol not in _V1_PROTOCOLS:
        raise _v1_error(f"protocol {_show(protocol)} is not TCP4, TCP6 or UNKNOWN")
    values = [_v1_field(protocol, index, field) for index, field in enumerate(final[2:6], 2)]
    if len(fields) > 6:
        raise _v1_error(f"{protocol.decode()} takes 4 fields (source, destination, "
                        f"source port, destination port), got more")
    if complete and len(fields) < 6:
        raise _v1_error(f"{protocol.decode()} takes 4 fields (source, destination, "
                        f"source port, destination port), got {len(fields) - 2}")
    if growing is not None:
        _v1_growing_field(protocol, len(fields) - 1, growing)
        return None
    src, dst, sport, dport = values
    return ProxyInfo(1, "PROXY", (src, sport), (dst, dport))


_V1_FIELD_NAMES = {2: "source address", 3: "destination address",
                   4: "source port", 5: "destination port"}


def _v1_field(protocol: bytes, index: int, field: bytes) -> str | int:
    """One complete address or port field of a TCP4/TCP6 line, checked."""
    name = _V1_FIELD_NAMES[index]
    if not field:
        raise _v1_error(f"empty {name} (fields are separated by exactly one space)")
    if index >= 4:
        if not _PORT.fullmatch(field) or int(field) > 65535:
            raise _v1_error(f"{name} {_show(field)} is not a number 0-65535 without "
                            f"sign or leading zeros")
        return int(field)
    version = 4 if protocol == b"TCP4" else 6
    try:
        if not _ADDRESS_CHARS.fullmatch(field):
            raise ValueError  # also keeps scope ids (fe80::1%eth0) out
        addr = ipaddress.ip_address(field.decode("ascii"))
    except ValueError:
        raise _v1_error(f"{name} {_show(field)} is not an IPv{version} address") from None
    if addr.version != version:
        raise _v1_error(f"{name} {_show(field)} is IPv{addr.version} in a "
                        f"{protocol.decode()} header")
    return addr.compressed


def _v1_growing_field(protocol: bytes, index: int, field: bytes) -> None:
    """Reject a field still being received if no continuation can make it valid."""
    name = _V1_FIELD_NAMES[index]
    if index >= 4:
        if field and not (_PORT.fullmatch(field) and int(field) <= 65535):
            raise _v1_error(f"{name} {_show(field)}... is not a number 0-65535 without "
                            f"sign or leading zeros")
    elif not _GROWING_CHARS[protocol].fullmatch(field):
        raise _v1_error(f"{name} {_show(field)}... has characters no "
                        f"IPv{protocol[-1:].decode()} address has")


def _v2_error(what: str) -> ProxyHeaderError:
    return ProxyHeaderError(f"bad PROXY v2 header: {what}")


def _parse_v2(data: bytes) -> tuple[ProxyInfo, int] | None:
    """Version 2: check the fixed 16 bytes as they arrive, then the address block."""
    if len(data) > 12:
        version, command = data[12] >> 4, data[12] & 0xF
        if version != 2:
            raise _v2_error(f"version {version}, expected 2")
        if command not in (_V2_LOCAL, _V2_PROXY):
            raise _v2_error(f"command {command:#x}, expected 0x0 (LOCAL) or 0x1 (PROXY)")
    if len(data) > 13:
        family, transport = data[13] >> 4, data[13] & 0xF
        if family not in _V2_FAMILY_LENGTH:
            raise _v2_error(f"address family {family:#x}, expected 0x0-0x3 "
                            f"(AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX)")
        if transport not in (_UNSPEC, _STREAM, _DGRAM):
            raise _v2_error(f"transport {transport:#x}, expected 0x0-0x2 "
                            f"(UNSPEC, STREAM, DGRAM)")
    if len(data) < V2_FIXED:
        return None

    (length,) = struct.unpack_from("!H", data, 14)
    if length > V2_MAX_BLOCK:
        raise _v2_error(f"length {length} is over the {V2_MAX_BLOCK}-byte limit")
    # LOCAL: the specification says the family is ignored and only the length
    # counts, so a LOCAL header with any length is fine. PROXY: the addresses
    # must fit, whatever TLVs may follow them.
    has_addresses = command == _V2_PROXY and family != _AF_UNSPEC and transport != _UNSPEC
    needed = _V2_FAMILY_LENGTH[family]
    if has_addresses and length < needed:
        raise _v2_error(f"length {length} is too short for {_V2_FAMILY_NAME[family]} "
                        f"addresses ({needed} bytes)")
    consumed = V2_FIXED + length
    if len(data) < consumed:
        return None
    if command == _V2_LOCAL:
        return ProxyInfo(2, "LOCAL", None, None), consumed
    if not has_addresses or family == _AF_UNIX:
        return ProxyInfo(2, "PROXY", None, None), consumed

    size = 4 if family == _AF_INET else 16
    block = data[V2_FIXED:V2_FIXED + needed]
    src = ipaddress.ip_address(block[:size]).compressed
    dst = ipaddress.ip_address(block[size:2 * size]).compressed
    sport, dport = struct.unpack_from("!HH", block, 2 * size)
    return ProxyInfo(2, "PROXY", (src, sport), (dst, dport)), consumed
