"""timeout_http_request: the whole request head has a deadline (slowloris),
and the wait for a kept-alive connection's next request is bounded by
timeout_keepalive whatever bytes trickle in. Real sockets, time on a Clock."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from lbframe.protocols.http.client import ClientConnection
from tests.httpkit import HTTPSiteMixin

HEAD = b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n"


class HeadDeadlineTests(HTTPSiteMixin, TestCase):
    def setUp(self):
        self.clock = Clock()
        mport, self.member_factory = self.member()
        self.port = self.serve_http(f"member a = 127.0.0.1:{mport}", clock=self.clock)

    def server_conn(self) -> ClientConnection:
        conns = list(self.service.connections)
        return conns[0] if conns else None

    @defer.inlineCallbacks
    def send_at(self, client, data: bytes):
        """Write ``data`` now (Clock time) and wait until the server read it
        (or closed the connection)."""
        now = self.clock.seconds()
        client.transport.write(data)
        yield self.wait_until(lambda: self.server_conn() is None or
                              self.server_conn().last_read == now)

    @defer.inlineCallbacks
    def test_a_head_trickling_one_byte_a_second_gets_408_at_10s(self):
        client = yield self.connect(self.port)
        yield self.wait_until(lambda: self.server_conn() is not None)
        for i in range(10):
            yield self.send_at(client, HEAD[i:i + 1])
            self.clock.advance(1)
            if i < 9:
                self.assertEqual(client.received, b"", f"answered after {i + 1}s")
        # 10 s after the connection began: the deadline has passed (the
        # timer wheel may round the check up by at most one second).
        self.clock.advance(1)
        yield client.lost
        self.assertTrue(client.received.startswith(b"HTTP/1.1 408 "), client.received)
        self.assertEqual(self.member_factory.received, b"")
        self.assertEqual(self.service.connection_count(), 0)

    @defer.inlineCallbacks
    def test_a_head_complete_in_time_is_served(self):
        client = yield self.connect(self.port)
        yield self.wait_until(lambda: self.server_conn() is not None)
        pieces = [HEAD[:5], HEAD[5:20], HEAD[20:]]
        for piece in pieces:
            yield self.send_at(client, piece)
            self.clock.advance(4.5)  # the last piece arrives at 9 s
        responses = yield client.wait_responses(1)
        self.assertEqual(responses[0].status, 200)

    @defer.inlineCallbacks
    def test_keepalive_head_counts_from_its_first_byte_after_an_idle_wait(self):
        """On a kept-alive connection the idle wait is timeout_keepalive's;
        the head then has timeout_http_request from its first byte."""
        client = yield self.connect(self.port)
        client.transport.write(HEAD)
        yield client.wait_responses(1)
        self.clock.advance(8)  # idle, under timeout_keepalive (10 s)
        yield self.send_at(client, HEAD[:10])
        self.clock.advance(8)  # 16 s after the exchange, 8 s into the head
        self.assertFalse(client.lost.called)
        yield self.send_at(client, HEAD[10:])
        responses = yield client.wait_responses(2)
        self.assertEqual([r.status for r in responses], [200, 200])

    @defer.inlineCallbacks
    def test_keepalive_slow_head_gets_408(self):
        client = yield self.connect(self.port)
        client.transport.write(HEAD)
        yield client.wait_responses(1)
        yield self.send_at(client, HEAD[:3])
        for i in range(3, 14):
            self.clock.advance(1)
            if client.lost.called:
                break
            yield self.send_at(client, HEAD[i:i + 1])
        yield client.lost
        self.assertIn(b"HTTP/1.1 408 ", client.received)
        self.assertEqual(len(self.member_factory.requests), 1)

    @defer.inlineCallbacks
    def test_empty_lines_do_not_keep_an_idle_connection_open(self):
        """Bytes that begin no request (CRLF) do not restart the keep-alive
        wait; the connection is closed silently at timeout_keepalive."""
        client = yield self.connect(self.port)
        client.transport.write(HEAD)
        yield client.wait_responses(1)
        before = client.received
        for _ in range(12):
            if client.lost.called:
                break
            yield self.send_at(client, b"\r\n")
            self.clock.advance(1)
        yield client.lost
        self.assertEqual(client.received, before)

    @defer.inlineCallbacks
    def test_a_silent_new_connection_is_closed_at_timeout_http_request(self):
        client = yield self.connect(self.port)
        yield self.wait_until(lambda: self.server_conn() is not None)
        self.clock.advance(9)
        self.assertFalse(client.lost.called)
        self.clock.advance(2)
        yield client.lost
        self.assertEqual(client.received, b"")  # no 408 to a pre-connected socket


class HeadDeadlineSettingTests(HTTPSiteMixin, TestCase):
    @defer.inlineCallbacks
    def test_the_key_sets_the_deadline(self):
        clock = Clock()
        mport, _ = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}", "timeout_http_request = 3s",
                               clock=clock)
        client = yield self.connect(port)
        client.transport.write(HEAD[:4])
        yield self.wait_until(lambda: self.service.connections and
                              next(iter(self.service.connections)).parser.in_head)
        clock.advance(2.5)
        self.assertFalse(client.lost.called)
        clock.advance(1)
        yield client.lost
        self.assertTrue(client.received.startswith(b"HTTP/1.1 408 "))

    def test_the_key_is_checked(self):
        from lbframe.config import parse_site
        from lbframe.errors import ConfigError
        from lbframe.plugins import load_plugins
        from lbframe.service import build_runtime

        text = ("[virtual v]\nlisten = tcp:0:interface=127.0.0.1\nprotocol = http\n"
                "pool = p\ntimeout_http_request = 0s\n[pool p]\nmember a = 127.0.0.1:1\n")
        with self.assertRaises(ConfigError) as caught:
            build_runtime(parse_site(text, "/tmp/site.ini"), load_plugins(entry_points=False),
                          Clock())
        self.assertIn("timeout_http_request", str(caught.exception))


class IdleMemoryTests(HTTPSiteMixin, TestCase):
    """A kept-alive connection waiting for its next request lets go of its
    parser (back to the server's pool) and its empty queue of exchanges,
    and serves the next request as before."""

    def setUp(self):
        self.clock = Clock()
        mport, self.member_factory = self.member()
        self.port = self.serve_http(f"member a = 127.0.0.1:{mport}", clock=self.clock)

    @defer.inlineCallbacks
    def test_an_idle_connection_rests_and_serves_the_next_request(self):
        client = yield self.connect(self.port)
        client.transport.write(HEAD)
        yield client.wait_responses(1)
        conn = next(iter(self.service.connections))
        self.assertIsNone(conn.parser)
        self.assertEqual(conn.exchanges, ())
        self.assertEqual(len(self.service.parsers), 1)
        self.clock.advance(self.service.idle_step * 2)
        self.assertIsNone(conn.parser)
        # The next request, in two pieces (the head spans the rest's end).
        client.transport.write(HEAD[:7])
        yield self.wait_until(lambda: conn.parser is not None)
        self.assertTrue(conn.parser.in_head)
        self.assertEqual(self.service.parsers, [])  # taken from the pool
        client.transport.write(HEAD[7:] + HEAD)
        responses = yield client.wait_responses(3)
        self.assertEqual([r.status for r in responses], [200, 200, 200])
        self.assertEqual(len(self.member_factory.requests), 3)
        # Two connections in turn share one parser.
        other = yield self.connect(self.port)
        other.transport.write(HEAD)
        responses = yield other.wait_responses(1)
        self.assertEqual(responses[0].status, 200)
        self.assertEqual(len(self.service.parsers), 1)

    @defer.inlineCallbacks
    def test_a_resting_connection_still_closes_at_timeout_keepalive(self):
        client = yield self.connect(self.port)
        client.transport.write(HEAD)
        yield client.wait_responses(1)
        self.assertIsNone(next(iter(self.service.connections)).parser)
        self.clock.advance(11)  # timeout_keepalive (10 s) passed
        yield client.lost

    @defer.inlineCallbacks
    def test_a_head_in_progress_is_kept(self):
        client = yield self.connect(self.port)
        client.transport.write(HEAD)
        yield client.wait_responses(1)
        conn = next(iter(self.service.connections))
        client.transport.write(HEAD[:7])
        yield self.wait_until(lambda: conn.parser is not None and conn.parser.in_head)
        self.clock.advance(self.service.idle_step * 2)
        self.assertIsNotNone(conn.parser)
        client.transport.write(HEAD[7:])
        responses = yield client.wait_responses(2)
        self.assertEqual(responses[1].status, 200)
