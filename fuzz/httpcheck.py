"""The HTTP targets' shared parts: a sink that records what a parser
announces, and an independent check of an announced head (RFC 9112 as
lbframe's docs promise it: a head that reaches a member is unambiguous)."""

from __future__ import annotations

import attrs

from fuzz.common import check

#: RFC 9110 tchar
TCHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
#: limits the targets give the parsers: small, so that short inputs reach them
MAX_REQUEST_LINE = 200
MAX_HEAD = 1024


def _copy(head):
    return attrs.evolve(head, headers=list(head.headers))


class Recorder:
    """A parser sink that writes down every call, bodies joined, so that two
    runs over differently cut reads can be compared event for event."""

    def __init__(self):
        self.events: list[tuple] = []
        self.upgraded = False
        self.ended = False

    # Heads are copied when announced: the data path writes them out at
    # once, so what counts is what they held then (a parser may go on
    # appending to the list it announced, e.g. a 1xx's "trailers").
    def request(self, head, keep_alive, has_body):
        self.events.append(("request", _copy(head), keep_alive, has_body))

    def response(self, head, keep_alive, framing):
        self.events.append(("response", _copy(head), keep_alive, framing))

    def informational(self, head):
        self.events.append(("informational", _copy(head)))

    def body(self, data):
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + bytes(data))
        else:
            self.events.append(("body", bytes(data)))

    def end(self, trailers):
        self.events.append(("end", tuple(trailers)))
        self.ended = True

    def upgrade(self, rest):
        self.events.append(("upgrade", bytes(rest)))
        self.upgraded = True

    def add_rest(self, more: bytes):
        """Bytes read after the upgrade belong to it."""
        self.events[-1] = ("upgrade", self.events[-1][1] + more)


def comparable(events):
    """Events with heads turned into plain tuples (heads compare by value anyway,
    but a tuple prints better in a finding)."""
    out = []
    for event in events:
        if event[0] in ("request", "response", "informational"):
            head = event[1]
            first = (head.method, head.target) if hasattr(head, "method") else \
                (head.status, head.reason)
            out.append((event[0], first, head.version, tuple(head.headers), *event[2:]))
        else:
            out.append(event)
    return out


def field_problem(name: bytes, value: bytes) -> str | None:
    """Why a header (or trailer) field could not have been sent as is."""
    if not name or not TCHARS.issuperset(name):
        return f"field name {name!r} is not a token"
    if any((b < 32 and b != 9) or b == 127 for b in value):
        return f"field value {value!r} has a control character"
    return None


def framing_headers(headers, what: str) -> tuple[int | None, bool]:
    """``(content length or None, chunked)`` of an announced head, checked:
    at most one Content-Length (digits), at most one Transfer-Encoding and
    it is exactly ``chunked``, never both."""
    lengths = [v for n, v in headers if n.lower() == b"content-length"]
    codings = [v for n, v in headers if n.lower() == b"transfer-encoding"]
    check(len(lengths) <= 1, "http-two-lengths", lambda: f"{what} announced with {lengths}")
    check(all(v.strip(b" \t").isdigit() for v in lengths), "http-length-not-digits",
          lambda: f"{what} announced with Content-Length {lengths}")
    check(len(codings) <= 1 and all(v.lower() == b"chunked" for v in codings),
          "http-te-not-chunked", lambda: f"{what} announced with Transfer-Encoding {codings}")
    check(not (lengths and codings), "http-length-and-te",
          lambda: f"{what} announced with both Content-Length and Transfer-Encoding")
    length = int(lengths[0]) if lengths else None
    return length, bool(codings)


def check_fields(headers, what: str, too_big: str = "http-head-over-limit") -> None:
    """Every field well-formed, all of them within ``MAX_HEAD`` (else ``too_big``)."""
    for name, value in headers:
        problem = field_problem(name, value)
        check(problem is None, "http-bad-field", lambda: f"{what}: {problem}")
    size = sum(len(n) + len(v) + 4 for n, v in headers)
    check(size <= MAX_HEAD, too_big,
          lambda: f"{what} of {size} bytes of fields announced (limit {MAX_HEAD})")


def split_name(whole_error, split_error) -> str:
    """The finding name for two runs that disagree: a refusal for size in one
    run only is its own finding (the size accounting depends on the reads)."""
    if 431 in (whole_error, split_error) and whole_error != split_error:
        return "http-split-head-size"
    return "http-split-dependent"
