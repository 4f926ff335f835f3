"""The http path's own TCP transport: a non-blocking socket in the
:class:`~lbframe.protocols.http.dispatch.Dispatcher`'s epoll set.

Twisted's ``tcp.Server``/``tcp.Client`` cost the http path more per request
than parsing does: ``doRead`` → ``_dataReceived`` → ``dataReceived`` with a
fresh 64 KiB ``recv`` buffer, every ``write`` queued for the next reactor
turn (two ``epoll_ctl`` and a wake-up), ``registerProducer`` and
``unregisterProducer`` going through mix-ins. :class:`Stream` does the same
job in the way the tcp path's relay engine does (:mod:`lbframe.protocols.engine`):

- reads: one ``recv`` of up to 64 KiB, the bytes handed to
  ``protocol.dataReceived``; the dispatcher serves every ready socket of
  a wake-up (several polls per wake-up) without the reactor's log context;
- writes: sent at once when nothing is queued before them, else queued and
  sent when the socket is writable (``EPOLLOUT``), in order;
- backpressure: a registered streaming producer is paused when more than
  :data:`HIGH_WATER` bytes are queued and resumed once the queue is empty.

It presents to its protocol the part of Twisted's ``ITCPTransport`` the http
path uses, with Twisted's semantics (they are what ``ClientConnection``,
``MemberConnection`` and ``TLSMemoryBIOProtocol`` were written against):
``loseConnection`` closes after the queue drained (on a later turn, never
inside the call), ``abortConnection`` drops the queue and closes with a
reset on the next turn, the registered producer is told ``stopProducing``
when the connection is lost, and ``connectionLost`` comes exactly once —
``ConnectionDone`` for an orderly close on either side, ``ConnectionLost``
for a reset or error, ``ConnectionAborted`` after ``abortConnection``. A peer
FIN is a ``readConnectionLost`` for protocols that take half-closes
(``IHalfCloseableProtocol``), a ``ConnectionDone`` for the others, as Twisted
does. The stream only moves bytes: the protocol above it may be a TLS layer.

:func:`connect_tcp` opens member connections the same way: a non-blocking
``connect`` with its deadline, failures reported to
``factory.clientConnectionFailed`` with the Twisted errors a
``reactor.connectTCP`` reports (``ConnectionRefusedError``, ``TimeoutError``,
``NoRouteError``...), so :func:`lbframe.errors.describe_connect_error` says
the same words.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct

from twisted.internet import address, error, interfaces
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.tcp import _getsockname
from twisted.python import failure
from zope.interface import implementer

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_HUP = select.EPOLLHUP | select.EPOLLERR

#: bytes read per readable event (Twisted's ``bufferSize``)
RECV_SIZE = 64 * 1024
#: a streaming producer is paused while more than this is queued (Twisted's
#: ``bufferSize`` for the same decision)
HIGH_WATER = 64 * 1024

_DONE = failure.Failure(error.ConnectionDone())
_LOST = failure.Failure(error.ConnectionLost())
_LINGER_RESET = struct.pack("ii", 1, 0)


@implementer(interfaces.ITCPTransport, interfaces.ISystemHandle, interfaces.IPushProducer,
             interfaces.IConsumer)
class Stream:
    """One connected TCP socket and its protocol (see the module doc).

    ``dispatch`` is where it waits for readiness (a ``Dispatcher``),
    ``reactor`` gives ``callLater`` (an abort closes on the next turn),
    ``peer`` is the peer's socket address, ``connector`` the
    :class:`Connector` of a member connection (None for an accepted one).
    """

    __slots__ = ("socket", "fd", "protocol", "dispatch", "reactor", "peer", "connector",
                 "mask", "connected", "disconnecting", "disconnected", "aborting",
                 "out", "queue", "unsent", "producer", "streamingProducer",
                 "producerPaused", "write_closing", "write_closed", "read_closed",
                 "__weakref__")

    def __init__(self, sock: socket.socket, protocol, dispatch, reactor, peer,
                 connector=None):
        self.socket = sock  # (non-blocking: StreamServer and Connector see to it)
        self.fd = sock.fileno()
        self.protocol = protocol
        self.dispatch = dispatch
        self.reactor = reactor
        self.peer = peer
        self.connector = connector
        self.mask = 0
        self.connected = True
        self.disconnecting = False
        self.disconnected = False
        self.aborting = False
        #: the bytes being sent (a memoryview), then those queued after them
        self.out = None
        self.queue: list | None = None
        #: bytes written and not yet taken by the kernel
        self.unsent = 0
        self.producer = None
        self.streamingProducer = True
        self.producerPaused = False
        self.write_closing = False
        self.write_closed = False
        self.read_closed = False
        dispatch.acquire()

    def __repr__(self) -> str:
        return f"<Stream fd={self.fd} {type(self.protocol).__name__}>"

    # -- where we wait ----------------------------------------------------

    def _want(self, mask: int) -> None:
        old = self.mask
        if mask != old:
            self.mask = mask
            self.dispatch.watch(self, old, mask)

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return type(self.protocol).__name__

    # -- readiness (the dispatcher calls these) ----------------------------

    def doRead(self) -> None:
        if self.disconnecting:
            return  # (closing at the end of the dispatcher's round: see loseConnection)
        try:
            # (one call that returns the bytes: measured a little cheaper
            # than recv_into a shared buffer and a copy out of it)
            data = self.socket.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._lost(_LOST)
            return
        if data:
            self.protocol.dataReceived(data)
        else:
            self._read_eof()

    def on_event(self, event: int) -> None:
        """Anything but a plain ``EPOLLIN``: writability, errors, hang-ups.
        An error or hang-up is found out by the read or send it makes fail
        (a reset is a ``ConnectionLost``, an end of stream a ``ConnectionDone``)."""
        if self.mask & _IN and event & (_IN | _HUP):
            self.doRead()
            if self.disconnected or not event & (_OUT | _HUP):
                return
        if self.mask & _OUT and event & (_OUT | _HUP):
            self.doWrite()
        elif event & _HUP and not self.mask & _IN:
            # Told of an error while only waiting to write nothing: lost.
            self._lost(_LOST)

    def _read_eof(self) -> None:
        half = interfaces.IHalfCloseableProtocol(self.protocol, None)
        if half is None:
            self._lost(_DONE)
            return
        self.read_closed = True
        self._want(self.mask & ~_IN)
        try:
            half.readConnectionLost()
        except BaseException:
            self._lost(failure.Failure())

    def doWrite(self) -> None:
        out = self.out
        send = self.socket.send
        while True:
            if out is None:
                queue = self.queue
                if not queue:
                    break
                self.queue = None
                out = memoryview(queue[0] if len(queue) == 1 else b"".join(queue))
            try:
                sent = send(out)
            except (BlockingIOError, InterruptedError):
                self.out = out
                return
            except OSError:
                self.out = None
                self._lost(_LOST)
                return
            self.unsent -= sent
            if sent < len(out):
                self.out = out[sent:]
                return
            out = None
        self.out = None
        self.unsent = 0
        producer = self.producer
        if producer is not None and (not self.streamingProducer or self.producerPaused):
            self._want(self.mask & ~_OUT)
            self.producerPaused = False
            producer.resumeProducing()
            return
        if self.disconnecting:
            self._lost(_DONE)  # (the close takes it out of the epoll set)
            return
        self._want(self.mask & ~_OUT)
        if self.write_closing and not self.write_closed:
            self.write_closed = True
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            half = interfaces.IHalfCloseableProtocol(self.protocol, None)
            if half is not None:
                half.writeConnectionLost()

    # -- ITransport ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.connected or self.write_closed or self.aborting or not data:
            return
        if not self.unsent:
            try:
                sent = self.socket.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0  # the error comes back when writable: reported there
            size = len(data)
            if sent == size:
                return
            self.out = memoryview(data)[sent:]
            self.unsent = size - sent
        else:
            if self.queue is None:
                self.queue = [data]
            else:
                self.queue.append(data)
            self.unsent += len(data)
        if not self.mask & _OUT:
            self._want(self.mask | _OUT)
        producer = self.producer
        if producer is not None and self.streamingProducer and self.unsent > HIGH_WATER:
            self.producerPaused = True
            producer.pauseProducing()

    def writeSequence(self, iovec) -> None:
        if iovec:
            self.write(b"".join(iovec))

    def loseConnection(self) -> None:
        """Close once everything written is sent (on a later turn)."""
        if not self.connected or self.disconnecting or self.aborting:
            return
        self.disconnecting = True
        if not self.unsent and self.dispatch.serving:
            # Nothing to send: closed when the dispatcher's round ends, not
            # after a wake-up for writability (two epoll_ctl and a poll).
            # Until then nothing is read (doRead looks at disconnecting).
            self.dispatch.close_soon(self)
            return
        self._want((self.mask & ~_IN) | _OUT)

    def close_now(self) -> None:
        """The dispatcher's round ended after :meth:`loseConnection`: close,
        or wait to write as Twisted does if something came up meanwhile (bytes
        written since, a paused producer to resume first)."""
        if self.disconnected or self.aborting:
            return  # (an abort since: it ends the stream its own way)
        producer = self.producer
        if self.unsent or (producer is not None and (not self.streamingProducer
                                                     or self.producerPaused)):
            self._want((self.mask & ~_IN) | _OUT)
            return
        self._lost(_DONE)

    def loseWriteConnection(self) -> None:
        """Send a FIN once everything written is sent."""
        self.write_closing = True
        if self.connected and not self.aborting:
            self._want(self.mask | _OUT)

    def abortConnection(self) -> None:
        """Drop what is queued and close with a reset, on the next turn."""
        if self.disconnected or self.aborting:
            return
        self.aborting = True
        self._want(0)
        self.out = self.queue = None
        self.unsent = 0
        self.reactor.callLater(0, self._lost, failure.Failure(error.ConnectionAborted()))

    def getPeer(self):
        peer = self.peer
        kind = address.IPv6Address if len(peer) == 4 else address.IPv4Address
        return kind("TCP", *peer)

    def getHost(self):
        host = _getsockname(self.socket)
        kind = address.IPv6Address if len(host) == 4 else address.IPv4Address
        return kind("TCP", *host)

    def getHandle(self):
        return self.socket

    def getTcpNoDelay(self) -> bool:
        return bool(self.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def setTcpNoDelay(self, enabled: bool) -> None:
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, enabled)
        except OSError:
            pass

    def getTcpKeepAlive(self) -> bool:
        return bool(self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, enabled)

    # -- IPushProducer: reading ------------------------------------------------

    def pauseProducing(self) -> None:
        if self.mask & _IN:
            self._want(self.mask & ~_IN)

    def resumeProducing(self) -> None:
        if (self.connected and not self.disconnecting and not self.aborting
                and not self.read_closed and not self.mask & _IN):
            self._want(self.mask | _IN)

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- IConsumer: our producer -----------------------------------------------

    def registerProducer(self, producer, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError(f"Cannot register producer {producer!r}, because producer "
                               f"{self.producer!r} was never unregistered.")
        if self.disconnected:
            producer.stopProducing()
            return
        self.producer = producer
        self.streamingProducer = streaming
        if not streaming:
            producer.resumeProducing()

    def unregisterProducer(self) -> None:
        self.producer = None
        if self.connected and self.disconnecting:
            self._want(self.mask | _OUT)

    # -- the end ----------------------------------------------------------------

    def _lost(self, reason: failure.Failure) -> None:
        """Close the socket and tell the producer, then the protocol (once)."""
        if self.disconnected:
            return
        self.disconnected = True
        self.connected = False
        producer = self.producer
        if producer is not None:
            self.producer = None
            producer.stopProducing()
        if self.mask:
            self.mask = 0
            self.dispatch.forget(self)  # (the close takes it out of the epoll set)
        self.out = self.queue = None
        self.unsent = 0
        sock = self.socket
        if self.aborting:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass
        sock.close()
        self.fd = -1
        self.dispatch.release()
        try:
            self.protocol.connectionLost(reason)
        finally:
            connector = self.connector
            if connector is not None:
                connector.connection_lost(reason)

    def connectionLost(self, reason) -> None:
        """The descriptor API: the dispatcher gives up on this stream
        (an exception escaped a handler): close it as lost."""
        self._lost(reason if reason is not None else _LOST)


class StreamServer:
    """What a listening port builds its accepted connections with
    (``port.transport``, see :func:`lbframe.protocols.accept.serve_accepted`):
    :class:`Stream`\\ s in ``dispatch``."""

    __slots__ = ("dispatch",)

    def __init__(self, dispatch):
        self.dispatch = dispatch

    def __call__(self, sock, protocol, addr, port, session, reactor) -> Stream:
        sock.setblocking(False)  # (an accepted socket does not inherit it)
        stream = Stream(sock, protocol, self.dispatch, reactor, addr)
        stream._want(_IN)
        return stream


# -- member connections ----------------------------------------------------------


def _connect_error(err: int) -> Exception:
    """The Twisted exception ``connectTCP`` reports for a ``connect`` errno."""
    return error.getConnectError((err, os.strerror(err)))


@implementer(interfaces.IConnector)
class Connector:
    """One non-blocking connect to ``(host, port)`` for ``factory`` (a
    ``ClientFactory``), ended by ``timeout`` seconds: on success the
    factory's protocol gets a :class:`Stream`; on failure
    ``factory.clientConnectionFailed(connector, Failure)``. ``state`` is
    ``"connecting"``, ``"connected"`` or ``"disconnected"``, as a Twisted
    connector's."""

    __slots__ = ("dispatch", "reactor", "host", "port", "factory", "state", "socket",
                 "fd", "mask", "timer", "transport", "peer")

    def __init__(self, dispatch, reactor, host: str, port: int, factory, timeout: float):
        self.dispatch = dispatch
        self.reactor = reactor
        self.host = host
        self.port = port
        self.factory = factory
        self.state = "connecting"
        self.transport = None
        self.mask = 0
        self.timer = None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.peer = (host, port) if family == socket.AF_INET else (host, port, 0, 0)
        sock = self.socket = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        self.fd = sock.fileno()
        dispatch.acquire()
        err = sock.connect_ex(self.peer)
        if err in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EINTR):
            # (0: at once; the socket is writable, the next poll says so.)
            self.mask = _OUT
            dispatch.watch(self, 0, _OUT)
            self.timer = reactor.callLater(timeout, self._failed, error.TimeoutError())
        else:
            # As Twisted does, a connect that fails at once is reported on a
            # later turn: the caller holds the connector before hearing of it.
            self.timer = reactor.callLater(0, self._failed, _connect_error(err))

    def __repr__(self) -> str:
        return f"<Connector {self.host}:{self.port} {self.state}>"

    # -- readiness while connecting ------------------------------------------

    def doRead(self) -> None:
        self.on_event(_IN)

    def on_event(self, event: int) -> None:
        if self.state != "connecting":
            return
        err = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._failed(_connect_error(err))
        elif event & _HUP:
            self._failed(error.ConnectError(string="connection lost while connecting"))
        else:
            self._connected()

    def connectionLost(self, reason) -> None:
        """The descriptor API: an exception escaped a handler."""
        if self.state == "connecting":
            self._failed(error.ConnectError(string=str(reason)))

    def _connected(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.state = "connected"
        protocol = self.factory.buildProtocol(address.IPv4Address("TCP", self.host, self.port)
                                              if len(self.peer) == 2 else
                                              address.IPv6Address("TCP", self.host, self.port))
        sock, dispatch = self.socket, self.dispatch
        if protocol is None:
            self._close_socket()
            self.state = "disconnected"
            return
        stream = self.transport = Stream(sock, protocol, dispatch, self.reactor, self.peer, self)
        # The connect's registration becomes the stream's: one modify.
        stream.mask = self.mask
        self.mask = 0
        dispatch.handover(self, stream)
        stream._want(_IN)
        self.socket = None
        dispatch.release()  # (the stream holds the dispatcher now)
        protocol.makeConnection(stream)

    def _failed(self, why: Exception) -> None:
        if self.state != "connecting":
            return
        self.state = "disconnected"
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self._close_socket()
        self.factory.clientConnectionFailed(self, failure.Failure(why))

    def _close_socket(self) -> None:
        if self.mask:
            self.mask = 0
            self.dispatch.forget(self)
        sock, self.socket = self.socket, None
        if sock is not None:
            sock.close()
            self.dispatch.release()
        self.fd = -1

    def connection_lost(self, reason) -> None:
        """Our stream closed (Twisted's connector tells the factory)."""
        self.state = "disconnected"
        self.factory.clientConnectionLost(self, reason)

    # -- IConnector -------------------------------------------------------------

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "lbframe.http.connect"

    def stopConnecting(self) -> None:
        """Give up connecting (``clientConnectionFailed`` with a ``UserError``)."""
        if self.state != "connecting":
            raise error.NotConnectingError("we're not trying to connect")
        self._failed(error.UserError())

    def disconnect(self) -> None:
        if self.state == "connecting":
            self.stopConnecting()
        elif self.transport is not None:
            self.transport.loseConnection()

    def connect(self) -> None:
        raise NotImplementedError("a Connector connects once")

    def getDestination(self):
        if len(self.peer) == 2:
            return address.IPv4Address("TCP", self.host, self.port)
        return address.IPv6Address("TCP", self.host, self.port)


def connect_tcp(reactor, dispatch, host: str, port: int, factory, timeout: float):
    """``reactor.connectTCP(host, port, factory, timeout=timeout)`` for the
    http path: a :class:`Connector` in ``dispatch`` for a literal address, the
    reactor's own connect otherwise (no dispatcher: a test's fake reactor;
    a host name: the reactor resolves it)."""
    if dispatch is None or not (isIPAddress(host) or isIPv6Address(host)):
        return reactor.connectTCP(host, port, factory, timeout=timeout)
    return Connector(dispatch, reactor, host, port, factory, timeout)
