#!/usr/bin/env python3
"""Demo name servers for examples/dns: Twisted Names, on 127.0.0.1.

    python examples/dns/members.py 1      # ns1 on 127.0.0.1:5301 (UDP and TCP)
    python examples/dns/members.py 2      # ns2 on 127.0.0.1:5302

Member N is authoritative for ``example.test``: ``www.example.test`` is
``192.0.2.N`` (so answers show which member replied), ``example.test`` has
its SOA and NS records, and every other name is NXDOMAIN. Stop it with
Ctrl-C (or ``kill``) to see lbframe's dns monitor take it out.
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.names import authority, common, dns, server

ZONE = b"example.test"
HOST = "127.0.0.1"
BASE_PORT = 5300


class Zone(authority.FileAuthority):
    """``example.test`` held in memory (a FileAuthority without its file)."""

    def __init__(self, index: int):
        common.ResolverBase.__init__(self)
        self._cache = {}
        soa = dns.Record_SOA(mname=b"ns%d.%s" % (index, ZONE), rname=b"hostmaster." + ZONE,
                             serial=2026120401, refresh=3600, retry=600, expire=86400,
                             minimum=60)
        self.soa = (ZONE, soa)
        self.records = {
            ZONE: [soa, dns.Record_NS(b"ns%d.%s" % (index, ZONE))],
            b"www." + ZONE: [dns.Record_A(f"192.0.2.{index}", ttl=5)],
            b"ns%d.%s" % (index, ZONE): [dns.Record_A(HOST)],
        }


def start(index: int, port: int | None = None, interface: str = HOST, clock=reactor):
    """Listen for member ``index`` on UDP and TCP; returns (udp, tcp) ports."""
    port = BASE_PORT + index if port is None else port
    factory = server.DNSServerFactory(authorities=[Zone(index)])
    factory.noisy = False
    for _ in range(20):  # port 0 (tests): a port free for both TCP and UDP
        tcp = clock.listenTCP(port, factory, interface=interface)
        try:
            udp = clock.listenUDP(tcp.getHost().port, dns.DNSDatagramProtocol(factory),
                                  interface=interface)
        except CannotListenError:
            tcp.stopListening()
            if port:
                raise
            continue
        return udp, tcp
    raise CannotListenError(interface, port, "no port free for both UDP and TCP")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("1", "2"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    index = int(argv[0])
    udp, _ = start(index)
    print(f"ns{index}: www.example.test = 192.0.2.{index} on {HOST}:{udp.getHost().port} "
          "(udp and tcp); Ctrl-C stops it", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
