"""PROXY protocol on tcp virtual servers: ``send_proxy`` toward members and
``accept_proxy`` behind another balancer, on real sockets."""

from __future__ import annotations

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

from lbframe.protocols import proxy_protocol
from tests.protocols.test_tcp import TCPSiteMixin


class HeaderMember(protocol.Protocol):
    """Records what arrives; once a PROXY header (if expected) is parsed,
    echoes the rest prefixed with the client address it named."""

    def connectionMade(self):
        self.buf = b""
        self.info = None
        self.factory.members.append(self)

    def dataReceived(self, data):
        self.factory.received += data
        self.buf += data
        if self.factory.expect_header and self.info is None:
            parsed = proxy_protocol.parse(self.buf)
            if parsed is None:
                return
            self.info, used = parsed
            self.buf = self.buf[used:]
        if self.buf:
            who = b"%s:%d " % (self.info.source[0].encode(), self.info.source[1]) \
                if self.info else b""
            self.transport.write(who + self.buf)
            self.buf = b""


class TCPProxyProtocolTests(TCPSiteMixin, TestCase):
    def header_member(self, expect_header: bool):
        factory = protocol.Factory.forProtocol(HeaderMember)
        factory.expect_header = expect_header
        factory.received = b""
        factory.members = []
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port, factory

    @defer.inlineCallbacks
    def _send_proxy(self, version: str):
        mport, member = self.header_member(True)
        vport, runtime, svc = self.serve_virtual(f"member a = 127.0.0.1:{mport}\n"
                                                 f"send_proxy = {version}", real_clock=True)
        client = yield self.connect(vport)
        client.transport.write(b"hello")
        yield self.wait_until(lambda: client.received.endswith(b"hello"))
        local = client.transport.getHost()
        self.assertEqual(client.received, b"127.0.0.1:%d hello" % local.port)
        info = member.members[0].info
        self.assertEqual(info.version, int(version[1]))
        self.assertEqual(info.destination, ("127.0.0.1", vport))

    def test_send_proxy_v1(self):
        return self._send_proxy("v1")

    def test_send_proxy_v2(self):
        return self._send_proxy("v2")

    @defer.inlineCallbacks
    def test_accept_proxy_passes_what_follows_the_header(self):
        mport, member = self.header_member(False)
        vport, runtime, svc = self.serve_virtual(f"member a = 127.0.0.1:{mport}",
                                                 "accept_proxy = yes", real_clock=True)
        client = yield self.connect(vport)
        header = proxy_protocol.build_v1(("203.0.113.9", 40000), ("198.51.100.1", 443))
        client.transport.write(header[:10])
        yield self.wait_until(lambda: svc.virtual.total == 1)
        client.transport.write(header[10:] + b"early bytes")
        yield self.wait_until(lambda: client.received == b"early bytes")
        self.assertEqual(member.received, b"early bytes")

    @defer.inlineCallbacks
    def test_accept_and_send_proxy_carry_the_original_client(self):
        mport, member = self.header_member(True)
        vport, runtime, svc = self.serve_virtual(f"member a = 127.0.0.1:{mport}\nsend_proxy = v2",
                                                 "accept_proxy = yes", real_clock=True)
        client = yield self.connect(vport)
        client.transport.write(proxy_protocol.build_v2(("2001:db8::9", 40000),
                                                       ("2001:db8::1", 443)) + b"hi")
        yield self.wait_until(lambda: client.received.endswith(b"hi"))
        self.assertEqual(client.received, b"2001:db8::9:40000 hi")

    @defer.inlineCallbacks
    def test_accept_proxy_refuses_a_connection_without_a_header(self):
        mport, member = self.header_member(False)
        vport, runtime, svc = self.serve_virtual(f"member a = 127.0.0.1:{mport}",
                                                 "accept_proxy = yes", real_clock=True)
        client = yield self.connect(vport)
        client.transport.write(b"GET / HTTP/1.1\r\n\r\n")
        yield client.lost
        self.assertEqual(member.received, b"")
        self.assertEqual(svc.virtual.refused, 1)

    @defer.inlineCallbacks
    def test_accept_proxy_times_out_a_silent_client(self):
        mport, member = self.header_member(False)
        vport, runtime, svc = self.serve_virtual(f"member a = 127.0.0.1:{mport}",
                                                 "accept_proxy = yes\ntimeout_client = 10s")
        client = yield self.connect(vport)
        yield self.wait_until(lambda: svc.virtual.total == 1)
        self.clock.advance(9)
        self.assertFalse(client.lost.called)
        self.clock.advance(2)
        yield client.lost
        self.assertEqual(member.received, b"")
