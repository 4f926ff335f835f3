"""Write to a transport at once when nothing is queued before it.

Twisted's ``transport.write`` always queues: the bytes go out on the next
reactor turn, after registering the socket for writability and removing it
again — two ``epoll_ctl`` calls and a loop iteration per response, which in
the http path's profile cost more than parsing the response did. When the
transport's buffer is empty, sending right away keeps the order and skips
all of that; what the kernel does not take is queued the usual way, so
backpressure (``registerProducer``) works unchanged. TLS (a TCP transport
with ``TLS`` set: its socket carries records, not our bytes) and other
transports always take the usual way.

The http path's own :class:`~lbframe.protocols.http.transport.Stream` does
this in its ``write`` already; Twisted transports remain for ``tls = yes``
member connections and for reactors without an epoll set.
"""

from __future__ import annotations

from twisted.internet.tcp import Connection

from lbframe.protocols.http.transport import Stream
from lbframe.tls.stream import TLSServerStream


def unsent_bytes(transport) -> int:
    """How many bytes written to a TCP transport (ours or Twisted's) the
    kernel has not taken yet (0 for other transports)."""
    if type(transport) is Stream:
        return transport.unsent
    if isinstance(transport, Connection):
        return transport._tempDataLen + len(transport.dataBuffer) - transport.offset
    return 0


def has_unsent(transport) -> bool:
    """True when a TCP transport still holds bytes it could not send (a
    member that answered without reading the whole request): such a
    connection must not be reused."""
    if type(transport) is Stream:
        return transport.unsent > 0
    if isinstance(transport, Connection):
        return bool(transport._tempDataLen or transport.offset < len(transport.dataBuffer))
    return False


def send(transport, data: bytes) -> bool:
    """Write ``data``; True when all of it went to the socket at once,
    False when some of it waits in the transport (or went through a layer,
    such as TLS, that does not tell): the caller then wants backpressure."""
    kind = type(transport)
    if kind is Stream:
        transport.write(data)
        return not transport.unsent
    if kind is TLSServerStream and type(transport.transport) is Stream:
        # Our TLS layer writes its records through to the stream below
        # at once: whether they all went out is the stream's to say.
        transport.write(data)
        return not transport.transport.unsent
    if (isinstance(transport, Connection) and not transport.TLS and transport.connected
            and not transport.disconnecting and not transport._tempDataLen
            and transport.offset == len(transport.dataBuffer)):
        try:
            sent = transport.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # let the transport's own write path see and report it
        if sent == len(data):
            return True
        if sent:
            data = data[sent:]
    transport.write(data)
    return False
