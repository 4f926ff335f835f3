"""A lean, bounded byte relay between two connected non-blocking sockets.

Twisted's ``portforward`` shape (the client is paused until the member is
connected; each side stops reading while the other cannot take more), with
the hot loop cut down to what it must do: one ``recv_into`` into a shared
buffer and one ``send`` per readable event, no Deferreds, no per-chunk
allocation when the peer takes everything at once.

Backpressure: when the peer's socket takes only part of a chunk, the rest is
kept (at most one chunk, :data:`CHUNK` bytes) and this side stops reading
until the peer has drained it. So a connection holds at most one chunk per
direction, whatever the peers do.

Half-close: an EOF from one side is passed on as ``shutdown(SHUT_WR)`` once
what was read before it is delivered; the other direction goes on until it
ends too. An error on either side closes both.
"""

from __future__ import annotations

import socket
from errno import EAGAIN, EINTR, EWOULDBLOCK
from typing import Callable

from zope.interface import implementer
from twisted.internet.interfaces import IReadWriteDescriptor

#: bytes read per readable event, and the most kept back per direction
CHUNK = 256 * 1024

_buffer = bytearray(CHUNK)
_view = memoryview(_buffer)
_RETRY = (EAGAIN, EWOULDBLOCK, EINTR)


#: at most this much unread input is discarded before a close (see _drain)
DRAIN_LIMIT = 4 * CHUNK


def _drain(sock: socket.socket) -> None:
    """Discard unread input so that closing sends FIN, not RST.

    Linux answers ``close`` on a socket with unread data with a reset, which
    makes the peer lose data it has not read yet. Reading what is there (a
    bounded amount) first lets a closing connection end cleanly.
    """
    try:
        for _ in range(DRAIN_LIMIT // CHUNK):
            if not sock.recv_into(_buffer):
                return
    except OSError:
        return


@implementer(IReadWriteDescriptor)
class Side:
    """One socket of a relayed connection.

    As a reader it moves bytes from its socket to the peer's; as a writer
    it flushes what the peer sent that its socket could not take at once.

    How it reads is a small state machine, held in the ``doRead`` slot (the
    bound method the reactor or engine calls), so that the relaying state,
    where nearly every read happens, pays nothing for the other two:

    ``relaying`` (:meth:`relay_read`)
        The hot path: one ``recv_into``, one ``send``. Every side ends here.
    ``first`` (:meth:`_first_read`, the member's side, ``first_response``)
        The first read tells the relay (``Relay.first_response``: the time
        to the member's first byte is a response-time sample), then goes on
        in ``peeking`` when a peeker is set, else in ``relaying``.
    ``peeking`` (:meth:`_peek_read`, after :meth:`read_states` with a peeker)
        Relays as ``relaying`` does and hands each chunk it relayed to the
        peeker (``ssl`` looks for the member's ServerHello), ``b""`` once the
        socket reached its end; :meth:`stop_peeking` goes to ``relaying``.
    """

    __slots__ = ("relay", "sock", "fd", "peer", "pending", "eof", "name", "nbytes",
                 "is_member", "recv_into", "peer_send", "doRead", "peeker")

    def __init__(self, relay: "Relay", sock: socket.socket, name: str):
        self.relay = relay
        self.sock = sock
        self.fd = sock.fileno()
        self.peer: Side = None  # type: ignore[assignment]
        self.recv_into = sock.recv_into
        self.peer_send = None  # the peer socket's send, bound once
        self.pending: memoryview | None = None
        self.eof = False
        self.name = name
        self.is_member = name == "member"
        self.nbytes = 0  # bytes read from this side
        #: the read state (see the class doc)
        self.doRead = self.relay_read
        #: called with each chunk relayed while ``peeking``
        self.peeker: Callable[[bytes], None] | None = None

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return f"lbframe.relay.{self.name}"

    # -- the read states ---------------------------------------------------------

    def read_states(self, first_response: bool,
                    peeker: Callable[[bytes], None] | None = None) -> None:
        """Choose the first read state: ``first`` when ``first_response``,
        else ``peeking`` when a ``peeker`` is given, else ``relaying``."""
        self.peeker = peeker
        if first_response:
            self.doRead = self._first_read
        elif peeker is not None:
            self.doRead = self._peek_read
        else:
            self.doRead = self.relay_read

    def stop_peeking(self) -> None:
        """Leave ``peeking`` (or, from ``first``, skip it): relay only."""
        self.peeker = None
        if self.doRead != self._first_read:
            self.doRead = self.relay_read

    def _first_read(self):
        self.doRead = self._peek_read if self.peeker is not None else self.relay_read
        self.relay.first_response()
        return self.doRead()

    def _peek_read(self):
        before = self.nbytes
        self.relay_read()
        n = self.nbytes - before
        # relay_read leaves the chunk in the buffer, unless it closed the
        # connection (the close drains through that buffer).
        if self.relay.closed or self.peeker is None:
            return None
        if n:
            self.peeker(bytes(_view[:n]))
        elif self.eof:
            peeker = self.peeker
            self.stop_peeking()
            peeker(b"")
        return None

    def relay_read(self):
        """Read a chunk and pass it on (the ``relaying`` state)."""
        try:
            n = self.recv_into(_buffer)
        except OSError as e:
            if e.errno in _RETRY:
                return None
            self.relay.abort(f"{self.name} read error: {e.strerror}")
            return None
        relay = self.relay
        if not n:
            relay.eof_from(self)
            return None
        self.nbytes += n
        relay.waiting_for_client = self.is_member
        try:
            sent = self.peer_send(_view[:n])
        except OSError as e:
            peer = self.peer
            if e.errno not in _RETRY:
                relay.abort(f"{peer.name} write error: {e.strerror}")
                return None
            sent = 0
        if sent < n:
            # The peer is full: keep the rest, stop reading until it drains.
            peer = self.peer
            peer.pending = memoryview(bytes(_view[sent:n]))
            relay.io.removeReader(self)
            relay.io.addWriter(peer)
        return None

    def doWrite(self):
        if self.relay.connecting is self:
            self.relay.connect_finished(failed=False)
            return None
        pending = self.pending
        if pending is None:  # nothing to do (spurious wake-up)
            self.relay.io.removeWriter(self)
            return None
        try:
            sent = self.sock.send(pending)
        except OSError as e:
            if e.errno in _RETRY:
                return None
            self.relay.abort(f"{self.name} write error: {e.strerror}")
            return None
        if sent < len(pending):
            self.pending = pending[sent:]
            return None
        self.pending = None
        relay = self.relay
        relay.io.removeWriter(self)
        source = self.peer
        if source.eof:
            relay.pass_eof(source)
        else:
            relay.io.addReader(source)
        return None

    def connectionLost(self, reason):
        # The reactor (or engine) calls this instead of doWrite when a socket
        # reports only an error or hang-up (epoll's EPOLLERR/EPOLLHUP): for a
        # connecting socket that is a failed connect. Also reached when
        # doRead/doWrite raised.
        if self.relay.connecting is self:
            self.relay.connect_finished(failed=True)
            return
        why = reason.getErrorMessage() if reason is not None else "connection lost"
        self.relay.abort(f"{self.name}: {why}")

    def readConnectionLost(self, reason):
        self.connectionLost(reason)


class Relay:
    """Relays between a client socket and a member socket.

    ``io`` is where sockets are registered for readiness: an
    :class:`lbframe.protocols.engine.IRelayIO` (the process's
    ``RelayEngine``, or ``ReactorIO`` around a reactor).

    ``on_close(relay, reason)`` is called once, when both sockets are closed.
    """

    __slots__ = ("io", "clock", "client", "member", "connecting", "on_close",
                 "closed", "waiting_for_client", "close_reason", "__weakref__")

    def __init__(self, io, client: socket.socket,
                 on_close: Callable[["Relay", str], None], member: socket.socket | None = None,
                 clock=None):
        self.io = io
        self.clock = clock if clock is not None else io
        self.client = Side(self, client, "client")
        self.member: Side | None = None
        if member is not None:
            self.set_member(member)
        self.on_close = on_close
        self.connecting: Side | None = None
        self.closed = False
        self.waiting_for_client = True
        self.close_reason = ""

    def set_member(self, sock: socket.socket,
                   peeker: Callable[[bytes], None] | None = None) -> None:
        """Attach (or replace, after a failed connect) the member's socket;
        ``peeker`` is shown what the member sends until it says
        ``self.member.stop_peeking()`` (see :class:`Side`)."""
        client = self.client
        member = self.member = Side(self, sock, "member")
        member.read_states(self.wants_first_response, peeker)
        client.peer, member.peer = member, client
        client.peer_send, member.peer_send = sock.send, client.sock.send

    def start(self) -> None:
        """Both sockets are connected: relay both ways."""
        self.connecting = None
        self.io.addReader(self.client)
        self.io.addReader(self.member)

    #: subclasses that set this get :meth:`first_response` called once
    wants_first_response = False

    def first_response(self) -> None:
        """The member's first bytes have arrived (see :class:`Side`)."""

    def connect_finished(self, failed: bool) -> None:  # overridden by users that connect
        """The member socket's connect ended: writable (``failed=False``) or
        with an error or hang-up (``failed=True``)."""
        raise NotImplementedError

    def eof_from(self, side: Side) -> None:
        side.eof = True
        if side.peer.pending is None:
            self.pass_eof(side)
            if self.closed:
                return
        self.io.removeReader(side)

    def pass_eof(self, side: Side) -> None:
        """``side`` ended and everything it sent is delivered: tell the peer,
        or close when the other direction is over too."""
        peer = side.peer
        if peer.eof and side.pending is None:
            # Both directions ended and were delivered: a shutdown would
            # only cost a system call before the close.
            self.close("done")
            return
        try:
            peer.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close("done")

    def abort(self, reason: str) -> None:
        self.close(reason)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        forget = self.io.forget
        for side in (self.client, self.member):
            if side is None:
                continue
            forget(side)  # (closing the socket takes it out of the engine's epoll)
            side.pending = None
            if not side.eof:
                _drain(side.sock)
            try:
                side.sock.close()
            except OSError:
                pass
            side.fd = -1
        self.on_close(self, reason)
