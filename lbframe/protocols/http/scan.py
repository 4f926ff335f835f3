"""A one-call scanner for the common HTTP/1.x head: the parser's fast path.

llhttp (through httptools) costs a Python callback per header, per URL
piece, per message begin and end — about half of the CPU a proxied request
costs. Most heads on a keep-alive connection are small, arrive whole in one
read and use a tiny part of the grammar. For those, one compiled regular
expression recognizes the whole head, a second splits its fields, and a
third finds the few fields that frame the message or the connection.

The scanner accepts a deliberately *conservative subset* of what llhttp
accepts, and answers ``None`` for anything else — the caller then hands the
message, from its first byte, to llhttp, which decides it whole (a message
is never seen by both). The subset:

- request line ``METHOD SP origin-form SP HTTP/1.x CRLF`` with a method of
  :data:`METHODS` and a target of unreserved/sub-delims/``:@/?%`` only;
- status line ``HTTP/1.x SP 3DIGIT SP reason CRLF`` with a status of
  200-599 and a non-empty reason of visible ASCII (inner spaces allowed);
- field lines exactly ``token ": " value CRLF`` — one space after the colon,
  a value of visible ASCII with inner SP/HTAB, neither starting nor ending
  with whitespace (possibly empty). Forwarding rebuilds each kept line as
  ``name: value``, so a head in this form is forwarded byte for byte
  (:mod:`.heads` uses that);
- framing: no ``Transfer-Encoding``, ``Upgrade``, ``Proxy-Connection``,
  ``Expect``; at most one ``Content-Length`` of 1-15 plain digits; at most
  one ``Connection`` whose value is ``close`` or ``keep-alive`` (any case);
  a request has exactly one ``Host`` (HTTP/1.0: at most one);
- the head within the size limits with room to spare (so that none of the
  414/431 checks of the llhttp path could fire).

``keep_alive`` is computed as llhttp's ``should_keep_alive`` does for what
is accepted: HTTP/1.1 unless ``Connection: close``; HTTP/1.0 only with
``Connection: keep-alive``; and, for a response, not when the message would
need the connection's end to frame it (llhttp does not know a response
answers HEAD: a HEAD response without Content-Length is not kept alive,
exactly as on the llhttp path).

tests/protocols/http/test_scan.py proves the subset against llhttp with
generated messages and near misses.
"""

from __future__ import annotations

import re

METHODS = {b"GET": "GET", b"HEAD": "HEAD", b"POST": "POST", b"PUT": "PUT",
           b"DELETE": "DELETE", b"OPTIONS": "OPTIONS", b"PATCH": "PATCH"}

#: field lines, with possessive repeats (no backtracking: each line is
#: taken or the match fails). A value is empty or words of visible ASCII
#: separated by SP/HTAB runs — never whitespace at either end, which
#: llhttp drops before a value and keeps after it, and which a rebuilt
#: line would not reproduce.
_FIELDS = (rb"((?:[-!#$%&'*+.^_`|~0-9A-Za-z]++: (?:[!-~]++(?:[\t ]++[!-~]++)*+)?+\r\n)*+)"
           rb"\r\n")

_REQUEST = re.compile(
    rb"(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) (/[-A-Za-z0-9._~!$&'()*+,;=:@/?%]*+)"
    rb" HTTP/1\.([01])\r\n" + _FIELDS)
_RESPONSE = re.compile(
    rb"HTTP/1\.([01]) ([2-5][0-9][0-9]) ([!-~]++(?: ++[!-~]++)*+)\r\n" + _FIELDS)

#: the fields that frame the message or the connection, or that a
#: forwarded head may drop (see heads.py), in the lower-cased field block:
#: (name, value), found in one pass
_SPECIAL = re.compile(
    rb"\n(host|content-length|connection|transfer-encoding|proxy-connection|upgrade|expect"
    rb"|keep-alive|te|close|x-forwarded-proto|x-client-cert-subject): ([^\r]*)")

_FALLBACK = frozenset((b"transfer-encoding", b"proxy-connection", b"upgrade", b"expect"))
_MAX_LENGTH_DIGITS = 15


def _fields(block: bytes):
    """The framing facts of a field block (with the line feed before it):
    (Host count, Content-Length or
    None, Connection token or None, the lower-cased names of the fields
    heads.py may drop, in order), or None for anything outside the subset."""
    specials = _SPECIAL.findall(block.lower())
    if not specials:
        return 0, None, None, ()
    hosts = 0
    length = None
    token = None
    droppable = ()
    for name, value in specials:
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            if length is not None or not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                return None
            length = int(value)
        elif name in _FALLBACK:
            return None
        else:
            droppable += (name,)
            if name == b"connection":
                if token is not None or (value != b"close" and value != b"keep-alive"):
                    return None
                token = value
    return hosts, length, token, droppable


def scan_request(data: bytes, pos: int, max_request_line: int, max_head: int):
    """The request head at ``data[pos:]``, or None (not in the subset, or
    incomplete): (end — the index after it, method, target, version,
    keep_alive, Content-Length or None, raw).

    ``raw`` is for ``RequestHead.raw`` (see lbframe/messages.py; heads.py
    forwards it): the head's bytes without its final CRLF, the lower-cased
    names of its fields heads.py may drop, its Connection token, its start
    line as read. The fields are split from it when first read."""
    m = _REQUEST.match(data, pos)
    if m is None:
        return None
    end = m.end()
    if end - pos > max_head:
        return None
    method, target, minor = m.group(1, 2, 3)
    if len(target) > max_request_line:
        return None
    facts = _fields(data[m.start(4) - 1:end - 2])
    if facts is None:
        return None
    hosts, length, token, droppable = facts
    if minor == b"1":
        if hosts != 1:
            return None
        version = "1.1"
        keep_alive = token != b"close"
    else:
        if hosts > 1:
            return None
        version = "1.0"
        keep_alive = token == b"keep-alive"
    method = METHODS[method]
    target = target.decode("latin-1")
    return (end, method, target, version, keep_alive, length,
            (data[pos:end - 2], droppable, token, (method, target, version)))


def scan_response(data: bytes, pos: int, max_head: int):
    """The response head at ``data[pos:]``, or None: (end, status, reason,
    version, keep_alive, Content-Length or None, raw). The caller
    decides the framing (HEAD, 204/304, Content-Length; none of those: ask
    llhttp)."""
    m = _RESPONSE.match(data, pos)
    if m is None:
        return None
    end = m.end()
    if end - pos > max_head:
        return None
    minor, status, reason = m.group(1, 2, 3)
    facts = _fields(data[m.start(4) - 1:end - 2])
    if facts is None:
        return None
    _, length, token, droppable = facts
    status = int(status)
    if minor == b"1":
        version = "1.1"
        keep_alive = token != b"close"
    else:
        version = "1.0"
        keep_alive = token == b"keep-alive"
    if keep_alive and length is None and status != 204 and status != 304:
        keep_alive = False  # llhttp: the message needs the connection's end
    reason = reason.decode("latin-1")
    return (end, status, reason, version, keep_alive, length,
            (data[pos:end - 2], droppable, token, (status, reason)))
