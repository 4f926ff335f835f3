"""``protocol = http``: L7 balancing (F4, L7 half).

Every request is balanced on its own (rules, persistence, scheduler), sent
over a kept-alive member connection when one is free, and answered in order
on the client's kept-alive connection. See docs/http.md.

The modules, in the order a request meets them: :mod:`.server` (listening,
shared state), :mod:`.client` (a client connection, pipelining),
:mod:`.parser` (strict llhttp parsing), :mod:`.exchange` (one request:
decision, member connection, streaming both ways), :mod:`.heads` (heads
written out again), :mod:`.members` (member connections, idle reuse),
:mod:`.pages` (error and sorry pages).
"""

from __future__ import annotations

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.config.values import parse_duration, parse_int
from lbframe.errors import OptionError, reject_unknown_options
from lbframe.interfaces import IProtocol
from lbframe.protocols.http.pages import SorryPage
from lbframe.protocols.http.parser import MAX_HEAD_SIZE, MAX_REQUEST_LINE
from lbframe.protocols.http.server import HTTPSettings, HTTPVirtualServer

#: the http keys of a [virtual] section beyond the contract's, with defaults
OPTIONS = {
    "max_head_size": str(MAX_HEAD_SIZE),
    "max_request_line": str(MAX_REQUEST_LINE),
    "timeout_keepalive": "10s",
    "timeout_tunnel": "1h",
    "member_keepalive": "32",
    "member_idle_timeout": "30s",
    "retry_after": "60",
}


def _option(options: dict, key: str, parse):
    try:
        return parse(options.get(key, OPTIONS[key]))
    except ValueError as e:
        raise OptionError(key, str(e)) from None


def _positive(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"{text!r}: must be more than 0")
    return value


@implementer(IProtocol)
class HTTPProtocol:
    """Validates a ``protocol = http`` virtual server and makes its service."""

    def __init__(self, virtual, options, site=None):
        options = dict(options)
        reject_unknown_options(options, "protocol http", tuple(OPTIONS))
        retry_after = _option(options, "retry_after", lambda t: parse_int(t, 0))
        sorry = None
        if virtual.sorry_page is not None:
            try:
                sorry = SorryPage(virtual.sorry_page, virtual.sorry_status, retry_after)
            except (OSError, ValueError) as e:
                raise OptionError("sorry", f"cannot use the sorry page: {e}") from None
        glob = site.lbframe if site is not None else None
        self.settings = HTTPSettings(
            listen=tuple(virtual.listen),
            max_head=_option(options, "max_head_size", lambda t: parse_int(t, 1024, 1 << 20)),
            max_request_line=_option(options, "max_request_line",
                                     lambda t: parse_int(t, 256, 1 << 20)),
            timeout_keepalive=_option(options, "timeout_keepalive", _positive),
            timeout_tunnel=_option(options, "timeout_tunnel", _positive),
            member_keepalive=_option(options, "member_keepalive", lambda t: parse_int(t, 0, 10000)),
            member_idle_timeout=_option(options, "member_idle_timeout", _positive),
            sorry_page=sorry,
            access_log=glob.access_log if glob is not None else None,
            access_log_json=glob is not None and glob.log_format == "json",
        )

    def make_service(self, balancer, reactor):
        return HTTPVirtualServer(balancer, self.settings, reactor)


@hookimpl
def lbframe_register_protocols(registry):
    registry.add("http", HTTPProtocol)
