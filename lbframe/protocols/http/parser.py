"""Strict HTTP/1.x message parsing on llhttp (through ``httptools``).

llhttp is Node.js's parser: written for speed (generated C state machine)
and strict by default — it already refuses Content-Length together with
Transfer-Encoding, duplicate or malformed Content-Lengths, obs-fold, bare CR
or LF line ends, control characters and NUL in heads, whitespace before a
header colon, malformed chunk sizes and extensions. These classes add what a
proxy must check on top (RFC 9112):

- ``Transfer-Encoding`` must be exactly ``chunked`` (llhttp also takes
  ``gzip, chunked``; we have no business decoding that and a coding list is
  the classic TE.TE smuggling vector), and an HTTP/1.0 request must not
  carry one at all;
- an HTTP/1.1 request has exactly one ``Host``; only HTTP/1.0 and 1.1;
- the request line and the whole head have size limits, enforced while the
  bytes arrive, so an endless header costs bounded memory (llhttp hands
  httptools header pieces that httptools joins before calling us);
- so does a chunked body's framing: a chunk-size line (with its
  extensions), or the last chunk's line with the trailer section, may take
  at most the head limit, counted while the bytes arrive (a 431 for a
  request, a 502 for a response); trailer fields that frame or control the
  connection are refused;
- ``CONNECT`` is refused (lbframe is a reverse proxy, not a forward one),
  and so is an ``Upgrade`` request with a body (llhttp hands over the
  connection before the body);
- a response's status is 100-599, its reason phrase free of control
  characters but HTAB, and a 1xx other than 101 carries no Content-Length or
  Transfer-Encoding (llhttp reads a body for 104-199 by them).

A parser calls its *sink* as the message goes by; the data path decides what
to forward. Errors are raised as :class:`HTTPError` carrying the status the
client should get.

The fast path (:mod:`.scan`): a message that begins where llhttp is between
messages (at the start of a read, or right after a message the fast path
took in the same read) and whose whole head is at hand is first offered to
a one-call scanner of a strict subset of HTTP/1.x. When the scanner takes
it, the parser calls the sink exactly as the llhttp path would have, and
counts the Content-Length body itself; when it does not, the message is
fed to llhttp from its first byte, and llhttp keeps the stream until it is
between messages again at the start of a later read. So each message is
framed once, by one of the two. llhttp's one piece of state between
messages — after a message that is not kept alive it refuses anything but
empty lines — is kept for the fast path's messages too (``_closed``).
"""

from __future__ import annotations

import re

import httptools

from lbframe.messages import RequestHead, ResponseHead
from lbframe.protocols.http.scan import scan_request, scan_response

#: defaults for the virtual server keys ``max_request_line`` / ``max_head_size``
MAX_REQUEST_LINE = 8 * 1024
MAX_HEAD_SIZE = 32 * 1024
#: the most one read can hand the parser
READ_SLACK = 64 * 1024
#: room for the last chunk's own line and the final CRLF next to a trailer
#: section of the full ``max_head``
_CHUNK_LINE_SLACK = 1024


#: head bytes of a status line besides its reason phrase: "HTTP/1.1 200 " and CRLF
#: (the reason phrase may arrive in any number of ``on_status`` pieces)
_STATUS_LINE_FIXED = 13
#: control characters that may not appear in a reason phrase (HTAB may)
_REASON_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

#: what llhttp says of bytes after a message that was not kept alive
_CLOSED = "Data after `Connection: close`"

#: trailer fields refused: llhttp lets them change how it frames what
#: follows on the connection (a trailer ``Connection: close`` or
#: ``Transfer-Encoding: x`` makes it refuse the next message), so a message
#: carrying one would break the next — another client's, on a pooled member
#: connection. RFC 9110 §6.5.1 forbids them there anyway.
_FRAMING_TRAILERS = frozenset((b"transfer-encoding", b"content-length", b"connection",
                               b"proxy-connection"))


class HTTPError(Exception):
    """A message we refuse: ``status`` for the client (or 502 when a member
    sent it), ``reason`` for the log."""

    def __init__(self, status: int, reason: str):
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def _llhttp_error(e: Exception, what: str, status: int = 400) -> HTTPError:
    if isinstance(e, httptools.HttpParserInvalidMethodError):
        return HTTPError(501, f"{what}: unknown method")
    cause = e.__context__ if isinstance(e, httptools.HttpParserCallbackError) else None
    if isinstance(cause, HTTPError):
        return cause
    if cause is not None:
        raise cause
    return HTTPError(status, f"{what}: {e}")


#: what the fast path does instead of llhttp's callbacks (see ``_Base.fast``)
_CALLBACKS = ("on_message_begin", "on_url", "on_status", "on_header", "on_headers_complete",
              "on_body", "on_message_complete", "_headers_done", "_check_status_line")


class _Base:
    """What request and response parsing share: the head collection, the
    size accounting, trailers, and the chunked flag."""

    #: offer heads to the scanner first (off: llhttp parses everything, as
    #: before the fast path; the differential tests compare both)
    fast = True

    def __init_subclass__(cls, **kwargs):
        """A subclass elsewhere that overrides how llhttp's callbacks decide
        a message (a test planting a bug, say) gets the llhttp path only:
        the fast path would go round its override."""
        super().__init_subclass__(**kwargs)
        if cls.__module__ != __name__ and any(name in vars(cls) for name in _CALLBACKS):
            cls.fast = False

    def __init__(self, sink, max_head: int):
        self.sink = sink
        #: llhttp is between messages in its start state, and was fed
        #: nothing since: the next message may go to the fast path
        self._idle = True
        #: a message the fast path took was not kept alive: like llhttp,
        #: refuse anything after it but empty lines
        self._closed = False
        #: body bytes still due to a message the fast path took
        self._body_left = 0
        self.max_head = max_head
        self.in_head = False
        self.head_bytes = 0  # bytes received since the head began (bounded check)
        self.head_size = 0  # exact size of the parsed pieces
        self.headers: list = []
        self.trailers: list | None = None
        self.chunked = False
        self.content_length = False
        #: a chunked body is being received (until its last chunk ends)
        self.framing_open = False
        #: bytes of framing (not body) received since the last chunk ended:
        #: an upper bound, checked after each read (see ``feed``)
        self.frame_bytes = 0
        #: exact size of the trailer fields parsed so far
        self.trailer_size = 0
        self._chunk_body = 0  # body bytes of the current chunk
        self._body_since = 0  # body bytes since the read began or framing restarted
        self._restarted = False  # framing restarted (head or chunk ended) in this read
        self._framing_seen()

    def _framing_seen(self) -> None:
        #: what the framing checks need, noted as headers go by
        self.hosts = 0
        self.length = None
        self.te: list = []

    # -- llhttp callbacks shared by both ---------------------------------

    def on_message_begin(self):
        self.in_head = True
        self.framing_open = False
        self.head_size = 0
        self.headers = []
        self.trailers = None
        self.chunked = False
        self.content_length = False
        self._framing_seen()

    def on_header(self, name: bytes, value: bytes):
        if self.trailers is not None:
            self.trailer_size += len(name) + len(value) + 4
            if self.trailer_size > self.max_head:
                raise self._trailers_too_big()
            if name.lower() in _FRAMING_TRAILERS:
                raise HTTPError(400, f"{name.decode('latin-1')} in a trailer section")
            self.trailers.append((name, value))
            return
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.max_head:
            raise self._too_big()
        self.headers.append((name, value))
        # Only three names matter to framing; their lengths rule out the rest cheaply.
        size = len(name)
        if size == 4 or size == 14 or size == 17:
            lower = name.lower()
            if lower == b"host":
                self.hosts += 1
            elif lower == b"content-length":
                self.length = int(value)  # llhttp has checked it is digits
            elif lower == b"transfer-encoding":
                self.te.append(value)

    def on_body(self, body: bytes):
        self._chunk_body += len(body)
        self._body_since += len(body)
        self.sink.body(body)

    def on_chunk_header(self):
        self._chunk_body = 0

    def on_chunk_complete(self):
        # After a data chunk's CRLF, or after the trailer section of the
        # last chunk (the only chunk without body bytes): the framing count
        # starts again from here.
        self._frame_restart()
        if self._chunk_body == 0:
            self.framing_open = False

    def _frame_restart(self) -> None:
        self._restarted = True
        self._body_since = 0

    def _headers_done(self):
        """Checks common to requests and responses, after the head."""
        self.in_head = False
        self.head_bytes = 0
        te = self.te
        if te:
            # Exactly "chunked": llhttp keeps trailing whitespace in the value
            # and then does not see "chunked" itself (a desync if we did).
            if len(te) != 1 or te[0].lower() != b"chunked":
                raise HTTPError(400, "Transfer-Encoding other than chunked")
            self.chunked = True
        self.content_length = self.length is not None
        # Trailers arrive through on_header after the last chunk.
        self.trailers = []
        self.trailer_size = 0
        self.framing_open = self.chunked
        self._frame_restart()

    def _too_big(self) -> HTTPError:
        return HTTPError(431, f"head over {self.max_head} bytes")

    def _trailers_too_big(self) -> HTTPError:
        return HTTPError(431, f"chunk framing or trailers over {self.max_head} bytes")

    def feed(self, data: bytes) -> None:
        """Parse ``data``; raises HTTPError.

        The 431 itself comes from the exact size of the parsed pieces; this
        coarser count of the bytes received while a head is unfinished only
        bounds memory (httptools joins a header's fragments before it calls
        us), so it allows one read of slack for the bytes that preceded the
        head in the same read. The same holds for a chunked body's framing
        (see ``_count_framing``)."""
        self._restarted = False
        self._body_since = 0
        self._feed(data)
        if self.in_head:
            self.head_bytes += len(data)
            if self.head_bytes > self.max_head + READ_SLACK:
                raise self._too_big()
        elif self.framing_open:
            self._count_framing(len(data))

    def _count_framing(self, size: int) -> None:
        """Bound the bytes of a chunked body that are not body: chunk-size
        lines with their extensions, and the trailer section — llhttp skips
        the former and httptools buffers the latter whole before calling
        us, so neither shows in a callback until it ends. Counted from the
        last chunk's end (or the head's); a read in which one of those came
        counts whole before it (an upper bound: one read of slack, as for
        heads, and a chunk-size line's worth)."""
        if self._restarted:
            self.frame_bytes = size - self._body_since
        else:
            self.frame_bytes += size - self._body_since
        if self.frame_bytes > self.max_head + READ_SLACK + _CHUNK_LINE_SLACK:
            raise self._trailers_too_big()


class RequestParser(_Base):
    """Parses a client's stream of requests.

    Sink methods: ``request(head, keep_alive, has_body)``, ``body(data)``,
    ``end(trailers)``, ``upgrade(rest)`` (after an ``Upgrade`` request's head:
    the bytes that followed it, which belong to the tunnel if the member
    answers 101, or to the next request if not).
    """

    def __init__(self, sink, max_request_line: int = MAX_REQUEST_LINE,
                 max_head: int = MAX_HEAD_SIZE):
        super().__init__(sink, max_head)
        self.max_request_line = max_request_line
        self.url = b""
        self.parser = httptools.HttpRequestParser(self)

    def _feed(self, data: bytes) -> None:
        if self._idle and self.fast:
            data = self._scan(data)
            if not data:
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._idle = False
            self.sink.upgrade(data[e.args[0]:])
        except httptools.HttpParserError as e:
            raise _llhttp_error(e, "bad request") from None

    def _scan(self, data: bytes) -> bytes:
        """The fast path over one read: takes every whole message in the
        subset from its start; answers what llhttp must parse (from the
        first byte of a message the scanner did not take), or b""."""
        size = len(data)
        pos = 0
        left = self._body_left
        if left:
            pos = left if left < size else size
            self.sink.body(data if pos == size else data[:pos])
            left = self._body_left = left - pos
            if left:
                return b""
            self.sink.end([])
        while pos < size:
            if self._closed:
                if data[pos:].strip(b"\r\n"):
                    raise HTTPError(400, f"bad request: {_CLOSED}")
                return b""
            found = scan_request(data, pos, self.max_request_line, self.max_head)
            if found is None:
                return data[pos:] if pos else data
            end, method, target, version, keep_alive, length, raw = found
            self.length = length
            self.content_length = length is not None
            self.chunked = False
            if not keep_alive:
                self._closed = True
            pos = end
            self.sink.request(RequestHead(method, target, version, None, raw=raw),
                              keep_alive, bool(length))
            if length:
                take = size - pos
                if take >= length:
                    take = length
                elif not take:
                    self._body_left = length
                    return b""
                self.sink.body(data[pos:pos + take] if pos or take < size else data)
                pos += take
                if take < length:
                    self._body_left = length - take
                    return b""
            self.sink.end([])
        return b""

    def on_message_begin(self):
        self._idle = False
        super().on_message_begin()
        self.url = b""
        # The head began: count from here (a previous message's body bytes
        # in the same read do not count).
        self.head_bytes = 0

    def on_url(self, url: bytes):
        self.url += url
        if len(self.url) > self.max_request_line:
            raise HTTPError(414, f"request line over {self.max_request_line} bytes")
        self.head_size += len(url)

    def on_headers_complete(self):
        parser = self.parser
        method = parser.get_method().decode("ascii")
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise HTTPError(505, f"HTTP/{version} not supported")
        if method == "CONNECT":
            raise HTTPError(501, "CONNECT is not supported by a reverse proxy")
        self._headers_done()
        if self.chunked and version == "1.0":
            raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
        hosts = self.hosts
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            raise HTTPError(400, "an HTTP/1.1 request needs exactly one Host header")
        has_body = self.chunked or (self.length is not None and self.length > 0)
        if has_body and parser.should_upgrade():
            # llhttp hands over the connection right after such a head, body
            # unread: the member would be told Content-Length: N while the
            # N bytes went to the tunnel, or were parsed as the next request
            # when it did not switch — a desync. Refused, as Upgrade with a
            # body has no safe single framing here.
            raise HTTPError(400, "an Upgrade request with a body")
        head = RequestHead(method, self.url.decode("latin-1"), version, self.headers)
        self.sink.request(head, parser.should_keep_alive(), has_body)

    def on_message_complete(self):
        # llhttp is in its start state again unless the message was not
        # kept alive (then it refuses whatever follows)
        self._idle = self.parser.should_keep_alive()
        self.sink.end(self.trailers or [])


class ResponseParser(_Base):
    """Parses one member connection's responses, one request at a time.

    ``expect(method)`` must be called before each request's response, so
    that a response to HEAD is known to have no body. Sink methods:
    ``response(head, keep_alive, framing)`` with framing one of ``"none"``,
    ``"length"``, ``"chunked"``, ``"close"``; ``informational(head)`` for 1xx
    other than 101; ``body(data)``; ``end(trailers)``; ``upgrade(rest)`` after a
    101 head.

    One request gets one response: whatever the member sends after it —
    in the same read or later — was not asked for. It is never parsed as a
    response (it would answer the next request sent on this connection:
    a desync), only counted in ``extra``; the data path then closes the
    connection instead of keeping it. ``end`` is called once the read that
    completed the response has been looked at whole, so ``extra`` is known
    by then.
    """

    def __init__(self, sink, max_head: int = MAX_HEAD_SIZE):
        super().__init__(sink, max_head)
        self.parser = httptools.HttpResponseParser(self)
        self.reason = b""
        self.head_only = False
        #: the final response is whole (its ``end`` is due or was called)
        self.complete = False
        #: bytes (at least; llhttp does not say where it stopped) that
        #: arrived after the complete response
        self.extra = 0
        #: llhttp was stopped mid-stream: the next response needs a new one
        self._stopped = False
        #: the trailers of a response that completed in the current read
        self._ended: list | None = None
        #: the last bytes of a HEAD response (is anything after its head?)
        self._tail = b""

    def expect(self, method: str) -> None:
        """The next response answers a ``method`` request."""
        if method == "HEAD" or self._stopped:
            # llhttp cannot be told that a response has no body: a HEAD
            # exchange gets a parser of its own, stopped after the head.
            self.parser = httptools.HttpResponseParser(self)
            self._idle = True
            self._closed = False
        self.head_only = method == "HEAD"
        self.complete = False
        self.extra = 0
        self._stopped = False
        self._ended = None
        self._tail = b""

    def _feed(self, data: bytes) -> None:
        if self.complete:
            self._unsolicited(data)
            return
        if self.head_only:
            self._tail = (self._tail + data)[-4:]
        if self._idle and self.fast:
            rest = self._scan(data)
            if rest:
                self._llhttp(rest)
        else:
            self._llhttp(data)
        trailers, self._ended = self._ended, None
        if trailers is not None:
            self.sink.end(trailers)

    def _scan(self, data: bytes) -> bytes:
        """The fast path over one read (see ``RequestParser._scan``): one
        response at most, then the rest is unsolicited."""
        size = len(data)
        left = self._body_left
        if left:
            pos = left if left < size else size
            self.sink.body(data if pos == size else data[:pos])
            left = self._body_left = left - pos
            if left:
                return b""
        else:
            if self._closed:
                if data.strip(b"\r\n"):
                    raise HTTPError(502, f"bad response: {_CLOSED}")
                return b""
            found = scan_response(data, 0, self.max_head)
            if found is None:
                return data
            end, status, reason, version, keep_alive, length, raw = found
            head_only = self.head_only
            if head_only or status == 204 or status == 304:
                framing = "none"
            elif length is not None:
                framing = "length"
            else:
                return data  # framed by the connection's end: llhttp's
            self.length = length
            self.content_length = length is not None
            self.chunked = False
            self.reason = reason
            if not keep_alive and not head_only:
                self._closed = True
            self.sink.response(ResponseHead(status, reason, version, None, raw=raw),
                               keep_alive, framing)
            pos = end
            if head_only:
                # As llhttp is stopped after the head: whether anything came
                # after it is told by how the read ends.
                self.complete = True
                self._ended = []
                if not self._tail.endswith(b"\r\n\r\n"):
                    self.extra = 1
                return b""
            if framing == "length" and length:
                take = size - pos
                if take < length:
                    if take:
                        self.sink.body(data[pos:])
                    self._body_left = length - take
                    return b""
                self.sink.body(data[pos:pos + length])
                pos += length
        self.complete = True
        self._ended = []
        if pos < size and data[pos:].strip(b"\r\n"):
            # llhttp would begin a message there (or refuse it after a
            # response not kept alive): unsolicited either way
            self._stopped = True
            self.extra = max(self.extra, 1)
        return b""

    def _llhttp(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._idle = False
            self.sink.upgrade(data[e.args[0]:])
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, _HeadDone):
                # We cannot know where in ``data`` llhttp stopped: whether
                # anything came after the head is told by how the read ends.
                self._stopped = True
                self.complete = True
                self._ended = []
                if not self._tail.endswith(b"\r\n\r\n"):
                    self.extra = 1
            elif isinstance(cause, _Unsolicited):
                self._stopped = True
                self.extra = max(self.extra, 1)
            else:
                raise _llhttp_error(e, "bad response", 502) from None
        except httptools.HttpParserError as e:
            if not self.complete:
                raise HTTPError(502, f"bad response: {e}") from None
            # e.g. llhttp's "data after Connection: close"
            self._stopped = True
            self.extra = max(self.extra, 1)

    def _unsolicited(self, data: bytes) -> None:
        """Bytes after the complete response, in a later read. Empty lines
        are let pass, as llhttp lets them pass between messages."""
        if data.strip(b"\r\n"):
            self.extra += len(data)

    def on_message_begin(self):
        if self.complete:
            # A second message after the response in the same read.
            raise _Unsolicited()
        self._idle = False
        super().on_message_begin()
        self.head_bytes = 0
        self.reason = b""
        # The status line's fixed part ("HTTP/1.1 200 " and its CRLF), once:
        # the reason phrase itself may come in any number of pieces.
        self.head_size = _STATUS_LINE_FIXED

    def on_status(self, reason: bytes):
        self.reason += reason
        self.head_size += len(reason)
        if self.head_size > self.max_head:
            raise self._too_big()

    def _too_big(self) -> HTTPError:
        # A member's fault, not the client's: 502 (the data path answers 502
        # for any bad response; the status says so where it is raised too).
        return HTTPError(502, f"bad response: head over {self.max_head} bytes")

    def _trailers_too_big(self) -> HTTPError:
        return HTTPError(502, f"bad response: chunk framing or trailers over "
                              f"{self.max_head} bytes")

    def on_headers_complete(self):
        parser = self.parser
        status = parser.get_status_code()
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise HTTPError(502, f"bad response: HTTP/{version}")
        try:
            self._headers_done()
        except HTTPError as e:
            raise HTTPError(502, f"bad response: {e.reason}") from None
        self._check_status_line(status)
        if self.head_only or status < 200 or status in (204, 304):
            self.framing_open = False  # no body follows this head
        head = ResponseHead(status, self.reason.decode("latin-1"), version, self.headers)
        keep_alive = parser.should_keep_alive()
        if 100 <= status < 200 and status != 101:
            self.trailers = None
            self.sink.informational(head)
            return
        if status == 101:
            self.trailers = None  # no message end: upgrade() follows
            self.sink.response(head, False, "none")
            return
        if self.head_only or status in (204, 304):
            framing = "none"
        elif self.chunked:
            framing = "chunked"
        elif self.content_length:
            framing = "length"
        else:
            framing = "close"
            keep_alive = False
        self.sink.response(head, keep_alive, framing)
        if self.head_only:
            raise _HeadDone()

    def _check_status_line(self, status: int) -> None:
        """What llhttp lets through in a status line and a 1xx head.

        - a status outside 100-599 (RFC 9110 §15): llhttp takes any three
          digits, ``000`` too;
        - a control character other than HTAB in the reason phrase (RFC 9112
          §4: HTAB, SP, VCHAR, obs-text): llhttp takes NUL and the like, and
          the reason phrase is written to the client as it came;
        - a 1xx other than 101 with Content-Length or Transfer-Encoding: it has
          no content (RFC 9110 §15.2, and §8.6 forbids the Content-Length),
          but llhttp reads a body for 104-199 by those headers — the next
          response's bytes would be taken for it (or, chunked, for its
          trailers). Refused rather than guessed at.
        """
        if not 100 <= status <= 599:
            raise HTTPError(502, f"bad response: status {status:03d}")
        if _REASON_CONTROL.search(self.reason):
            raise HTTPError(502, "bad response: a control character in the reason phrase")
        if 100 <= status < 200 and status != 101 and (self.te or self.length is not None):
            raise HTTPError(502, f"bad response: a {status} response with "
                                 "Content-Length or Transfer-Encoding")

    def on_message_complete(self):
        self._idle = self.parser.should_keep_alive()
        if self.trailers is None:  # the end of a 1xx
            return
        self.complete = True
        # ``end`` once this read is looked at whole (see _feed): anything
        # after the response in it must be known before the exchange ends.
        self._ended = self.trailers


class _HeadDone(Exception):
    """Raised from the callback to stop llhttp after a HEAD response's head."""


class _Unsolicited(Exception):
    """Raised from the callback to stop llhttp at a message that follows
    the complete response."""
