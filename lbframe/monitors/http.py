"""``type = http`` and ``type = https`` (F7c, F7g, F7h): one HTTP/1.1 request
per check; the status must be in ``expect_status`` and, when ``expect`` is
set, the body must match it.

A three-tier site (F7h) points this at a dynamic page that touches the AP and
DB tiers (``request = POST /dbcheck.cgi``, ``expect = OK``), so a member whose
web server answers while its database does not is taken out. Every request
says ``User-Agent: lbframe-monitor/VERSION`` so that operators can filter
checks out of their access logs (F7g).

This module turns the monitor's keys into a request and the answer into a
:class:`CheckResult`. The HTTP plumbing (Agent, bounded reads, aborting the
connection on cancel) is in :mod:`lbframe.monitors._http_client`, the TLS
plumbing in :mod:`lbframe.tls.client`.
"""

from __future__ import annotations

import os
import re

from twisted.internet import defer, error, ssl
from twisted.internet.endpoints import wrapClientTLS
from twisted.web.client import (
    Agent, HTTPConnectionPool, RequestTransmissionFailed, ResponseFailed, ResponseNeverReceived)
# The Agent's parse errors are not exported by twisted.web.client.
from twisted.web._newclient import BadResponseVersion, ParseError
from twisted.web.http_headers import Headers
from zope.interface import implementer

from lbframe import __version__, hookimpl
from lbframe.config.values import parse_bool, parse_hostname
from lbframe.errors import OptionError, did_you_mean
from lbframe.interfaces import IMonitor
from lbframe.monitoring import BaseMonitor, CheckResult, check_port
from lbframe.monitors._http_client import HEAD_LIMIT, BodyReader, BytesProducer, Exchange
from lbframe.tls.client import NoVerify, describe_tls_error, load_ca, verify_error
from lbframe.monitors.tcp import client_endpoint, describe_connect_error

#: sent with every check unless ``headers`` sets its own (F7g)
USER_AGENT = f"lbframe-monitor/{__version__}"
#: headers the check writes itself, and why they cannot be set
OWN_HEADERS = {"connection": "always 'close'",
               "content-length": "computed from body",
               "transfer-encoding": "not used: the body is sent with a Content-Length"}
#: plugin keys of ``type = https``
TLS_KEYS = ("tls_verify", "tls_ca", "tls_server_name")


@implementer(IMonitor)
class HTTPMonitor(BaseMonitor):
    """``type = http``: plain HTTP/1.1 to the member (or ``port``)."""

    scheme = "http"
    default_port = 80

    def __init__(self, spec, options, reactor):
        self.spec = spec
        self.reactor = reactor
        self.configure(dict(options))
        # persistent=False: every check is a new connection carrying one
        # request with "Connection: close".
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.method = spec.request_method.encode("ascii")
        try:
            self.path = spec.request_path.encode("ascii")
        except UnicodeEncodeError:
            raise OptionError("request", f"path {spec.request_path!r} must be ASCII "
                              "(percent-encode other characters)") from None
        self.request_text = f"{spec.request_method} {spec.request_path}"
        self.headers: list[tuple[str, str]] = []
        self.host_header: str | None = None
        for name, value in spec.headers:
            if name.lower() in OWN_HEADERS:
                raise OptionError("headers", f"{name} is set by the check "
                                  f"({OWN_HEADERS[name.lower()]})")
            if name.lower() == "host":
                self.host_header = value
            else:
                self.headers.append((name, value))
        if not any(name.lower() == "user-agent" for name, _ in self.headers):
            self.headers.append(("User-Agent", USER_AGENT))
        self.body = spec.body.encode("utf-8") if spec.body is not None else None
        self.expect = re.compile(spec.expect) if spec.expect is not None else None

    def configure(self, options: dict) -> None:
        """Validate the type's own keys; plain http has none."""
        for key in options:
            raise OptionError(key, f"unknown key {key!r} for monitor type {self.scheme}")

    def server_name(self, member) -> str:
        """Who the request is for: the member's host (https: ``tls_server_name``)."""
        return member.address.host

    def endpoint(self, member, port: int):
        return client_endpoint(self.reactor, member.address.host, port, self.spec.timeout)

    def new_exchange(self, member, port: int) -> Exchange:
        return Exchange(self.endpoint(member, port))

    def request_headers(self, member, port: int) -> Headers:
        headers = Headers()
        host = self.host_header
        if host is None:
            name = self.server_name(member)
            host = f"[{name}]" if ":" in name else name
            if port != self.default_port:
                host += f":{port}"
        headers.addRawHeader(b"Host", host.encode("utf-8"))
        for name, value in self.headers:
            headers.addRawHeader(name.encode("ascii"), value.encode("utf-8"))
        return headers

    # -- one check ------------------------------------------------------------

    def check(self, member):
        port = check_port(self.spec, member)
        exchange = self.new_exchange(member, port)
        agent = Agent.usingEndpointFactory(self.reactor, exchange, pool=self.pool)
        # The Agent wants a URL but only takes the path from it: the exchange
        # decides where to connect and the Host header is already set.
        d = agent.request(self.method, b"http://member" + self.path,
                          self.request_headers(member, port),
                          BytesProducer(self.body) if self.body is not None else None)

        def got_response(response):
            exchange.head_done = True
            if not any(low <= response.code <= high for low, high in self.spec.expect_status):
                exchange.abort()
                return CheckResult(False, f"HTTP {response.code} from {self.request_text}")
            reader = BodyReader(exchange.abort)
            response.deliverBody(reader)
            return reader.done.addCallback(self.judge_body, response)

        def failed(failure):
            exchange.abort()
            try:
                reason = self.describe_failure(failure, exchange)
            except Exception:  # never errback, even on a surprise
                reason = f"check error: {failure.getErrorMessage()}"
            return CheckResult(False, reason)

        return d.addCallback(got_response).addErrback(failed)

    def judge_body(self, body: bytes, response) -> CheckResult:
        if self.expect is None or self.expect.search(body.decode(_charset(response), "replace")):
            return CheckResult(True)
        return CheckResult(False, f"body does not match {self.spec.expect!r} "
                                  f"({self.request_text})")

    def describe_failure(self, failure, exchange: Exchange) -> str:
        """Operator-facing words for everything that is not an HTTP answer."""
        # The Agent wraps what went wrong in ResponseFailed & co. (.reasons).
        reasons = getattr(failure.value, "reasons", None) or [failure]
        if any(r.check(defer.CancelledError, error.ConnectingCancelledError) for r in reasons):
            return "check cancelled"
        if failure.check(error.ConnectError, error.DNSLookupError):
            return describe_connect_error(failure)
        if exchange.head_too_long:
            return (f"bad HTTP response: status line and headers longer than "
                    f"{HEAD_LIMIT // 1024} KiB")
        for reason in reasons:
            if reason.check(ParseError, BadResponseVersion):
                what, data = (list(reason.value.args) + [b""])[:2]
                return f"bad HTTP response: {what}: {_show(data)}"
            tls = self.describe_tls(reason, exchange)
            if tls is not None:
                return tls
        # ResponseNeverReceived is a kind of ResponseFailed: ask it first.
        if failure.check(ResponseNeverReceived, RequestTransmissionFailed):
            return "connection closed before the response"
        if failure.check(ResponseFailed):
            return "connection closed before the end of the response"
        return f"check error: {failure.getErrorMessage()}"

    def describe_tls(self, reason, exchange: Exchange) -> str | None:
        return None


@implementer(IMonitor)
class HTTPSMonitor(HTTPMonitor):
    """``type = https``: the same request over TLS, verifying the member's
    certificate and name unless ``tls_verify = no``."""

    scheme = "https"
    default_port = 443

    def configure(self, options: dict) -> None:
        for key in options:
            if key not in TLS_KEYS:
                raise OptionError(key, f"unknown key {key!r} for monitor type https"
                                  f"{did_you_mean(key, TLS_KEYS)}")
        try:
            self.tls_verify = parse_bool(options.get("tls_verify", "yes"))
        except ValueError as e:
            raise OptionError("tls_verify", str(e)) from None
        self.tls_server_name = None
        if "tls_server_name" in options:
            try:
                self.tls_server_name = parse_hostname(options["tls_server_name"])
            except ValueError as e:
                raise OptionError("tls_server_name", str(e)) from None
        self.trust_root = None
        if "tls_ca" in options:
            source = self.spec.source
            base = os.path.dirname(os.path.abspath(source.path)) if source else None
            self.trust_root = load_ca(options["tls_ca"], base)
        #: one connection creator (one OpenSSL context) per server name
        self.creators: dict[str, object] = {}

    def server_name(self, member) -> str:
        return self.tls_server_name or member.address.host

    def creator(self, name: str):
        if name not in self.creators:
            self.creators[name] = (
                ssl.optionsForClientTLS(name, trustRoot=self.trust_root or ssl.platformTrust())
                if self.tls_verify else NoVerify(name))
        return self.creators[name]

    def new_exchange(self, member, port: int) -> Exchange:
        creator = self.creator(self.server_name(member))
        return Exchange(wrapClientTLS(creator, self.endpoint(member, port)))

    def describe_tls(self, reason, exchange: Exchange) -> str | None:
        detail = None
        transport = getattr(exchange.connection, "transport", None)
        if transport is not None and hasattr(transport, "getHandle"):
            detail = verify_error(transport.getHandle())
        return describe_tls_error(reason, detail)


def _charset(response) -> str:
    """The body's charset from ``Content-Type``, else UTF-8."""
    for value in response.headers.getRawHeaders(b"content-type", []):
        match = re.search(rb"charset=\"?([A-Za-z0-9._:-]+)", value)
        if match:
            name = match[1].decode("ascii")
            try:
                "".encode(name)
                return name
            except LookupError:
                break
    return "utf-8"


def _show(data) -> str:
    if isinstance(data, bytes):
        data = data.decode("latin-1")
    return repr(str(data)[:80])


@hookimpl
def lbframe_register_monitors(registry):
    registry.add("http", HTTPMonitor)
    registry.add("https", HTTPSMonitor)
