"""parse_client_hello (lbframe/tls/hello.py): a client's first bytes.

Oracle: the answer is None (need more), a ClientHello or HelloError; any
other exception is a finding. None only below ``MAX_INPUT`` bytes. A
refusal is final (more bytes never make it valid). An accepted hello:
``data[:end]`` parses to the same hello, every shorter prefix to None, and
its fields are the input's bytes — the message body reassembled from the
records independently holds the version, random, session id, cipher suites,
compression methods and extension types at their places, and the server
name is a DNS name taken from it (lower case, no trailing dot).

An input starting with a zero byte (never TLS) also builds a well-formed
ClientHello from the rest (every field, extension and record cut chosen by
the input) that must parse back field for field.
"""

from __future__ import annotations

import struct

from fuzz.common import check, guarded
from fuzz.hellocheck import check_common, extension_types, outcome, reassemble
from lbframe.tls.hello import ClientHello, parse_client_hello


def check_fields(data: bytes, hello: ClientHello) -> None:
    body = reassemble(data, hello.end)
    sid_len = body[34]
    check(body[:2] == struct.pack("!H", hello.version) and body[2:34] == hello.random
          and body[35:35 + sid_len] == hello.session_id and sid_len <= 32,
          "hello-fields", lambda: f"version/random/session id not from the input: {hello!r}")
    pos = 35 + sid_len
    suites_len = int.from_bytes(body[pos:pos + 2], "big")
    suites = body[pos + 2:pos + 2 + suites_len]
    check(suites == b"".join(struct.pack("!H", s) for s in hello.cipher_suites) and suites,
          "hello-fields", lambda: f"cipher suites not from the input: {hello!r}")
    pos += 2 + suites_len
    comp = body[pos + 1:pos + 1 + body[pos]]
    check(comp == hello.compression_methods and 0 in comp, "hello-fields",
          lambda: f"compression methods not from the input: {hello!r}")
    pos += 1 + body[pos]
    check(extension_types(body, pos) == hello.extensions, "hello-fields",
          lambda: f"extension types {hello.extensions} not those of the input")
    check(len(set(hello.extensions)) == len(hello.extensions), "hello-fields",
          "an extension twice")
    name = hello.server_name
    if name is not None:
        check(0 in hello.extensions and 0 < len(name) <= 255 and name == name.lower()
              and not name.endswith(".") and name.encode("ascii") in body.lower(),
              "hello-server-name", lambda: f"server name {name!r} not a name of the input")
    if hello.session_ticket:
        check(hello.session_ticket in body, "hello-fields", "ticket not from the input")
    check(hello.pre_shared_key == (41 in hello.extensions), "hello-fields", "psk flag")
    if hello.pre_shared_key:
        check(hello.extensions[-1] == 41, "hello-fields", "pre_shared_key not last")


class _Bytes:
    """Reads choices off the input; zeros once it runs out."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out.ljust(n, b"\0")

    def int(self, n: int = 1) -> int:
        return int.from_bytes(self.take(n), "big")


_NAME_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"


def _vector(size: int, content: bytes) -> bytes:
    return len(content).to_bytes(size, "big") + content


def built(data: bytes) -> None:
    """A well-formed ClientHello whose every field comes from the input,
    fragmented into records at places the input picks: it must parse back
    field for field, ``end`` at its last byte."""
    b = _Bytes(data)
    version = 0x0300 | b.int() % 5
    random, session_id = b.take(32), b.take(b.int() % 33)
    suites = tuple(b.int(2) for _ in range(1 + b.int() % 8))
    compression = b"\0" + b.take(b.int() % 3)
    extensions, expect = [], {}
    for _ in range(b.int() % 6):
        kind = (0, 43, 35, 10, 13, 41, 0xFF01)[b.int() % 7]
        if kind in dict(extensions) or (extensions and extensions[-1][0] == 41):
            continue
        if kind == 0:
            name = bytes(_NAME_CHARS[c % len(_NAME_CHARS)] for c in b.take(1 + b.int() % 40))
            if not name.strip(b"."):
                name = b"a" + name
            body = _vector(2, b"\0" + _vector(2, name))
            expect["server_name"] = name.decode().lower().rstrip(".")
            if not expect["server_name"]:
                continue
        elif kind == 43:
            listed = tuple(b.int(2) for _ in range(1 + b.int() % 4))
            body = _vector(1, b"".join(v.to_bytes(2, "big") for v in listed))
            expect["supported_versions"] = listed
        elif kind == 35:
            body = b.take(b.int() % 48)
            expect["session_ticket"] = body
        elif kind == 41:
            body = b.take(1 + b.int() % 40)
            expect["pre_shared_key"] = True
        else:
            body = b.take(b.int() % 20)
        extensions.append((kind, body))
    if not extensions and b.int() % 2:
        ext_block = b""  # no extensions block at all
    else:
        ext_block = _vector(2, b"".join(k.to_bytes(2, "big") + _vector(2, v)
                                        for k, v in extensions))
    body = (version.to_bytes(2, "big") + random + _vector(1, session_id)
            + _vector(2, b"".join(s.to_bytes(2, "big") for s in suites))
            + _vector(1, compression) + ext_block)
    message = b"\1" + len(body).to_bytes(3, "big") + body
    cuts = sorted({b.int(2) % len(message) for _ in range(b.int() % 8)} - {0})
    records, start = b"", 0
    for end in [*cuts, len(message)]:
        fragment = message[start:end]
        records += b"\x16\x03\x01" + len(fragment).to_bytes(2, "big") + fragment
        start = end
    got = outcome(parse_client_hello, records + b.take(b.int() % 8))
    want = ClientHello(version, random, session_id, suites, compression,
                       expect.get("server_name"), expect.get("supported_versions", ()),
                       expect.get("session_ticket"), expect.get("pre_shared_key", False),
                       tuple(k for k, _ in extensions), len(records))
    check(got == want, "hello-built", lambda: f"built {want!r} as {records!r}, parsed {got!r}")


@guarded("hello")
def TestOneInput(data: bytes) -> None:
    result = outcome(parse_client_hello, data)
    check_common(parse_client_hello, data, result)
    if isinstance(result, ClientHello):
        check_fields(data, result)
    elif data[:1] == b"\0":  # not TLS: the rest of the input builds a hello instead
        built(data[1:])
