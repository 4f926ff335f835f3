"""parse_client_hello (lbframe/tls/hello.py): a client's first bytes.

Oracle: the answer is None (need more), a ClientHello or HelloError; any
other exception is a finding. None only below ``MAX_INPUT`` bytes. A
refusal is final (more bytes never make it valid). An accepted hello:
``data[:end]`` parses to the same hello, every shorter prefix to None, and
its fields are the input's bytes — the message body reassembled from the
records independently holds the version, random, session id, cipher suites,
compression methods and extension types at their places, and the server
name is a DNS name taken from it (lower case, no trailing dot).
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


@guarded("hello")
def TestOneInput(data: bytes) -> None:
    result = outcome(parse_client_hello, data)
    check_common(parse_client_hello, data, result)
    if isinstance(result, ClientHello):
        check_fields(data, result)
