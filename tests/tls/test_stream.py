"""lbframe.tls.stream: the lean server-side TLS layer.

Units pair a :class:`TLSServerStream` on a ``StringTransport`` with a
pyOpenSSL client ``Connection`` on memory BIOs (both run here, step by
step); each runs twice, on the fast path (OpenSSL's functions through
pyOpenSSL's binding) and on the public-method fallback. Integration tests
put it on a real listening socket on 127.0.0.1 under Python's ``ssl``
client, and under an http virtual server (the request deadline covers the
handshake)."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time

from OpenSSL import SSL, crypto
from twisted.internet import defer, error, reactor, threads
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from lbframe.tls import stream
from lbframe.tls.server import (CertificateFolder, ClientAuth, ReloadableOptions, ServerTLS,
                                load_certificate, make_context, peer_subject, server_options)
from lbframe.tls.stream import TLSServerFactory, TLSServerStream
from tests.httpkit import HTTPSiteMixin
from tests.tlskit import cert_pem, key_pem, make_ca, make_cert, write, write_bundle

REQUEST = b"GET / HTTP/1.1\r\nHost: www.test\r\n\r\n"


class Recorder(Protocol):
    """The wrapped protocol: what it was given, and when it was lost."""

    def __init__(self):
        self.made = 0
        self.received: list[bytes] = []
        self.lost: list[Failure] = []

    def connectionMade(self):
        self.made += 1

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.lost.append(reason)


class CountingTransport(StringTransport):
    """A StringTransport that counts its writes."""

    def __init__(self):
        super().__init__(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        self.writes = 0

    def write(self, data):
        self.writes += 1
        super().write(data)


class Pair:
    """A server stream and a pyOpenSSL client talking through memory."""

    def __init__(self, options, context: SSL.Context | None = None,
                 server_name: bytes | None = None, alpn=None):
        self.transport = CountingTransport()
        self.app = Recorder()
        self.server = TLSServerStream(options, self.app)
        self.server.makeConnection(self.transport)
        if context is None:
            context = SSL.Context(SSL.TLS_METHOD)
        if alpn:
            context.set_alpn_protos(alpn)
        self.client = SSL.Connection(context, None)
        self.client.set_connect_state()
        if server_name:
            self.client.set_tlsext_host_name(server_name)
        self.closed = False  # the server's close_notify reached the client

    def client_output(self) -> bytes:
        out = []
        while True:
            try:
                out.append(self.client.bio_read(1 << 20))
            except SSL.WantReadError:
                return b"".join(out)

    def to_server(self) -> None:
        data = self.client_output()
        if data:
            self.server.dataReceived(data)

    def to_client(self) -> None:
        data = self.transport.value()
        self.transport.clear()
        if data:
            self.client.bio_write(data)

    def handshake(self) -> None:
        for _ in range(8):
            try:
                self.client.do_handshake()
                done = True
            except SSL.WantReadError:
                done = False
            self.to_server()
            self.to_client()
            if done and self.server.handshake_done:
                return
        raise AssertionError("no handshake")

    def send(self, data: bytes) -> None:
        """The client encrypts ``data`` (as many records as it takes) and
        the server gets all of it in one chunk."""
        while data:
            sent = self.client.send(data[:16384])
            data = data[sent:]
        self.to_server()

    def receive(self) -> bytes:
        """What the server sent the client, decrypted."""
        self.to_client()
        out = []
        try:
            while True:
                out.append(self.client.recv(65536))
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            self.closed = True
        return b"".join(out)


def served(directory: str, ca, name: str = "www.test", kind: str = "ec"):
    key, cert = make_cert(ca, name, kind=kind)
    return load_certificate(write_bundle(os.path.join(directory, f"{name}.pem"), key, cert, ca))


def subject_cn(connection: SSL.Connection) -> str:
    return connection.get_peer_certificate().get_subject().CN


class _StreamTests:
    """The units; ``fast`` picks the path (see the subclasses)."""

    fast = True

    def setUp(self):
        if self.fast and not stream.FAST:
            raise SkipTest("this pyOpenSSL lacks a function of the fast path")
        self.patch(stream, "FAST", self.fast)
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.ca = make_ca()
        self.options = ReloadableOptions(server_options(served(self.dir, self.ca)))

    def pair(self, **kw) -> Pair:
        pair = Pair(self.options, **kw)
        pair.handshake()
        return pair

    # -- the handshake and what it chose ---------------------------------------

    def test_handshake_then_requests_and_responses(self):
        pair = self.pair()
        self.assertEqual(pair.app.made, 1)
        for i in range(3):
            pair.send(REQUEST)
            self.assertEqual(pair.app.received[-1], REQUEST)
            pair.server.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % i)
            self.assertEqual(pair.receive(), b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % i)
        self.assertEqual(len(pair.app.received), 3)
        self.assertEqual(pair.app.lost, [])

    def test_protocol_is_connected_before_the_handshake(self):
        """So that the http path's request deadline counts the handshake."""
        transport = CountingTransport()
        app = Recorder()
        server = TLSServerStream(self.options, app)
        server.makeConnection(transport)
        self.assertEqual(app.made, 1)
        self.assertFalse(server.handshake_done)
        self.assertIs(app.transport, server)

    def test_several_records_in_one_chunk_reach_the_protocol_at_once(self):
        pair = self.pair()
        body = bytes(range(256)) * 256  # 64 KiB: four records or more
        pair.send(body)
        self.assertEqual(pair.app.received, [body])

    def test_records_split_across_chunks(self):
        """A chunk ending inside a record: what the whole records held
        comes now, the rest with the next chunk."""
        pair = self.pair()
        pair.client.send(b"first")
        pair.client.send(b"second")
        wire = pair.client_output()
        cut = len(wire) - 10
        pair.server.dataReceived(wire[:cut])
        self.assertEqual(pair.app.received, [b"first"])
        pair.server.dataReceived(wire[cut:])
        self.assertEqual(pair.app.received, [b"first", b"second"])
        for piece in (b"x" * 3000, b"y" * 5):  # byte by byte
            pair.client.send(piece)
            for byte in pair.client_output():
                pair.server.dataReceived(bytes([byte]))
        self.assertEqual(pair.app.received[2:], [b"x" * 3000, b"y" * 5])

    def test_alpn_chooses_http11(self):
        pair = self.pair(alpn=[b"h2", b"http/1.1"])
        self.assertEqual(pair.server.negotiatedProtocol, b"http/1.1")
        self.assertEqual(pair.client.get_alpn_proto_negotiated(), b"http/1.1")

    def test_no_alpn_offered(self):
        pair = self.pair()
        self.assertIsNone(pair.server.negotiatedProtocol)

    def test_sni_chooses_the_certificate(self):
        folder = os.path.join(self.dir, "certs")
        for name in ("a.test", "b.test", "default"):
            key, cert = make_cert(self.ca, name)
            write_bundle(os.path.join(folder, f"{name}.pem"), key, cert, self.ca)
        self.options = ReloadableOptions(CertificateFolder(folder).options())
        self.assertEqual(subject_cn(self.pair(server_name=b"b.test").client), "b.test")
        self.assertEqual(subject_cn(self.pair(server_name=b"a.test").client), "a.test")
        self.assertEqual(subject_cn(self.pair(server_name=b"c.test").client), "default")
        self.assertEqual(subject_cn(self.pair().client), "default")

    def test_client_certificate_subject(self):
        client_ca = make_ca("client CA")
        ca_file = write(os.path.join(self.dir, "client-ca.pem"), cert_pem(client_ca[1]))
        context = make_context((served(self.dir, self.ca),),
                               client_auth=ClientAuth.load(ca_file, required=True))
        self.options = ReloadableOptions(ServerTLS(context))
        key, cert = make_cert(client_ca, "alice")
        client = SSL.Context(SSL.TLS_METHOD)
        client.use_certificate(cert)
        client.use_privatekey(key)
        pair = self.pair(context=client)
        self.assertEqual(peer_subject(pair.server), "CN=alice")
        self.assertIsInstance(pair.server.getPeerCertificate(), crypto.X509)

    def test_missing_client_certificate_fails_the_handshake(self):
        client_ca = make_ca("client CA")
        ca_file = write(os.path.join(self.dir, "client-ca.pem"), cert_pem(client_ca[1]))
        context = make_context((served(self.dir, self.ca),),
                               client_auth=ClientAuth.load(ca_file, required=True))
        self.options = ReloadableOptions(ServerTLS(context))
        client = SSL.Context(SSL.TLS_METHOD)
        client.set_max_proto_version(SSL.TLS1_2_VERSION)  # (1.3 refuses after the handshake)
        pair = Pair(self.options, context=client)
        with self.assertRaises(SSL.Error) as caught:
            pair.handshake()
        self.assertIn("handshake failure", str(caught.exception))  # our alert
        self.assertTrue(pair.transport.disconnecting)
        pair.server.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(len(pair.app.lost), 1)
        pair.app.lost[0].trap(SSL.Error)

    def test_reload_swaps_the_certificate_for_new_connections(self):
        before = self.pair()
        self.options.swap(server_options(served(self.dir, self.ca, name="new.test")))
        after = self.pair()
        self.assertEqual(subject_cn(before.client), "www.test")
        self.assertEqual(subject_cn(after.client), "new.test")
        before.send(REQUEST)  # the old connection goes on
        self.assertEqual(before.app.received, [REQUEST])

    def test_the_handle_and_the_transport_below(self):
        pair = self.pair()
        self.assertIsInstance(pair.server.getHandle(), SSL.Connection)
        self.assertEqual(pair.server.getPeer().host, "192.0.2.7")
        self.assertIs(pair.server.transport, pair.transport)
        self.assertEqual(pair.server.getHost(), pair.transport.getHost())

    # -- writing ----------------------------------------------------------------

    def test_a_large_write_is_one_write_below(self):
        """SSL_MODE_ENABLE_PARTIAL_WRITE is off: one SSL_write makes every
        record, and all of them go below in one write."""
        pair = self.pair()
        if self.fast:
            from OpenSSL._util import lib

            mode = lib.SSL_set_mode(pair.server.getHandle()._ssl, 0)  # (adds nothing: reads it)
            self.assertFalse(mode & lib.SSL_MODE_ENABLE_PARTIAL_WRITE)
        before = pair.transport.writes
        body = os.urandom(1 << 20)
        pair.server.write(body)
        self.assertEqual(pair.transport.writes, before + 1)
        self.assertEqual(pair.receive(), body)

    def test_writes_before_the_handshake_wait_for_it(self):
        pair = Pair(self.options)
        pair.server.write(b"early")
        self.assertEqual(pair.transport.value(), b"")
        pair.handshake()
        self.assertEqual(pair.receive(), b"early")

    def test_producer_and_pausing_reach_the_transport_below(self):
        pair = self.pair()
        producer = object()
        pair.server.registerProducer(producer, True)
        self.assertIs(pair.transport.producer, producer)
        pair.server.pauseProducing()
        self.assertEqual(pair.transport.producerState, "paused")
        pair.server.resumeProducing()
        self.assertEqual(pair.transport.producerState, "producing")
        pair.server.unregisterProducer()
        self.assertIsNone(pair.transport.producer)

    # -- closing ----------------------------------------------------------------

    def test_lose_connection_sends_close_notify(self):
        pair = self.pair()
        pair.server.write(b"last")
        pair.server.loseConnection()
        self.assertTrue(pair.transport.disconnecting)
        self.assertEqual(pair.receive(), b"last")
        self.assertTrue(pair.closed)
        pair.server.write(b"dropped")
        self.assertEqual(pair.transport.value(), b"")
        pair.server.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(len(pair.app.lost), 1)
        pair.app.lost[0].trap(error.ConnectionDone)

    def test_lose_connection_with_a_producer_registered_closes_too(self):
        pair = self.pair()
        pair.server.registerProducer(object(), True)
        pair.server.loseConnection()
        self.assertTrue(pair.transport.disconnecting)
        pair.receive()
        self.assertTrue(pair.closed)

    def test_client_close_notify_is_answered_and_closes(self):
        pair = self.pair()
        pair.client.send(REQUEST)
        pair.client.shutdown()
        pair.to_server()
        self.assertEqual(pair.app.received, [REQUEST])  # what came before it
        self.assertTrue(pair.transport.disconnecting)
        pair.receive()
        self.assertTrue(pair.closed)  # our close_notify answered theirs
        pair.server.connectionLost(Failure(error.ConnectionDone()))
        pair.app.lost[0].trap(error.ConnectionDone)

    def test_close_without_close_notify_is_connection_lost(self):
        pair = self.pair()
        pair.server.connectionLost(Failure(error.ConnectionDone()))
        pair.server.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(len(pair.app.lost), 1)
        pair.app.lost[0].trap(error.ConnectionLost)

    def test_lose_connection_before_the_handshake_aborts(self):
        pair = Pair(self.options)
        pair.server.loseConnection()
        self.assertTrue(pair.transport.disconnected)  # (StringTransport: aborted)

    def test_abort(self):
        pair = self.pair()
        pair.server.abortConnection()
        self.assertTrue(pair.transport.disconnected)
        pair.send(REQUEST)
        self.assertEqual(pair.app.received, [])  # nothing after an abort
        pair.server.connectionLost(Failure(error.ConnectionAborted()))
        pair.app.lost[0].trap(error.ConnectionAborted)

    # -- failures ---------------------------------------------------------------

    def test_garbage_fails_with_an_alert(self):
        pair = Pair(self.options)
        pair.server.dataReceived(b"\x16\x03\x01\x00\x05hello")  # a handshake record, broken
        self.assertTrue(pair.transport.disconnecting)
        self.assertFalse(pair.transport.disconnected)  # closed, not aborted: the alert goes out
        self.assertEqual(pair.transport.value()[:1], b"\x15")  # an alert record
        self.assertEqual(pair.app.lost, [])
        pair.server.dataReceived(b"more garbage")  # ignored
        pair.server.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(len(pair.app.lost), 1)
        failure = pair.app.lost[0]
        failure.trap(SSL.Error)
        self.assertIn("unexpected message", str(failure.value))

    def test_plain_http_fails_the_handshake(self):
        """OpenSSL sees an HTTP request and answers no alert: the
        connection closes."""
        pair = Pair(self.options)
        pair.server.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(pair.transport.disconnecting)
        pair.server.connectionLost(Failure(error.ConnectionDone()))
        pair.app.lost[0].trap(SSL.Error)
        self.assertIn("http request", str(pair.app.lost[0].value))

    def test_garbage_after_the_handshake(self):
        pair = self.pair()
        pair.server.dataReceived(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
        self.assertTrue(pair.transport.disconnecting)
        pair.server.connectionLost(Failure(error.ConnectionDone()))
        pair.app.lost[0].trap(SSL.Error)
        self.assertEqual(pair.app.received, [])

    def test_renegotiation_is_refused(self):
        client = SSL.Context(SSL.TLS_METHOD)
        client.set_max_proto_version(SSL.TLS1_2_VERSION)
        pair = self.pair(context=client)
        self.assertTrue(pair.client.renegotiate())
        with self.assertRaises(SSL.WantReadError):
            pair.client.do_handshake()
        pair.to_server()
        with self.assertRaises(SSL.Error) as caught:
            pair.receive()
        self.assertIn("no renegotiation", str(caught.exception))


class FastStreamTests(_StreamTests, SynchronousTestCase):
    fast = True


class PublicMethodStreamTests(_StreamTests, SynchronousTestCase):
    """The fallback for a pyOpenSSL without the functions the fast path uses."""

    fast = False


# -- real sockets -----------------------------------------------------------------


class Echo(Protocol):
    def connectionMade(self):
        self.factory.protocols.append(self)
        self.lost = []
        self.received = b""

    def dataReceived(self, data):
        self.received += data
        self.transport.write(data)

    def connectionLost(self, reason):
        self.lost.append(reason)
        self.factory.lost.append(reason)


class Streamer(Protocol):
    """Writes ``total`` bytes as fast as the transport lets it, as a
    streaming producer (as the http path's member transports do)."""

    total = 1 << 20
    chunk = 64 * 1024

    def connectionMade(self):
        self.factory.protocols.append(self)
        self.sent = 0
        self.pauses = 0
        self.paused = False
        self.transport.registerProducer(self, True)

    def dataReceived(self, data):
        if data == b"go":
            self.resumeProducing()

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1

    def resumeProducing(self):
        self.paused = False
        while not self.paused and self.sent < self.total:
            piece = bytes([self.sent // self.chunk % 256]) * self.chunk
            self.sent += len(piece)
            self.transport.write(piece)
        if self.sent >= self.total:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def stopProducing(self):
        pass

    def connectionLost(self, reason):
        self.factory.lost.append(reason)


def client_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False
    return context


class RealSocketTests(TestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.ca = make_ca()
        self.ca_file = write(os.path.join(self.dir, "ca.pem"), cert_pem(self.ca[1]))
        self.options = ReloadableOptions(server_options(served(self.dir, self.ca)))

    def listen(self, protocol) -> tuple[int, Factory]:
        inner = Factory.forProtocol(protocol)
        inner.protocols, inner.lost = [], []
        port = reactor.listenTCP(0, TLSServerFactory(self.options, inner), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: [p.transport.abortConnection() for p in inner.protocols])
        return port.getHost().port, inner

    @defer.inlineCallbacks
    def wait_lost(self, factory, count=1):
        for _ in range(200):
            if len(factory.lost) >= count:
                return
            d = defer.Deferred()
            reactor.callLater(0.02, d.callback, None)
            yield d
        self.fail("the protocol's connectionLost was not called")

    @defer.inlineCallbacks
    def test_many_requests_on_one_connection(self):
        port, factory = self.listen(Echo)

        def client():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with client_context(self.ca_file).wrap_socket(raw) as tls:
                    for i in range(300):
                        line = b"request %d\n" % i
                        tls.sendall(line)
                        got = b""
                        while len(got) < len(line):
                            got += tls.recv(100)
                        assert got == line, (got, line)
                    tls.unwrap()  # a clean close_notify
            return i

        self.assertEqual((yield threads.deferToThread(client)), 299)
        yield self.wait_lost(factory)
        factory.lost[0].trap(error.ConnectionDone)

    @defer.inlineCallbacks
    def test_a_mebibyte_both_ways(self):
        port, factory = self.listen(Echo)
        body = os.urandom(1 << 20)

        def client():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with client_context(self.ca_file).wrap_socket(raw) as tls:
                    tls.sendall(body)  # (the echo buffers above the socket: no deadlock)
                    got = []
                    size = 0
                    while size < len(body):
                        piece = tls.recv(1 << 16)
                        if not piece:
                            break
                        got.append(piece)
                        size += len(piece)
                    return b"".join(got)

        got = yield threads.deferToThread(client)
        self.assertEqual(len(got), len(body))
        self.assertTrue(got == body)

    @defer.inlineCallbacks
    def test_backpressure_pauses_the_producer_above(self):
        port, factory = self.listen(Streamer)

        def client():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
                with client_context(self.ca_file).wrap_socket(raw) as tls:
                    tls.sendall(b"go")
                    time.sleep(0.3)  # not reading: the server's buffers fill
                    got = []
                    while True:
                        try:
                            piece = tls.recv(1 << 16)
                        except ssl.SSLZeroReturnError:
                            break
                        if not piece:
                            break
                        got.append(piece)
                    return b"".join(got)

        got = yield threads.deferToThread(client)
        self.assertEqual(len(got), Streamer.total)
        self.assertEqual(got[-1:], bytes([(Streamer.total // Streamer.chunk - 1) % 256]))
        self.assertGreater(factory.protocols[0].pauses, 0)

    @defer.inlineCallbacks
    def test_abrupt_close_is_connection_lost_once(self):
        port, factory = self.listen(Echo)

        def client():
            raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            tls = client_context(self.ca_file).wrap_socket(raw)
            tls.sendall(b"x")
            assert tls.recv(1) == b"x"
            # No close_notify: the TCP connection just ends (RST: linger 0).
            raw2 = socket.socket(fileno=tls.detach())
            raw2.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw2.close()

        yield threads.deferToThread(client)
        yield self.wait_lost(factory)
        d = defer.Deferred()
        reactor.callLater(0.1, d.callback, None)
        yield d
        self.assertEqual(len(factory.lost), 1)
        factory.lost[0].trap(error.ConnectionLost)

    @defer.inlineCallbacks
    def test_sessions_resume(self):
        """Session tickets (TLS 1.3, sent after the handshake) and session
        ids (TLS 1.2) reach the client and let it resume."""
        port, factory = self.listen(Echo)

        def client(version):
            context = client_context(self.ca_file)
            context.maximum_version = version
            reused = []
            session = None
            for _ in range(2):
                with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                    with context.wrap_socket(raw, session=session) as tls:
                        tls.sendall(b"x")
                        assert tls.recv(1) == b"x"
                        reused.append(tls.session_reused)
                        session = tls.session
            return reused

        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            reused = yield threads.deferToThread(client, version)
            self.assertEqual(reused, [False, True], version)

    @defer.inlineCallbacks
    def test_a_half_close_without_close_notify(self):
        """The client sends, then shuts its side of TCP (no close_notify):
        what it sent is read, then the connection is lost, once."""
        port, factory = self.listen(Echo)

        def client():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                tls = client_context(self.ca_file).wrap_socket(raw)
                tls.sendall(b"abc")
                assert tls.recv(3) == b"abc"
                tls.sendall(b"def")
                socket.socket.shutdown(tls, socket.SHUT_WR)  # a FIN, no close_notify
                try:
                    while tls.recv(100):
                        pass
                except (ssl.SSLError, OSError):
                    pass

        yield threads.deferToThread(client)
        yield self.wait_lost(factory)
        self.assertEqual(len(factory.lost), 1)
        factory.lost[0].trap(error.ConnectionLost)
        self.assertEqual(factory.protocols[0].received, b"abcdef")

    @defer.inlineCallbacks
    def test_a_garbage_client_gets_an_alert_and_the_close(self):
        port, factory = self.listen(Echo)

        def client():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                raw.sendall(b"\x16\x03\x01\x00\x05hello")
                data = b""
                while True:
                    piece = raw.recv(4096)
                    if not piece:
                        return data
                    data += piece

        data = yield threads.deferToThread(client)
        self.assertEqual(data[:1], b"\x15")  # an alert, then the close
        yield self.wait_lost(factory)
        factory.lost[0].trap(SSL.Error)


class HandshakeDeadlineTests(HTTPSiteMixin, TestCase):
    @defer.inlineCallbacks
    def test_a_stalled_handshake_is_closed_at_the_request_deadline(self):
        """timeout_http_request counts from the TCP connection: a client
        that never finishes its handshake is closed when it ends."""
        directory = os.path.abspath(self.mktemp())
        ca = make_ca()
        key, cert = make_cert(ca, "www.test")
        pem = write(os.path.join(directory, "www.pem"), key_pem(key), cert_pem(cert))
        mport, member = self.member()
        self.serve_http(f"member a = 127.0.0.1:{mport}", "timeout_http_request = 0.5s",
                        listen=f"ssl:0:privateKey={pem}:interface=127.0.0.1")
        port = self.service.addresses()[0].port

        def client():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                raw.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # half a ClientHello
                began = time.monotonic()
                try:
                    data = raw.recv(4096)
                except ConnectionResetError:
                    data = b""
                return data, time.monotonic() - began

        data, waited = yield threads.deferToThread(client)
        self.assertEqual(data, b"")
        self.assertGreater(waited, 0.3)
        self.assertLess(waited, 3.0)
        self.assertEqual(member.received, b"")


def read_response(tls) -> tuple[bytes, bytes]:
    """One response (head, body) with a Content-Length, from a blocking TLS socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = tls.recv(65536)
        if not piece:
            raise AssertionError(f"closed after {data!r}")
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        piece = tls.recv(1 << 16)
        if not piece:
            raise AssertionError("closed in the body")
        body += piece
    assert len(body) == length, "more than the response"
    return head, body


class HTTPSiteTests(HTTPSiteMixin, TestCase):
    """The layer under an http virtual server (``ssl:`` listen)."""

    def serve_tls(self, virtual_lines: str = ""):
        directory = os.path.abspath(self.mktemp())
        ca = make_ca()
        key, cert = make_cert(ca, "www.test")
        pem = write(os.path.join(directory, "www.pem"), key_pem(key), cert_pem(cert))
        self.ca_file = write(os.path.join(directory, "ca.pem"), cert_pem(ca[1]))
        mport, self.recorder = self.member()
        self.serve_http(f"member a = 127.0.0.1:{mport}", virtual_lines,
                        listen=f"ssl:0:privateKey={pem}:interface=127.0.0.1")
        return self.service.addresses()[0].port

    @defer.inlineCallbacks
    def test_many_requests_on_one_kept_alive_connection(self):
        port = self.serve_tls()

        def client():
            statuses = []
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with client_context(self.ca_file).wrap_socket(raw) as tls:
                    for i in range(100):
                        tls.sendall(b"GET /r%d HTTP/1.1\r\nHost: www.test\r\n\r\n" % i)
                        head, body = read_response(tls)
                        statuses.append(head.split(b" ")[1])
                        assert body.startswith(b"GET /r%d " % i), body[:40]
            return statuses

        statuses = yield threads.deferToThread(client)
        self.assertEqual(statuses, [b"200"] * 100)
        self.assertEqual(len(self.recorder.requests), 100)
        self.assertIn(b"X-Forwarded-Proto: https\r\n", self.recorder.requests[0])

    @defer.inlineCallbacks
    def test_a_mebibyte_body_both_ways(self):
        port = self.serve_tls()
        body = os.urandom(1 << 20)

        def client():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with client_context(self.ca_file).wrap_socket(raw) as tls:
                    tls.sendall(b"POST /up HTTP/1.1\r\nHost: www.test\r\nContent-Length: %d\r\n\r\n"
                                % len(body) + body)
                    return read_response(tls)

        head, echoed = yield threads.deferToThread(client)
        self.assertTrue(head.startswith(b"HTTP/1.1 200"))
        # The member answers with the raw request it got: our body, whole.
        self.assertEqual(len(echoed) - echoed.index(b"\r\n\r\n") - 4, len(body))
        self.assertTrue(echoed.endswith(body))
