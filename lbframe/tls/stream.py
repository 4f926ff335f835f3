"""Terminating TLS on a stream: a lean server-side layer on memory BIOs.

It sits between a TCP transport (Twisted's, or any transport offering the
``ITransport`` subset: ``write``, ``writeSequence``, ``loseConnection``,
``abortConnection``, ``pauseProducing``/``resumeProducing``,
``registerProducer``/``unregisterProducer``, ``getPeer``, ``getHost``,
``setTcpNoDelay``) and the protocol it decrypts for (the http path's
``ClientConnection``), which sees it as its transport.

Why not Twisted's ``TLSMemoryBIOProtocol``: it is generic, and on the http
path's keep-alive profile its machinery cost as much as the TLS itself —
a producer membrane, a handshake check, a write buffer, a loop of 16 KiB
``send`` calls each followed by a 32 KiB ``bio_read`` (a fresh buffer per
call), a ``recv`` per record with a fresh 32 KiB buffer and an exception to
end every loop. Here, once the handshake is done:

- per chunk received: one ``BIO_write``, ``SSL_read`` into one reused
  buffer until OpenSSL wants more (a single read when the chunk was one
  record and the input BIO is empty, the usual request), and the plaintext
  handed to the protocol once (joined when the chunk held several records);
- per write: one ``SSL_write`` of the whole buffer (pyOpenSSL turns on
  ``SSL_MODE_ENABLE_PARTIAL_WRITE``, which makes ``SSL_write`` stop after
  every record; we turn it off on our connections, so OpenSSL writes every
  record in one call — a memory BIO never refuses bytes), then everything
  pending in the outgoing BIO read at once (its size asked first) and
  written below in one call (the factory's ``send``: the http path's sends
  straight to the socket when nothing is queued).

Those calls go to OpenSSL through pyOpenSSL's own cffi binding
(``OpenSSL._util.lib``) on the ``SSL``/``BIO`` pointers of a
``SSL.Connection``: pyOpenSSL's methods allocate a buffer per call and
raise an exception to say "no more data", which is what this module
exists to avoid. The handshake, errors, certificates and every callback
(SNI certificate choice, ALPN, OCSP stapling, client-certificate
verification: all in the listener's context) stay pyOpenSSL's: a
failure is turned into pyOpenSSL's exception by pyOpenSSL itself. Where
that binding lacks a function we use (another pyOpenSSL), the public
methods are used instead (:data:`FAST`).

Behaviour kept from Twisted's TLS layer, which the http path relied on:
the protocol is connected when TCP is (so a request deadline covers the
handshake); ``loseConnection`` before the handshake is done aborts; a
handshake failure reaches ``connectionLost`` as the ``SSL.Error`` (after
the alert is sent); a close without ``close_notify`` as ``ConnectionLost``;
the peer's ``close_notify`` is answered with ours and closes the
connection. Unlike it we do not wait for the peer's answer to our own
``close_notify`` before closing TCP (RFC 8446 §6.1 allows it; HAProxy and
nginx do the same), nor for a registered producer to be unregistered (a
TCP transport does not either), so nothing can hold a closed connection
open; bytes that arrive once we are closing are not read.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet import error
from twisted.internet.interfaces import (IHandshakeListener, INegotiated, ISSLTransport,
                                         ISystemHandle)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

try:  # pyOpenSSL's cffi binding (see the module docstring)
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib

    FAST = all(hasattr(_lib, name) for name in (
        "SSL_read", "SSL_write", "SSL_get_error", "SSL_clear_mode", "BIO_read", "BIO_write",
        "BIO_get_mem_data", "SSL_MODE_ENABLE_PARTIAL_WRITE", "SSL_ERROR_WANT_READ",
        "SSL_ERROR_ZERO_RETURN")) and hasattr(SSL.Connection, "_raise_ssl_error")
except ImportError:  # pragma: no cover (another pyOpenSSL)
    FAST = False

#: plaintext read per ``SSL_read`` (a record holds at most 16 KiB)
READ_SIZE = 64 * 1024

if FAST:
    _WANT_READ = _lib.SSL_ERROR_WANT_READ
    _ZERO_RETURN = _lib.SSL_ERROR_ZERO_RETURN
    _PARTIAL = _lib.SSL_MODE_ENABLE_PARTIAL_WRITE
    _SSL_read, _SSL_write, _SSL_get_error = _lib.SSL_read, _lib.SSL_write, _lib.SSL_get_error
    _BIO_read, _BIO_write, _BIO_pending = _lib.BIO_read, _lib.BIO_write, _lib.BIO_get_mem_data
    _unpack = _ffi.unpack  # (bytes from a char[]: cheaper than buffer(...)[:])
    _new = _ffi.new_allocator(should_clear_after_alloc=False)
    #: one buffer for every connection: what is read is copied out at once
    #: (the reactor runs one callback at a time)
    _READ_BUFFER = _new("char[]", READ_SIZE)
    _OUT_BUFFER = _new("char[]", READ_SIZE)
    _POINTER = _ffi.new("char **")


class _ConnectionSSLError(SSL.Error):
    """An OpenSSL failure pyOpenSSL did not turn into an exception."""


@implementer(ISSLTransport, ISystemHandle, INegotiated)
class TLSServerStream(Protocol):
    """The server side of one TLS connection: the protocol of a TCP
    transport, and the transport of ``wrapped``.

    ``options.getContext()`` (a :class:`lbframe.tls.server.ReloadableOptions`
    or any ``IOpenSSLContextFactory``) is asked once, when TCP connects: a
    reload that swaps the options reaches the connections made after it.
    """

    #: set once we close: loseConnection, a TLS failure, an abort, or the
    #: peer's close_notify (nothing more is read or, once ``shut``, written)
    disconnecting = False
    #: the wrapped protocol's producer, registered with the transport below
    producer = None

    def __init__(self, options, wrapped: Protocol, send=None):
        self.options = options
        self.wrapped = wrapped
        #: ``send(transport, data)``: how records go below (see TLSServerFactory)
        self.send = send if send is not None else _write_below
        self.tls: SSL.Connection | None = None
        self.handshake_done = False
        #: what the protocol wrote before the handshake was done
        self.early: list[bytes] = []
        #: our close_notify went out (nothing more may be written)
        self.shut = False
        #: the peer's close_notify arrived
        self.peer_closed = False
        self.aborted = False
        #: the reason the protocol's connectionLost gets (a TLS failure)
        self.reason: Failure | None = None
        self.connected = False

    # -- below: the TCP transport's protocol ---------------------------------

    def makeConnection(self, transport) -> None:
        self.transport = transport
        self.connected = True
        tls = SSL.Connection(self.options.getContext(), None)
        tls.set_app_data(self)  # (lbframe.tls.server's SNI callback aborts through it)
        tls.set_accept_state()
        if FAST:
            _lib.SSL_clear_mode(tls._ssl, _PARTIAL)
            self._ssl, self._into, self._out = tls._ssl, tls._into_ssl, tls._from_ssl
        self.tls = tls
        # Connected now, not after the handshake: the protocol's request
        # deadline counts from here, so it covers a slow handshake.
        self.wrapped.makeConnection(self)

    def dataReceived(self, data: bytes) -> None:
        tls = self.tls
        if tls is None or self.disconnecting:
            return  # (closing: nothing more is read, as TCP's loseConnection does)
        if not self.handshake_done:
            tls.bio_write(data)
            if not self._handshake():
                return
        elif FAST:
            if type(data) is not bytes:
                data = bytes(data)  # (cffi takes bytes; a transport may hand a view)
            _BIO_write(self._into, data, len(data))
        else:
            tls.bio_write(data)
        plain = self._read() if FAST else self._read_slowly()
        if self.reason is not None:
            self._failed()
            return
        self._flush()
        if plain and not self.aborted:
            self.wrapped.dataReceived(plain)
        if self.peer_closed and self.tls is not None:
            # close_notify: answer it and close (Twisted's TLS did the same).
            self._shutdown()

    def _handshake(self) -> bool:
        """Go on with the handshake; True once it is done."""
        try:
            self.tls.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return False
        except SSL.Error:
            self.reason = Failure()
            self._failed()
            return False
        self.handshake_done = True
        if self.aborted:
            return False
        early, self.early = self.early, []
        for data in early:
            self._write(data)
        if IHandshakeListener.providedBy(self.wrapped):
            self.wrapped.handshakeCompleted()
        return self.tls is not None and not self.aborted

    def _read(self) -> bytes:
        """All the plaintext OpenSSL can give from what it was given."""
        ssl, buffer = self._ssl, _READ_BUFFER
        n = _SSL_read(ssl, buffer, READ_SIZE)
        if n > 0:
            first = _unpack(buffer, n)
            if _BIO_pending(self._into, _POINTER) <= 0:
                # The chunk was one record (the usual request): OpenSSL holds
                # nothing more (without read-ahead, OpenSSL's default and our
                # policy's, it takes no more than a record from the BIO, and
                # the buffer takes a whole one), so no read to hear "want read".
                return first
            n = _SSL_read(ssl, buffer, READ_SIZE)
            if n <= 0:
                self._read_ended(n)
                return first
            pieces = [first, _unpack(buffer, n)]
            while True:
                n = _SSL_read(ssl, buffer, READ_SIZE)
                if n <= 0:
                    break
                pieces.append(_unpack(buffer, n))
            self._read_ended(n)
            return b"".join(pieces)
        self._read_ended(n)
        return b""

    def _read_ended(self, n: int) -> None:
        code = _SSL_get_error(self._ssl, n)
        if code == _WANT_READ:
            return
        if code == _ZERO_RETURN:
            self.peer_closed = True
            return
        self.reason = self._error(n)

    def _error(self, n: int) -> Failure:
        """pyOpenSSL's exception for a failed call, as a Failure."""
        try:
            self.tls._raise_ssl_error(self._ssl, n)
        except SSL.Error:
            return Failure()
        return Failure(_ConnectionSSLError([]))

    def _read_slowly(self) -> bytes:
        """:meth:`_read` with pyOpenSSL's public methods (another pyOpenSSL)."""
        pieces = []
        tls = self.tls
        try:
            while True:
                pieces.append(tls.recv(READ_SIZE))
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            self.peer_closed = True
        except SSL.Error:
            self.reason = Failure()
        return b"".join(pieces)

    def _flush(self) -> None:
        """Write below everything OpenSSL has for the peer, in one write."""
        if self.tls is None:
            return
        if FAST:
            pending = _BIO_pending(self._out, _POINTER)
            if pending <= 0:
                return
            buffer = _OUT_BUFFER if pending <= READ_SIZE else _new("char[]", pending)
            n = _BIO_read(self._out, buffer, pending)
            self.send(self.transport, _unpack(buffer, n))
            return
        try:
            data = self.tls.bio_read(1 << 30)
        except SSL.WantReadError:
            return
        self.send(self.transport, data)

    def _failed(self) -> None:
        """A TLS failure (``self.reason``): send the alert, close below."""
        if self.tls is None or self.aborted:
            return
        self.disconnecting = True
        self._flush()
        self.shut = True
        self.transport.loseConnection()

    def connectionLost(self, reason=connectionDone) -> None:
        if self.tls is None:
            return  # (once)
        self.tls = None
        self.connected = False
        self.disconnecting = True
        self.early = []
        if self.reason is not None:
            reason = self.reason
        elif not self.peer_closed and not self.aborted and not self.shut:
            # Closed without close_notify (a truncation, as far as TLS knows).
            reason = Failure(error.ConnectionLost())
        self.reason = None
        if FAST:
            self._ssl = self._into = self._out = None
        wrapped, self.wrapped = self.wrapped, None
        wrapped.connectionLost(reason)

    # -- above: the wrapped protocol's transport -------------------------------

    def write(self, data) -> None:
        if self.shut or not data or self.tls is None:
            return
        if not self.handshake_done:
            self.early.append(bytes(data))
            return
        if not FAST:
            self._write(data)
            return
        # The usual path, inline: one SSL_write, one read of the records.
        if type(data) is not bytes:
            data = bytes(data)
        n = _SSL_write(self._ssl, data, len(data))
        if n != len(data):
            self._write_rest(data, n)
            return
        out = self._out
        pending = _BIO_pending(out, _POINTER)
        buffer = _OUT_BUFFER if pending <= READ_SIZE else _new("char[]", pending)
        self.send(self.transport, _unpack(buffer, _BIO_read(out, buffer, pending)))

    def _write_rest(self, data: bytes, n: int) -> None:
        """A short or failed SSL_write (a short one never happens without
        partial writes; but whatever OpenSSL does, nothing is lost)."""
        while 0 < n < len(data):
            data = data[n:]
            n = _SSL_write(self._ssl, data, len(data))
        if n <= 0:
            self.reason = self._error(n)
            self._failed()
            return
        self._flush()

    def _write(self, data) -> None:
        if FAST:
            if type(data) is not bytes:
                data = bytes(data)
            n = _SSL_write(self._ssl, data, len(data))
            if n != len(data):
                self._write_rest(data, n)
                return
        else:
            try:
                sent = 0
                while sent < len(data):
                    sent += self.tls.send(data[sent:])
            except SSL.Error:
                self.reason = Failure()
                self._failed()
                return
        self._flush()

    def writeSequence(self, data) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """Close after what was written, with a close_notify; before the
        handshake is done, abort (there is nothing to close cleanly).

        As a TCP transport does, and unlike Twisted's TLS layer (which
        waited for a registered producer to be unregistered, however long
        that took): what is written after this is dropped."""
        if self.tls is None or self.disconnecting:
            return
        if not self.handshake_done:
            self.abortConnection()
            return
        self._shutdown()

    def _shutdown(self) -> None:
        """Our close_notify, then close TCP (after what it holds)."""
        tls = self.tls
        if tls is None or self.aborted:
            return
        if not self.shut:
            self.shut = True
            self.disconnecting = True
            try:
                tls.shutdown()
            except SSL.Error:
                pass
            self._flush()
        self.transport.loseConnection()

    def abortConnection(self) -> None:
        if self.tls is None or self.aborted:
            return
        self.aborted = True
        self.disconnecting = True
        self.transport.abortConnection()

    def registerProducer(self, producer, streaming) -> None:
        # Nothing is buffered here once the handshake is done: the
        # transport below pausing the producer is all the backpressure.
        self.transport.registerProducer(producer, streaming)
        self.producer = producer

    def unregisterProducer(self) -> None:
        if self.producer is None:
            return
        self.producer = None
        self.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()

    def getPeer(self):
        return self.transport.getPeer()

    def getHost(self):
        return self.transport.getHost()

    def setTcpNoDelay(self, enabled) -> None:
        self.transport.setTcpNoDelay(enabled)

    def getTcpNoDelay(self):
        return self.transport.getTcpNoDelay()

    def setTcpKeepAlive(self, enabled) -> None:
        self.transport.setTcpKeepAlive(enabled)

    def getTcpKeepAlive(self):
        return self.transport.getTcpKeepAlive()

    def loseWriteConnection(self) -> None:
        # TLS has no half-close of its own: close_notify closes both ways.
        self.loseConnection()

    def getHandle(self) -> SSL.Connection | None:
        """The ``SSL.Connection`` (None once the connection is lost)."""
        return self.tls

    def getPeerCertificate(self):
        """The client's certificate (an ``OpenSSL.crypto.X509``) or None."""
        tls = self.tls
        return tls.get_peer_certificate() if tls is not None else None

    @property
    def negotiatedProtocol(self) -> bytes | None:
        tls = self.tls
        chosen = tls.get_alpn_proto_negotiated() if tls is not None else None
        return chosen or None

    def logPrefix(self) -> str:
        return "TLS"

    def __getattr__(self, name):
        # Anything else a transport has (fileno, reactor, ...): the one below.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.transport, name)


def _write_below(transport, data: bytes) -> None:
    transport.write(data)


class TLSServerFactory(Factory):
    """Wraps the protocols of ``factory`` in :class:`TLSServerStream`.

    ``send(transport, data)`` writes records to the TCP transport; the
    http path passes its own (:func:`lbframe.protocols.http.send.send`,
    which sends at once when nothing is queued, sparing Twisted's write
    queue two ``epoll_ctl`` calls and a loop turn per response)."""

    noisy = False

    def __init__(self, options, factory, send=None):
        self.options = options
        self.factory = factory
        self.send = send

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.factory.doStop()

    def buildProtocol(self, addr):
        wrapped = self.factory.buildProtocol(addr)
        if wrapped is None:
            return None
        return TLSServerStream(self.options, wrapped, self.send)
