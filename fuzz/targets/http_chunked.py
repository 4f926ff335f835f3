"""Chunked bodies and trailers, through RequestParser and ResponseParser.

The first input byte picks the mode:

- even: the rest is a chunked body as a peer sends it, after a chunked
  request head. If the parser reaches the end of the message, an
  independent decoder written from RFC 9112 §7.1 must read the same body
  and trailers from the same bytes, the trailer section must be within
  ``max_head`` (a trailer section is a head too: unbounded, it is a memory
  hole), and re-framing what was announced (body and trailers) as a fresh
  chunked message must parse back to the same body and trailers;
- odd: the rest is a body; it is framed as chunks (sizes, extensions and
  trailers chosen from the input), sent as a request and as a response,
  cut into reads, and must come out byte for byte with its trailers.
"""

from __future__ import annotations

from fuzz.common import check, cuts, guarded, rng_for
from fuzz.httpcheck import MAX_HEAD, TCHARS, Recorder
from lbframe.protocols.http.parser import HTTPError, RequestParser, ResponseParser

HEAD = b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
RESPONSE_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
_HEX = frozenset(b"0123456789abcdefABCDEF")


class Incomplete(Exception):
    pass


def decode(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A chunked body and its trailers, read the RFC's way; ValueError when
    malformed, :class:`Incomplete` when it has not ended."""
    body = bytearray()
    pos = 0
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            raise Incomplete
        line = raw[pos:eol]
        digits = 0
        while digits < len(line) and line[digits] in _HEX:
            digits += 1
        if not digits:
            raise ValueError(f"chunk size {line[:20]!r} is not hex")
        ext = line[digits:].lstrip(b" \t")
        if ext and not ext.startswith(b";"):
            raise ValueError(f"junk after chunk size: {line[:40]!r}")
        if any((b < 32 and b != 9) or b == 127 for b in ext):
            raise ValueError("control character in a chunk extension")
        size = int(line[:digits], 16)
        pos = eol + 2
        if size == 0:
            break
        if len(raw) < pos + size + 2:
            raise Incomplete
        body += raw[pos:pos + size]
        if raw[pos + size:pos + size + 2] != b"\r\n":
            raise ValueError("chunk data not followed by CRLF")
        pos += size + 2
    trailers = []
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            raise Incomplete
        line = raw[pos:eol]
        pos = eol + 2
        if not line:
            return bytes(body), trailers
        name, colon, value = line.partition(b":")
        if not colon or not name or not TCHARS.issuperset(name):
            raise ValueError(f"bad trailer line {line[:40]!r}")
        if any((b < 32 and b != 9) or b == 127 for b in value):
            raise ValueError("control character in a trailer")
        trailers.append((name, value.strip(b" \t")))


def frame(chunks: list[bytes], trailers, extensions=()) -> bytes:
    """A chunked body: each chunk with its size (and an extension when given)."""
    out = bytearray()
    for i, chunk in enumerate(chunks):
        ext = extensions[i] if i < len(extensions) else b""
        out += b"%x%s\r\n%s\r\n" % (len(chunk), ext, chunk)
    out += b"0\r\n"
    for name, value in trailers:
        out += name + b": " + value + b"\r\n"
    return bytes(out + b"\r\n")


def first_message(parser_class, head: bytes, pieces: list[bytes]):
    """(body, trailers, error status) of the first message; trailers None
    when it did not end."""
    sink = Recorder()
    parser = parser_class(sink, max_head=MAX_HEAD)
    if parser_class is ResponseParser:
        parser.expect("POST")
    status = None
    for piece in [head] + pieces:
        try:
            parser.feed(piece)
        except HTTPError as e:
            status = e.status
            break
        if sink.ended:
            break
    body = b"".join(e[1] for e in sink.events if e[0] == "body")
    ends = [e[1] for e in sink.events if e[0] == "end"]
    if ends:
        # only what came before the first end counts
        upto = next(i for i, e in enumerate(sink.events) if e[0] == "end")
        body = b"".join(e[1] for e in sink.events[:upto] if e[0] == "body")
        return body, [tuple(t) for t in ends[0]], None
    return body, None, status


def _trailer_problem(name: bytes, value: bytes) -> bool:
    return not TCHARS.issuperset(name) or not name or any(
        (b < 32 and b != 9) or b == 127 for b in value)


def raw_mode(raw: bytes) -> None:
    body, trailers, status = first_message(RequestParser, HEAD, [raw])
    if trailers is None:
        return  # refused, or not ended yet
    size = sum(len(n) + len(v) + 4 for n, v in trailers)
    check(size <= MAX_HEAD, "http-trailers-unbounded",
          lambda: f"a trailer section of {size} bytes accepted (max_head {MAX_HEAD})")
    try:
        ours = decode(raw)
    except (ValueError, Incomplete) as e:
        check(False, "http-chunked-lenient",
              lambda: f"the parser accepted a chunked body the RFC does not: {e!r} in {raw[:80]!r}")
        return
    check(ours[0] == body, "http-chunked-body",
          lambda: f"parser body {body[:60]!r} ({len(body)} bytes), RFC reading "
                  f"{ours[0][:60]!r} ({len(ours[0])} bytes)")
    check([(n.lower(), v) for n, v in ours[1]] == [(n.lower(), v.strip(b" \t"))
                                                   for n, v in trailers],
          "http-chunked-trailers", lambda: f"parser trailers {trailers}, RFC reading {ours[1]}")
    if any(_trailer_problem(n, v) for n, v in trailers):
        return  # reported above by the RFC reading
    again = first_message(RequestParser, HEAD, [frame([body] if body else [], trailers)])
    check(again[0] == body and again[1] == trailers, "http-chunked-reframe",
          lambda: f"re-framed: {again}, first: {(body, trailers)}")


_EXTENSIONS = [b"", b";a=b", b";name", b';q="x y"', b";x=1;y=2"]
_TRAILERS = [(b"X-Checksum", b"abc123"), (b"Server-Timing", b"db;dur=53"),
             (b"X-Empty", b""), (b"Expires", b"Wed, 21 Oct 2015 07:28:00 GMT")]


def built_mode(body: bytes, rng) -> None:
    chunks, pos = [], 0
    while pos < len(body):
        size = rng.choice((1, 2, 7, 64, 1000, len(body)))
        chunks.append(body[pos:pos + size])
        pos += size
    extensions = [rng.choice(_EXTENSIONS) for _ in chunks]
    trailers = rng.sample(_TRAILERS, rng.randrange(len(_TRAILERS) + 1))
    raw = frame(chunks, trailers, extensions)
    for parser_class, head in ((RequestParser, HEAD), (ResponseParser, RESPONSE_HEAD)):
        got = first_message(parser_class, head, cuts(raw, rng))
        check(got == (body, trailers, None), "http-chunked-roundtrip",
              lambda: f"{parser_class.__name__}: framed {raw[:120]!r}, got {got!r}")


@guarded("http")
def TestOneInput(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        built_mode(data[1:], rng_for(data))
    else:
        raw_mode(data[1:])
