"""parse_server_hello (lbframe/tls/hello.py): a member's first bytes.

Oracle as for tls_client_hello: None / ServerHello / HelloError only, None
only below ``MAX_INPUT``, refusals final, ``end`` exact with every shorter
prefix None, and the version, random, session id, cipher suite, compression
method and extension types read from the input's own bytes.
"""

from __future__ import annotations

import struct

from fuzz.common import check, guarded
from fuzz.hellocheck import check_common, extension_types, outcome, reassemble
from lbframe.tls.hello import ServerHello, parse_server_hello


def check_fields(data: bytes, hello: ServerHello) -> None:
    body = reassemble(data, hello.end)
    sid_len = body[34]
    pos = 35 + sid_len
    check(body[:2] == struct.pack("!H", hello.version) and body[2:34] == hello.random
          and body[35:pos] == hello.session_id and sid_len <= 32
          and body[pos:pos + 2] == struct.pack("!H", hello.cipher_suite)
          and body[pos + 2] == hello.compression_method,
          "hello-fields", lambda: f"fields not from the input: {hello!r}")
    check(extension_types(body, pos + 3) == hello.extensions, "hello-fields",
          lambda: f"extension types {hello.extensions} not those of the input")
    check(len(set(hello.extensions)) == len(hello.extensions), "hello-fields",
          "an extension twice")
    check((hello.selected_version is not None) == (43 in hello.extensions), "hello-fields",
          "selected version without supported_versions")


@guarded("hello")
def TestOneInput(data: bytes) -> None:
    result = outcome(parse_server_hello, data)
    check_common(parse_server_hello, data, result)
    if isinstance(result, ServerHello):
        check_fields(data, result)
