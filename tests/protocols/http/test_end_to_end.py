"""The http data path end to end: real sockets on 127.0.0.1."""

from __future__ import annotations

from twisted.internet import defer, protocol
from twisted.trial.unittest import TestCase

from tests.httpkit import HTTPSiteMixin

GET = b"GET /%s HTTP/1.1\r\nHost: example.test\r\n\r\n"


class KeepAliveTests(HTTPSiteMixin, TestCase):
    @defer.inlineCallbacks
    def test_request_reaches_member_with_forwarded_headers(self):
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.exchange(port, GET % b"x")
        self.assertEqual(client.responses[0].status, 200)
        self.assertEqual(member.requests, [
            b"GET /x HTTP/1.1\r\nHost: example.test\r\n"
            b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"])

    @defer.inlineCallbacks
    def test_forwarded_for_off_forwards_the_request_byte_for_byte(self):
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}", "forwarded_for = no")
        request = (b"POST /form?a=1 HTTP/1.1\r\nHost: h\r\nX-Odd-Case: MiXeD\r\n"
                   b"Content-Length: 5\r\n\r\nhello")
        client = yield self.exchange(port, request)
        self.assertEqual(member.requests, [request])
        self.assertEqual(client.responses[0].body, request)

    @defer.inlineCallbacks
    def test_client_x_forwarded_proto_is_replaced(self):
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        yield self.exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\n\r\n")
        self.assertNotIn(b"https", member.requests[0])
        self.assertIn(b"X-Forwarded-Proto: http\r\n", member.requests[0])

    @defer.inlineCallbacks
    def test_pipelined_requests_are_answered_in_order(self):
        # Member a answers by hand (late), b at once: the answers still come in order.
        aport, a = self.member("a", answer=lambda raw: b"")
        bport, b = self.member("b")
        port = self.serve_http(f"member a = 127.0.0.1:{aport}\nmember b = 127.0.0.1:{bport}")
        client = yield self.connect(port)
        client.transport.write(GET % b"1" + GET % b"2" + GET % b"3")
        yield self.wait_until(lambda: len(a.requests) == 1)
        # Request 2 must not have been answered before 1.
        self.assertEqual(client.responses, [])
        a.live[0].transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        responses = yield client.wait_responses(2)
        self.assertEqual(responses[0].body, b"first")
        self.assertIn(b"GET /2", responses[1].body)
        yield self.wait_until(lambda: len(a.requests) == 2)
        a.live[0].transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthird")
        responses = yield client.wait_responses(3)
        self.assertEqual([r.body[:5] for r in responses], [b"first", b"GET /", b"third"])

    @defer.inlineCallbacks
    def test_member_connections_are_reused_across_clients(self):
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        for i in range(5):
            client = yield self.exchange(port, GET % str(i).encode())
            client.transport.loseConnection()
            yield client.lost
        self.assertEqual(len(member.requests), 5)
        self.assertEqual(member.connections, 1)

    @defer.inlineCallbacks
    def test_member_close_of_an_idle_connection_is_noticed(self):
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        yield self.exchange(port, GET % b"1")
        member.live[0].transport.loseConnection()
        yield self.wait_until(lambda: self.service.idle.count == 0)
        client = yield self.exchange(port, GET % b"2")
        self.assertEqual(client.responses[0].status, 200)
        self.assertEqual(member.connections, 2)

    @defer.inlineCallbacks
    def test_http10_client_is_closed_after_its_response(self):
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.exchange(port, b"GET / HTTP/1.0\r\n\r\n")
        yield client.lost
        self.assertEqual(client.responses[0].status, 200)
        self.assertEqual(client.responses[0].header("connection"), "close")

    @defer.inlineCallbacks
    def test_http10_requests_reuse_member_connections(self):
        # A member as HTTP/1.0 wants it (nginx, Apache): it closes after a
        # 1.0 request unless that asks for keep-alive. ab -k's requests,
        # and plain 1.0 ones from other clients, share one member connection.
        def answer(raw):
            close = raw.startswith(b"GET /") and b" HTTP/1.0\r\n" in raw.split(b"\r\n")[0] + \
                b"\r\n" and b"connection: keep-alive" not in raw.lower()
            return (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n%s\r\nok"
                    % (b"Connection: close\r\n" if close else b""))
        mport, member = self.member(answer=answer)
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.connect(port)
        for i in range(3):
            client.transport.write(b"GET /%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % i)
            responses = yield client.wait_responses(i + 1)
            self.assertEqual(responses[i].header("connection"), "keep-alive")
        other = yield self.exchange(port, b"GET /plain HTTP/1.0\r\n\r\n")
        yield other.lost
        self.assertEqual(other.responses[0].header("connection"), "close")
        self.assertEqual(len(member.requests), 4)
        self.assertEqual(member.connections, 1)
        for raw in member.requests:
            self.assertEqual(raw.count(b"Connection:"), 1)
            self.assertIn(b"\r\nConnection: keep-alive\r\n", raw)

    @defer.inlineCallbacks
    def test_http10_request_without_member_keepalive_asks_for_nothing(self):
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}", "member_keepalive = 0")
        client = yield self.exchange(port, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.assertEqual(client.responses[0].status, 200)
        self.assertNotIn(b"Connection", member.requests[0])

    @defer.inlineCallbacks
    def test_connection_close_from_client_is_honoured(self):
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        yield client.lost
        self.assertNotIn(b"Connection: close", member.requests[0])  # hop-by-hop

    @defer.inlineCallbacks
    def test_head_response_has_no_body_and_connection_is_reused(self):
        def head_answer(raw):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        mport, member = self.member(answer=head_answer)
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.connect(port)
        client.transport.write(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
        yield self.wait_until(lambda: b"\r\n\r\n" in client.received)
        self.assertIn(b"Content-Length: 1000", client.received)
        self.assertTrue(client.received.endswith(b"\r\n\r\n"))
        yield self.wait_until(lambda: self.service.idle.count == 1)
        self.assertEqual(member.connections, 1)

    @defer.inlineCallbacks
    def test_204_and_304_have_no_body(self):
        answers = iter([b"HTTP/1.1 204 No Content\r\n\r\n",
                        b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
        mport, member = self.member(answer=lambda raw: next(answers))
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.connect(port)
        client.transport.write(GET % b"1" + GET % b"2" + GET % b"3")
        responses = yield client.wait_responses(3)
        self.assertEqual([r.status for r in responses], [204, 304, 200])
        self.assertEqual(responses[2].body, b"ok")
        self.assertEqual(member.connections, 1)

    @defer.inlineCallbacks
    def test_chunked_response_with_trailers_is_rechunked(self):
        answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                  b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n")
        mport, member = self.member(answer=lambda raw: answer)
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.exchange(port, GET % b"")
        self.assertEqual(client.responses[0].body, b"hello world")
        self.assertIn(b"X-Sum: 42\r\n", client.received)
        self.assertIn(b"Transfer-Encoding: chunked", client.received)

    @defer.inlineCallbacks
    def test_chunked_response_to_http10_client_is_close_delimited(self):
        answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        mport, member = self.member(answer=lambda raw: answer)
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.connect(port)
        client.transport.write(b"GET / HTTP/1.0\r\n\r\n")
        yield client.lost
        self.assertTrue(client.received.endswith(b"\r\n\r\nabc"), client.received)
        self.assertNotIn(b"chunked", client.received)

    @defer.inlineCallbacks
    def test_close_delimited_response_is_relayed_and_connection_closed(self):
        class CloseMember(protocol.Protocol):
            def dataReceived(self, data):
                self.transport.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
                self.transport.loseConnection()
        mport = self.listen_member(protocol.Factory.forProtocol(CloseMember))
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.connect(port)
        client.transport.write(GET % b"")
        yield client.lost
        self.assertTrue(client.received.endswith(b"\r\n\r\nuntil the end"))
        self.assertIn(b"Connection: close", client.received)

    @defer.inlineCallbacks
    def test_expect_100_continue(self):
        class ContinueMember(protocol.Protocol):
            def connectionMade(self):
                self.buf = b""

            def dataReceived(self, data):
                self.buf += data
                if self.buf.endswith(b"\r\n\r\n") and b"Expect" in self.buf:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if self.buf.endswith(b"payload"):
                    self.transport.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        mport = self.listen_member(protocol.Factory.forProtocol(ContinueMember))
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.connect(port)
        client.transport.write(b"PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                               b"Content-Length: 7\r\n\r\n")
        yield self.wait_until(lambda: b"100 Continue" in client.received)
        client.transport.write(b"payload")
        responses = yield client.wait_responses(1)
        self.assertEqual(responses[0].status, 201)


class ErrorTests(HTTPSiteMixin, TestCase):
    @defer.inlineCallbacks
    def test_no_member_up_is_503(self):
        port = self.serve_http("member a = 127.0.0.1:1")
        self.runtime.pools["p"].set_admin(self.runtime.pools["p"].members["a"], "disabled")
        client = yield self.exchange(port, GET % b"")
        self.assertEqual(client.responses[0].status, 503)

    @defer.inlineCallbacks
    def test_refused_member_is_retried_on_another(self):
        mport, member = self.member("b")
        port = self.serve_http(f"member a = 127.0.0.1:1\nmember b = 127.0.0.1:{mport}")
        statuses = []
        for i in range(4):
            client = yield self.exchange(port, GET % b"")
            statuses.append(client.responses[0].status)
        self.assertEqual(statuses, [200] * 4)
        self.assertGreaterEqual(self.runtime.pools["p"].members["a"].failures, 1)

    @defer.inlineCallbacks
    def test_member_closing_before_answering_is_502(self):
        class Rude(protocol.Protocol):
            def dataReceived(self, data):
                self.transport.loseConnection()
        mport = self.listen_member(protocol.Factory.forProtocol(Rude))
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.exchange(port, GET % b"")
        self.assertEqual(client.responses[0].status, 502)

    @defer.inlineCallbacks
    def test_malformed_response_is_502_and_not_relayed(self):
        mport, member = self.member(answer=lambda raw: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                                       b"Content-Length: 3\r\n\r\nabc")
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.exchange(port, GET % b"")
        self.assertEqual(client.responses[0].status, 502)
        self.assertNotIn(b"abc", client.received)

    @defer.inlineCallbacks
    def test_member_dying_mid_response_closes_the_client_cleanly(self):
        class Dies(protocol.Protocol):
            def dataReceived(self, data):
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                self.transport.loseConnection()
        mport = self.listen_member(protocol.Factory.forProtocol(Dies))
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.connect(port)
        client.transport.write(GET % b"")
        yield client.lost
        self.assertTrue(client.received.endswith(b"partial"))
        self.assertEqual(self.runtime.pools["p"].members["a"].active, 0)

    @defer.inlineCallbacks
    def test_silent_member_is_504_after_timeout_server(self):
        from twisted.internet.task import Clock
        clock = Clock()
        mport, member = self.member(answer=lambda raw: b"")
        port = self.serve_http(f"member a = 127.0.0.1:{mport}", "timeout_server = 8s",
                               clock=clock)
        client = yield self.connect(port)
        client.transport.write(GET % b"")
        yield self.wait_until(lambda: len(member.requests) == 1)
        clock.advance(6)
        self.assertEqual(client.received, b"")
        for _ in range(4):
            clock.advance(1)
        responses = yield client.wait_responses(1)
        self.assertEqual(responses[0].status, 504)

    @defer.inlineCallbacks
    def test_partial_head_gets_408_after_timeout_client(self):
        from twisted.internet.task import Clock
        clock = Clock()
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}", "timeout_client = 4s",
                               clock=clock)
        client = yield self.connect(port)
        client.transport.write(b"GET / HTTP/1.1\r\nHo")
        yield self.wait_until(lambda: self.service.connections and
                              next(iter(self.service.connections)).parser.in_head)
        for _ in range(6):
            clock.advance(1)
        yield client.lost
        self.assertIn(b"408", client.received.split(b"\r\n")[0])
        self.assertEqual(member.received, b"")

    @defer.inlineCallbacks
    def test_idle_keepalive_connection_is_closed_silently(self):
        from twisted.internet.task import Clock
        clock = Clock()
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}", "timeout_keepalive = 3s",
                               clock=clock)
        client = yield self.exchange(port, GET % b"")
        before = client.received
        for _ in range(5):
            clock.advance(1)
        yield client.lost
        self.assertEqual(client.received, before)


class SorryAndRulesTests(HTTPSiteMixin, TestCase):
    @defer.inlineCallbacks
    def test_sorry_page_with_status_and_retry_after(self):
        page = self.tempfile()
        with open(page, "w") as f:
            f.write("<h1>back soon</h1>")
        port = self.serve_http("member a = 127.0.0.1:1",
                               f"sorry = page:{page}\nsorry_status = 503\nretry_after = 120")
        self.runtime.pools["p"].set_admin(self.runtime.pools["p"].members["a"], "disabled")
        client = yield self.exchange(port, GET % b"")
        response = client.responses[0]
        self.assertEqual(response.status, 503)
        self.assertEqual(response.body, b"<h1>back soon</h1>")
        self.assertEqual(response.header("retry-after"), "120")
        self.assertTrue(response.header("content-type").startswith("text/html"))

    @defer.inlineCallbacks
    def test_sorry_pool(self):
        sport, sorry = self.member("sorry")
        port = self.serve_http("member a = 127.0.0.1:1", "sorry = s",
                               more=f"[pool s]\nmember x = 127.0.0.1:{sport}")
        self.runtime.pools["p"].set_admin(self.runtime.pools["p"].members["a"], "disabled")
        client = yield self.exchange(port, GET % b"")
        self.assertEqual(client.responses[0].header("x-member"), "sorry")

    @defer.inlineCallbacks
    def test_rules_route_by_path_header_and_cookie(self):
        web, _ = self.member("web")
        cgi, _ = self.member("cgi")
        mobile, _ = self.member("mobile")
        beta, _ = self.member("beta")
        port = self.serve_http(
            f"member a = 127.0.0.1:{web}", "rules = cgi mobile beta",
            more=f"""
[pool cgi]
member c = 127.0.0.1:{cgi}
[pool mobile]
member m = 127.0.0.1:{mobile}
[pool beta]
member b = 127.0.0.1:{beta}
[rule cgi]
match = path $= .cgi
pool = cgi
[rule mobile]
match = header:User-Agent ~ Mobile
pool = mobile
[rule beta]
match = cookie:channel = beta
pool = beta
""")
        cases = [
            (b"GET /index.html HTTP/1.1\r\nHost: h\r\n\r\n", "web"),
            (b"GET /app/run.cgi?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", "cgi"),
            (b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: Foo Mobile/1\r\n\r\n", "mobile"),
            (b"GET /run.cgi HTTP/1.1\r\nHost: h\r\nUser-Agent: Mobile\r\n\r\n", "cgi"),
            (b"GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; channel=beta\r\n\r\n", "beta"),
        ]
        for request, expected in cases:
            client = yield self.exchange(port, request)
            self.assertEqual(client.responses[0].header("x-member"), expected, request)

    @defer.inlineCallbacks
    def test_access_log_line_per_request(self):
        log_path = self.tempfile()
        mport, member = self.member()
        port = self.serve_http(f"member a = 127.0.0.1:{mport}", lbframe_lines=f"access_log = {log_path}")
        yield self.exchange(port, GET % b"logged" + GET % b"again", count=2)
        self.service.access_log.file.flush()
        with open(log_path) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertIn("virtual=v", lines[0])
        self.assertIn("pool=p member=a method=GET target=/logged", lines[0])
        self.assertIn("status=200", lines[0])
        self.assertIn("total_ms=", lines[0])


class AdmissionTests(HTTPSiteMixin, TestCase):
    @defer.inlineCallbacks
    def one_waiting(self, queue_timeout: str = "10s", clock=None):
        """Member ``a`` (maxconn=1, never answering by itself) busy with a
        first client's request, a second client's request in the queue."""
        mport, member = self.member(answer=lambda raw: b"")
        port = self.serve_http(f"member a = 127.0.0.1:{mport} maxconn=1\n"
                               f"queue_timeout = {queue_timeout}", clock=clock)
        first = yield self.connect(port)
        first.transport.write(GET % b"1")
        yield self.wait_until(lambda: len(member.requests) == 1)
        second = yield self.connect(port)
        second.transport.write(GET % b"2")
        yield self.wait_until(lambda: len(self.runtime.pools["p"].queue) == 1)
        return member, first, second

    @defer.inlineCallbacks
    def test_request_waits_for_a_member_under_maxconn_then_is_served(self):
        member, first, second = yield self.one_waiting()
        self.assertEqual(len(member.requests), 1)
        member.live[0].transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        yield first.wait_responses(1)
        yield self.wait_until(lambda: len(member.requests) == 2)
        self.assertIn(b"GET /2", member.requests[1])
        self.assertEqual(len(self.runtime.pools["p"].queue), 0)

    @defer.inlineCallbacks
    def test_queue_timeout_is_503(self):
        from twisted.internet.task import Clock
        clock = Clock()
        member, first, second = yield self.one_waiting("3s", clock)
        clock.advance(3)
        responses = yield second.wait_responses(1)
        self.assertEqual(responses[0].status, 503)
        self.assertEqual(len(member.requests), 1)

    @defer.inlineCallbacks
    def test_client_leaving_the_queue_is_forgotten(self):
        member, first, second = yield self.one_waiting()
        second.transport.loseConnection()
        yield self.wait_until(lambda: len(self.runtime.pools["p"].queue) == 0)
        self.assertEqual(self.runtime.pools["p"].members["a"].active, 1)

    @defer.inlineCallbacks
    def test_client_leaving_mid_upload_frees_the_member(self):
        mport, member = self.member(answer=lambda raw: b"")
        port = self.serve_http(f"member a = 127.0.0.1:{mport}")
        client = yield self.connect(port)
        client.transport.write(b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\nhalf")
        yield self.wait_until(lambda: member.received.endswith(b"half"))
        client.transport.abortConnection()
        yield self.wait_until(lambda: not member.live)  # the member connection is closed
        pool = self.runtime.pools["p"]
        self.assertEqual(pool.members["a"].active, 0)
        self.assertEqual(self.runtime.virtuals["v"].active, 0)
        self.assertEqual(self.service.idle.count, 0)
