"""Writing heads out again, as a proxy must (RFC 9110 §7.6).

Hop-by-hop headers (``Connection`` and every header it names,
``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Upgrade`` outside an upgrade,
``Transfer-Encoding`` where we re-frame) describe one connection and are
not passed on. Everything else goes out as it came: same names, same case,
same order, so a request that needed no change reaches the member byte for
byte, followed by the ``X-Forwarded-*`` lines when ``forwarded_for`` is on.

A ``Connection`` token never removes a header that frames or routes the
message (:data:`PROTECTED`): ``Content-Length``, ``Transfer-Encoding`` and
``Host`` are end-to-end whatever ``Connection`` says (RFC 9110 §7.6.1 forbids
listing them). We framed the body by them and chose the member by them; if
the copy we forward lost them, the member would read the body as a second
request (request smuggling) or answer for another host. Such tokens are
ignored, as HAProxy ignores every token but ``close``, ``keep-alive`` and
``upgrade``; the message itself is still served.
"""

from __future__ import annotations

import functools

from lbframe.messages import RequestHead, ResponseHead

_ALWAYS_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te",
                         b"upgrade"))

#: names a ``Connection`` token can never make hop-by-hop: the framing and
#: routing lbframe decided by. (The headers lbframe writes itself —
#: ``X-Forwarded-*``, ``X-Client-Cert-Subject``, ``Connection`` — are added
#: after the filtering, so no token can remove them.)
PROTECTED = frozenset((b"content-length", b"transfer-encoding", b"host"))


def connection_tokens(headers) -> set:
    """The lower-cased tokens of every ``Connection`` header, whitespace
    around each token removed (tabs too), empty list elements skipped."""
    listed = set()
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            for token in value.split(b","):
                token = token.strip(b" \t").lower()
                if token:
                    listed.add(token)
    return listed


def _dropped(headers, extra: frozenset) -> tuple[frozenset, frozenset]:
    """Names not to forward — the hop-by-hop ones, ``extra``, and those
    ``Connection`` lists — and the set of their lengths: a header whose name
    length is not in it is forwarded without lower-casing its name (most
    are; this runs twice per request)."""
    listed = connection_tokens(headers) - PROTECTED
    if not listed:
        cached = _CACHE.get(extra)
        if cached is None:
            names = _ALWAYS_HOP | extra
            cached = _CACHE[extra] = (names, frozenset(map(len, names)))
        return cached
    names = _ALWAYS_HOP | extra | listed
    return names, frozenset(map(len, names))


#: ``_dropped`` results for the usual case (nothing listed in ``Connection``)
_CACHE: dict = {}


# -- heads as received ------------------------------------------------------
#
# A head the parser's fast path read (``head.raw``, see scan.py) is in the
# form these functions write: the start line as they write it and every
# field line exactly ``name: value CRLF``. Rebuilding it would give back the
# same bytes for every line kept, so the head goes out as received, with
# only the lines to drop cut out and the lines to add appended — the same
# bytes as the rebuild, without a Python step per header.

#: how a droppable field line begins, in the lower-cased head
_LINE_START = {name: b"\n" + name + b": " for name in (
    b"connection", b"keep-alive", b"te", b"close", b"x-forwarded-proto",
    b"x-client-cert-subject")}


def _cut(data: bytes, present: tuple, dropped) -> bytes:
    """``data`` without the field lines named in ``dropped`` (``present``:
    the droppable names it has, lower-cased, one per line)."""
    if len(present) == 1:
        # The usual case (a browser's or nginx's Connection: keep-alive).
        name = present[0]
        if name not in dropped:
            return data
        start = _LINE_START[name]
        low = data.lower()
        i = low.find(start) + 1
        end = low.index(b"\r\n", i) + 2
        return data[:i] + data[end:]
    spans = None
    low = None
    for name in present:
        if name not in dropped:
            continue
        if low is None:
            low = data.lower()
            spans = []
        elif any(name == seen for seen, _, _ in spans):
            continue  # all its lines are found already
        start = _LINE_START[name]
        i = low.find(start)
        while i >= 0:
            end = low.index(b"\r\n", i + 1) + 2
            spans.append((name, i + 1, end))
            i = low.find(start, end - 2)
    if spans is None:
        return data
    if len(spans) == 1:
        _, a, b = spans[0]
        return data[:a] + data[b:]
    spans.sort(key=lambda span: span[1])
    pieces = []
    last = 0
    for _, a, b in spans:
        pieces.append(data[last:a])
        last = b
    pieces.append(data[last:])
    return b"".join(pieces)


_REQUEST_DROPPED = {
    # (forwarded_for on, client_cert on, Connection: close) -> names cut
    (f, c, close): frozenset(_ALWAYS_HOP | ({b"x-forwarded-proto"} if f else set())
                             | ({b"x-client-cert-subject"} if c else set())
                             | ({b"close"} if close else set()))
    for f in (False, True) for c in (False, True) for close in (False, True)}
_RESPONSE_DROPPED = {close: frozenset(_ALWAYS_HOP | {b"transfer-encoding"}
                                      | ({b"close"} if close else set()))
                     for close in (False, True)}


@functools.lru_cache(maxsize=4096)
def _forwarded(forwarded_for: str, proto: bytes) -> bytes:
    """The X-Forwarded-* lines for one client (the same for all its requests)."""
    return b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n" % (
        forwarded_for.encode("ascii"), proto)


_CLIENT_CERT = b"x-client-cert-subject"
_NO_EXTRA = frozenset()
_FORWARDED = frozenset((b"x-forwarded-proto",))


def request_bytes(head: RequestHead, forwarded_for: str | None, proto: bytes,
                  upgrade: bool, client_cert: str | None | bool = False,
                  member_keep_alive: bool = False) -> bytes:
    """The request head to send to a member.

    ``forwarded_for`` is the client's address to append as
    ``X-Forwarded-For`` (None: add nothing); the client's own
    ``X-Forwarded-Proto`` is replaced then, since only we know the scheme.
    ``client_cert`` (with ``client_ca``): the subject of the client's
    certificate, or None when it showed none; any
    ``X-Client-Cert-Subject`` the client sent is dropped either way. False:
    no client certificates here, the header is not ours to touch.
    ``member_keep_alive``: we keep member connections for reuse, so an
    HTTP/1.0 request asks the member to keep this one open
    (``Connection: keep-alive``; HTTP/1.1 is persistent without it). The
    client's own ``Connection`` header is hop-by-hop and never decides
    that: without this, every HTTP/1.0 request (``ab -k``, old proxies)
    would cost a new member connection, as the member closes after
    answering a plain HTTP/1.0 request. HAProxy does the same.
    """
    raw = head.raw and head.received()
    if raw is not None and not upgrade:
        data, present, token = raw[0], raw[1], raw[2]
        if present:
            data = _cut(data, present, _REQUEST_DROPPED[
                forwarded_for is not None, client_cert is not False, token == b"close"])
        if member_keep_alive and head.version == "1.0":
            data += b"Connection: keep-alive\r\n"
        if client_cert:
            if forwarded_for is not None:
                data += _forwarded(forwarded_for, proto)
            return data + b"X-Client-Cert-Subject: %s\r\n\r\n" % client_cert.encode("utf-8")
        if forwarded_for is not None:
            return data + _forwarded(forwarded_for, proto) + b"\r\n"
        return data + b"\r\n"
    extra = _NO_EXTRA if forwarded_for is None else _FORWARDED
    if client_cert is not False:
        extra = extra | {_CLIENT_CERT}
    dropped, lengths = _dropped(head.headers, extra)
    out = [b"%s %s HTTP/%s\r\n" % (head.method.encode("ascii"), head.target.encode("latin-1"),
                                    head.version.encode("ascii"))]
    for name, value in head.headers:
        if len(name) in lengths and name.lower() in dropped:
            if upgrade and name.lower() == b"upgrade":
                out.append(b"%s: %s\r\n" % (name, value))
            continue
        out.append(b"%s: %s\r\n" % (name, value))
    if upgrade:
        out.append(b"Connection: Upgrade\r\n")
    elif member_keep_alive and head.version == "1.0":
        out.append(b"Connection: keep-alive\r\n")
    if forwarded_for is not None:
        out.append(b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n"
                   % (forwarded_for.encode("ascii"), proto))
    if client_cert:
        out.append(b"X-Client-Cert-Subject: %s\r\n" % client_cert.encode("utf-8"))
    out.append(b"\r\n")
    return b"".join(out)


_NOT_FRAMING = frozenset((b"transfer-encoding",))


def response_bytes(head: ResponseHead, chunked: bool, close: bool, keep_alive: bool,
                   extra: tuple = ()) -> bytes:
    """The response head to send to the client.

    ``chunked``: we frame the body as chunked (``Transfer-Encoding: chunked``
    is written by us, never copied); ``close``: we will close after it;
    ``keep_alive``: say ``Connection: keep-alive`` (an HTTP/1.0 client that
    asked for it); ``extra``: headers to add, e.g. a persistence cookie.
    """
    raw = head.raw and head.received()
    if raw is not None:
        data, present = raw[0], raw[1]
        if present:
            data = _cut(data, present, _RESPONSE_DROPPED[raw[2] == b"close"])
        if data[7] != 0x31:  # "HTTP/1.0": we answer in 1.1
            data = b"HTTP/1.1" + data[8:]
        if extra or chunked or close or keep_alive:
            return b"".join(_response_tail([data], extra, chunked, False, close, keep_alive))
        return data + b"\r\n"
    upgrade = head.status == 101
    dropped, lengths = _dropped(head.headers, _NOT_FRAMING)
    out = [b"HTTP/1.1 %d %s\r\n" % (head.status, head.reason.encode("latin-1"))]
    for name, value in head.headers:
        if len(name) in lengths:
            lower = name.lower()
            if lower in dropped and not (upgrade and lower == b"upgrade"):
                continue
        out.append(b"%s: %s\r\n" % (name, value))
    return b"".join(_response_tail(out, extra, chunked, upgrade, close, keep_alive))


def _response_tail(out: list, extra, chunked: bool, upgrade: bool, close: bool,
                   keep_alive: bool) -> list:
    """``out`` (a response head's lines so far) with the lines lbframe adds
    and the empty line that ends the head."""
    for name, value in extra:
        out.append(b"%s: %s\r\n" % (name, value))
    if chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade:
        out.append(b"Connection: Upgrade\r\n")
    elif close:
        out.append(b"Connection: close\r\n")
    elif keep_alive:
        out.append(b"Connection: keep-alive\r\n")
    out.append(b"\r\n")
    return out


#: fields that must not travel in a trailer section (RFC 9110 §6.5.1): the
#: framing, routing and connection ones. A recipient that merged them into
#: the head would re-frame or re-route a message already framed and routed.
_NOT_IN_TRAILERS = _ALWAYS_HOP | PROTECTED | frozenset((b"trailer",))


def trailer_bytes(trailers) -> bytes:
    """The last chunk and its trailer section, without the fields a
    trailer may not carry (dropped, not refused: the body is already
    on its way, and the fields mean nothing there)."""
    kept = [pair for pair in trailers if pair[0].lower() not in _NOT_IN_TRAILERS]
    return b"0\r\n" + b"".join(b"%s: %s\r\n" % pair for pair in kept) + b"\r\n"
