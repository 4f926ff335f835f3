"""ResponseParser (lbframe/protocols/http/parser.py): a member's answer.

The first input byte says what the request was (odd: ``HEAD``, even:
``GET``); the rest is what the member sends, parsed once in a single read and
once cut into reads. As in the data path (``exchange.py``), the sink is taken
away once the response has ended: bytes after it are the member's, unasked.
Oracle:

- the parser announces a response or raises :class:`HTTPError` with a
  4xx/5xx status (the data path answers the client 502 whatever it is); any
  other exception is a finding — also for bytes after the end of the
  response;
- both runs announce the same events up to the end of the response and
  refuse the same way;
- events follow ``informational* response (body* end | upgrade)``: a 1xx
  has no body (RFC 9110 §15.2), whatever its Content-Length says;
- the announced head is unambiguous (version 1.0/1.1, status 100-999, a
  reason phrase without control characters, header names tokens,
  values free of controls, framing headers as for requests, fields within
  ``max_head``), and the framing it is announced with is the one its head
  says: ``none`` for a HEAD request, a 1xx, 204 or 304; ``chunked`` for
  ``Transfer-Encoding: chunked``; ``length`` for Content-Length; else
  ``close`` (and then not keep-alive); a 101 only as ``none``;
- the body is what the framing says: none for ``none``, exactly
  Content-Length bytes for ``length``.
"""

from __future__ import annotations

import traceback

from fuzz.common import check, cuts, finding, guarded, rng_for
from fuzz.httpcheck import split_name, MAX_HEAD, Recorder, check_fields, comparable, framing_headers
from lbframe.protocols.http.parser import HTTPError, ResponseParser


class _Sink(Recorder):
    """A recorder that, as the data path does, leaves once the response ended."""

    def __init__(self):
        super().__init__()
        self.parser = None

    def end(self, trailers):
        super().end(trailers)
        self.parser.sink = None


def run(method: str, pieces: list[bytes]) -> tuple[list, int | None]:
    """(events up to the end, error status raised before the end or None)."""
    sink = _Sink()
    parser = ResponseParser(sink, max_head=MAX_HEAD)
    sink.parser = parser
    parser.expect(method)
    for piece in pieces:
        if sink.upgraded:
            sink.add_rest(piece)
            continue
        ended = sink.ended
        try:
            parser.feed(piece)
        except HTTPError as e:
            # The data path answers 502 whatever the status (exchange._bad_response);
            # the parser raises 502 for a response's head over max_head too.
            check(400 <= e.status <= 599, "http-response-error-status",
                  lambda: f"a bad response raised HTTPError {e.status}")
            if not ended and not sink.ended:
                return sink.events, e.status
            if ended:
                return sink.events, None
        except Exception:
            if not (ended or sink.ended):
                raise
            finding("http-bytes-after-response", "bytes after a complete response raised "
                    + traceback.format_exc(limit=-3))
            return sink.events, None
    return sink.events, None


def check_events(method: str, events: list, error: int | None) -> None:
    i, n = 0, len(events)
    while i < n and events[i][0] == "informational":
        head = events[i][1]
        check(100 <= head.status < 200 and head.status != 101, "http-informational",
              lambda: f"informational() for status {head.status}")
        i += 1
        # RFC 9110 §15.2: a 1xx ends with its head; it has no content.
        check(i == n or events[i][0] != "body", "http-1xx-body",
              lambda: f"a {head.status} response announced with {len(events[i][1])} body "
                      "bytes (a 1xx has none: the bytes are the next response's)")
    if i == n:
        return
    check(events[i][0] == "response", "http-event-order",
          lambda: f"{events[i][0]} where a response was due")
    _, head, keep_alive, framing = events[i]
    what = f"response {head.status} HTTP/{head.version}"
    check(head.version in ("1.0", "1.1"), "http-version", what)
    check(100 <= head.status <= 999, "http-status", what)
    check(not any((ord(c) < 32 and c != "\t") or c == "\x7f" for c in head.reason),
          "http-reason-control", lambda: f"{what}: reason phrase {head.reason!r} has a "
                                         "control character (forwarded as is)")
    check_fields(head.headers, what)
    length, chunked = framing_headers(head.headers, what)
    if head.status == 101:
        due = "none"
    elif method == "HEAD" or head.status in (204, 304):
        due = "none"
    elif chunked:
        due = "chunked"
    elif length is not None:
        due = "length"
    else:
        due = "close"
    check(framing == due, "http-response-framing",
          lambda: f"{what} announced with framing {framing!r}, its head says {due!r}")
    check(framing != "close" or not keep_alive, "http-close-keep-alive",
          lambda: f"{what}: close-delimited but keep-alive")
    i += 1
    body = b""
    if i < n and events[i][0] == "body":
        body = events[i][1]
        check(framing not in ("none",), "http-body-without-framing",
              lambda: f"{what}: {len(body)} body bytes with framing {framing!r}")
        i += 1
    if i < n and events[i][0] == "upgrade":
        check(head.status == 101 and i == n - 1, "http-upgrade",
              lambda: f"upgrade after {what}")
        return
    if framing == "length":
        check(len(body) <= length, "http-body-length",
              lambda: f"{len(body)} body bytes for Content-Length {length}")
    if i == n:
        return
    check(events[i][0] == "end" and i == n - 1, "http-event-order",
          lambda: f"{events[i:]} after the body")
    check(head.status != 101, "http-upgrade", "a 101 ended like a message")
    if framing == "length":
        check(len(body) == length, "http-body-length",
              lambda: f"{len(body)} body bytes for Content-Length {length}")
    trailers = events[i][1]
    check(not trailers or framing == "chunked", "http-trailers-without-chunked",
          lambda: f"trailers after a response with framing {framing!r}")
    check_fields(trailers, "trailer section", "http-trailers-unbounded")


@guarded("http")
def TestOneInput(data: bytes) -> None:
    if not data:
        return
    method = "HEAD" if data[0] & 1 else "GET"
    stream = data[1:]
    whole = run(method, [stream])
    split = run(method, cuts(stream, rng_for(data)))
    check(comparable(whole[0]) == comparable(split[0])
          and (whole[1] is None) == (split[1] is None),
          split_name(whole[1], split[1]),
          lambda: f"one read: {comparable(whole[0])} {whole[1]}; "
                  f"cut reads: {comparable(split[0])} {split[1]}")
    check_events(method, *whole)
