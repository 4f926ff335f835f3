"""RequestParser (lbframe/protocols/http/parser.py): a client's byte stream.

The input is what a client sends on one connection; it is parsed once in a
single read and once cut into reads (the cuts chosen from the input). Oracle:

- the parser announces requests or raises :class:`HTTPError` with a 4xx/5xx
  status; any other exception is a finding;
- both runs announce the same events and both refuse or neither does (a
  parser whose answer depends on how TCP cut the bytes is a desync; the
  status of a refusal may differ);
- every announced head is unambiguous: version 1.0/1.1, a token method
  other than CONNECT, a target without spaces or controls within
  ``max_request_line``, exactly one Host in 1.1 (at most one in 1.0),
  header names tokens and values free of controls, at most one
  Content-Length, Transfer-Encoding only as one exact ``chunked`` and never
  with Content-Length or in 1.0, fields within ``max_head``;
- events follow ``(request body* end)*`` with at most a last unfinished
  message, or an ``upgrade`` after the end of a request that asked for one;
- the head as forwarded to a member (``heads.request_bytes``) parses back
  to the same request line, Host and framing;
- an announced message's body is what its framing says: exactly
  Content-Length bytes, none when ``has_body`` is false;
- a refused message was never partly forwarded: when the parser raises, the
  message in progress was either not announced at all (refused in its head)
  or announced with a body (refused in the body, which the data path cuts).
"""

from __future__ import annotations

from fuzz.common import check, cuts, guarded, rng_for
from fuzz.httpcheck import (split_name, MAX_HEAD, MAX_REQUEST_LINE, TCHARS, Recorder, check_fields,
                            comparable, framing_headers)
from lbframe.protocols.http import heads
from lbframe.protocols.http.parser import HTTPError, RequestParser


def run(pieces: list[bytes]) -> tuple[list, int | None]:
    """Feed ``pieces`` as reads: (events, error status or None)."""
    sink = Recorder()
    parser = RequestParser(sink, max_request_line=MAX_REQUEST_LINE, max_head=MAX_HEAD)
    for piece in pieces:
        if sink.upgraded:
            sink.add_rest(piece)
            continue
        try:
            parser.feed(piece)
        except HTTPError as e:
            check(400 <= e.status <= 599, "http-error-status",
                  lambda: f"HTTPError with status {e.status}")
            return sink.events, e.status
    return sink.events, None


def check_head(head, keep_alive, has_body) -> int | None:
    """The announced head is unambiguous; answers its Content-Length."""
    what = f"request {head.method} {head.target!r} HTTP/{head.version}"
    check(head.version in ("1.0", "1.1"), "http-version", what)
    method = head.method.encode("latin-1")
    check(bool(method) and TCHARS.issuperset(method) and head.method != "CONNECT",
          "http-method", what)
    target = head.target.encode("latin-1")
    check(bool(target) and len(target) <= MAX_REQUEST_LINE
          and not any(b <= 32 or b == 127 for b in target), "http-target", what)
    hosts = sum(1 for n, _ in head.headers if n.lower() == b"host")
    check(hosts == 1 or (hosts == 0 and head.version == "1.0"), "http-host",
          lambda: f"{what} announced with {hosts} Host headers")
    check_fields(head.headers, what)
    length, chunked = framing_headers(head.headers, what)
    check(not (chunked and head.version == "1.0"), "http-te-in-1.0", what)
    check(has_body == (chunked or bool(length)), "http-has-body",
          lambda: f"{what}: has_body={has_body} with Content-Length {length}, chunked {chunked}")
    return length


def _hosts(head) -> list[bytes]:
    return [v for n, v in head.headers if n.lower() == b"host"]


def check_forwarded(head, has_body: bool, upgrade: bool) -> None:
    """The head as the data path writes it to a member (heads.request_bytes,
    with X-Forwarded-For) is read back by a fresh parser: it must be accepted
    and mean the same request — method, target, version, Host, and above all
    the same framing (a member that frames the body differently from us
    reads part of it as another request)."""
    raw = heads.request_bytes(head, "192.0.2.1", b"http", upgrade, False)
    sink = Recorder()
    try:
        RequestParser(sink, max_request_line=1 << 20, max_head=1 << 20).feed(raw)
    except HTTPError as e:
        check(False, "http-forwarded-refused",
              lambda: f"the head forwarded for {head!r} is refused ({e}): {raw!r}")
        return
    check(bool(sink.events) and sink.events[0][0] == "request", "http-forwarded-refused",
          lambda: f"the head forwarded for {head!r} is incomplete: {raw!r}")
    again, has_body_again = sink.events[0][1], sink.events[0][3]
    what = f"{head.method} {head.target!r}"
    check((again.method, again.target, again.version) == (head.method, head.target,
                                                           head.version),
          "http-forwarded-request-line", lambda: f"{what} forwarded as {raw!r}")
    check(_hosts(again) == _hosts(head), "http-forwarded-host",
          lambda: f"{what}: Host {_hosts(head)} forwarded as {_hosts(again)}: {raw!r}")
    check(framing_headers(again.headers, what) == framing_headers(head.headers, what)
          and has_body_again == has_body, "http-forwarded-framing",
          lambda: f"{what} framed as {framing_headers(head.headers, what)} (has_body "
                  f"{has_body}) is forwarded as {raw!r}")


def check_events(events: list, error: int | None) -> None:
    """The grammar of the events, body sizes, and where a refusal happened."""
    i, n = 0, len(events)
    while i < n:
        kind = events[i][0]
        check(kind == "request", "http-event-order", lambda: f"{kind} where a request was due")
        _, head, keep_alive, has_body = events[i]
        length = check_head(head, keep_alive, has_body)
        check_forwarded(head, has_body, any(e[0] == "upgrade" for e in events[i:i + 4]))
        i += 1
        body = b""
        if i < n and events[i][0] == "body":
            check(has_body, "http-body-without-framing",
                  lambda: f"body bytes after a head announced without a body: {head!r}")
            body = events[i][1]
            i += 1
        if i == n:  # the last message is unfinished
            if error is not None:
                check(has_body, "http-refused-after-announcing",
                      lambda: f"{error} raised after announcing {head!r} without a body: "
                              "a refused message was forwarded")
            if length is not None:
                check(len(body) <= length, "http-body-length",
                      lambda: f"{len(body)} body bytes for Content-Length {length}")
            return
        check(events[i][0] == "end", "http-event-order",
              lambda: f"{events[i][0]} where the end of a message was due")
        upgraded = i + 1 < n and events[i + 1][0] == "upgrade"
        if length is not None:
            check(len(body) == length, "http-upgrade-skips-body" if upgraded else
                  "http-body-length",
                  lambda: f"{len(body)} body bytes for Content-Length {length}"
                          f"{' (an Upgrade request)' if upgraded else ''}: {head!r}")
        trailers = events[i][1]
        check(not trailers or any(nm.lower() == b"transfer-encoding" for nm, _ in head.headers),
              "http-trailers-without-chunked", "trailers after a message that was not chunked")
        check_fields(trailers, "trailer section", "http-trailers-unbounded")
        i += 1
        if upgraded:
            check(i == n - 1, "http-event-order", "events after an upgrade")
            check(any(nm.lower() == b"upgrade" for nm, _ in head.headers), "http-upgrade",
                  lambda: f"upgrade after a request that offered none: {head!r}")
            return


@guarded("http")
def TestOneInput(data: bytes) -> None:
    whole = run([data])
    split = run(cuts(data, rng_for(data)))
    # Both must refuse, or neither; the status may differ (a long target
    # with a bad byte in it is a 414 when cut, a 400 when read whole).
    check(comparable(whole[0]) == comparable(split[0])
          and (whole[1] is None) == (split[1] is None),
          split_name(whole[1], split[1]),
          lambda: f"one read: {comparable(whole[0])} {whole[1]}; "
                  f"cut reads: {comparable(split[0])} {split[1]}")
    check_events(*whole)
