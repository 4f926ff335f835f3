"""The admin API's JSON (lbframe/admin/api.py), driven in-process through
twisted.web's HTTP channel on a memory transport (the whole server stack:
request parsing, routing, auth, the resources).

The first input byte picks the request; the rest is its body or query:

- 0-4: ``POST /api/pools/web/members/a`` with the rest as the JSON body;
- 5: the same, with the rest as the value of ``{"weight": ...}``;
- 6: ``GET /api/persistence/sticky?`` with the rest as the query;
- 7: the rest's first line as ``METHOD /api/PATH`` (percent-encoded), the
  remaining lines as the body.

Oracle: every answer is a 2xx or 4xx (a 405 included) with a JSON body
(``{"error": ...}`` for errors), never a 5xx or a traceback; a member
change that is accepted keeps the config's own rules (weight 0-256); and afterwards
``/api/status`` and ``/metrics`` still answer 200 (bad input never breaks
the server's state). The member's state is put back after each input.
"""

from __future__ import annotations

import json
import os
import urllib.parse

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher

from fuzz.common import check, guarded

_state = {}

_MEMBER = b"/api/pools/web/members/a"
#: the config's bound on ``weight`` (docs/configuration.md), which the API must keep too
MAX_WEIGHT = 256


def _runtime():
    """A small site: a weighted pool of two, a source-ip persistence profile."""
    import attrs

    from lbframe.config.model import Address, Global, MemberSpec, Persistence, Pool, Site, \
        Virtual
    from lbframe.persistence.memory import MemoryStore
    from lbframe.plugins import load_plugins
    from lbframe.service import build_runtime

    reactor = MemoryReactorClock()
    web = Pool("web", (MemberSpec("a", Address("127.0.0.1", 8081), weight=4),
                       MemberSpec("b", Address("127.0.0.1", 8082), weight=2)),
               scheduler="weighted")
    site = Site("site.ini", Global(), virtuals={
        "web": Virtual("web", ("tcp:8080:interface=127.0.0.1",), "web")}, pools={"web": web})
    if "plugins" not in _state:
        _state["plugins"] = load_plugins(entry_points=False)
    runtime = build_runtime(site, _state["plugins"], reactor)
    runtime.site = attrs.evolve(runtime.site, persistence={
        "sticky": Persistence("sticky", "source-ip", timeout=600.0)})
    store = MemoryStore(600.0, reactor)
    for i in range(5):
        store.set(f"10.0.0.{i}", "a")
    runtime.persistence_stores["sticky"] = store
    return runtime


def _site():
    if "site" not in _state:
        from lbframe.admin import AdminContext, AdminSite, make_resource
        from lbframe.admin.auth import Auth

        clock = MemoryReactorClock()
        context = AdminContext(_runtime(), Auth(None, everything=False))
        _state["context"] = context
        _state["site"] = AdminSite(make_resource(context), timeout=60, reactor=clock)
    return _state["site"]


def _failure_name(failures, prefix: str = "admin-5xx") -> str:
    """``admin-5xx:TYPE:file:function`` of the first logged failure: one
    finding per bug, not one per input."""
    if not failures:
        return prefix
    failure = failures[0]
    ours = [f for f in failure.frames if f"{os.sep}lbframe{os.sep}" in f[1]] or failure.frames
    where = f"{os.path.basename(ours[-1][1])}:{ours[-1][0]}" if ours else "?"
    return f"{prefix}:{failure.type.__name__}:{where}"


def ask(method: bytes, path: bytes, body: bytes = b"", failures=None) -> tuple[int, dict, bytes]:
    """One request on a fresh connection: (status, headers, body); the
    failures the server logs meanwhile are appended to ``failures``."""
    def observe(event):
        if failures is not None and "log_failure" in event:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    try:
        return _ask(method, path, body)
    finally:
        globalLogPublisher.removeObserver(observe)


def _ask(method: bytes, path: bytes, body: bytes) -> tuple[int, dict, bytes]:
    site = _site()
    proto = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    proto.makeConnection(transport)
    head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1:8404\r\nConnection: close\r\n" % (method, path)
    if body or method in (b"POST", b"PUT", b"PATCH"):
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    proto.dataReceived(head + b"\r\n" + body)
    raw = transport.value()
    proto.connectionLost(None)
    head, _, content = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    check(lines[0].startswith(b"HTTP/1.1 "), "admin-no-answer",
          lambda: f"{method!r} {path!r}: no HTTP answer: {raw[:200]!r}")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding") == b"chunked":
        content = _unchunk(content)
    return status, headers, content


def _unchunk(raw: bytes) -> bytes:
    out, pos = b"", 0
    while True:
        eol = raw.index(b"\r\n", pos)
        size = int(raw[pos:eol].split(b";")[0], 16)
        if size == 0:
            return out
        out += raw[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2


def _request(data: bytes) -> tuple[bytes, bytes, bytes]:
    mode, rest = data[0] % 8, data[1:]
    if mode <= 4:
        return b"POST", _MEMBER, rest
    if mode == 5:
        return b"POST", _MEMBER, b'{"weight": ' + rest + b"}"
    if mode == 6:
        return b"GET", b"/api/persistence/sticky?" + urllib.parse.quote_from_bytes(
            rest, safe="=&").encode("ascii"), b""
    line, _, body = rest.partition(b"\n")
    method, _, path = line.partition(b" ")
    method = bytes(b for b in method if 0x21 <= b < 0x7f and b not in b"()<>@,;:\\\"/[]?={}") \
        or b"GET"
    return method, b"/api/" + urllib.parse.quote_from_bytes(path, safe="/?=&").encode(), body


def _restore() -> None:
    """The member back to weight 4, enabled; a fresh runtime if that fails."""
    context = _state["context"]
    try:
        pool = context.runtime.pools["web"]
        member = pool.members["a"]
        pool.set_weight(member, 4)
        pool.set_admin(member, "enabled")
    except Exception:
        context.runtime = _runtime()


@guarded("admin")
def TestOneInput(data: bytes) -> None:
    if not data:
        return
    method, path, body = _request(data)
    failures = []
    try:
        status, headers, content = ask(method, path, body, failures)
        check(200 <= status < 500, _failure_name(failures) if status >= 500 else "admin-status",
              lambda: f"{method.decode()} {path!r} with body {body[:100]!r}: {status} "
                      f"{content[:300]!r}")
        if method != b"HEAD" and status < 500:  # a 5xx is the finding above
            check(headers.get(b"content-type") == b"application/json", "admin-not-json",
                  lambda: f"{method.decode()} {path!r}: {status} content-type "
                          f"{headers.get(b'content-type')!r}: {content[:200]!r}")
            try:
                answer = json.loads(content)
            except ValueError:
                answer = None
            check(isinstance(answer, (dict, list)), "admin-not-json",
                  lambda: f"{method.decode()} {path!r}: body {content[:200]!r}")
            if status >= 400:
                check(isinstance(answer, dict) and isinstance(answer.get("error"), str),
                      "admin-error-shape", lambda: f"{status} answered {content[:200]!r}")
        if path == _MEMBER and method == b"POST" and status < 300:
            weight = _state["context"].runtime.pools["web"].members["a"].weight
            check(0 <= weight <= MAX_WEIGHT, "admin-weight-unbounded",
                  lambda: f"weight {weight} accepted (the config allows 0-{MAX_WEIGHT})")
        for after in (b"/api/status", b"/metrics"):
            broken = []
            code, _, text = ask(b"GET", after, failures=broken)
            check(code == 200, _failure_name(broken, "admin-state-broken"),
                  lambda: f"after {method.decode()} {path!r} with body {body[:100]!r}: "
                          f"GET {after.decode()} answers {code} {text[:300]!r}")
    finally:
        _restore()
