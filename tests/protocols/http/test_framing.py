"""Framing that a client or a member cannot bend (issue 13, items 1 and 2).

1. A ``Connection`` token never removes the headers lbframe framed or
   routed the message by (``Content-Length``, ``Transfer-Encoding``,
   ``Host``): the member must read exactly the request lbframe read, and a
   client must read exactly the response lbframe relayed.
2. A chunked message's framing (chunk-size lines, trailer section) is
   bounded while it arrives, not after httptools hands over a joined field.

Real sockets on 127.0.0.1 for the end-to-end cases.
"""

from __future__ import annotations

from twisted.internet import defer, protocol, reactor, task
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbframe.messages import RequestHead, ResponseHead
from lbframe.protocols.http import heads
from lbframe.protocols.http.parser import (
    READ_SLACK, HTTPError, RequestParser, ResponseParser,
)
from tests.httpkit import HTTPSiteMixin

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"

#: Connection header lines naming a framing or routing header, as a client
#: might spell them: case, spaces and tabs, among other tokens, on a second
#: Connection line
CONNECTION_SPELLINGS = {
    "content-length": [
        b"Connection: Content-Length\r\n",
        b"Connection: content-length\r\n",
        b"Connection: CONTENT-LENGTH\r\n",
        b"Connection:\t Content-Length \t\r\n",
        b"Connection: keep-alive, Content-Length, foo\r\n",
        b"Connection: keep-alive\r\nConnection: ,content-length,\r\n",
    ],
    "transfer-encoding": [
        b"Connection: Transfer-Encoding\r\n",
        b"Connection: keep-alive ,\tTRANSFER-ENCODING\r\n",
        b"Connection: x\r\nConnection: transfer-encoding\r\n",
    ],
    "host": [
        b"Connection: Host\r\n",
        b"Connection: close\r\nConnection: HOST\r\n",
    ],
}


def _names(head_bytes: bytes) -> list[bytes]:
    lines = head_bytes.split(b"\r\n")[1:]
    return [line.split(b":", 1)[0].lower() for line in lines if b":" in line]


class ConnectionTokenHeadTests(SynchronousTestCase):
    """The head writers alone: every spelling keeps the protected headers."""

    def _request(self, connection: bytes) -> bytes:
        headers = [(b"Host", b"h"), (b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked"),
                   (b"X-Other", b"1")]
        for line in connection.split(b"\r\n"):
            if line:
                name, value = line.split(b":", 1)
                headers.append((name, value.strip(b" \t")))
        return heads.request_bytes(RequestHead("POST", "/", "1.1", headers), None, b"http", False)

    def test_protected_headers_survive_every_spelling(self):
        for spellings in CONNECTION_SPELLINGS.values():
            for connection in spellings:
                names = _names(self._request(connection))
                for kept in (b"host", b"content-length", b"transfer-encoding"):
                    self.assertIn(kept, names, connection)
                self.assertNotIn(b"connection", names, connection)

    def test_other_listed_headers_are_still_hop_by_hop(self):
        names = _names(self._request(b"Connection: X-Other, Host\r\n"))
        self.assertNotIn(b"x-other", names)
        self.assertIn(b"host", names)

    def test_response_keeps_content_length(self):
        head = ResponseHead(200, "OK", "1.1", [(b"Content-Length", b"5"),
                                               (b"Connection", b"Content-Length, X-A"),
                                               (b"X-A", b"1")])
        names = _names(heads.response_bytes(head, False, False, False))
        self.assertIn(b"content-length", names)
        self.assertNotIn(b"x-a", names)

    def test_trailers_lose_framing_and_connection_fields(self):
        tail = heads.trailer_bytes([(b"Content-Length", b"9"), (b"X-Sum", b"1"),
                                    (b"Transfer-Encoding", b"chunked"), (b"host", b"evil"),
                                    (b"Connection", b"close"), (b"Trailer", b"X")])
        self.assertEqual(tail, b"0\r\nX-Sum: 1\r\n\r\n")


class ConnectionTokenEndToEndTests(HTTPSiteMixin, TestCase):
    """Through a real member: one request reaches it, framed as lbframe
    framed it, and the next client on the pooled member connection gets
    its own answer, not the smuggled one."""

    timeout = 10

    def site(self):
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}", "forwarded_for = no")
        return port, member

    @defer.inlineCallbacks
    def _smuggle(self, request: bytes, connection: bytes):
        port, member = self.site()
        first = yield self.exchange(port, request)
        self.assertEqual([r.status for r in first.responses], [200], connection)
        # The member read one request, whose body is the would-be request.
        self.assertEqual(member.urls, [b"/upload"], connection)
        self.assertEqual(len(member.requests), 1, connection)
        self.assertIn(SMUGGLED, member.requests[0], connection)
        self.assertEqual(first.responses[0].body, member.requests[0])
        # Another client, on the pooled connection: its own answer.
        yield self.wait_until(lambda: self.service.idle.count == 1)
        second = yield self.exchange(port, b"GET /second HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(member.connections, 1)
        self.assertEqual(member.urls, [b"/upload", b"/second"], connection)
        self.assertTrue(second.responses[0].body.startswith(b"GET /second "), connection)
        return member

    @defer.inlineCallbacks
    def test_response_connection_content_length(self):
        body = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"  # looks like a response

        def answer(raw):
            return (b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body)

        mport, member = self.member(answer=answer)
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.connect(port)
        client.transport.write(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
        responses = yield client.wait_responses(1)
        self.assertEqual(responses[0].header("content-length"), str(len(body)))
        self.assertEqual(responses[0].body, body)
        # The connection is still framed: a second request gets one answer.
        client.transport.write(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        responses = yield client.wait_responses(2)
        self.assertEqual([r.body for r in responses], [body, body])
        self.assertFalse(client.lost.called)


def _make_content_length(connection):
    @defer.inlineCallbacks
    def test(self):
        request = (b"POST /upload HTTP/1.1\r\nHost: h\r\n" + connection +
                   b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED)
        member = yield self._smuggle(request, connection)
        self.assertIn(b"\r\nContent-Length: %d\r\n" % len(SMUGGLED), member.requests[0])
    return test


def _make_transfer_encoding(connection):
    @defer.inlineCallbacks
    def test(self):
        request = (b"POST /upload HTTP/1.1\r\nHost: h\r\n" + connection +
                   b"Transfer-Encoding: chunked\r\n\r\n" +
                   b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n")
        member = yield self._smuggle(request, connection)
        self.assertIn(b"\r\nTransfer-Encoding: chunked\r\n", member.requests[0])
    return test


def _make_host(connection):
    @defer.inlineCallbacks
    def test(self):
        port, member = self.site()
        yield self.exchange(port, b"GET /x HTTP/1.1\r\n" + connection +
                            b"Host: routed.example\r\n\r\n")
        self.assertEqual(len(member.requests), 1)
        self.assertIn(b"\r\nHost: routed.example\r\n", member.requests[0], connection)
    return test


for _header, _make in (("content-length", _make_content_length),
                       ("transfer-encoding", _make_transfer_encoding), ("host", _make_host)):
    for _i, _connection in enumerate(CONNECTION_SPELLINGS[_header]):
        setattr(ConnectionTokenEndToEndTests,
                f"test_connection_{_header.replace('-', '_')}_{_i}", _make(_connection))


class _Sink:
    def __init__(self):
        self.bodies = b""
        self.ended = []
        self.heads = []

    def request(self, head, keep_alive, has_body):
        self.heads.append(head)

    def response(self, head, keep_alive, framing):
        self.heads.append(head)

    def informational(self, head):
        pass

    def body(self, data):
        self.bodies += data

    def end(self, trailers):
        self.ended.append(trailers)

    def upgrade(self, rest):
        pass


CHUNKED_REQUEST = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED_RESPONSE = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


#: bytes offered in the endless-trailer tests: refusal must come long before
TOTAL = 16 << 20


class TrailerLimitTests(SynchronousTestCase):
    """The parsers alone: refusal comes after about the limit, whatever the
    pieces, so memory stays bounded."""

    MAX = 32 * 1024
    #: what an attacker offers (before the fix, all of it was collected)
    BOUND = MAX + READ_SLACK + 2 * 64 * 1024  # the limit, one read of slack, rounding

    def _feed_until_refused(self, parser, first: bytes, piece: bytes, total: int) -> int:
        parser.feed(first)
        fed = 0
        while fed < total:
            try:
                parser.feed(piece)
            except HTTPError as e:
                self.assertIn("trailers", e.reason)
                return fed
            fed += len(piece)
        self.fail(f"{fed} bytes fed without refusal")

    def test_one_endless_trailer_line_is_refused_early(self):
        # 16 MiB offered in 64 KiB pieces: refused after about the limit.
        fed = self._feed_until_refused(RequestParser(_Sink()),
                                       CHUNKED_REQUEST + b"3\r\nabc\r\n0\r\nX-Big: ",
                                       b"v" * 65536, TOTAL)
        self.assertLess(fed, self.BOUND)

    def test_small_pieces_too(self):
        fed = self._feed_until_refused(RequestParser(_Sink()), CHUNKED_REQUEST + b"0\r\nX: ",
                                       b"v" * 1000, 1 << 20)
        self.assertLess(fed, self.BOUND)

    def test_many_small_trailer_fields_are_refused(self):
        parser = RequestParser(_Sink())
        parser.feed(CHUNKED_REQUEST + b"0\r\n")
        with self.assertRaises(HTTPError) as caught:
            for i in range(10_000):
                parser.feed(b"X-%d: v\r\n" % i)
        self.assertEqual(caught.exception.status, 431)

    def test_endless_chunk_extension_is_refused(self):
        fed = self._feed_until_refused(RequestParser(_Sink()), CHUNKED_REQUEST + b"5;ext=",
                                       b"e" * 65536, TOTAL)
        self.assertLess(fed, self.BOUND)

    def test_response_trailers_are_bounded(self):
        parser = ResponseParser(_Sink())
        parser.expect("GET")
        fed = self._feed_until_refused(parser, CHUNKED_RESPONSE + b"0\r\nX-Big: ",
                                       b"v" * 65536, TOTAL)
        self.assertLess(fed, self.BOUND)

    def test_large_bodies_and_trailers_within_the_limit_pass(self):
        sink = _Sink()
        parser = RequestParser(sink)
        parser.feed(CHUNKED_REQUEST)
        chunk = b"%x\r\n%s\r\n" % (60000, b"b" * 60000)
        for _ in range(200):  # 12 MB of body in many reads
            parser.feed(chunk)
        trailers = b"".join(b"X-T%d: %s\r\n" % (i, b"v" * 200) for i in range(140))
        data = b"0\r\n" + trailers + b"\r\n"
        for i in range(0, len(data), 999):
            parser.feed(data[i:i + 999])
        self.assertEqual(len(sink.bodies), 200 * 60000)
        self.assertEqual(len(sink.ended[0]), 140)

    def test_framing_fields_in_trailers_are_refused(self):
        # llhttp lets them change how it reads the next message (a trailer
        # "Connection: close" made it refuse the next response on a pooled
        # member connection: another client's 502).
        for field in (b"Connection: close", b"Transfer-Encoding: x", b"content-length: 5",
                      b"Proxy-Connection: close"):
            parser = RequestParser(_Sink())
            with self.assertRaises(HTTPError) as caught:
                parser.feed(CHUNKED_REQUEST + b"0\r\n" + field + b"\r\n\r\n")
            self.assertEqual(caught.exception.status, 400, field)
            response = ResponseParser(_Sink())
            response.expect("GET")
            with self.assertRaises(HTTPError):
                response.feed(CHUNKED_RESPONSE + b"0\r\n" + field + b"\r\n\r\n")

    def test_pipelined_chunked_requests_start_afresh(self):
        sink = _Sink()
        parser = RequestParser(sink)
        trailers = b"".join(b"X-T%d: %s\r\n" % (i, b"v" * 200) for i in range(140))
        one = CHUNKED_REQUEST + b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n"
        for _ in range(5):
            parser.feed(one)
        self.assertEqual(len(sink.ended), 5)


class _TrickleMember(protocol.Protocol):
    """Answers a chunked response whose trailer never ends."""

    def connectionMade(self):
        self.factory.conns.append(self)

    def dataReceived(self, data):
        if b"\r\n\r\n" in data and not getattr(self, "started", False):
            self.started = True
            self.transport.write(CHUNKED_RESPONSE + b"5\r\nhello\r\n0\r\nX-Endless: ")
            self.sent = 0
            self.loop = task.LoopingCall(self.more)
            self.loop.start(0)

    def more(self):
        if self.sent >= 8 << 20:
            self.loop.stop()
            return
        self.transport.write(b"v" * 16384)
        self.sent += 16384

    def connectionLost(self, reason):
        self.factory.lost = True
        if getattr(self, "loop", None) is not None and self.loop.running:
            self.loop.stop()


class TrailerLimitEndToEndTests(HTTPSiteMixin, TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def test_request_trailers_over_the_limit(self):
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}",
                               "forwarded_for = no\nmax_head_size = 4096")
        client = yield self.connect(port)
        client.transport.write(CHUNKED_REQUEST + b"3\r\nabc\r\n0\r\nX-Endless: ")
        sent = 0
        while not client.lost.called and sent < 4 << 20:
            client.transport.write(b"v" * 4096)
            sent += 4096
            yield task.deferLater(reactor, 0, lambda: None)
        yield client.lost
        self.assertEqual([r.status for r in client.responses], [431])
        self.assertLess(sent, 4096 + READ_SLACK + 2 * 64 * 1024)
        # The request never completed at the member.
        self.assertEqual(member.requests, [])

    @defer.inlineCallbacks
    def test_response_trailers_over_the_limit_close_both(self):
        factory = protocol.Factory.forProtocol(_TrickleMember)
        factory.conns, factory.lost = [], False
        mport = self.listen_member(factory)
        self.addCleanup(lambda: [c.transport.abortConnection() for c in factory.conns])
        port = self.serve_http(f"member a = 127.0.0.1:{mport}", "max_head_size = 4096")
        client = yield self.connect(port)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        yield client.lost
        yield self.wait_until(lambda: factory.lost)
        # The head and body had gone out: the client's response is cut, never ended.
        self.assertFalse(any(r.complete for r in client.responses))
        self.assertLess(factory.conns[0].sent, 2 << 20)
