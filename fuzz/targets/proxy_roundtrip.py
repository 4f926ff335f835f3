"""build_v1 / build_v2 then parse (lbframe/protocols/proxy_protocol.py).

The input is read as a connection's two ends: a byte for the version (v1
or v2) and each end's family, then each address (4 or 16 bytes) and port.
Oracle: ``parse(build(x) + payload) == (x, len(build(x)))``, with x's
addresses in canonical form, a mixed pair as IPv6 with the IPv4 end mapped
(``::ffff:a.b.c.d``), and IPv6 scope ids dropped; the builders never fail
on valid addresses and ports.
"""

from __future__ import annotations

import ipaddress

from fuzz.common import check, guarded
from lbframe.protocols.proxy_protocol import ProxyInfo, build_v1, build_v2, parse


def _end(data: bytes, pos: int, six: bool):
    size = 16 if six else 4
    raw = data[pos:pos + size].ljust(size, b"\0")
    port = int.from_bytes(data[pos + size:pos + size + 2].ljust(2, b"\0"), "big")
    return ipaddress.ip_address(raw), port, pos + size + 2


@guarded("proxy")
def TestOneInput(data: bytes) -> None:
    if not data:
        return
    flags = data[0]
    version = 2 if flags & 1 else 1
    src, sport, pos = _end(data, 1, bool(flags & 2))
    dst, dport, pos = _end(data, pos, bool(flags & 4))
    payload = data[pos:]
    src_text, dst_text = str(src), str(dst)
    if flags & 8 and src.version == 6:
        src_text += "%eth0"  # a scope id, as a link-local client has; dropped
    if src.version != dst.version:
        src, dst = (ipaddress.IPv6Address(f"::ffff:{a}") if a.version == 4 else a
                    for a in (src, dst))
    expected = ProxyInfo(version, "PROXY", (src.compressed, sport), (dst.compressed, dport))
    build = build_v2 if version == 2 else build_v1
    header = build((src_text, sport), (dst_text, dport))
    got = parse(header + payload)
    check(got == (expected, len(header)), "proxy-roundtrip",
          lambda: f"{expected!r} built as {header!r} parses as {got!r}")
