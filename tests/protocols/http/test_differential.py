"""Differential test of the http data path against h11 (issue 13, "Also").

For hypothesis-generated messages, what lbframe forwards is parsed by h11
— an independent, strict HTTP/1.1 parser — and must be framed exactly as
lbframe believed: the same count of messages, each with the same method,
target (requests), status (responses) and body bytes. Any disagreement (or
anything h11 refuses) fails.

*What lbframe believed* is what its own parser
(:class:`~lbframe.protocols.http.parser.RequestParser` /
:class:`~lbframe.protocols.http.parser.ResponseParser`) reports for the
bytes it was given. The data path under test is the real one — a
:class:`ClientConnection` with its exchanges, ``heads`` and the body
re-framing in ``exchange.py``, member connections from ``members.py`` —
driven in memory (``StringTransport``, ``MemoryReactorClock``): no sockets,
so hypothesis can run hundreds of examples in a few seconds.
"""

from __future__ import annotations

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from lbframe.config import parse_site
from lbframe.plugins import load_plugins
from lbframe.protocols.http.client import ClientConnection
from lbframe.protocols.http.parser import HTTPError, RequestParser, ResponseParser
from lbframe.protocols.http.server import HTTPVirtualServer
from lbframe.service import build_runtime

SITE = """
[virtual v]
listen = tcp:0:interface=127.0.0.1
protocol = http
pool = p
{virtual}

[pool p]
member a = 127.0.0.1:9
"""


class _Transport(StringTransport):
    """A StringTransport that, like a TCP one, takes pause/resume after
    ``loseConnection`` silently."""

    def setTcpNoDelay(self, enabled):
        pass

    def _checkState(self):
        pass


class _Reactor(MemoryReactorClock):
    """Its connectors say where they are, as ``Connect.cancel`` asks."""

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        connector = super().connectTCP(host, port, factory, timeout, bindAddress)
        connector.state = "connecting"  # (MemoryReactor keeps it in .connectors)
        return connector


def _transport():
    return _Transport(hostAddress=IPv4Address("TCP", "127.0.0.1", 80),
                      peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))


class Harness:
    """One http virtual server and one client connection, in memory. The
    member side is ``answer(request_events) -> bytes``, called per request
    that h11 (as the member) parsed."""

    def __init__(self, virtual_lines: str = ""):
        self.reactor = _Reactor()
        runtime = build_runtime(parse_site(SITE.format(virtual=virtual_lines), "/tmp/site.ini"),
                                load_plugins(entry_points=False), self.reactor)
        self.server = HTTPVirtualServer(runtime.balancers["v"],
                                        runtime.protocols["v"].settings, self.reactor,
                                        clock=self.reactor)
        self.client = ClientConnection(self.server)
        self.client_transport = _transport()
        self.client.makeConnection(self.client_transport)
        self.members: list = []  # (protocol, transport, h11 server connection)
        self.connected = 0

    def connect_pending(self) -> bool:
        """Complete the member connections lbframe asked for."""
        progress = False
        while self.connected < len(self.reactor.tcpClients):
            factory = self.reactor.tcpClients[self.connected][2]
            connector = self.reactor.connectors[self.connected]
            self.connected += 1
            progress = True
            if connector.state != "connecting":
                continue  # cancelled meanwhile
            connector.state = "connected"
            proto = factory.buildProtocol(None)
            transport = _transport()
            proto.makeConnection(transport)
            self.members.append((proto, transport, _H11Member()))
        return progress


# -- generated requests -------------------------------------------------------

_tokens = st.sampled_from([b"keep-alive", b"close", b"Upgrade",
                           b"Content-Length", b"content-length",
                           b"TRANSFER-ENCODING", b"Transfer-Encoding", b"Host", b"host",
                           b"X-A", b"x-b", b"TE", b"Keep-Alive", b"Trailer", b"Foo"])
_spaces = st.sampled_from([b"", b" ", b"\t", b" \t"])


@st.composite
def connection_lines(draw) -> list:
    lines = []
    for _ in range(draw(st.integers(0, 2))):
        tokens = draw(st.lists(_tokens, min_size=1, max_size=4))
        value = b",".join(draw(_spaces) + t + draw(_spaces) for t in tokens)
        lines.append((b"Connection", value.strip(b" \t")))
    return lines


_field_names = st.sampled_from([b"X-A", b"x-b", b"Accept", b"User-Agent", b"Cookie", b"Foo",
                                b"Trailer", b"Keep-Alive", b"TE"])
_field_values = st.binary(min_size=0, max_size=12).map(
    lambda b: bytes(c for c in b if 0x21 <= c <= 0x7e))


@st.composite
def chunked_body(draw) -> tuple[bytes, bytes, list]:
    """(wire bytes, body, trailers) of a chunked body with extensions."""
    wire, body = [], b""
    for data in draw(st.lists(st.binary(min_size=1, max_size=40), max_size=4)):
        size = b"%x" % len(data)
        if draw(st.booleans()):
            size = size.upper()
        ext = draw(st.sampled_from([b"", b";a=b", b";x", b";n=\"q\"", b" ;e=1"]))
        wire.append(size + ext + b"\r\n" + data + b"\r\n")
        body += data
    trailers = draw(st.lists(st.tuples(st.sampled_from([b"X-Sum", b"x-t", b"Content-Length",
                                                        b"Host", b"Transfer-Encoding"]),
                                       _field_values), max_size=3))
    wire.append(b"0" + draw(st.sampled_from([b"", b";end"])) + b"\r\n")
    wire.extend(b"%s: %s\r\n" % pair for pair in trailers)
    wire.append(b"\r\n")
    return b"".join(wire), body, trailers


@st.composite
def requests(draw) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS",
                                   b"HEAD"]))
    target = draw(st.sampled_from([b"/", b"/a/b?c=d", b"/x%20y", b"//x/../y",
                                   b"http://h.example/p?q", b"/;p=1"]))
    headers = [(b"Host", b"h.example")]
    headers += draw(st.lists(st.tuples(_field_names, _field_values), max_size=3))
    headers += draw(connection_lines())
    body_kind = draw(st.sampled_from(["none", "length", "chunked"]))
    wire_body = b""
    if body_kind == "length":
        wire_body = draw(st.binary(max_size=60))
        headers.append((b"Content-Length", b"%d" % len(wire_body)))
    elif body_kind == "chunked":
        wire_body, _, _ = draw(chunked_body())
        headers.append((b"Transfer-Encoding", b"chunked"))
    headers = draw(st.permutations(headers))
    head = b"%s %s HTTP/1.1\r\n" % (method, target) + b"".join(
        b"%s: %s\r\n" % pair for pair in headers) + b"\r\n"
    return head + wire_body


# -- what lbframe's own parser believes ------------------------------------------

class _Belief:
    def __init__(self):
        self.messages: list = []
        self.complete = 0

    def request(self, head, keep_alive, has_body):
        self.messages.append([head.method.encode(), head.target.encode("latin-1"), b""])

    def response(self, head, keep_alive, framing):
        self.messages.append([head.status, b""])

    def informational(self, head):
        pass

    def body(self, data):
        self.messages[-1][-1] += data

    def end(self, trailers):
        self.complete += 1

    def upgrade(self, rest):
        pass


def believed_requests(data: bytes) -> list:
    """The complete requests lbframe's parser reads in ``data`` (up to a
    refusal: what follows one is never forwarded)."""
    belief = _Belief()
    parser = RequestParser(belief)
    try:
        parser.feed(data)
    except HTTPError:
        pass
    return [tuple(m) for m in belief.messages[:belief.complete]]


class _H11Member:
    """The member's view: h11 as the server, one request at a time."""

    def __init__(self):
        self.conn = h11.Connection(h11.SERVER)
        self.current = None

    def receive(self, data: bytes, answer) -> tuple[list, list]:
        """Feed ``data``; returns (requests completed, their answers)."""
        conn = self.conn
        conn.receive_data(data)
        seen, replies = [], []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Request):
                self.current = [event.method, event.target, b""]
            elif isinstance(event, h11.Data):
                self.current[2] += event.data
            elif isinstance(event, h11.EndOfMessage):
                seen.append(tuple(self.current))
                replies.append(answer(conn, self.current))
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                break
        return seen, replies


def _simple_answer(conn: h11.Connection, request) -> bytes:
    head = conn.send(h11.Response(status_code=200, headers=[("Content-Length", "2")]))
    if request[0] == b"HEAD":
        return head + conn.send(h11.EndOfMessage())
    return head + conn.send(h11.Data(data=b"ok")) + conn.send(h11.EndOfMessage())


class RequestDifferentialTests(SynchronousTestCase):
    """Client → lbframe → member: h11 at the member reads what lbframe read."""

    def run_requests(self, data: bytes, pieces: list[int]) -> None:
        expected = believed_requests(data)
        harness = Harness("forwarded_for = no")
        seen: list = []
        members: dict = {}
        offset = 0
        # Feed the client's bytes in the generated pieces, then the rest.
        for size in pieces + [len(data)]:
            if offset >= len(data):
                break
            if harness.client_transport.disconnecting:
                break  # lbframe refused and closed: nothing more is read
            harness.client.dataReceived(data[offset:offset + size])
            offset += size
            self._pump(harness, seen, members)
        self.assertEqual(seen, expected, data)

    def _pump(self, harness, seen, members) -> None:
        for _ in range(50):
            progress = harness.connect_pending()
            for proto, transport, conn in harness.members:
                written = transport.value()
                if not written:
                    continue
                transport.clear()
                try:
                    got, replies = conn.receive(written, _simple_answer)
                except h11.RemoteProtocolError as e:
                    self.fail(f"h11 refused what lbframe forwarded ({e}): {written!r}")
                seen.extend(got)
                for reply in replies:
                    if not proto.lost:
                        proto.dataReceived(reply)
                progress = True
            if not progress:
                return

    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(requests(), min_size=1, max_size=4),
           st.lists(st.integers(1, 80), max_size=6))
    def test_pipelined_requests(self, batch, pieces):
        self.run_requests(b"".join(batch), pieces)

    def test_connection_listed_framing_headers(self):
        # The differential view of item 1 (each failed before the fix).
        smuggled = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
        for connection in (b"Content-Length", b"transfer-encoding", b"Host, Content-Length"):
            if b"transfer" in connection:
                body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
                framing = b"Transfer-Encoding: chunked\r\n"
            else:
                body = smuggled
                framing = b"Content-Length: %d\r\n" % len(smuggled)
            self.run_requests(b"POST /up HTTP/1.1\r\nHost: h\r\nConnection: " + connection +
                              b"\r\n" + framing + b"\r\n" + body, [])


# -- generated responses ----------------------------------------------------------

@st.composite
def responses(draw, method: bytes) -> bytes:
    status = draw(st.sampled_from([200, 201, 204, 304, 404, 500]))
    headers = draw(st.lists(st.tuples(_field_names, _field_values), max_size=3))
    headers += draw(connection_lines())
    no_body = method == b"HEAD" or status in (204, 304)
    kind = draw(st.sampled_from(["length", "chunked"]))
    wire_body = b""
    if kind == "length":
        body = draw(st.binary(max_size=60))
        headers.append((b"Content-Length", b"%d" % len(body)))
        wire_body = b"" if no_body else body
    elif not no_body:
        wire_body, _, _ = draw(chunked_body())
        headers.append((b"Transfer-Encoding", b"chunked"))
    headers = draw(st.permutations(headers))
    return b"HTTP/1.1 %d X\r\n" % status + b"".join(
        b"%s: %s\r\n" % pair for pair in headers) + b"\r\n" + wire_body


def believed_response(method: bytes, data: bytes):
    belief = _Belief()
    parser = ResponseParser(belief)
    parser.expect(method.decode())
    try:
        parser.feed(data)
    except HTTPError:
        return None
    return tuple(belief.messages[0]) if parser.complete else None


class ResponseDifferentialTests(SynchronousTestCase):
    """Member → lbframe → client: h11 at the client reads what lbframe read."""

    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def test_responses_on_one_connection(self, data):
        methods = data.draw(st.lists(st.sampled_from([b"GET", b"HEAD", b"POST"]),
                                     min_size=1, max_size=4))
        answers = [data.draw(responses(m)) for m in methods]
        self.run_responses(methods, answers, data.draw(st.integers(1, 50)))

    def run_responses(self, methods, answers, piece) -> None:
        harness = Harness()
        client = h11.Connection(h11.CLIENT)
        got, expected = [], []
        for method, answer in zip(methods, answers):
            belief = believed_response(method, answer)
            if belief is None:
                return  # a response lbframe refuses: the 502 is tested elsewhere
            expected.append(belief)
            harness.client.dataReceived(
                client.send(h11.Request(method=method, target="/", headers=[("Host", "h")]))
                + client.send(h11.EndOfMessage()))
            harness.connect_pending()
            reached = [m for m in harness.members if m[1].value()]
            self.assertEqual(len(reached), 1, "the request reached no member, or two")
            proto, transport, _ = reached[0]
            transport.clear()
            for i in range(0, len(answer), piece):
                proto.dataReceived(answer[i:i + piece])
            out = harness.client_transport.value()
            harness.client_transport.clear()
            try:
                client.receive_data(out)
                current = None
                while True:
                    event = client.next_event()
                    if event is h11.NEED_DATA or event is h11.PAUSED:
                        break
                    if isinstance(event, h11.Response):
                        current = [event.status_code, b""]
                    elif isinstance(event, h11.Data):
                        current[1] += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        got.append(tuple(current))
            except h11.RemoteProtocolError as e:
                self.fail(f"h11 refused what lbframe relayed ({e}): {out!r}")
            if client.our_state is h11.DONE and client.their_state is h11.DONE:
                client.start_next_cycle()
            else:
                break  # lbframe closes here (a close-delimited answer): nothing follows
        self.assertEqual(got, expected[:len(got)], answers)
        self.assertEqual(len(got), len(expected), answers)

    def test_connection_listed_content_length(self):
        answer = (b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n"
                  b"\r\nhello")
        self.run_responses([b"GET", b"GET"], [answer, answer], 7)
