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
    upgrade = head.status == 101
    dropped, lengths = _dropped(head.headers, _NOT_FRAMING)
    out = [b"HTTP/1.1 %d %s\r\n" % (head.status, head.reason.encode("latin-1"))]
    for name, value in head.headers:
        if len(name) in lengths:
            lower = name.lower()
            if lower in dropped and not (upgrade and lower == b"upgrade"):
                continue
        out.append(b"%s: %s\r\n" % (name, value))
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
    return b"".join(out)


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
