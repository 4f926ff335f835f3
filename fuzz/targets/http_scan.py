"""The parsers' fast path (lbframe/protocols/http/scan.py) against llhttp.

The first byte chooses: even — the rest is what a client sends on one
connection; odd — what a member sends, to a GET (bit 1 clear) or a HEAD
(bit 1 set), as two exchanges when the first response ends inside the
input. The bytes go through the parser with the fast path on and off, in
one read and cut into reads at places chosen from the input. Oracle: the
sink calls (heads with their fields, keep-alive, framing, body bytes,
trailers, ``extra`` at each end) and the error (status and reason) are the
same both ways — the fast path takes only what llhttp would take, and
takes it as llhttp would.
"""

from __future__ import annotations

from fuzz.common import check, cuts, guarded, rng_for
from lbframe.protocols.http.parser import HTTPError, RequestParser, ResponseParser

MAX_REQUEST_LINE = 256
MAX_HEAD = 1024


class Recorder:
    def __init__(self):
        self.events: list = []
        self.parser = None

    def request(self, head, keep_alive, has_body):
        self.events.append(("request", head.method, head.target, head.version,
                            list(head.headers), keep_alive, has_body, self.parser.chunked))

    def response(self, head, keep_alive, framing):
        self.events.append(("response", head.status, head.reason, head.version,
                            list(head.headers), keep_alive, framing))

    def informational(self, head):
        self.events.append(("informational", head.status, list(head.headers)))

    def body(self, data):
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)
        else:
            self.events.append(("body", data))

    def end(self, trailers):
        extra = self.parser.extra if isinstance(self.parser, ResponseParser) else None
        self.events.append(("end", list(trailers), extra))

    def upgrade(self, rest):
        self.events.append(("upgrade", rest))


def requests(pieces: list[bytes], fast: bool):
    sink = Recorder()
    parser = sink.parser = RequestParser(sink, MAX_REQUEST_LINE, MAX_HEAD)
    parser.fast = fast
    for piece in pieces:
        if sink.events and sink.events[-1][0] == "upgrade":
            break
        try:
            parser.feed(piece)
        except HTTPError as e:
            return sink.events, (e.status, e.reason)
    return sink.events, None


def responses(method: str, pieces: list[bytes], fast: bool):
    """Two exchanges on one connection: the second (a GET) begins with the
    first read after the first response completed."""
    sink = Recorder()
    parser = sink.parser = ResponseParser(sink, MAX_HEAD)
    parser.fast = fast
    parser.expect(method)
    for piece in pieces:
        if sink.events and sink.events[-1][0] == "upgrade":
            break
        if parser.complete:
            sink.events.append(("next", parser.extra))
            parser.expect("GET")
        try:
            parser.feed(piece)
        except HTTPError as e:
            return sink.events, (e.status, e.reason)
    sink.events.append(("after", parser.complete, parser.extra))
    return sink.events, None


@guarded("http-scan")
def TestOneInput(data: bytes) -> None:
    if not data:
        return
    mode, data = data[0], data[1:]
    split = cuts(data, rng_for(data))
    for pieces in ([data], split):
        if mode % 2 == 0:
            fast, slow = requests(pieces, True), requests(pieces, False)
            name = "http-scan-request"
        else:
            method = "HEAD" if mode & 2 else "GET"
            fast, slow = responses(method, pieces, True), responses(method, pieces, False)
            name = "http-scan-response"
        check(fast == slow, name,
              lambda: f"reads {pieces!r}:\nfast path: {fast!r}\nllhttp only: {slow!r}")
