"""lbframe.testing.ListenerContract against the udp listener.

The contract speaks HTTP/1.0 over TCP streams; here the members and the
clients carry those bytes in datagrams (one request, one response each):

- a member is a UDP socket that gives each client address its own
  protocol instance (a "connection"), forgotten once it answered;
- a client is a connected UDP socket; its "connection" ends when a whole
  response came back, or when ICMP says nothing listens (refused). Like a
  real UDP client it sends its request again (every 0.2 s) until something
  comes back: a paused listener drops datagrams instead of leaving clients
  in a backlog.

One promise reads differently for datagrams: ``close_all`` cannot be *seen*
by a UDP client (nothing tells it), so that test is replaced by one that
checks what close_all does on lbframe's side.
"""

from __future__ import annotations

import socket

from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import TestCase

from lbframe.protocols.udp import UDPProtocol
from lbframe.testing import ListenerContract

RESEND = 0.2
MAX_SENDS = 25


def _complete(data: bytes) -> bool:
    """A whole HTTP/1.0 response (head and Content-Length body)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


class _PeerTransport:
    """A member's view of one client address, as if it were a connection."""

    def __init__(self, server: "_StreamMember", addr):
        self.server, self.addr = server, addr
        self.connected = True

    def write(self, data: bytes) -> None:
        self.server.transport.write(data, self.addr)

    def loseConnection(self) -> None:
        if self.connected:
            self.connected = False
            proto = self.server.peers.pop(self.addr, None)
            if proto is not None:
                proto.connectionLost(None)

    abortConnection = loseConnection


class _StreamMember(protocol.DatagramProtocol):
    noisy = False

    def __init__(self, factory):
        self.factory = factory
        self.peers: dict = {}

    def datagramReceived(self, data, addr):
        proto = self.peers.get(addr)
        if proto is None:
            proto = self.peers[addr] = self.factory.buildProtocol(addr)
            proto.makeConnection(_PeerTransport(self, addr))
        proto.dataReceived(data)


class _ClientTransport:
    def __init__(self, client: "_StreamClient"):
        self.client = client
        self.connected = True

    def write(self, data: bytes) -> None:
        self.client.send(data)

    def abortConnection(self) -> None:
        self.client.end(None)

    loseConnection = abortConnection


class _StreamClient(protocol.DatagramProtocol):
    noisy = False

    def __init__(self, factory, vip_port: int):
        self.factory, self.vip_port = factory, vip_port
        self.proto = None
        self.request = b""
        self.data = b""
        self.sends = 0
        self.resend = None
        self.port = None

    def start(self):
        self.port = reactor.listenUDP(0, self, interface="127.0.0.1")
        self.transport.connect("127.0.0.1", self.vip_port)
        self.proto = self.factory.buildProtocol(None)
        self.stream = _ClientTransport(self)
        self.proto.makeConnection(self.stream)
        return self.proto

    def send(self, data: bytes) -> None:
        self.request += data
        if self.resend is not None and self.resend.active():
            self.resend.cancel()
        self._send()

    def _send(self):
        self.resend = None
        if not self.stream.connected or self.data or self.sends >= MAX_SENDS:
            return
        if self.transport is None:
            # Twisted's UDP port closes itself on an ICMP error it cannot
            # read (EPOLLERR alone), without a word: that was a refusal.
            self.end(ConnectionRefusedError())
            return
        self.sends += 1
        self.transport.write(self.request)
        self.resend = reactor.callLater(RESEND, self._send)

    def datagramReceived(self, data, addr):
        self.data += data
        self.proto.dataReceived(data)
        if _complete(self.data):
            self.end(None)

    def connectionRefused(self):
        self.end(ConnectionRefusedError())

    def end(self, reason):
        if not self.stream.connected:
            return
        self.stream.connected = False
        if self.resend is not None and self.resend.active():
            self.resend.cancel()
        if self.transport is not None:
            self.port.stopListening()
        self.proto.connectionLost(reason)


class _ClientEndpoint:
    def __init__(self, port: int):
        self.port = port

    def connect(self, factory):
        return defer.succeed(_StreamClient(factory, self.port).start())


class UDPListenerContract(ListenerContract, TestCase):
    protocol = "udp"
    factory = UDPProtocol

    def contract_endpoint(self, port: int) -> str:
        return f"udp:{port}:interface=127.0.0.1"

    def contract_member(self, factory):
        return reactor.listenUDP(0, _StreamMember(factory), interface="127.0.0.1")

    def contract_client_endpoint(self, port: int):
        return _ClientEndpoint(port)

    def contract_free_port(self) -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port

    def contract_occupy(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        return s, s.getsockname()[1]

    def contract_port_is_free(self, port: int) -> bool:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
        finally:
            s.close()

    @defer.inlineCallbacks
    def contract_assert_refused(self, port: int):
        """A new client's datagram finds no socket: ICMP port unreachable
        (or, at worst, no answer)."""
        client = yield self.contract_connect(port, self.contract_request)
        try:
            data = yield client.done.addTimeout(1.0, reactor)
        except (ConnectionRefusedError, defer.TimeoutError):
            return
        self.assertEqual(data, b"", f"port {port} still serves new clients: {data!r}")

    @defer.inlineCallbacks
    def test_contract_counts_and_closes_connections(self):
        """UDP's reading: flows are counted; close_all ends them (their
        sockets toward the member close, the next datagram is a new flow)."""
        members = self.contract_members("a")
        listener = self.contract_listener(members)
        yield listener.start_listening()
        port = self.contract_port(listener)
        clients = []
        for _ in range(2):
            clients.append((yield self.contract_connect(port, self.contract_partial)))
        yield self.contract_until(lambda: listener.connection_count() == 2,
                                  "connection_count() says 2")
        flows = [flow for vip in listener.vips for flow in vip.flows.values()]
        listener.close_all("contract test")
        self.assertEqual(listener.connection_count(), 0)
        self.assertTrue(all(flow.closed and flow.sock.fileno() == -1 for flow in flows))
        # the next datagram of a client starts a new flow, which is served
        clients[0].transport.write(b"\r\n")  # completes its request
        self.assertEqual((yield self.contract_answer(clients[0])), "a")
        self.assertEqual(listener.connection_count(), 1)
