"""HTTP heads as the balancer sees them: rules, persistence methods and
access logs read these, the http protocol builds them.

They live here, above the protocols, so that a rule or a persistence method
can read a request without importing the data path. Header names and values
are kept as the bytes that arrived (name case and order preserved, so the
head can be forwarded as it came); the accessors decode on demand, with
latin-1, which maps every byte to one character and cannot fail.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

import attrs

Headers = list  # of (name: bytes, value: bytes), in arrival order

# -- the normalised path (what ``path`` rules match) --------------------------

#: a scheme and authority in front of an absolute-form target
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/\\?#]*")
#: a percent-escape, or a lone ``%`` that starts none
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})?")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SLASHES = re.compile(r"/{2,}")


def _escape(match: re.Match) -> str:
    """An unreserved character decoded (``%61`` → ``a``, ``%2e`` → ``.``);
    any other escape kept with upper-case hex digits (``%2f`` → ``%2F``); a
    ``%`` that starts no escape written ``%25``, so that no escape can
    appear by decoding its neighbours (``%%34%31`` is not ``%41``)."""
    digits = match.group(1)
    if digits is None:
        return "%25"
    char = chr(int(digits, 16))
    return char if char in _UNRESERVED else "%" + digits.upper()


def _dot(segment: str) -> str | None:
    """``"."`` or ``".."`` when ``segment`` is a dot segment — also with
    path parameters (``..;x``), which Tomcat and Jetty read as plain dots."""
    name = segment.split(";", 1)[0]
    return name if name == "." or name == ".." else None


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path without empty segments; ``..``
    above the root stays at the root."""
    segments = path.split("/")[1:]
    last = len(segments) - 1
    out: list[str] = []
    for i, segment in enumerate(segments):
        dot = _dot(segment)
        if dot is None:
            out.append(segment)
            continue
        if dot == ".." and out:
            out.pop()
        if i == last:
            out.append("")  # "/a/b/.." is the directory "/a/"
    return "/" + "/".join(out)


def normalize_path(target: str) -> str:
    """The path of a request target as ``path`` rules see it.

    What servers read as the same path is written one way, so that a rule
    on ``/admin`` cannot be walked past by spelling it differently:
    absolute-form loses its scheme and authority (``http://h/admin`` →
    ``/admin``); the query goes; percent-escapes of unreserved characters
    are decoded and the rest upper-cased (``/%61dmin`` → ``/admin``,
    ``%2f`` → ``%2F`` — an encoded slash stays encoded, it is not a
    separator); backslashes are slashes (IIS reads them so); runs of
    slashes become one; dot segments are removed, encoded ones too
    (``/x/%2e%2e/admin`` → ``/admin``). Idempotent. ``*`` (``OPTIONS *``)
    stays ``*``. The request is forwarded with its original target.
    """
    path = _ABSOLUTE.sub("", target, count=1) if "://" in target else target
    path = path.split("?", 1)[0]
    if path == "*":
        return path
    if "%" in path:
        path = _ESCAPE.sub(_escape, path)
    if "\\" in path:
        path = path.replace("\\", "/")
    if not path.startswith("/"):
        path = "/" + path
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if "." in path:
        path = _remove_dot_segments(path)
    return path


def _find(headers: Headers, name: str) -> list[str]:
    wanted = name.lower().encode("latin-1")
    return [v.decode("latin-1") for n, v in headers if n.lower() == wanted]


#: a field line of a head as the parser's fast path accepts it (scan.py):
#: exactly ``name: value CRLF``
_FIELD_LINE = re.compile(rb"([^:]+): ([^\r]*)\r\n")


class _HeaderLookup:
    """``header``/``header_values`` over a ``headers`` list (both heads),
    and the head as received.

    A head read by the parser's fast path (lbframe/protocols/http/scan.py)
    carries ``raw``: (the head's bytes up to and with the CRLF of its last
    field line, the lower-cased names of its fields a proxy may drop, its
    Connection token, its start line as read, and — once ``headers`` was
    read — the fields as split). Its ``headers`` are split from those bytes
    on first read: the data path itself reads none on most requests, and
    forwards such a head as the bytes it came in (see :meth:`received`)."""

    __slots__ = ()

    @property
    def headers(self) -> Headers:
        """(name, value) bytes pairs, in arrival order, name case kept."""
        headers = self._headers
        if headers is None:
            raw = self.raw
            if raw is None:  # (constructed with None and nothing to split)
                headers = self._headers = []
                return headers
            data = raw[0]
            headers = self._headers = _FIELD_LINE.findall(data, data.index(b"\n") + 1)
            # What was split, to tell later whether anyone changed it.
            self.raw = raw[:4] + (tuple(headers),)
        return headers

    @headers.setter
    def headers(self, value: Headers) -> None:
        self._headers = value
        self.raw = None

    def received(self) -> tuple | None:
        """``raw`` (see the class) when nothing changed the head since it
        was received — start line and fields — else None."""
        raw = self.raw
        if raw is None:
            return None
        if self._start() != raw[3]:
            return None
        headers = self._headers
        if headers is not None and tuple(headers) != raw[4]:
            return None
        return raw

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        values = _find(self.headers, name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name``, in order."""
        return _find(self.headers, name)


@attrs.define(slots=True, eq=False)
class RequestHead(_HeaderLookup):
    """A parsed, validated request head."""

    method: str
    #: the request-target exactly as sent: ``/cart;jsessionid=A1?item=3``
    target: str
    #: ``"1.1"`` or ``"1.0"``
    version: str
    #: (the ``headers`` argument: None splits them from ``raw`` when read)
    _headers: Headers | None = attrs.field(factory=list)
    #: the head as received, when the parser's fast path read it (see
    #: ``_HeaderLookup``); None otherwise
    raw: tuple | None = attrs.field(default=None, kw_only=True, repr=False)
    _cookies: dict | None = attrs.field(default=None, init=False)
    _query: dict | None = attrs.field(default=None, init=False)
    _normalized: str | None = attrs.field(default=None, init=False)

    def _start(self) -> tuple:
        return (self.method, self.target, self.version)

    @property
    def path(self) -> str:
        """The target without its query (path parameters such as
        ``;jsessionid=`` stay: they are part of the path), as sent."""
        return self.target.split("?", 1)[0]

    @property
    def normalized_path(self) -> str:
        """The path as ``path`` rules match it: see :func:`normalize_path`."""
        if self._normalized is None:
            self._normalized = normalize_path(self.target)
        return self._normalized

    @property
    def query(self) -> str:
        """The raw query string, without the ``?``; ``""`` when none."""
        parts = self.target.split("?", 1)
        return parts[1] if len(parts) == 2 else ""

    @property
    def host(self) -> str | None:
        """The Host header, lower-cased, without its port."""
        host = self.header("host")
        if host is None:
            return None
        host = host.strip().lower()
        if host.startswith("["):
            return host.split("]", 1)[0] + "]"
        return host.rsplit(":", 1)[0] if ":" in host else host

    def query_param(self, name: str) -> str | None:
        """The first value of query parameter ``name`` (decoded), or None."""
        if self._query is None:
            params: dict[str, str] = {}
            for pair in self.query.split("&"):
                if not pair:
                    continue
                key, _, value = pair.partition("=")
                params.setdefault(unquote_plus(key), unquote_plus(value))
            self._query = params
        return self._query.get(name)

    def cookie(self, name: str) -> str | None:
        """The value of cookie ``name`` from the Cookie header(s), or None."""
        if self._cookies is None:
            cookies: dict[str, str] = {}
            for line in self.header_values("cookie"):
                for pair in line.split(";"):
                    key, sep, value = pair.strip().partition("=")
                    if sep:
                        cookies.setdefault(key, value.strip().strip('"'))
            self._cookies = cookies
        return self._cookies.get(name)


@attrs.define(slots=True, eq=False)
class ResponseHead(_HeaderLookup):
    """A parsed, validated response head from a member."""

    status: int
    reason: str
    version: str
    #: (the ``headers`` argument: None splits them from ``raw`` when read)
    _headers: Headers | None = attrs.field(factory=list)
    #: the head as received (see ``_HeaderLookup``)
    raw: tuple | None = attrs.field(default=None, kw_only=True, repr=False)

    def _start(self) -> tuple:
        return (self.status, self.reason)

    def set_cookies(self) -> list[tuple[str, str]]:
        """``(name, value)`` of every ``Set-Cookie``, attributes dropped."""
        found = []
        for line in self.header_values("set-cookie"):
            pair = line.split(";", 1)[0]
            key, sep, value = pair.partition("=")
            if sep:
                found.append((key.strip(), value.strip().strip('"')))
        return found
