"""UDP members and clients on 127.0.0.1 for the udp protocol's tests."""

from __future__ import annotations

from twisted.internet import defer, protocol, reactor

from lbframe.config import parse_site
from lbframe.plugins import load_plugins
from lbframe.service import SiteService, build_runtime


class EchoMember(protocol.DatagramProtocol):
    """Answers ``NAME:`` + the datagram (except ``silent``: no answer);
    remembers every source address it saw."""

    noisy = False

    def __init__(self, name: str):
        self.name = name
        self.seen: list = []

    def datagramReceived(self, data, addr):
        self.seen.append((data, addr))
        if data == b"silent":
            return
        self.transport.write(self.name.encode() + b":" + data, addr)


def start_member(test, name: str, interface: str = "127.0.0.1") -> tuple[EchoMember, int]:
    member = EchoMember(name)
    port = reactor.listenUDP(0, member, interface=interface, maxPacketSize=65536)
    test.addCleanup(port.stopListening)
    return member, port.getHost().port


class Client(protocol.DatagramProtocol):
    """A client on its own port: ``ask`` sends and waits for one reply."""

    noisy = False

    def __init__(self):
        self.replies: list = []  # (data, source address)
        self.waiting: list = []

    def datagramReceived(self, data, addr):
        self.replies.append((data, addr))
        if self.waiting:
            self.waiting.pop(0).callback((data, addr))

    def ask(self, data: bytes, vip: tuple, timeout: float = 3.0) -> defer.Deferred:
        d = defer.Deferred()
        self.waiting.append(d)
        self.transport.write(data, vip)
        call = reactor.callLater(timeout, lambda: d.called or (
            self.waiting.remove(d), d.errback(defer.TimeoutError(f"no reply to {data[:20]!r}"))))
        d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return d


def start_client(test) -> tuple[Client, int]:
    client = Client()
    port = reactor.listenUDP(0, client, interface="127.0.0.1", maxPacketSize=65536)
    test.addCleanup(port.stopListening)
    return client, port.getHost().port


def start_site(test, text: str) -> SiteService:
    """Start a site; its stop does not wait for live flows (``stop_grace``
    0.1 s: a stopping listener's flows go on until idle, as tcp
    connections do, for up to ``stop_grace``)."""
    if "[lbframe]" in text:
        text = text.replace("[lbframe]", "[lbframe]\nstop_grace = 0.1s", 1)
    else:
        text = "[lbframe]\nstop_grace = 0.1s\n" + text
    site = parse_site(text, "site.ini")
    svc = SiteService(build_runtime(site, load_plugins(entry_points=False), reactor), reactor)
    svc.startService()
    test.addCleanup(svc.stopService)
    return svc


def vip_of(svc: SiteService, name: str = "dns") -> tuple[str, int]:
    address = svc.listeners[name].addresses()[0]
    return address.host, address.port
