"""http bodies of any size, backpressure, upgrade tunnels and the PROXY
protocol, end to end on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import os
import struct

from twisted.internet import defer, interfaces, protocol, reactor
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from lbframe.protocols import proxy_protocol
from lbframe.protocols.http.send import unsent_bytes
from tests.httpkit import HTTPSiteMixin, RawClient

MiB = 1024 * 1024
BLOCK = bytes(range(256)) * 256  # 64 KiB of a known pattern


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@implementer(interfaces.IPushProducer)
class PatternProducer:
    """Writes ``size`` bytes of BLOCK's pattern as fast as the transport
    takes them, pausing when told to (a well-behaved member)."""

    def __init__(self, transport, size: int):
        self.transport = transport
        self.left = size
        self.sent = 0
        self.paused = False
        self.done = defer.Deferred()
        transport.registerProducer(self, True)
        reactor.callLater(0, self.resumeProducing)

    def resumeProducing(self):
        self.paused = False
        while not self.paused and self.left > 0:
            piece = BLOCK if self.left >= len(BLOCK) else BLOCK[:self.left]
            self.left -= len(piece)
            self.sent += len(piece)
            self.transport.write(piece)
        if self.left == 0 and not self.done.called:
            self.transport.unregisterProducer()
            self.done.callback(self.sent)

    def pauseProducing(self):
        self.paused = True

    def stopProducing(self):
        self.left = 0
        self.paused = True


class DownloadMember(protocol.Protocol):
    """Answers any request with ``factory.size`` bytes of pattern."""

    def connectionMade(self):
        self.buf = b""

    def dataReceived(self, data):
        self.buf += data
        if b"\r\n\r\n" in self.buf:
            self.buf = b""
            size = self.factory.size
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            self.factory.producer = PatternProducer(self.transport, size)


def split_head(buffer: bytes):
    """``(content_length, body_bytes)`` once ``buffer`` holds a whole head,
    else None (simple Content-Length messages only)."""
    if b"\r\n\r\n" not in buffer:
        return None
    head, _, rest = buffer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1]), rest
    return 0, rest


class UploadMember(protocol.Protocol):
    """Reads a Content-Length body, answers with its length and sha256."""

    def connectionMade(self):
        self.head = b""
        self.left = None
        self.sha = hashlib.sha256()

    def dataReceived(self, data):
        if self.left is None:
            self.head += data
            found = split_head(self.head)
            if found is None:
                return
            self.left, data = found
            self.total = self.left
        self.sha.update(data)
        self.left -= len(data)
        if self.left == 0:
            body = b"%d %s" % (self.total, self.sha.hexdigest().encode())
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
                                 + body)


class CountingClient(protocol.Protocol):
    """Counts response bytes after the head without keeping them; checks
    the pattern at block boundaries."""

    def __init__(self):
        self.head = b""
        self.count = 0
        self.pattern_ok = True
        self.lost = defer.Deferred()
        self.expect = None
        self.complete = defer.Deferred()

    def dataReceived(self, data):
        if self.expect is None:
            self.head += data
            found = split_head(self.head)
            if found is None:
                return
            self.expect, data = found
        offset = self.count % len(BLOCK)
        if data and data[:16] != (BLOCK + BLOCK)[offset:offset + min(16, len(data))]:
            self.pattern_ok = False
        self.count += len(data)
        if self.count >= self.expect and not self.complete.called:
            self.complete.callback(self.count)

    def connectionLost(self, reason):
        self.lost.callback(None)


class BodyTests(HTTPSiteMixin, TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_64_mib_download_arrives_intact(self):
        factory = protocol.Factory.forProtocol(DownloadMember)
        factory.size = 64 * MiB
        port = self.serve_http(f"member a = 127.0.0.1:{self.listen_member(factory)}")
        client = yield self.connect(port, CountingClient())
        client.transport.write(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        count = yield client.complete
        self.assertEqual(count, 64 * MiB)
        self.assertTrue(client.pattern_ok)

    @defer.inlineCallbacks
    def test_64_mib_upload_arrives_intact(self):
        port = self.serve_http(
            f"member a = 127.0.0.1:{self.listen_member(protocol.Factory.forProtocol(UploadMember))}")
        client = yield self.connect(port)
        size = 64 * MiB
        client.transport.write(b"PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size)
        producer = PatternProducer(client.transport, size)
        yield producer.done
        responses = yield client.wait_responses(1)
        expected = hashlib.sha256()
        for _ in range(size // len(BLOCK)):
            expected.update(BLOCK)
        self.assertEqual(responses[0].body, b"%d %s" % (size, expected.hexdigest().encode()))

    @defer.inlineCallbacks
    def test_chunked_upload_is_rechunked_intact(self):
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}", "forwarded_for = no")
        client = yield self.connect(port)
        client.transport.write(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        pieces = [os.urandom(n) for n in (1, 100, 5000, 70000)]
        for piece in pieces:
            client.transport.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        client.transport.write(b"0\r\nX-Check: yes\r\n\r\n")
        yield client.wait_responses(1)
        raw = member.requests[0]
        head, _, body = raw.partition(b"\r\n\r\n")
        decoded, trailers = b"", b""
        while True:
            size_line, _, body = body.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                trailers = body
                break
            decoded, body = decoded + body[:size], body[size + 2:]
        self.assertEqual(decoded, b"".join(pieces))
        self.assertEqual(trailers, b"X-Check: yes\r\n\r\n")

    @defer.inlineCallbacks
    def test_non_reading_client_pauses_the_member_and_memory_stays_flat(self):
        factory = protocol.Factory.forProtocol(DownloadMember)
        factory.size = 512 * MiB
        port = self.serve_http(f"member a = 127.0.0.1:{self.listen_member(factory)}")
        client = yield self.connect(port, CountingClient())
        client.transport.pauseProducing()  # the client does not read
        before = _rss()
        client.transport.write(b"GET /huge HTTP/1.1\r\nHost: h\r\n\r\n")
        yield self.wait_until(lambda: getattr(factory, "producer", None) is not None)
        # Let the member write until backpressure stops it.
        yield self.wait_until(lambda: factory.producer.paused, timeout=10)
        for _ in range(20):
            yield self.wait_until(lambda: True)
            d = defer.Deferred()
            reactor.callLater(0.01, d.callback, None)
            yield d
        sent = factory.producer.sent
        self.assertLess(sent, 32 * MiB, "the member was not paused")
        self.assertLess(_rss() - before, 24 * MiB)
        client.transport.resumeProducing()
        count = yield client.complete
        self.assertEqual(count, 512 * MiB)
        self.assertTrue(client.pattern_ok)
        self.assertLess(_rss() - before, 48 * MiB)


class StalledUploadMember(protocol.Protocol):
    """Reads the head, then stops reading (a member slow to take an upload)."""

    def connectionMade(self):
        self.factory.member = self
        self.got = 0

    def dataReceived(self, data):
        self.got += len(data)
        self.transport.pauseProducing()


class SlowUploadTests(HTTPSiteMixin, TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_member_not_reading_an_upload_pauses_the_client(self):
        factory = protocol.Factory.forProtocol(StalledUploadMember)
        port = self.serve_http(f"member a = 127.0.0.1:{self.listen_member(factory)}")
        client = yield self.connect(port)
        size = 256 * MiB
        before = _rss()
        client.transport.write(b"PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size)
        producer = PatternProducer(client.transport, size)
        yield self.wait_until(lambda: producer.paused, timeout=10)
        for _ in range(20):
            d = defer.Deferred()
            reactor.callLater(0.01, d.callback, None)
            yield d
        # The client was stopped after the kernel buffers and lbframe's
        # bounded ones filled: far from the 256 MiB it wanted to send.
        self.assertLess(producer.sent, 32 * MiB)
        self.assertTrue(producer.paused)
        self.assertLess(_rss() - before, 24 * MiB)
        server_side = next(iter(self.service.connections))
        self.assertLess(unsent_bytes(server_side.transport), 1 * MiB)
        exchange = server_side.exchanges[0]
        self.assertLess(unsent_bytes(exchange.conn.transport), 2 * MiB)
        producer.stopProducing()


def _ws_frame(payload: bytes, mask: bool) -> bytes:
    head = bytes([0x81])
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([mask_bit | length])
    else:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _ws_unframe(data: bytes):
    """(payload, rest) of one text frame, or None if incomplete."""
    if len(data) < 2:
        return None
    masked, length = data[1] & 0x80, data[1] & 0x7F
    offset = 2
    if length == 126:
        if len(data) < 4:
            return None
        length, offset = struct.unpack("!H", data[2:4])[0], 4
    key = b""
    if masked:
        key, offset = data[offset:offset + 4], offset + 4
    if len(data) < offset + length:
        return None
    payload = data[offset:offset + length]
    if masked:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return payload, data[offset + length:]


class WebSocketEchoMember(protocol.Protocol):
    """RFC 6455 handshake, then echoes every text frame back."""

    def connectionMade(self):
        self.buf = b""
        self.upgraded = False

    def dataReceived(self, data):
        self.buf += data
        if not self.upgraded:
            if b"\r\n\r\n" not in self.buf:
                return
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            key = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:")][0]
            accept = base64.b64encode(hashlib.sha1(
                key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                                 b"\r\n\r\n")
            self.upgraded = True
        while True:
            frame = _ws_unframe(self.buf)
            if frame is None:
                return
            payload, self.buf = frame
            self.transport.write(_ws_frame(b"echo:" + payload, mask=False))


class UpgradeTests(HTTPSiteMixin, TestCase):
    @defer.inlineCallbacks
    def test_websocket_echo_through_the_proxy(self):
        mport = self.listen_member(protocol.Factory.forProtocol(WebSocketEchoMember))
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.connect(port)
        key = base64.b64encode(os.urandom(16))
        client.transport.write(
            b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
            + _ws_frame(b"hello", mask=True))
        yield self.wait_until(lambda: b"echo:hello" in client.received)
        head, _, rest = client.received.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 101"))
        expected = base64.b64encode(hashlib.sha1(
            key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        self.assertIn(b"Sec-WebSocket-Accept: " + expected, head)
        self.assertEqual(_ws_unframe(rest), (b"echo:hello", b""))
        for i in range(3):
            client.received = b""
            client.transport.write(_ws_frame(b"msg %d" % i * 50, mask=True))
            yield self.wait_until(lambda: _ws_unframe(client.received) is not None)
            self.assertEqual(_ws_unframe(client.received)[0], b"echo:" + b"msg %d" % i * 50)

    @defer.inlineCallbacks
    def test_refused_upgrade_continues_as_http(self):
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.connect(port)
        client.transport.write(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
        responses = yield client.wait_responses(2)
        self.assertEqual([r.status for r in responses], [200, 200])
        self.assertIn(b"GET /next", responses[1].body)


class ProxyMember(protocol.Protocol):
    """Parses the PROXY header, then answers one request with the client
    address it named."""

    def connectionMade(self):
        self.buf = b""
        self.info = None

    def dataReceived(self, data):
        self.buf += data
        if self.info is None:
            parsed = proxy_protocol.parse(self.buf)
            if parsed is None:
                return
            self.info, used = parsed
            self.buf = self.buf[used:]
            self.factory.headers.append(self.info)
        while b"\r\n\r\n" in self.buf:
            _, _, self.buf = self.buf.partition(b"\r\n\r\n")
            body = b"%s:%d" % (self.info.source[0].encode(), self.info.source[1])
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
                                 + body)


class ProxyProtocolTests(HTTPSiteMixin, TestCase):
    @defer.inlineCallbacks
    def _send_proxy(self, version: int):
        factory = protocol.Factory.forProtocol(ProxyMember)
        factory.headers = []
        port = self.serve_http(f"member a = 127.0.0.1:{self.listen_member(factory)}\n"
                               f"send_proxy = v{version}")
        client = yield self.connect(port)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" * 2)
        responses = yield client.wait_responses(2)
        local = client.transport.getHost()
        expected = b"127.0.0.1:%d" % local.port
        self.assertEqual([r.body for r in responses], [expected, expected])
        self.assertEqual(factory.headers[0].version, version)
        self.assertEqual(factory.headers[0].destination[1], port)
        # One header per member connection, and that connection stays this client's.
        self.assertEqual(len(factory.headers), 1)
        other = yield self.exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(other.responses[0].body,
                         b"127.0.0.1:%d" % other.transport.getHost().port)
        self.assertEqual(len(factory.headers), 2)

    def test_send_proxy_v1(self):
        return self._send_proxy(1)

    def test_send_proxy_v2(self):
        return self._send_proxy(2)

    @defer.inlineCallbacks
    def test_accept_proxy_takes_the_client_address_from_the_header(self):
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}", "accept_proxy = yes")
        for header in (proxy_protocol.build_v1(("192.0.2.7", 4321), ("198.51.100.1", 80)),
                       proxy_protocol.build_v2(("2001:db8::7", 4321), ("2001:db8::1", 80))):
            client = yield self.connect(port)
            for i in range(0, len(header), 5):  # in pieces
                client.transport.write(header[i:i + 5])
            client.transport.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            yield client.wait_responses(1)
        self.assertIn(b"X-Forwarded-For: 192.0.2.7\r\n", member.requests[0])
        self.assertIn(b"X-Forwarded-For: 2001:db8::7\r\n", member.requests[1])

    @defer.inlineCallbacks
    def test_accept_proxy_refuses_a_missing_header(self):
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}", "accept_proxy = yes")
        client = yield self.connect(port, RawClient())
        client.transport.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        yield client.lost
        self.assertEqual(member.received, b"")


class PipelineBoundTests(HTTPSiteMixin, TestCase):
    @defer.inlineCallbacks
    def test_a_client_pipelining_without_end_is_held_to_the_bound(self):
        """Requests queue behind one the member never answers; lbframe holds
        at most MAX_PIPELINE of them and stops reading the rest."""
        from lbframe.protocols.http.client import MAX_PIPELINE

        mport, member = self.member(answer=lambda raw: b"")  # never answers
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.connect(port)
        request = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
        client.transport.write(request * 5000)  # 145 KB, well past the bound
        yield self.wait_until(lambda: self.service.connections and
                              next(iter(self.service.connections)).paused)
        conn = next(iter(self.service.connections))
        for _ in range(10):
            d = defer.Deferred()
            reactor.callLater(0.01, d.callback, None)
            yield d
        # What one 64 KiB read held was parsed; then reading stopped.
        held = len(conn.exchanges)
        self.assertLessEqual(held, MAX_PIPELINE + 65536 // len(request) + 1)
        client.transport.write(request * 1000)
        for _ in range(10):
            d = defer.Deferred()
            reactor.callLater(0.01, d.callback, None)
            yield d
        self.assertEqual(len(conn.exchanges), held)
        self.assertEqual(len(member.requests), 1)
