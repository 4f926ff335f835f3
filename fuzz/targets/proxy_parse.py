"""parse (lbframe/protocols/proxy_protocol.py): the first bytes of a
connection on an ``accept_proxy`` listener.

Oracle: the answer is None (need more), ``(ProxyInfo, consumed)`` or
ProxyHeaderError; any other exception is a finding. None only while fewer
than ``MAX_HEADER`` bytes are in (the v1 line within 107). A refusal is
final: more bytes never make it valid. An accepted header: ``consumed`` is
within the input, ``data[:consumed]`` parses the same, every shorter prefix
is None, and bytes after it do not change it; its addresses are canonical
IP literals of one family with ports 0-65535, the addresses of a v1 line are
the ones it spells, and building a header from them parses back to the
same ProxyInfo (the parser and the builders agree).
"""

from __future__ import annotations

import ipaddress

from fuzz.common import check, guarded, rng_for
from lbframe.protocols.proxy_protocol import (MAX_HEADER, V1_MAX_LINE, ProxyHeaderError,
                                              ProxyInfo, build_v1, build_v2, parse)


def outcome(data: bytes):
    try:
        return parse(data)
    except ProxyHeaderError as e:
        return e


def check_info(info: ProxyInfo, header: bytes) -> None:
    check(info.version in (1, 2) and info.command in ("PROXY", "LOCAL"), "proxy-info",
          lambda: f"{info!r}")
    check((info.source is None) == (info.destination is None), "proxy-info",
          lambda: f"one address without the other: {info!r}")
    if info.source is None:
        return
    check(info.command == "PROXY", "proxy-info", lambda: f"addresses in a LOCAL: {info!r}")
    addrs = []
    for host, port in (info.source, info.destination):
        addr = ipaddress.ip_address(host)
        check(addr.compressed == host and "%" not in host, "proxy-info",
              lambda: f"address {host!r} is not canonical")
        check(isinstance(port, int) and 0 <= port <= 65535, "proxy-info",
              lambda: f"port {port!r}")
        addrs.append(addr)
    check(addrs[0].version == addrs[1].version, "proxy-info",
          lambda: f"two families: {info!r}")
    if info.version == 1:
        fields = header[:-2].split(b" ")
        spelled = [ipaddress.ip_address(f.decode("ascii")) for f in fields[2:4]]
        check(spelled == addrs and [int(f) for f in fields[4:6]]
              == [info.source[1], info.destination[1]], "proxy-info",
              lambda: f"{info!r} is not what {header!r} says")
    build = build_v1 if info.version == 1 else build_v2
    rebuilt = build(info.source, info.destination)
    again = outcome(rebuilt)
    check(isinstance(again, tuple) and again == (info, len(rebuilt)), "proxy-rebuild",
          lambda: f"{info!r} built as {rebuilt!r} parses as {again!r}")


@guarded("proxy")
def TestOneInput(data: bytes) -> None:
    result = outcome(data)
    rng = rng_for(data)
    if result is None:
        limit = V1_MAX_LINE if data[:1] == b"P" else MAX_HEADER
        check(len(data) < limit, "proxy-waits-forever",
              lambda: f"None (need more) after {len(data)} bytes")
        return
    if isinstance(result, ProxyHeaderError):
        more = data + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        again = outcome(more)
        check(isinstance(again, ProxyHeaderError), "proxy-error-not-final",
              lambda: f"{data[:80]!r} is refused ({result}) but with more bytes: {again!r}")
        return
    check(isinstance(result, tuple) and len(result) == 2, "proxy-answer", repr(result))
    info, consumed = result
    check(0 < consumed <= len(data) and consumed <= MAX_HEADER, "proxy-consumed",
          lambda: f"consumed {consumed} of {len(data)}")
    header = data[:consumed]
    check(outcome(header) == result, "proxy-prefix",
          lambda: f"the header alone parses as {outcome(header)!r}")
    check(outcome(header + b"GET / HTTP/1.1\r\n") == result, "proxy-prefix",
          "bytes after the header change it")
    points = range(consumed) if consumed <= 300 else sorted(rng.sample(range(consumed), 60))
    for k in points:
        got = outcome(data[:k])
        check(got is None, "proxy-prefix",
              lambda: f"the first {k} of the {consumed} bytes of a valid header give {got!r}")
    check_info(info, header)
