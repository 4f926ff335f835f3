"""What a member may send and when: a switch of protocols only when asked,
nothing after a response, and the keep-alive race (a member closing a
kept-alive connection as the next request goes out). Real sockets on
127.0.0.1."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbframe.messages import RequestHead, ResponseHead
from lbframe.protocols.http.exchange import switch_refused
from tests.httpkit import HTTPSiteMixin

GET = b"GET /%s HTTP/1.1\r\nHost: example.test\r\n\r\n"


class LogMixin:
    """The warnings logged during a test, as text."""

    def watch_log(self):
        self.events: list = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def warnings(self, *words: str) -> list[str]:
        lines = [formatEvent(e) for e in self.events
                 if e.get("log_namespace") in ("lbframe.http", "lbframe")
                 and e.get("log_level") is not None and e["log_level"].name == "warn"]
        return [line for line in lines if all(w in line for w in words)]


class Scripted(protocol.Protocol):
    """A member that reads requests (head and Content-Length body) and
    answers each with ``factory.script(conn_number, request_number, raw)``:
    bytes to write, or "fin" / "rst" to close without answering."""

    def connectionMade(self):
        factory = self.factory
        factory.connections += 1
        factory.live.append(self)
        self.number = factory.connections
        self.seen = 0
        self.buf = b""

    def connectionLost(self, reason):
        if self in self.factory.live:
            self.factory.live.remove(self)

    def dataReceived(self, data):
        self.buf += data
        self.factory.received.append((self.number, data))
        while b"\r\n\r\n" in self.buf:
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            raw = head + b"\r\n\r\n" + rest[:length]
            self.buf = rest[length:]
            self.seen += 1
            self.factory.requests.append((self.number, raw))
            answer = self.factory.script(self.number, self.seen, raw)
            if answer == "fin":
                self.transport.loseConnection()
                return
            if answer == "rst":
                self.transport.abortConnection()
                return
            self.transport.write(answer)


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


class ScriptedFactory(protocol.Factory):
    protocol = Scripted
    noisy = False

    def __init__(self, script):
        self.script = script
        self.connections = 0
        self.received: list = []
        self.requests: list = []
        self.live: list = []


class MemberSiteMixin(HTTPSiteMixin, LogMixin):
    def scripted(self, script, pool_lines: str = "", virtual_lines: str = ""):
        factory = ScriptedFactory(script)
        mport = self.listen_member(factory)
        self.addCleanup(lambda: [m.transport.abortConnection() for m in list(factory.live)])
        port = self.serve_http(f"member a = 127.0.0.1:{mport}\n{pool_lines}", virtual_lines)
        self.watch_log()
        return port, factory


# -- 3. 101 only when asked, only to what was offered ------------------------------

def _request(*headers):
    return RequestHead("GET", "/", "1.1", [(b"Host", b"h"), *headers])


def _switch(*headers):
    return ResponseHead(101, "Switching Protocols", "1.1", list(headers))


class SwitchRuleTests(SynchronousTestCase):
    def test_offered_protocol_may_be_chosen(self):
        request = _request((b"Connection", b"keep-alive, Upgrade"),
                           (b"Upgrade", b"h2c, WebSocket"))
        self.assertIsNone(switch_refused(request, _switch((b"Upgrade", b"websocket"))))

    def test_request_without_upgrade_is_never_switched(self):
        self.assertIn("asked for no upgrade",
                      switch_refused(_request(), _switch((b"Upgrade", b"websocket"))))

    def test_upgrade_without_connection_upgrade_is_not_an_offer(self):
        self.assertIn("asked for no upgrade", switch_refused(
            _request((b"Upgrade", b"websocket")), _switch((b"Upgrade", b"websocket"))))

    def test_protocol_not_offered_or_not_named_is_refused(self):
        request = _request((b"Connection", b"upgrade"), (b"Upgrade", b"websocket"))
        self.assertIn("not offered", switch_refused(request, _switch((b"Upgrade", b"h2c"))))
        self.assertIn("not offered", switch_refused(
            request, _switch((b"Upgrade", b"websocket, h2c"))))
        self.assertIn("without an Upgrade", switch_refused(request, _switch()))


class EchoAfterSwitch(protocol.Protocol):
    """Answers the first request with ``factory.answer``, then echoes
    everything it gets (a tunnel, if the proxy opened one)."""

    def connectionMade(self):
        self.factory.live.append(self)
        self.switched = False

    def dataReceived(self, data):
        self.factory.received += data
        if self.switched:
            self.transport.write(b"ECHO:" + data)
        elif b"\r\n\r\n" in self.factory.received:
            self.switched = True
            self.transport.write(self.factory.answer)


class SwitchTests(HTTPSiteMixin, LogMixin, TestCase):
    @defer.inlineCallbacks
    def _switch(self, request: bytes, answer: bytes):
        factory = protocol.Factory.forProtocol(EchoAfterSwitch)
        factory.answer, factory.received, factory.live = answer, b"", []
        port = self.serve_http(f"member a = 127.0.0.1:{self.listen_member(factory)}")
        self.addCleanup(lambda: [m.transport.abortConnection() for m in factory.live])
        self.watch_log()
        client = yield self.connect(port)
        client.transport.write(request)
        yield self.wait_until(lambda: client.received)
        # Sent after the answer: a tunnel would relay it raw to the member.
        client.transport.write(b"RAW BYTES, NOT HTTP\r\n\r\n")
        yield self.wait_until(lambda: client.lost.called or b"ECHO:" in client.received)
        return client, factory

    @defer.inlineCallbacks
    def test_101_to_a_plain_get_is_502_and_no_tunnel(self):
        client, member = yield self._switch(
            GET % b"plain", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            b"Connection: Upgrade\r\n\r\n")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 502 "), client.received)
        self.assertNotIn(b"101", client.received)
        self.assertNotIn(b"RAW", member.received)
        self.assertNotIn(b"ECHO", client.received)
        self.assertTrue(client.lost.called)
        self.assertEqual(len(self.warnings("member p/a", "asked for no upgrade")), 1)
        yield self.wait_until(lambda: not member.live[0].transport.connected)

    @defer.inlineCallbacks
    def test_101_to_a_protocol_not_offered_is_502(self):
        client, member = yield self._switch(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 502 "), client.received)
        self.assertNotIn(b"RAW", member.received)
        self.assertEqual(len(self.warnings("member p/a", "'h2c', not offered")), 1)

    @defer.inlineCallbacks
    def test_101_to_the_offered_protocol_still_tunnels(self):
        client, member = yield self._switch(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 101 "))
        self.assertIn(b"ECHO:RAW BYTES", client.received)
        self.assertEqual(self.warnings(), [])


# -- 4. nothing after a complete response ---------------------------------------

class UnsolicitedTests(MemberSiteMixin, TestCase):
    @defer.inlineCallbacks
    def _extra(self, extra: bytes, pipelined: bool):
        def script(conn, number, raw):
            if conn == 1 and number == 1:
                return ok(b"first") + extra
            return ok(b"conn %d request %d" % (conn, number))
        port, member = self.scripted(script)
        client = yield self.connect(port)
        client.transport.write(GET % b"1" + (GET % b"2" if pipelined else b""))
        responses = yield client.wait_responses(2 if pipelined else 1)
        self.assertEqual(responses[0].body, b"first")
        if not pipelined:
            client.transport.write(GET % b"2")
            responses = yield client.wait_responses(2)
        # The second request got its own answer, on a new connection.
        self.assertEqual([r.status for r in responses], [200, 200])
        self.assertEqual(responses[1].body, b"conn 2 request 1")
        self.assertNotIn(b"junk", client.received)
        self.assertEqual(len(self.warnings("member p/a", "after its complete response")), 1)
        self.assertEqual(self.service.idle.count, 1)  # only connection 2 is kept
        yield self.wait_until(lambda: len(member.live) == 1)

    def test_junk_after_response(self):
        return self._extra(b"junk junk junk", pipelined=False)

    def test_junk_after_response_with_a_pipelined_request(self):
        return self._extra(b"junk junk junk", pipelined=True)

    def test_second_response_after_response(self):
        return self._extra(ok(b"junk: a second response"), pipelined=False)

    def test_second_response_with_a_pipelined_request(self):
        return self._extra(ok(b"junk: a second response"), pipelined=True)

    @defer.inlineCallbacks
    def test_bytes_on_an_idle_connection_close_it(self):
        port, member = self.scripted(lambda conn, number, raw: ok(b"conn %d" % conn))
        client = yield self.exchange(port, GET % b"1")
        self.assertEqual(self.service.idle.count, 1)
        member.live[0].transport.write(ok(b"junk nobody asked for"))
        yield self.wait_until(lambda: self.service.idle.count == 0 and not member.live)
        client.transport.write(GET % b"2")
        responses = yield client.wait_responses(2)
        self.assertEqual(responses[1].body, b"conn 2")
        self.assertEqual(len(self.warnings("member p/a", "on an idle connection")), 1)


class ParserAfterResponseTests(SynchronousTestCase):
    """ResponseParser: what follows a complete response is counted in
    ``extra``, never parsed as a response, and ``end`` comes after the
    whole read was looked at (so the data path knows before it ends)."""

    def _feed(self, *pieces, method="GET", clear_sink=False):
        from lbframe.protocols.http.parser import ResponseParser
        from tests.protocols.http.test_parser import Recorder

        sink = Recorder()
        parser = ResponseParser(sink)
        parser.expect(method)
        seen_at_end = []
        if clear_sink:
            # As the data path does: the exchange ends in ``end`` and lets go.
            def end(trailers, record=sink.end):
                record(trailers)
                seen_at_end.append(parser.extra)
                parser.sink = None
            sink.end = end
        for piece in pieces:
            parser.feed(piece)
        return [e[0] for e in sink.events], parser.extra, seen_at_end

    def test_second_response_in_the_same_read_is_not_parsed(self):
        events, extra, seen = self._feed(ok(b"one") + ok(b"two"), clear_sink=True)
        self.assertEqual(events, ["response", "body", "end"])
        self.assertGreater(extra, 0)
        self.assertEqual(seen, [extra])  # known when ``end`` came

    def test_junk_in_the_same_read_or_later(self):
        for pieces in ([ok(b"one") + b"junk"], [ok(b"one"), b"junk"],
                       [b"HTTP/1.1 204 No Content\r\n\r\njunk"]):
            events, extra, _ = self._feed(*pieces, clear_sink=True)
            self.assertEqual(events[-1], "end", pieces)
            self.assertGreater(extra, 0, pieces)

    def test_empty_lines_after_a_response_are_let_pass(self):
        self.assertEqual(self._feed(ok(b"one") + b"\r\n")[1], 0)
        self.assertEqual(self._feed(ok(b"one"), b"\r\n")[1], 0)

    @settings(max_examples=100, deadline=None, database=None)
    @given(st.sampled_from([ok(b"one"), b"HTTP/1.1 204 No Content\r\n\r\n",
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"3\r\none\r\n0\r\n\r\n"]),
           st.binary(min_size=1, max_size=40), st.integers(0, 40))
    def test_whatever_follows_is_never_an_event(self, response, junk, cut):
        raw = response + junk
        cut = len(response) + min(cut, len(junk))
        for pieces in ([raw], [raw[:cut], raw[cut:]]):
            events, extra, seen = self._feed(*pieces, clear_sink=True)
            self.assertEqual(events, self._feed(response)[0], pieces)
            if junk.strip(b"\r\n"):
                self.assertGreater(extra, 0, pieces)
            else:
                self.assertEqual(extra, 0, pieces)  # only empty lines

    def test_body_to_head_is_extra_however_the_head_is_split(self):
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"
        self.assertEqual(self._feed(head[:-1], head[-1:], method="HEAD")[1], 0)
        self.assertGreater(self._feed(head + b"abc", method="HEAD")[1], 0)


# -- 11. the keep-alive race ---------------------------------------------------------

def closes_second(how: str):
    """Connection 1 answers its first request, then closes (``how``) when
    the second arrives; later connections answer everything."""
    def script(conn, number, raw):
        if conn == 1 and number == 2:
            return how
        return ok(b"conn %d request %d %s" % (conn, number, raw.split(b"\r\n\r\n", 1)[1]))
    return script


class KeepAliveRaceTests(MemberSiteMixin, TestCase):
    @defer.inlineCallbacks
    def _second(self, script, request: bytes):
        port, member = self.scripted(script)
        client = yield self.connect(port)
        client.transport.write(GET % b"1")
        yield client.wait_responses(1)
        client.transport.write(request)
        responses = yield client.wait_responses(2)
        return client, responses, member

    @defer.inlineCallbacks
    def test_get_is_resent_when_the_member_closes(self):
        for how in ("fin", "rst"):
            client, responses, member = yield self._second(closes_second(how), GET % b"2")
            self.assertEqual([r.status for r in responses], [200, 200], how)
            self.assertEqual(responses[1].body, b"conn 2 request 1 ", how)
            self.assertEqual(self.warnings(), [], how)
            yield self.service.stopService()

    @defer.inlineCallbacks
    def test_put_with_a_body_is_resent_whole(self):
        put = b"PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world"
        client, responses, member = yield self._second(closes_second("rst"), put)
        self.assertEqual(responses[1].status, 200)
        self.assertEqual(responses[1].body, b"conn 2 request 1 hello world")

    @defer.inlineCallbacks
    def test_chunked_put_is_resent_whole(self):
        def script(conn, number, raw):
            if conn == 1 and number == 2:
                return "fin"
            return ok(b"conn %d" % conn)
        port, member = self.scripted(script)
        client = yield self.connect(port)
        client.transport.write(GET % b"1")
        yield client.wait_responses(1)
        client.transport.write(b"PUT /f HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"5\r\nhello\r\n0\r\n\r\n")
        # The scripted member reads heads only: the chunked body follows the
        # head on connection 2 in full.
        yield self.wait_until(lambda: member.connections == 2 and
                              b"0\r\n\r\n" in b"".join(d for n, d in member.received if n == 2))
        self.assertIn(b"5\r\nhello\r\n0\r\n\r\n",
                      b"".join(d for n, d in member.received if n == 2))

    @defer.inlineCallbacks
    def test_body_still_arriving_is_resent_in_order(self):
        # Connection 1 dies on the first bytes of the PUT; the rest of the
        # body arrives while (or after) connection 2 is opened.
        class Member(protocol.Protocol):
            def connectionMade(self):
                factory.connections += 1
                self.number, self.got = factory.connections, b""

            def dataReceived(self, data):
                self.got += data
                factory.got[self.number] = self.got
                if self.number == 1 and self.got.startswith(b"GET"):
                    if self.got.endswith(b"\r\n\r\n"):
                        self.got = b""
                        self.transport.write(ok(b"first"))
                elif self.number == 1:
                    self.transport.abortConnection()
                elif self.got.endswith(b"world"):
                    self.transport.write(ok(self.got.split(b"\r\n\r\n", 1)[1]))
        factory = protocol.Factory.forProtocol(Member)
        factory.connections, factory.got = 0, {}
        port = self.serve_http(f"member a = 127.0.0.1:{self.listen_member(factory)}")
        client = yield self.connect(port)
        client.transport.write(GET % b"1")
        yield client.wait_responses(1)
        client.transport.write(b"PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello")
        yield self.wait_until(lambda: b"hello" in factory.got.get(2, b""))
        client.transport.write(b" world")
        responses = yield client.wait_responses(2)
        self.assertEqual(responses[1].body, b"hello world")

    @defer.inlineCallbacks
    def test_post_that_was_sent_is_502_not_resent(self):
        post = b"POST /pay HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        for how in ("fin", "rst"):
            client, responses, member = yield self._second(closes_second(how), post)
            self.assertEqual([r.status for r in responses], [200, 502], how)
            self.assertEqual(member.connections, 1, how)  # never sent twice
            self.assertEqual(len(self.warnings("member p/a", "POST", "not resent")), 1, how)
            self.events.clear()
            yield self.service.stopService()

    @defer.inlineCallbacks
    def test_resent_once_at_most(self):
        def script(conn, number, raw):
            return ok(b"first") if (conn, number) == (1, 1) else "fin"
        client, responses, member = yield self._second(script, GET % b"2")
        self.assertEqual(responses[1].status, 502)
        self.assertEqual(member.connections, 2)
        self.assertEqual(len(member.requests), 3)
        self.assertEqual(len(self.warnings("member p/a", "before answering")), 1)

    @defer.inlineCallbacks
    def test_long_body_is_not_held_nor_resent(self):
        from lbframe.protocols.http.exchange import MAX_REPLAY
        body = b"x" * (MAX_REPLAY + 1)
        put = b"PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        client, responses, member = yield self._second(closes_second("fin"), put)
        self.assertEqual(responses[1].status, 502)
        self.assertEqual(member.connections, 1)
        self.assertEqual(len(self.warnings("member p/a", "PUT", "not resent")), 1)

    @defer.inlineCallbacks
    def test_idle_connection_found_closed_is_not_used(self):
        # The member closed it and its FIN is on our socket, not yet read by
        # the reactor: handing it out would lose the request.
        port, member = self.scripted(lambda conn, number, raw: ok(b"conn %d" % conn))
        yield self.exchange(port, GET % b"1")
        idle = self.service.idle
        [(key, conns)] = list(idle.idle.items())
        member.live[0].transport.socket.shutdown(socket.SHUT_RDWR)
        # Wait without the reactor (it would read the FIN itself).
        sock = conns[0].transport.socket
        self.assertEqual(select.select([sock], [], [], 2.0)[0], [sock])
        self.assertIsNone(idle.acquire(key))
        self.assertEqual(idle.count, 0)

    @defer.inlineCallbacks
    def test_idle_connection_with_unread_bytes_is_not_used(self):
        # Bytes nobody asked for, not read by the reactor yet: used, they
        # would be taken for the answer to the next request.
        port, member = self.scripted(lambda conn, number, raw: ok(b"conn %d" % conn))
        yield self.exchange(port, GET % b"1")
        idle = self.service.idle
        [(key, conns)] = list(idle.idle.items())
        member.live[0].transport.socket.send(ok(b"junk"))
        sock = conns[0].transport.socket
        self.assertEqual(select.select([sock], [], [], 2.0)[0], [sock])
        self.assertIsNone(idle.acquire(key))
        self.assertEqual(len(self.warnings("member p/a", "on an idle connection")), 1)


# -- the same race with a real nginx, reloaded under load --------------------------

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout 60s;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "nginx\\n"; }}
    }}
}}
"""


class Looping(protocol.Protocol):
    """A client that sends GETs one after the other on one connection and
    counts what comes back, until told to stop."""

    def __init__(self, tally):
        self.tally = tally
        self.buf = b""
        self.stopped = False

    def connectionMade(self):
        self.transport.write(GET % b"n")

    def dataReceived(self, data):
        self.buf += data
        while b"nginx\n" in self.buf or b"\r\n\r\n" in self.buf:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if not sep:
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buf = rest[length:]
            self.tally.append(int(head.split(b" ", 2)[1]))
            if self.stopped:
                self.transport.loseConnection()
                return
            self.transport.write(GET % b"n")

    def connectionLost(self, reason):
        if not self.stopped:
            self.tally.append("closed")


class NginxReloadTests(HTTPSiteMixin, LogMixin, TestCase):
    """nginx closes every idle kept-alive connection of its old workers on
    a reload; requests under way at that moment must still get an answer."""

    if NGINX is None:
        skip = "nginx is not installed (apt-get install nginx-light)"

    @defer.inlineCallbacks
    def test_reloads_under_load_lose_no_request(self):
        from twisted.internet import reactor, task
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        from tests.helpers import free_port

        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        port = free_port()
        user = "user root root;" if os.geteuid() == 0 else ""
        with open(os.path.join(work, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(dir=work, port=port, user=user))
        nginx = subprocess.Popen([NGINX, "-p", work, "-c", os.path.join(work, "nginx.conf"),
                                  "-e", os.path.join(work, "error.log")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (nginx.terminate(), nginx.wait(10)))
        yield self.wait_until(lambda: _listening(port), 10)
        lb = self.serve_http(f"member n = 127.0.0.1:{port}")
        self.watch_log()
        tally: list = []
        clients = []
        for _ in range(8):
            client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", lb),
                                           Looping(tally))
            clients.append(client)
        for _ in range(4):  # bounded: four reloads, 0.4 s apart
            yield task.deferLater(reactor, 0.4, lambda: None)
            nginx.send_signal(signal.SIGHUP)
        yield task.deferLater(reactor, 0.4, lambda: None)
        for client in clients:
            client.stopped = True
        yield self.wait_until(lambda: all(not c.transport.connected for c in clients), 10)
        answers = len(tally)
        self.assertEqual(tally.count("closed"), 0, f"closed without an answer ({answers} answers)")
        self.assertEqual(set(tally), {200})
        self.assertGreater(answers, 100)
        self.assertEqual(self.warnings(), [])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
