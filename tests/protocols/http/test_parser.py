"""Unit tests of lbframe/protocols/http/parser.py: the malformed corpus of
tests.protocols.http.test_strict at parser level, and hypothesis properties (no
exception but HTTPError on any input, generated valid messages parse to what
was generated, the events do not depend on how the bytes are split)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lbframe.protocols.http.parser import (MAX_HEAD_SIZE, MAX_REQUEST_LINE, READ_SLACK,
                                           HTTPError, RequestParser, ResponseParser)
from tests.protocols.http.test_strict import BAD_RESPONSES, CORPUS, _names, _values

_SETTINGS = settings(max_examples=100, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Recorder:
    """A sink for both parsers: every event, body pieces joined."""

    def __init__(self):
        self.events: list = []

    def _add(self, event):
        self.events.append(event)

    def request(self, head, keep_alive, has_body):
        self._add(("request", head.method, head.target, head.version, tuple(head.headers),
                   keep_alive, has_body))

    def response(self, head, keep_alive, framing):
        self._add(("response", head.status, head.reason, head.version, tuple(head.headers),
                   keep_alive, framing))

    def informational(self, head):
        self._add(("informational", head.status, tuple(head.headers)))

    def body(self, data):
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)
        else:
            self._add(("body", data))

    def end(self, trailers):
        self._add(("end", tuple(trailers)))

    def upgrade(self, rest):
        self._add(("upgrade", rest))


def run(parser_class, pieces, expect=None, **kwargs):
    """Feed ``pieces`` one by one; returns (events, error status or None).
    After an upgrade the rest of the input is added to the upgrade event, as
    the data path hands it to the tunnel."""
    sink = Recorder()
    parser = parser_class(sink, **kwargs)
    if expect is not None:
        parser.expect(expect)
    status = None
    for i, piece in enumerate(pieces):
        try:
            parser.feed(piece)
        except HTTPError as e:
            status = e.status
            break
        if sink.events and sink.events[-1][0] == "upgrade":
            sink.events[-1] = ("upgrade", sink.events[-1][1] + b"".join(pieces[i + 1:]))
            break
    return sink.events, status


def splits(data: bytes):
    """A strategy: ``data`` cut at random points."""
    return st.lists(st.integers(0, len(data)), max_size=12).map(
        lambda cuts: [data[a:b] for a, b in zip([0] + sorted(cuts), sorted(cuts) + [len(data)])])


# -- the corpus ---------------------------------------------------------------

#: name -> bug, for entries that fail today (none since fdb0e46, which fixed
#: 'Transfer-Encoding: chunked<TAB>' announced to the sink before llhttp refused it)
_HEAD_TODO: dict = {}


class CorpusTests(SynchronousTestCase):
    """Each malformed request of the end-to-end corpus, at parser level: the
    status, and for errors in the head no request announced to the sink."""


def _corpus_test(name, request, status, where):
    def test(self):
        for pieces in ([request], [request[i:i + 1] for i in range(len(request))]):
            events, got = run(RequestParser, pieces)
            self.assertEqual(got, status, (name, events))
            if where == "head":
                self.assertEqual(events, [], name)
            else:
                self.assertEqual([e[0] for e in events if e[0] != "body"], ["request"], name)
    test.__name__ = f"test_{name}"
    if name in _HEAD_TODO:
        test.todo = _HEAD_TODO[name]
    return test


for _entry in CORPUS:
    setattr(CorpusTests, f"test_{_entry[0]}", _corpus_test(*_entry))


class ResponseCorpusTests(SynchronousTestCase):
    def test_every_malformed_response_is_a_502(self):
        for name, answer, where in BAD_RESPONSES:
            if name == "te_trailing_tab":
                continue  # test_trailing_tab_in_response_te below
            events, status = run(ResponseParser, [answer], expect="GET")
            self.assertEqual(status, 502, (name, events))
            self.assertNotIn(b"SECRET", b"".join(e[1] for e in events if e[0] == "body"), name)
            if where == "head":
                self.assertEqual(events, [], name)

    def test_trailing_tab_in_response_te(self):
        answer = dict((n, a) for n, a, _ in BAD_RESPONSES)["te_trailing_tab"]
        events, status = run(ResponseParser, [answer], expect="GET")
        self.assertEqual(status, 502, events)
        self.assertEqual(events, [])



# -- specific checks --------------------------------------------------------------

class LimitTests(SynchronousTestCase):
    def test_request_line_limit(self):
        for limit in (256, 1024, MAX_REQUEST_LINE):
            ok = b"GET /" + b"a" * (limit - 1) + b" HTTP/1.1\r\nHost: h\r\n\r\n"
            self.assertEqual(run(RequestParser, [ok], max_request_line=limit)[1], None)
            long = b"GET /" + b"a" * limit + b" HTTP/1.1\r\nHost: h\r\n\r\n"
            self.assertEqual(run(RequestParser, [long], max_request_line=limit)[1], 414)
            # Byte by byte: the same, without waiting for the end of the line.
            events, status = run(RequestParser, [b"GET /"] + [b"a"] * (limit + 10),
                                 max_request_line=limit)
            self.assertEqual((events, status), ([], 414))

    def test_head_size_limit(self):
        pad = b"X-Pad: " + b"v" * 1000 + b"\r\n"
        ok = b"GET / HTTP/1.1\r\nHost: h\r\n" + pad * 3 + b"\r\n"
        self.assertEqual(run(RequestParser, [ok], max_head=4096)[1], None)
        big = b"GET / HTTP/1.1\r\nHost: h\r\n" + pad * 5 + b"\r\n"
        self.assertEqual(run(RequestParser, [big], max_head=4096), ([], 431))
        default = b"GET / HTTP/1.1\r\nHost: h\r\n" + pad * 40 + b"\r\n"
        self.assertEqual(run(RequestParser, [default])[1], 431)
        self.assertEqual(run(RequestParser, [b"GET / HTTP/1.1\r\nHost: h\r\n" + pad * 30 +
                                             b"\r\n"])[1], None)

    def test_reason_phrase_in_pieces_counts_as_whole(self):
        """The status line's fixed part counts once, however many reads the
        reason phrase takes (fuzz/corpus/http_response/fixed-reason-pieces-431)."""
        response = b"HTTP/1.1 200 " + b"r" * 300 + b"\r\nContent-Length: 0\r\n\r\n"
        whole = run(ResponseParser, [response], expect="GET", max_head=512)
        self.assertIsNone(whole[1])
        pieces = [response[i:i + 1] for i in range(len(response))]
        self.assertEqual(run(ResponseParser, pieces, expect="GET", max_head=512), whole)

    def test_member_head_over_the_limit_is_a_502(self):
        """A member's oversized head is its fault: 502, as the docstring says
        (and the reason phrase counts, read whole or in pieces)."""
        pad = b"X-Pad: " + b"v" * 1000 + b"\r\n"
        big = b"HTTP/1.1 200 OK\r\n" + pad * 5 + b"\r\n"
        self.assertEqual(run(ResponseParser, [big], expect="GET", max_head=4096), ([], 502))
        long_reason = b"HTTP/1.1 200 " + b"r" * 5000 + b"\r\n\r\n"
        for pieces in ([long_reason], [long_reason[i:i + 100]
                                       for i in range(0, len(long_reason), 100)]):
            self.assertEqual(run(ResponseParser, pieces, expect="GET", max_head=4096), ([], 502))

    def test_endless_header_value_is_refused_with_bounded_memory(self):
        sink = Recorder()
        parser = RequestParser(sink, max_head=4096)
        parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Endless: ")
        fed = 0
        with self.assertRaises(HTTPError) as caught:
            while fed < 1 << 20:
                parser.feed(b"v" * 512)
                fed += 512
        self.assertEqual(caught.exception.status, 431)
        self.assertLessEqual(fed, 4096 + READ_SLACK)

    def test_endless_header_lines_are_refused(self):
        parser = RequestParser(Recorder(), max_head=MAX_HEAD_SIZE)
        parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n")
        fed = 0
        with self.assertRaises(HTTPError) as caught:
            for i in range(10000):
                line = b"X-%d: v\r\n" % i
                parser.feed(line)
                fed += len(line)
        self.assertEqual(caught.exception.status, 431)
        self.assertLessEqual(fed, MAX_HEAD_SIZE)

    def test_body_bytes_do_not_count_as_head(self):
        body = b"x" * (MAX_HEAD_SIZE + READ_SLACK + 10)
        request = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)
        again = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
        events, status = run(RequestParser, [request + body + again])
        self.assertIsNone(status)
        self.assertEqual([e[0] for e in events], ["request", "body", "end", "request", "end"])


class RequestDetailTests(SynchronousTestCase):
    def test_http10_without_host_and_keep_alive(self):
        events, status = run(RequestParser, [b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                                             b"GET / HTTP/1.0\r\n\r\n"])
        self.assertIsNone(status)
        self.assertEqual([(e[3], e[5]) for e in events if e[0] == "request"],
                         [("1.0", True), ("1.0", False)])

    def test_bytes_after_a_last_request_are_refused(self):
        # llhttp: nothing may follow a request that ends the connection (the
        # data path closes after its response anyway).
        for last in (b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"):
            events, status = run(RequestParser, [last + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"])
            self.assertEqual(([e[0] for e in events], status), (["request", "end"], 400))

    def test_ows_around_values_and_obs_text_are_accepted(self):
        events, status = run(RequestParser, [b"GET / HTTP/1.1\r\nHost:  h \r\nX-A:\tcaf\xe9\r\n\r\n"])
        self.assertIsNone(status)
        self.assertEqual(events[0][4][1], (b"X-A", b"caf\xe9"))

    def test_legal_chunk_extensions_are_accepted(self):
        events, status = run(RequestParser, [
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;a=b;c=\"d e\"\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"])
        self.assertIsNone(status)
        self.assertEqual(events[1:], [("body", b"abc"), ("end", ((b"X-T", b"1"),))])

    def test_upgrade_hands_on_the_rest(self):
        events, status = run(RequestParser, [b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
                                             b"Upgrade: websocket\r\n\r\nTUNNEL", b"MORE"])
        self.assertIsNone(status)
        self.assertEqual(events[-1], ("upgrade", b"TUNNELMORE"))

    def test_upgrade_without_body_still_upgrades(self):
        """Only an Upgrade request with a body is refused (CorpusTests:
        upgrade_with_body); Content-Length: 0 is no body."""
        events, status = run(RequestParser, [b"POST /ws HTTP/1.1\r\nHost: h\r\n"
                                             b"Connection: Upgrade\r\nUpgrade: x\r\n"
                                             b"Content-Length: 0\r\n\r\nTUNNEL"])
        self.assertIsNone(status)
        self.assertEqual([e[0] for e in events], ["request", "end", "upgrade"])
        self.assertEqual(events[-1], ("upgrade", b"TUNNEL"))

    def test_status_range_and_reason_phrase(self):
        """100-599 and a reason phrase with HTAB, SP, VCHAR, obs-text pass."""
        for line in (b"HTTP/1.1 100 Continue", b"HTTP/1.1 599 x", b"HTTP/1.1 200 a\tb \x80\xff",
                     b"HTTP/1.1 200 "):
            events, status = run(ResponseParser, [line + b"\r\nContent-Length: 0\r\n\r\n"
                                                  if not line.endswith(b"Continue") else
                                                  line + b"\r\n\r\nHTTP/1.1 204 x\r\n\r\n"],
                                 expect="GET")
            self.assertIsNone(status, line)

    def test_head_response_has_no_body(self):
        events, status = run(ResponseParser, [b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"],
                             expect="HEAD")
        self.assertIsNone(status)
        self.assertEqual([(e[0], e[-1]) for e in events], [("response", "none"), ("end", ())])

    def test_response_framings(self):
        cases = [(b"HTTP/1.1 204 No Content\r\n\r\n", "none"),
                 (b"HTTP/1.1 304 Not Modified\r\n\r\n", "none"),
                 (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "length"),
                 (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                  "chunked"),
                 (b"HTTP/1.1 200 OK\r\n\r\nuntil the close", "close")]
        for data, framing in cases:
            events, status = run(ResponseParser, [data], expect="GET")
            self.assertIsNone(status)
            self.assertEqual(events[0][-1], framing, data)

    def test_informational_then_final(self):
        events, status = run(ResponseParser, [b"HTTP/1.1 100 Continue\r\n\r\n"
                                              b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                                              b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
                             expect="POST")
        self.assertIsNone(status)
        self.assertEqual([e[0] for e in events], ["informational", "informational", "response",
                                                  "end"])


# -- hypothesis ------------------------------------------------------------------

_METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD"]
_TARGET = st.text(alphabet="-._~!$&'()*+,;=:@/?abcXYZ019", max_size=30).map(
    lambda t: b"/" + t.encode())


@st.composite
def requests_with_expectations(draw):
    """A valid request and the events it must give."""
    method = draw(st.sampled_from(_METHODS))
    target = draw(_TARGET)
    version = draw(st.sampled_from(["1.1", "1.0"]))
    headers = draw(st.lists(st.tuples(_names, _values), max_size=6))
    if version == "1.1" or draw(st.booleans()):
        headers.insert(draw(st.integers(0, len(headers))), (b"Host", b"example.test"))
    keep_alive = version == "1.1"
    if draw(st.booleans()):
        keep_alive = not keep_alive
        headers.append((b"Connection", b"keep-alive" if keep_alive else b"close"))
    framing = draw(st.sampled_from(["none", "length", "chunked"] if version == "1.1"
                                   else ["none", "length"]))
    chunks = draw(st.lists(st.binary(min_size=1, max_size=300), max_size=4))
    body = b"".join(chunks)
    trailers = []
    if framing == "length":
        headers.append((b"Content-Length", b"%d" % len(body)))
        encoded = body
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
        trailers = draw(st.lists(st.tuples(_names, _values), max_size=2))
        encoded = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
        encoded += b"0\r\n" + b"".join(b"%s: %s\r\n" % t for t in trailers) + b"\r\n"
    else:
        body, encoded = b"", b""
    raw = (b"%s %s HTTP/%s\r\n" % (method, target, version.encode()) +
           b"".join(b"%s: %s\r\n" % h for h in headers) + b"\r\n" + encoded)
    has_body = framing == "chunked" or (framing == "length" and len(body) > 0)
    events = [("request", method.decode(), target.decode("latin-1"), version, tuple(headers),
               keep_alive, has_body)]
    if body:
        events.append(("body", body))
    events.append(("end", tuple(trailers)))
    return raw, events


@st.composite
def pipelines(draw):
    messages = draw(st.lists(requests_with_expectations(), min_size=1, max_size=4))
    # Nothing may follow a request that ends the connection.
    for i, (_, events) in enumerate(messages):
        if not events[0][5]:
            messages = messages[:i + 1]
            break
    raw = b"".join(m[0] for m in messages)
    events = [e for m in messages for e in m[1]]
    return raw, events, draw(splits(raw))


_junk = st.one_of(
    st.binary(max_size=300),
    # near-valid: a valid request with bytes flipped, inserted or cut
    st.tuples(requests_with_expectations(), st.integers(0, 10000), st.binary(min_size=0, max_size=3),
              st.integers(0, 3)).map(
        lambda t: t[0][0][:t[1] % (len(t[0][0]) + 1)] + t[2] +
        t[0][0][t[1] % (len(t[0][0]) + 1) + t[3]:]),
)


class PropertyTests(SynchronousTestCase):
    @_SETTINGS
    @given(pipelines())
    def test_valid_requests_parse_to_what_was_generated(self, pipeline):
        raw, expected, pieces = pipeline
        self.assertEqual(run(RequestParser, [raw]), (expected, None))
        self.assertEqual(run(RequestParser, pieces), (expected, None))

    @_SETTINGS
    @given(st.data())
    def test_arbitrary_bytes_raise_only_http_errors(self, data):
        raw = data.draw(_junk)
        pieces = data.draw(splits(raw))
        # Anything but HTTPError escapes run() and fails the test.
        whole = run(RequestParser, [raw])
        split = run(RequestParser, pieces)
        self.assertEqual(split, whole, (raw, pieces))
        for method in ("GET", "HEAD"):
            whole = run(ResponseParser, [raw], expect=method)
            run(ResponseParser, pieces, expect=method)

    @_SETTINGS
    @given(st.data())
    def test_responses_split_anywhere_give_the_same_events(self, data):
        status = data.draw(st.sampled_from([200, 201, 204, 301, 404, 500]))
        headers = data.draw(st.lists(st.tuples(_names, _values), max_size=5))
        body = data.draw(st.binary(max_size=500)) if status != 204 else b""
        if data.draw(st.booleans()) and status != 204:
            raw_body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
            headers.append((b"Transfer-Encoding", b"chunked"))
        else:
            raw_body = body
            headers.append((b"Content-Length", b"%d" % len(body)))
        raw = (b"HTTP/1.1 %d Reason\r\n" % status + b"".join(b"%s: %s\r\n" % h for h in headers)
               + b"\r\n" + raw_body)
        pieces = data.draw(splits(raw))
        whole = run(ResponseParser, [raw], expect="GET")
        self.assertEqual(whole[1], None)
        self.assertEqual(whole[0][0][:5], ("response", status, "Reason", "1.1", tuple(headers)))
        self.assertEqual(b"".join(e[1] for e in whole[0] if e[0] == "body"), body)
        self.assertEqual(run(ResponseParser, pieces, expect="GET"), whole)

    @_SETTINGS
    @given(st.data())
    def test_near_valid_responses_raise_only_http_errors_wherever_split(self, data):
        base = data.draw(st.sampled_from(_RESPONSES))
        at = data.draw(st.integers(0, len(base)))
        raw = (base[:at] + data.draw(st.binary(max_size=3)) +
               base[at + data.draw(st.integers(0, 3)):])
        pieces = data.draw(splits(raw))
        self.assertEqual(run(ResponseParser, pieces, expect="GET"),
                         run(ResponseParser, [raw], expect="GET"), (raw, pieces))
        self.assertEqual(run(ResponseParser, pieces, expect="HEAD")[1],
                         run(ResponseParser, [raw], expect="HEAD")[1], (raw, pieces))


_RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nclose-delimited body",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nTUNNEL",
]


class FramingAgreementTests(SynchronousTestCase):
    """lbframe's reading of Transfer-Encoding and llhttp's must agree: a
    spelling of "chunked" with whitespace, case or list games is either
    refused before anything is announced, or decoded as chunked by both (a
    disagreement is a desync: lbframe frames one way, llhttp reads another)."""

    _te = st.tuples(st.sampled_from(["", " ", "\t", "  ", " \t"]),
                    st.sampled_from(["chunked", "CHUNKED", "Chunked", "chunked,", ",chunked",
                                     "chunked, chunked", "gzip, chunked", "identity"]),
                    st.sampled_from(["", " ", "\t", "  ", "\t "])).map(
        lambda t: "".join(t).encode())

    @_SETTINGS
    @given(_te, st.binary(min_size=1, max_size=50))
    def test_requests(self, value, body):
        raw = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:" + value + b"\r\n\r\n" +
               b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        events, status = run(RequestParser, [raw])
        if status is not None:
            self.assertEqual(events, [], value)
        else:
            self.assertEqual([e[0] for e in events], ["request", "body", "end"], value)
            self.assertEqual(events[1][1], body)

    @_SETTINGS
    @given(_te, st.binary(min_size=1, max_size=50))
    def test_responses(self, value, body):
        raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding:" + value + b"\r\n\r\n" +
               b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        events, status = run(ResponseParser, [raw], expect="GET")
        if status is not None:
            self.assertEqual((events, status), ([], 502), value)
        else:
            self.assertEqual([(e[0], e[-1]) if e[0] == "response" else e[0] for e in events],
                             [("response", "chunked"), "body", "end"], value)
            self.assertEqual(events[1][1], body)
