"""The local channel between the parent and one worker.

One ``AF_UNIX`` socketpair per worker, inherited by the worker as a file
descriptor. Messages are JSON objects, each framed by a 4-byte length
(:class:`~twisted.protocols.basic.Int32StringReceiver`), with a kind in
``"t"``. Listening sockets travel with a message as ``SCM_RIGHTS``
ancillary data (Twisted's UNIX transport sends and receives them).

Why not AMP: one AMP value holds at most 65,535 bytes, and the member
state of a 5,000-member site (sent whole when a worker starts, and after a
reload) is larger; a framed JSON object has no such limit below
:data:`MAX_MESSAGE`, costs one ``json.loads`` per message and stays
readable with ``strace``.
"""

from __future__ import annotations

import json
import os

from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from zope.interface import implementer

log = Logger(namespace="lbframe")

#: the largest message either side accepts (a bigger one closes the channel)
MAX_MESSAGE = 64 * 1024 * 1024


@implementer(IFileDescriptorReceiver)
class Channel(Int32StringReceiver):
    """Both ends: :meth:`send` a message (optionally with descriptors);
    received messages go to ``handler(message, fds)`` where ``fds`` are the
    descriptors that came with it (the receiver owns and must close them)."""

    MAX_LENGTH = MAX_MESSAGE

    def __init__(self, handler, lost=None):
        self.handler = handler
        self.lost = lost
        self._fds: list[int] = []
        self.connected = False

    def connectionMade(self):
        self.connected = True

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self._fds.append(descriptor)

    def send(self, message: dict, fds=()) -> None:
        """Send ``message``; ``fds`` are sent with its first bytes."""
        if not self.connected:
            return
        for fd in fds:
            self.transport.sendFileDescriptor(fd)
        self.sendString(json.dumps(message, separators=(",", ":")).encode())

    def stringReceived(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.error("workers: a malformed message on the channel; closing it",
                      lbframe_event="worker_channel")
            self.transport.loseConnection()
            return
        wanted = message.get("fds", 0) if isinstance(message, dict) else 0
        fds, self._fds = self._fds[:wanted], self._fds[wanted:]
        try:
            self.handler(message, fds)
        except Exception:
            log.failure("workers: handling a {kind} message", kind=message.get("t"))

    def lengthLimitExceeded(self, length: int) -> None:
        log.error("workers: a {length}-byte message on the channel (limit {limit}); closing it",
                  length=length, limit=self.MAX_LENGTH, lbframe_event="worker_channel")
        self.transport.loseConnection()

    def connectionLost(self, reason=None):
        self.connected = False
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        if self.lost is not None:
            self.lost(reason)
