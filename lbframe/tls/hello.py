"""A strict, bounded parser of the first TLS handshake message of each direction.

``protocol = ssl`` passes TLS through without terminating it; to balance it
reads the client's ClientHello (the server name, SNI, and the session id a
client offers to resume) and, for ``ssl-session-id`` persistence, the
member's ServerHello (the session id the server chose). Nothing else of the
handshake is looked at.

:func:`parse_client_hello` and :func:`parse_server_hello` take the first
bytes of a direction, as read so far, and answer

- ``None`` while the message is not complete yet (read more and call again
  with everything read so far),
- a :class:`ClientHello` / :class:`ServerHello` once it is,
- or raise :class:`HelloError`, with words an operator can read, for input
  that is not the start of a TLS handshake (plain HTTP, an SSLv2-style
  hello, random bytes) or whose lengths do not add up at any level.

Bounds: the handshake message may be fragmented over at most
:data:`MAX_RECORDS` records of at most 2^14 bytes each (RFC 8446 5.1) and
may be at most :data:`MAX_HANDSHAKE` bytes long, so a caller never needs
more than :data:`MAX_INPUT` bytes. Errors are detected as early as the bytes
allow: a first byte that is not 22 fails at once.

Only :class:`HelloError` is ever raised; every read is bounds-checked.
"""

from __future__ import annotations

import struct

import attrs

#: TLS record content type of handshake messages
HANDSHAKE = 22
#: handshake message types
CLIENT_HELLO, SERVER_HELLO = 1, 2
#: the largest record fragment TLS allows (2^14)
MAX_FRAGMENT = 16384
#: the longest first handshake message accepted (4-byte header included)
MAX_HANDSHAKE = 16384
#: the most records a first handshake message may be fragmented over
MAX_RECORDS = 8
#: record header bytes
RECORD_HEADER = 5
#: the most bytes a reader ever needs before the answer is known
MAX_INPUT = MAX_HANDSHAKE + MAX_RECORDS * RECORD_HEADER

#: extension types read
EXT_SERVER_NAME = 0
EXT_SESSION_TICKET = 35
EXT_PRE_SHARED_KEY = 41
EXT_SUPPORTED_VERSIONS = 43

TLS10, TLS11, TLS12, TLS13 = 0x0301, 0x0302, 0x0303, 0x0304

#: ServerHello.random of a HelloRetryRequest (RFC 8446 4.1.3): SHA-256("HelloRetryRequest")
HELLO_RETRY_RANDOM = bytes.fromhex(
    "CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")

#: characters of a host name in SNI (an A-label form; '_' is seen in the wild)
_HOST_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


class HelloError(ValueError):
    """The bytes are not the start of a well-formed TLS handshake."""


@attrs.frozen
class ClientHello:
    #: legacy_version (0x0303 in TLS 1.2 and 1.3 hellos)
    version: int
    random: bytes
    #: legacy_session_id: 0-32 bytes; a 1.3-capable client may send a random one
    session_id: bytes
    cipher_suites: tuple[int, ...]
    compression_methods: bytes
    #: the SNI host_name, lower case without a trailing dot; None when absent
    server_name: str | None
    #: supported_versions (extension 43), empty when absent
    supported_versions: tuple[int, ...]
    #: the session_ticket extension's data: None when absent, b"" when the
    #: client only says it supports tickets, a ticket when it presents one
    session_ticket: bytes | None
    #: a pre_shared_key extension is present (TLS 1.3 resumption)
    pre_shared_key: bool
    #: extension types, in the order sent
    extensions: tuple[int, ...]
    #: bytes of input up to the end of the ClientHello (record headers included)
    end: int

    @property
    def offers_tls13(self) -> bool:
        return TLS13 in self.supported_versions

    @property
    def max_version(self) -> int:
        real = [v for v in self.supported_versions if (v >> 8) == 3]
        return max(real) if real else self.version


@attrs.frozen
class ServerHello:
    #: legacy_version (0x0303 in TLS 1.3)
    version: int
    random: bytes
    #: the session id the server chose (TLS ≤ 1.2) or echoes (TLS 1.3)
    session_id: bytes
    cipher_suite: int
    compression_method: int
    #: supported_versions' selected_version (TLS 1.3), or None
    selected_version: int | None
    #: the server will send a new session ticket (empty session_ticket extension)
    session_ticket: bool
    pre_shared_key: bool
    extensions: tuple[int, ...]
    end: int

    @property
    def negotiated_version(self) -> int:
        return self.selected_version if self.selected_version is not None else self.version

    @property
    def is_tls13(self) -> bool:
        return self.negotiated_version == TLS13

    @property
    def retry_request(self) -> bool:
        """A HelloRetryRequest (TLS 1.3): the client will send a second ClientHello."""
        return self.random == HELLO_RETRY_RANDOM


# -- the record layer ---------------------------------------------------------------

def _describe_start(data: bytes) -> str:
    first = data[0]
    if first & 0x80 and len(data) >= 3 and data[2] == 1:
        return "an SSLv2-style ClientHello (SSL 2.0 and SSLv2-compatible hellos are not accepted)"
    if first & 0x80:
        return f"not a TLS record (first byte 0x{first:02x}; an SSLv2 header?)"
    head = data[:8]
    if head[:1].isalpha() and all(32 <= b < 127 for b in head):
        return f"not TLS: plain text ({bytes(head)!r}, plain HTTP?)"
    names = {20: "change_cipher_spec", 21: "alert", 23: "application_data", 24: "heartbeat"}
    if first in names:
        return f"not a handshake: the first record is {names[first]} ({first})"
    return f"not a TLS handshake record (first byte 0x{first:02x})"


def _handshake(data: bytes, expected: int, what: str) -> tuple[bytes, int] | None:
    """Reassemble the first handshake message from records: ``(message
    body, end offset)`` or None while incomplete."""
    if not data:
        return None
    if data[0] != HANDSHAKE:
        raise HelloError(_describe_start(data))
    fragments = bytearray()
    offset = 0
    records = 0
    size = None  # the message's body length once its header is there
    total = len(data)
    while True:
        if records == MAX_RECORDS:
            raise HelloError(f"{what} fragmented over more than {MAX_RECORDS} records")
        # The record header, checked as far as it has arrived.
        header = data[offset:offset + RECORD_HEADER]
        if header and header[0] != HANDSHAKE:
            raise HelloError(f"{what} interrupted by a record of type {header[0]}")
        if len(header) >= 2 and header[1] != 3:
            raise HelloError(f"record version {header[1]}.{header[2] if len(header) > 2 else '?'}"
                             " is not TLS (major version must be 3)")
        if len(header) >= 3 and header[2] > 4:
            raise HelloError(f"record version 3.{header[2]} is not SSL 3.0 to TLS 1.3")
        if len(header) < RECORD_HEADER:
            _check_header(fragments, expected, what)
            return None
        length = (header[3] << 8) | header[4]
        if length == 0:
            raise HelloError("empty handshake record (zero-length fragment)")
        if length > MAX_FRAGMENT:
            raise HelloError(f"record of {length} bytes (at most {MAX_FRAGMENT})")
        records += 1
        start = offset + RECORD_HEADER
        before = len(fragments)
        fragments += data[start:min(start + length, total)]
        if size is None:
            size = _check_header(fragments, expected, what)
        if size is not None and len(fragments) >= 4 + size:
            # The message ends inside this record (more handshake messages may follow).
            return bytes(fragments[4:4 + size]), start + (4 + size - before)
        if start + length > total:
            return None  # this record is incomplete
        offset = start + length


def _check_header(fragments: bytearray, expected: int, what: str) -> int | None:
    """The handshake header's body length, once the 4 header bytes are in."""
    if fragments and fragments[0] != expected:
        raise HelloError(f"first handshake message is of type {fragments[0]}, not {what} "
                         f"({expected})")
    if len(fragments) < 4:
        return None
    size = (fragments[1] << 16) | (fragments[2] << 8) | fragments[3]
    if size + 4 > MAX_HANDSHAKE:
        raise HelloError(f"{what} of {size + 4} bytes (at most {MAX_HANDSHAKE})")
    return size


# -- inside the message -------------------------------------------------------------

class _Reader:
    """Bounds-checked reads of a complete message body."""

    __slots__ = ("data", "pos", "end", "what")

    def __init__(self, data: bytes, what: str, start: int = 0, end: int | None = None):
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end
        self.what = what

    def left(self) -> int:
        return self.end - self.pos

    def take(self, n: int, field: str) -> bytes:
        if n > self.end - self.pos:
            raise HelloError(f"{self.what}: {field} runs past the end "
                             f"({n} bytes wanted, {self.end - self.pos} left)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "big")

    def vector(self, size: int, field: str) -> bytes:
        """A length-prefixed vector with a ``size``-byte length."""
        return self.take(self.uint(size, f"{field} length"), field)

    def sub(self, size: int, field: str) -> "_Reader":
        n = self.uint(size, f"{field} length")
        if n > self.end - self.pos:
            raise HelloError(f"{self.what}: {field} of {n} bytes runs past the end "
                             f"({self.end - self.pos} left)")
        reader = _Reader(self.data, f"{self.what} {field}", self.pos, self.pos + n)
        self.pos += n
        return reader

    def done(self, field: str) -> None:
        if self.pos != self.end:
            raise HelloError(f"{self.what}: {self.end - self.pos} stray bytes after {field}")


def _legacy_version(r: _Reader, what: str) -> int:
    version = r.uint(2, "version")
    if version >> 8 != 3:
        raise HelloError(f"{what} version {version >> 8}.{version & 0xff} is not TLS "
                         "(major version must be 3)")
    return version


def _session_id(r: _Reader) -> bytes:
    session_id = r.vector(1, "session id")
    if len(session_id) > 32:
        raise HelloError(f"{r.what}: session id of {len(session_id)} bytes (at most 32)")
    return session_id


def _extensions(r: _Reader) -> list[tuple[int, _Reader]]:
    """(type, data reader) of each extension; none when the message ends
    before the extensions block (allowed before TLS 1.3)."""
    if r.left() == 0:
        return []
    block = r.sub(2, "extensions")
    r.done("the extensions")
    data, pos, end = block.data, block.pos, block.end
    found: list[tuple[int, _Reader]] = []
    seen = set()
    while pos < end:
        if end - pos < 4:
            raise HelloError(f"{r.what}: extension header runs past the end "
                             f"(4 bytes wanted, {end - pos} left)")
        kind = (data[pos] << 8) | data[pos + 1]
        size = (data[pos + 2] << 8) | data[pos + 3]
        pos += 4
        if size > end - pos:
            raise HelloError(f"{r.what}: extension {kind} of {size} bytes runs past the end "
                             f"({end - pos} left)")
        if kind in seen:
            raise HelloError(f"{r.what}: extension {kind} appears twice")
        seen.add(kind)
        found.append((kind, _Reader(data, r.what, pos, pos + size)))
        pos += size
    return found


def _server_name(data: _Reader) -> str | None:
    names = data.sub(2, "server name list")
    data.done("the server name list")
    if not names.left():
        raise HelloError(f"{data.what}: empty server name list")
    host = None
    while names.left():
        name_type = names.uint(1, "name type")
        name = names.vector(2, "name")
        if name_type != 0:
            continue  # not host_name: no other type is defined; ignored
        if host is not None:
            raise HelloError(f"{data.what}: two host names")
        if not name or len(name) > 255:
            raise HelloError(f"{data.what}: host name of {len(name)} bytes (1 to 255)")
        if not _HOST_CHARS.issuperset(name):
            raise HelloError(f"{data.what}: host name {name[:64]!r} is not an ASCII DNS name")
        host = name.decode("ascii").lower().rstrip(".")
        if not host:
            raise HelloError(f"{data.what}: host name {name[:64]!r} is empty")
    return host


def parse_client_hello(data: bytes) -> ClientHello | None:
    """The ClientHello at the start of ``data`` (a client's first bytes)."""
    what = "ClientHello"
    found = _handshake(data, CLIENT_HELLO, what)
    if found is None:
        return None
    body, end = found
    r = _Reader(body, what)
    version = _legacy_version(r, what)
    random = r.take(32, "random")
    session_id = _session_id(r)
    suites = r.vector(2, "cipher suites")
    if not suites or len(suites) % 2:
        raise HelloError(f"{what}: cipher suites list of {len(suites)} bytes "
                         "(a non-empty even length)")
    compression = r.vector(1, "compression methods")
    if 0 not in compression:
        raise HelloError(f"{what}: compression methods {compression.hex() or '(none)'} "
                         "lack null compression (0)")
    server_name = None
    versions: tuple[int, ...] = ()
    ticket = None
    psk = False
    extensions = _extensions(r)
    for i, (kind, ext) in enumerate(extensions):
        if kind == EXT_SERVER_NAME:
            server_name = _server_name(ext)
        elif kind == EXT_SUPPORTED_VERSIONS:
            listed = ext.vector(1, "versions")
            ext.done("the versions")
            if not listed or len(listed) % 2:
                raise HelloError(f"{what}: supported_versions list of {len(listed)} bytes "
                                 "(a non-empty even length)")
            versions = struct.unpack(f"!{len(listed) // 2}H", listed)
        elif kind == EXT_SESSION_TICKET:
            ticket = ext.take(ext.left(), "ticket")
        elif kind == EXT_PRE_SHARED_KEY:
            if i != len(extensions) - 1:
                raise HelloError(f"{what}: pre_shared_key is not the last extension")
            if ext.left() == 0:
                raise HelloError(f"{what}: empty pre_shared_key extension")
            psk = True
    return ClientHello(version, random, session_id, struct.unpack(f"!{len(suites) // 2}H", suites),
                       compression, server_name, versions, ticket, psk,
                       tuple(kind for kind, _ in extensions), end)


def parse_server_hello(data: bytes) -> ServerHello | None:
    """The ServerHello at the start of ``data`` (a member's first bytes)."""
    what = "ServerHello"
    found = _handshake(data, SERVER_HELLO, what)
    if found is None:
        return None
    body, end = found
    r = _Reader(body, what)
    version = _legacy_version(r, what)
    random = r.take(32, "random")
    session_id = _session_id(r)
    suite = r.uint(2, "cipher suite")
    compression = r.uint(1, "compression method")
    selected = None
    ticket = psk = False
    extensions = _extensions(r)
    for kind, ext in extensions:
        if kind == EXT_SUPPORTED_VERSIONS:
            selected = ext.uint(2, "selected version")
            ext.done("the selected version")
        elif kind == EXT_SESSION_TICKET:
            ticket = True
        elif kind == EXT_PRE_SHARED_KEY:
            psk = True
    return ServerHello(version, random, session_id, suite, compression, selected, ticket, psk,
                       tuple(kind for kind, _ in extensions), end)
