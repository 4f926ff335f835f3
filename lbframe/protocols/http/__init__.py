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

import os

from OpenSSL import SSL
from zope.interface import implementer

from lbframe import hookimpl
from lbframe.config.values import ENDPOINT_OPTIONS, parse_duration, parse_int, split_endpoint
from lbframe.errors import OptionError, reject_unknown_options
from lbframe.interfaces import IProtocol
from lbframe.protocols.http.pages import SorryPage
from lbframe.protocols.http.parser import MAX_HEAD_SIZE, MAX_REQUEST_LINE
from lbframe.protocols.http.server import HTTPSettings, HTTPVirtualServer, Listener
from lbframe.tls.client import PoolTLS
from lbframe.tls.policy import TLSPolicy
from lbframe.tls.server import (CertificateError, CertificateFolder, ClientAuth,
                                ReloadableOptions, load_certificate, server_options)

#: the http keys of a [virtual] section beyond the contract's, with defaults
OPTIONS = {
    "max_head_size": str(MAX_HEAD_SIZE),
    "max_request_line": str(MAX_REQUEST_LINE),
    "timeout_keepalive": "10s",
    "timeout_http_request": "10s",
    "timeout_tunnel": "1h",
    "member_keepalive": "32",
    "member_idle_timeout": "30s",
    "retry_after": "60",
    "client_ca": "",
    "client_cert": "required",
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
        client_auth = _client_auth(options, site)
        self.settings = HTTPSettings(
            listen=_listeners(virtual, client_auth),
            client_auth=client_auth is not None,
            member_tls=_member_tls(virtual, site),
            max_head=_option(options, "max_head_size", lambda t: parse_int(t, 1024, 1 << 20)),
            max_request_line=_option(options, "max_request_line",
                                     lambda t: parse_int(t, 256, 1 << 20)),
            timeout_keepalive=_option(options, "timeout_keepalive", _positive),
            timeout_http_request=_option(options, "timeout_http_request", _positive),
            max_connections_process=glob.max_connections if glob is not None else None,
            timeout_tunnel=_option(options, "timeout_tunnel", _positive),
            member_keepalive=_option(options, "member_keepalive", lambda t: parse_int(t, 0, 10000)),
            member_idle_timeout=_option(options, "member_idle_timeout", _positive),
            sorry_page=sorry,
            access_log=glob.access_log if glob is not None else None,
            access_log_json=glob is not None and glob.log_format == "json",
        )

    def make_service(self, balancer, reactor):
        return HTTPVirtualServer(balancer, self.settings, reactor)


def _client_auth(options: dict, site) -> ClientAuth | None:
    """``client_ca = FILE`` (and ``client_cert = required|optional``)."""
    path = options.get("client_ca", "").strip()
    mode = options.get("client_cert", "required").strip().lower()
    if mode not in ("required", "optional"):
        raise OptionError("client_cert", f"{mode!r}: use required or optional")
    if not path:
        if "client_cert" in options:
            raise OptionError("client_cert", "client_cert needs client_ca")
        return None
    if site is not None and not os.path.isabs(path):
        path = os.path.join(os.path.dirname(os.path.abspath(site.path)), path)
    try:
        return ClientAuth.load(path, required=mode == "required")
    except CertificateError as e:
        raise OptionError("client_ca", str(e)) from None


def _listeners(virtual, client_auth: ClientAuth | None = None) -> tuple:
    """Each ``listen`` endpoint, with TLS options where we terminate TLS:
    ``ssl:`` endpoints (their certificate), and every endpoint of a virtual
    server with ``certificates`` (SNI from the folder); all under the
    virtual server's TLS policy (``ssl_ciphers`` ...)."""
    policy = TLSPolicy.of(virtual)
    plain, tls = [], []
    for description in virtual.listen:
        kind, args, kw = split_endpoint(description)
        named = dict(zip(ENDPOINT_OPTIONS.get(kind, ()), args), **kw)
        if kind == "ssl":
            try:
                served = load_certificate(named.get("certKey") or named["privateKey"],
                                          key_path=named["privateKey"],
                                          chain_path=named.get("extraCertChain"))
            except CertificateError as e:
                raise OptionError("listen", str(e)) from None
            tls.append((description, named, served))
        else:
            plain.append((description, named))
    folder = None
    if virtual.certificates is not None:
        try:
            folder = CertificateFolder(virtual.certificates,
                                       fallback=tls[0][2] if tls else None,
                                       client_auth=client_auth, policy=policy)
        except (CertificateError, SSL.Error) as e:
            raise OptionError("certificates", str(e)) from None
    listeners = []
    for description in virtual.listen:
        for entry in tls:
            if entry[0] == description:
                _, named, served = entry
                try:
                    options = (folder.options() if folder is not None
                               else server_options(served, client_auth=client_auth,
                                                   policy=policy))
                except (CertificateError, SSL.Error) as e:
                    raise OptionError("listen", f"{description}: {e}") from None
                listeners.append(Listener(description, named, ReloadableOptions(options)))
                break
        else:
            named = dict(next(n for d, n in plain if d == description))
            options = ReloadableOptions(folder.options()) if folder is not None else None
            listeners.append(Listener(description, named, options))
    return tuple(listeners)


def _member_tls(virtual, site) -> dict:
    """``tls = yes`` pools this virtual server may send to → their client TLS."""
    if site is None:
        return {}
    names = {virtual.pool, virtual.sorry_pool} | {site.rules[r].pool for r in virtual.rules
                                                 if r in site.rules}
    found = {}
    for name in names:
        pool = site.pools.get(name)
        if pool is not None and pool.tls:
            try:
                found[name] = PoolTLS.from_pool(pool)
            except OptionError as e:
                raise (pool.source.error(e.key, e.message) if pool.source is not None
                       else e) from None
    return found


@hookimpl
def lbframe_register_protocols(registry):
    registry.add("http", HTTPProtocol)
