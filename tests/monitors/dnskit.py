"""Twisted Names servers on 127.0.0.1 for the dns monitor's tests."""

from __future__ import annotations

import dns.flags
import dns.message
from twisted.internet import defer, protocol, reactor
from twisted.names import authority, common, server
from twisted.names import dns as tdns

ZONE = b"example.test"


class MemoryAuthority(authority.FileAuthority):
    """An authoritative zone held in memory (FileAuthority without a file)."""

    def __init__(self, zone: bytes, records: dict[bytes, list]):
        common.ResolverBase.__init__(self)
        self._cache = {}
        soa = tdns.Record_SOA(mname=b"ns." + zone, rname=b"root." + zone, serial=1,
                              refresh=60, retry=60, expire=60, minimum=60)
        self.soa = (zone, soa)
        self.records = {k.lower(): list(v) for k, v in records.items()}
        self.records.setdefault(zone, []).append(soa)


class Failing(common.ResolverBase):
    """Every lookup fails: the server answers SERVFAIL."""

    def _lookup(self, name, cls, type, timeout):
        return defer.fail(RuntimeError("broken backend"))


def zone(address: str = "192.0.2.10") -> MemoryAuthority:
    return MemoryAuthority(ZONE, {b"www." + ZONE: [tdns.Record_A(address)]})


def listen_both(test, udp_proto, tcp_factory=None) -> int:
    """``udp_proto`` on a UDP port of 127.0.0.1 and ``tcp_factory`` (if
    any) on the same TCP port: the TCP port is taken first, then UDP is
    tried on it (a few times, should another process hold that UDP port)."""
    from twisted.internet.error import CannotListenError
    for _ in range(20):
        tcp = None
        if tcp_factory is not None:
            tcp = reactor.listenTCP(0, tcp_factory, interface="127.0.0.1")
            port = tcp.getHost().port
        else:
            port = 0
        try:
            udp = reactor.listenUDP(port, udp_proto, interface="127.0.0.1")
        except CannotListenError:
            tcp.stopListening()
            continue
        test.addCleanup(udp.stopListening)
        if tcp is not None:
            test.addCleanup(tcp.stopListening)
        return udp.getHost().port
    raise RuntimeError("no port free for UDP and TCP both")


def start_names(test, resolver, tcp: bool = True) -> int:
    """A twisted.names server (UDP, and TCP on the same port) on 127.0.0.1."""
    factory = server.DNSServerFactory(authorities=[resolver])
    factory.noisy = False
    return listen_both(test, tdns.DNSDatagramProtocol(factory), factory if tcp else None)


class Truncating(protocol.DatagramProtocol):
    """Answers every UDP query with an empty reply with TC set (a reply too
    big for UDP): the client must ask again over TCP."""

    noisy = False

    def __init__(self):
        self.queries = 0

    def datagramReceived(self, data, addr):
        self.queries += 1
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.TC
        self.transport.write(reply.to_wire(), addr)


class Garbage(protocol.DatagramProtocol):
    """Answers with bytes that are no DNS message."""

    noisy = False

    def datagramReceived(self, data, addr):
        self.transport.write(data[:2] + b"\x81\x80\xff", addr)


class Silent(protocol.DatagramProtocol):
    noisy = False

    def __init__(self):
        self.queries = 0

    def datagramReceived(self, data, addr):
        self.queries += 1


def start_udp(test, proto, port: int = 0) -> int:
    listening = reactor.listenUDP(port, proto, interface="127.0.0.1")
    test.addCleanup(listening.stopListening)
    return listening.getHost().port
