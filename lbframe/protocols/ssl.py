"""``protocol = ssl``: TLS passed through to members, balanced on its ClientHello.

lbframe does not terminate TLS here: members hold the certificates and the
keys. An accepted connection is read (at most
:data:`lbframe.tls.hello.MAX_INPUT` bytes, within ``timeout_client``) until
its ClientHello is complete; the SNI host name and the session id it offers
go into the request context (``tls_sni``, ``tls_session_id``, ``tls_hello``),
the balancer decides, and the bytes read are replayed to the member before
the connection becomes a plain :mod:`lbframe.protocols.tcp` relay. First
bytes that are not a well-formed TLS ClientHello (plain HTTP, SSLv2-style
hellos, garbage) close the connection, logged and counted as refused.

With a learning persistence method (``ssl-session-id``) the member's first
bytes are peeked as they are relayed, until its ServerHello is complete;
the balancer learns from it (the session id the member chose). Later bytes
take the plain relay path: the member's side leaves its ``peeking`` read
state (see :class:`lbframe.protocols.relay.Side`).
"""

from __future__ import annotations

import socket

from twisted.logger import Logger
from zope.interface import implementer

from lbframe import hookimpl
from lbframe.accesslog import access_log_setting
from lbframe.errors import OptionError, reject_unknown_options
from lbframe.interfaces import IProtocol
from lbframe.protocols.endpoints import tcp_bind
from lbframe.protocols.tcp import Connection, FirstBytesReader, TCPVirtualServer
from lbframe.tls.hello import MAX_INPUT, HelloError, parse_client_hello, parse_server_hello

log = Logger(namespace="lbframe.ssl")


class SSLConnection(Connection):
    """A passed-through TLS connection: a tcp :class:`Connection` that may
    peek at its member's ServerHello."""

    __slots__ = ("server_bytes",)

    def __init__(self, server, sock, addr):
        super().__init__(server, sock, addr)
        #: the member's first bytes while peeking for its ServerHello, else None
        self.server_bytes = None

    def set_member(self, sock) -> None:
        profile = self.server.balancer.persistence
        if profile is not None and profile.method.learns:
            self.server_bytes = b""
            super().set_member(sock, peeker=self.member_spoke)
        else:
            self.server_bytes = None
            super().set_member(sock)

    def member_spoke(self, chunk: bytes) -> None:
        """The member sent ``chunk`` (already relayed to the client; ``b""``:
        it has nothing more to send)."""
        if not chunk:
            self.server_bytes = None
            return
        data = self.server_bytes + chunk
        try:
            hello = parse_server_hello(data)
        except HelloError as e:
            self.stop_peeking()
            decision = self.decision
            log.warn("virtual {virtual}: member {pool}/{member} did not answer with a "
                     "ServerHello ({why}); nothing learned (client {client})",
                     virtual=self.server.virtual.name, why=e,
                     pool=decision.pool.name if decision else "?",
                     member=decision.member.name if decision else "?",
                     client=self.context.client_host)
            return
        if hello is None:
            if len(data) >= MAX_INPUT:
                self.stop_peeking()
            else:
                self.server_bytes = data
            return
        self.stop_peeking()
        self.server.balancer.responded(self.context, self.decision, hello)

    def stop_peeking(self) -> None:
        self.server_bytes = None
        if self.member is not None:
            self.member.stop_peeking()


class _ClientHelloReader(FirstBytesReader):
    """Reads a client's first bytes until its ClientHello is complete, then
    admits the connection with them (``early``: what followed a PROXY header)."""

    limit = MAX_INPUT
    what = "ClientHello"
    log_name = "hello"

    def parse(self) -> bool:
        try:
            hello = parse_client_hello(self.buffer)
        except HelloError as e:
            self._give_up(str(e))
            return True
        if hello is None:
            return False
        self._stop()
        self.server.admit_hello(self.sock, self.addr, self.buffer, hello)
        return True


class SSLVirtualServer(TCPVirtualServer):
    """A tcp virtual server whose connections start with a ClientHello."""

    def admit(self, sock: socket.socket, addr, early: bytes = b"") -> None:
        """Read the ClientHello first (``early``: what followed a PROXY header)."""
        _ClientHelloReader(self, sock, addr, early)

    def admit_hello(self, sock: socket.socket, addr, data: bytes, hello) -> None:
        """The ClientHello is in ``data``: balance on it, then replay ``data``."""
        conn = SSLConnection(self, sock, addr)
        conn.early = data
        context = conn.context
        context.tls_sni = hello.server_name
        context.tls_session_id = hello.session_id
        context.tls_hello = hello
        self.start_connection(conn)


@implementer(IProtocol)
class SSLProtocol:
    """Validates a ``protocol = ssl`` virtual server and makes its service."""

    def __init__(self, virtual, options, site=None):
        reject_unknown_options(options, "protocol ssl")
        if virtual.certificates is not None:
            raise OptionError("certificates", "protocol ssl passes TLS through to the members, "
                                              "which hold the certificates; to terminate TLS "
                                              "here use protocol http with certificates")
        binds = []
        for description in virtual.listen:
            if description.split(":", 1)[0].lower() in ("ssl", "tls"):
                raise OptionError("listen", f"endpoint {description!r}: protocol ssl passes TLS "
                                            "through; listen on tcp: (or use protocol http "
                                            "to terminate TLS)")
            binds.append(tcp_bind(description))
        self.binds = binds
        self.access_log = access_log_setting(site)
        self.max_connections = site.lbframe.max_connections if site is not None else None

    def make_service(self, balancer, reactor):
        return SSLVirtualServer(balancer, self.binds, reactor, access_log=self.access_log,
                                max_connections=self.max_connections)


@hookimpl
def lbframe_register_protocols(registry):
    registry.add("ssl", SSLProtocol)
