"""The TLS hello targets' shared oracle (lbframe/tls/hello.py)."""

from __future__ import annotations

from fuzz.common import check, rng_for
from lbframe.tls import hello as H
from lbframe.tls.hello import HelloError


def outcome(parse, data: bytes):
    try:
        return parse(data)
    except HelloError as e:
        return e


def reassemble(data: bytes, end: int) -> bytes:
    """The handshake message body from the records in ``data[:end]``, read
    independently of the parser: record headers skipped, fragments joined."""
    fragments = bytearray()
    pos = 0
    while pos < end:
        length = int.from_bytes(data[pos + 3:pos + 5], "big")
        fragments += data[pos + 5:min(pos + 5 + length, end)]
        pos += 5 + length
    size = int.from_bytes(fragments[1:4], "big")
    check(len(fragments) == 4 + size, "hello-end",
          lambda: f"end={end} cuts the records at {len(fragments)} message bytes, "
                  f"the message has {4 + size}")
    return bytes(fragments[4:])


def extension_types(body: bytes, start: int) -> tuple[int, ...]:
    if start == len(body):
        return ()
    kinds, pos, end = [], start + 2, start + 2 + int.from_bytes(body[start:start + 2], "big")
    while pos < end:
        kinds.append(int.from_bytes(body[pos:pos + 2], "big"))
        pos += 4 + int.from_bytes(body[pos + 2:pos + 4], "big")
    return tuple(kinds)


def check_common(parse, data: bytes, result) -> None:
    """What holds for both hellos: the error type, the bound on what a
    reader waits for, ``end``, and that the answer does not depend on where
    the input was cut."""
    if result is None:
        check(len(data) < H.MAX_INPUT, "hello-waits-forever",
              lambda: f"None (need more) after {len(data)} bytes (MAX_INPUT {H.MAX_INPUT})")
        return
    rng = rng_for(data)
    if isinstance(result, HelloError):
        more = data + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        again = outcome(parse, more)
        check(isinstance(again, HelloError), "hello-error-not-final",
              lambda: f"{data[:80]!r} is refused ({result}) but with more bytes: {again!r}")
        return
    end = result.end
    check(0 < end <= len(data), "hello-end", lambda: f"end {end} of {len(data)} bytes")
    check(outcome(parse, data[:end]) == result, "hello-prefix",
          lambda: f"data[:end] parses as {outcome(parse, data[:end])!r}, not {result!r}")
    points = range(end) if end <= 400 else sorted(rng.sample(range(end), 60))
    for k in points:
        got = outcome(parse, data[:k])
        check(got is None, "hello-prefix",
              lambda: f"the first {k} of the {end} bytes of a valid hello give {got!r}, not None")
