"""Plumbing for the http and https monitors: one HTTP/1.1 exchange on
Twisted's :class:`~twisted.web.client.Agent`, cancellable and bounded.

Why Agent and not a hand-written client: it already speaks HTTP/1.1 for real
(chunked bodies, ``Content-Length``, responses ended by close, ``HEAD``,
``Connection: close``). What a health check needs on top, and what lives
here:

- :class:`Exchange` is both the Agent's endpoint factory and the endpoint
  it gets: the check decides where to connect (the member, or its ``port``,
  over TLS or not), not the URL, and it keeps hold of the connection so that
  a cancelled or finished check can abort it at any stage.
- the status line and headers may take at most :data:`HEAD_LIMIT` bytes
  (Agent bounds each line, not their number); the body is read up to
  :data:`BODY_LIMIT` bytes and the connection is then closed
  (:class:`BodyReader`). A member answering with endless data costs
  lbframe bounded memory.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

#: bytes of the status line and headers a member may send
HEAD_LIMIT = 64 * 1024
#: bytes of the body read (and searched by ``expect``); the rest is not read
BODY_LIMIT = 64 * 1024


class _HeadLimit(ProtocolWrapper):
    """Counts what arrives until the response head is parsed; aborts the
    connection when the head grows past :data:`HEAD_LIMIT`."""

    def dataReceived(self, data: bytes) -> None:
        exchange = self.factory.exchange
        exchange.head_bytes += len(data)
        super().dataReceived(data)
        # The Agent parses synchronously: once the head was complete the
        # check has set ``head_done`` from inside the call above.
        if not exchange.head_done and exchange.head_bytes > HEAD_LIMIT:
            exchange.head_too_long = True
            self.transport.abortConnection()


class _Wrapping(WrappingFactory):
    protocol = _HeadLimit
    noisy = False  # no "Starting factory" log line per check

    def __init__(self, exchange: Exchange, wrapped):
        super().__init__(wrapped)
        self.exchange = exchange


@implementer(IAgentEndpointFactory, IStreamClientEndpoint)
class Exchange:
    """One request on one fresh connection to ``endpoint``.

    Passed to ``Agent.usingEndpointFactory``: every URI maps to this object,
    whose :meth:`connect` connects ``endpoint`` and remembers the connection.
    """

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.connection: _HeadLimit | None = None
        self.head_bytes = 0
        self.head_done = False
        self.head_too_long = False

    def endpointForURI(self, uri):
        return self

    def connect(self, factory):
        factory.noisy = False  # the Agent's factory, one per check
        d = self.endpoint.connect(_Wrapping(self, factory))

        def connected(wrapper: _HeadLimit):
            self.connection = wrapper
            return wrapper.wrappedProtocol

        return d.addCallback(connected)

    def abort(self) -> None:
        """Close the connection now, whatever stage the exchange is at."""
        if self.connection is not None and self.connection.transport is not None:
            self.connection.transport.abortConnection()


@implementer(IBodyProducer)
class BytesProducer:
    """A request body known in full: written at once, with its Content-Length.

    (``FileBodyProducer`` would also do, but runs on the global cooperator.)
    """

    def __init__(self, data: bytes):
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class BodyReader(Protocol):
    """Collects at most :data:`BODY_LIMIT` bytes of a response body.

    ``done`` fires with ``bytes`` when the body ended (by its length, its
    last chunk or the server closing a response that had neither) or when
    the limit is reached, in which case ``on_full`` is called to close the
    connection. It errbacks with the Agent's ``ResponseFailed`` when the
    connection broke off in the middle of the body.
    """

    def __init__(self, on_full):
        self.done: defer.Deferred[bytes] = defer.Deferred(lambda _: on_full())
        self.on_full = on_full
        self.data = bytearray()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.data += data[:BODY_LIMIT - len(self.data)]
        if len(self.data) >= BODY_LIMIT:
            self.done.callback(bytes(self.data))
            self.on_full()

    def connectionLost(self, reason) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(bytes(self.data))
        else:
            self.done.errback(reason)
