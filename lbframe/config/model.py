"""The frozen model of a ``site.ini``.

Everything here is plain data: parsed, validated values with no Twisted objects
and no run-time state. The run-time objects (:mod:`lbframe.runtime`) are built
from it; a reload compares two of these models.

Every section object carries a :class:`Source` so that any later check (a
plugin validating its own keys, a reference to a missing section) can point at
the file, line, section and key.
"""

from __future__ import annotations

import ipaddress
from typing import Mapping

import attrs

from lbframe.errors import ConfigError


@attrs.frozen
class Source:
    """Where a section came from: file, section name, header line, key lines."""

    path: str
    section: str
    line: int
    key_lines: Mapping[str, int] = attrs.field(factory=dict, eq=False)

    def line_of(self, key: str | None) -> int:
        if key is None:
            return self.line
        return self.key_lines.get(key.lower(), self.line)

    def error(self, key: str | None, message: str) -> ConfigError:
        """A :class:`ConfigError` pointing at ``key`` of this section."""
        return ConfigError(message, path=self.path, line=self.line_of(key),
                           section=self.section, key=key)


@attrs.frozen
class Address:
    """``host:port``; IPv6 hosts are written ``[::1]:8080``."""

    host: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        if self.port == 0:  # a routed pool's next hop: an address alone
            return f"[{self.host}]" if self.is_ipv6 else self.host
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


@attrs.frozen
class MemberSpec:
    """One ``member NAME = ADDRESS [weight=N] [priority=N] [maxconn=N] [backup]``."""

    name: str
    address: Address
    weight: int = 1
    priority: int = 1
    maxconn: int | None = None
    backup: bool = False


@attrs.frozen
class Global:
    """The optional ``[lbframe]`` section."""

    admin: str | None = None
    admin_token: str | None = attrs.field(default=None, repr=False)
    #: a non-loopback ``admin`` without TLS was asked for knowingly
    admin_insecure: bool = False
    plugins: tuple[str, ...] = ()
    access_log: str | None = None
    log_format: str = "text"
    stop_grace: float = 30.0
    #: client connections of all listeners together; None: from RLIMIT_NOFILE
    max_connections: int | None = None
    #: data-path processes (lbframe.workers); 1: the one process serves
    workers: int = 1
    source: Source | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Virtual:
    """A ``[virtual NAME]``: a VIP:port and how it is served."""

    name: str
    listen: tuple[str, ...]
    pool: str
    protocol: str = "tcp"
    persistence: str | None = None
    rules: tuple[str, ...] = ()
    #: a pool name, when ``sorry`` names a pool
    sorry_pool: str | None = None
    #: a file path, when ``sorry = page:PATH``
    sorry_page: str | None = None
    sorry_status: int = 503
    max_connections: int | None = None
    max_connections_per_source: int | None = None
    accept_proxy: bool = False
    timeout_connect: float = 5.0
    timeout_client: float = 60.0
    timeout_server: float = 60.0
    forwarded_for: bool = True
    certificates: str | None = None
    #: TLS policy where TLS is terminated (lbframe.tls.policy); None: the default
    ssl_ciphers: str | None = None
    ssl_ciphersuites: str | None = None
    ssl_min_version: str = "TLSv1.2"
    ssl_prefer_server_ciphers: bool = False
    #: keys the contract does not define, for the protocol plugin to validate
    options: Mapping[str, str] = attrs.field(factory=dict)
    source: Source | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Pool:
    """A ``[pool NAME]``: servers doing the same job."""

    name: str
    members: tuple[MemberSpec, ...]
    scheduler: str = "round-robin"
    monitors: tuple[str, ...] = ()
    priority_threshold: int | None = None
    queue_timeout: float = 0.0
    send_proxy: str = "no"  # "no", "v1", "v2"
    slow_start: float = 0.0
    #: passive health: failures in a row (within fail_timeout) that take a
    #: member out for fail_timeout; 0 turns it off
    max_fails: int = 3
    fail_timeout: float = 10.0
    tls: bool = False
    tls_ca: str | None = None
    tls_verify: bool = True
    tls_server_name: str | None = None
    #: TLS 1.2 suites and minimum version offered to members (None: lbframe.tls.policy's)
    tls_ciphers: str | None = None
    tls_min_version: str | None = None
    options: Mapping[str, str] = attrs.field(factory=dict)
    source: Source | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Monitor:
    """A ``[monitor NAME]``: one health check."""

    name: str
    type: str
    interval: float = 10.0
    timeout: float = 3.0
    fall: int = 3
    rise: int = 2
    port: int | None = None
    request_method: str = "GET"
    request_path: str = "/"
    body: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    #: inclusive ranges, e.g. ((200, 399),)
    expect_status: tuple[tuple[int, int], ...] = ((200, 399),)
    #: regex source, already checked to compile
    expect: str | None = None
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    command: str | None = None
    options: Mapping[str, str] = attrs.field(factory=dict)
    source: Source | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Persistence:
    """A ``[persistence NAME]`` profile; virtual servers naming it share its table."""

    name: str
    method: str
    timeout: float = 1800.0
    cookie: str | None = None
    parameter: str = "jsessionid"
    mask: int | None = None
    store: str = "memory"
    options: Mapping[str, str] = attrs.field(factory=dict)
    source: Source | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Rule:
    """A ``[rule NAME]``: ``match = SUBJECT OP VALUE`` → ``pool``."""

    name: str
    subject: str  # path, host, method, header, cookie, query
    op: str  # "=", "~", "^=", "$="
    value: str
    pool: str
    #: the NAME of header:NAME, cookie:NAME, query:NAME
    subject_arg: str | None = None
    source: Source | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Redundancy:
    """The ``[redundancy]`` section: this node's place in an LB pair."""

    driver: str = "none"
    vips: tuple[str, ...] = ()
    interface: str | None = None
    vrid: int | None = None
    priority: int = 100
    advert_interval: float = 1.0
    preempt: bool = True
    version: int = 3
    peer: str | None = None
    interval: float = 1.0
    dead_after: float = 3.0
    failback: str = "manual"
    options: Mapping[str, str] = attrs.field(factory=dict)
    source: Source | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Site:
    """A whole ``site.ini``."""

    path: str
    lbframe: Global
    virtuals: Mapping[str, Virtual]
    pools: Mapping[str, Pool]
    monitors: Mapping[str, Monitor] = attrs.field(factory=dict)
    persistence: Mapping[str, Persistence] = attrs.field(factory=dict)
    rules: Mapping[str, Rule] = attrs.field(factory=dict)
    redundancy: Redundancy = attrs.field(factory=Redundancy)
