"""One epoll set for all relayed sockets, seen by the reactor as one reader.

Twisted's reactor wraps every readiness event in logging context calls,
which costs more than the ``recv``/``send`` pair the relay does per event.
The engine keeps the relay's sockets in an epoll set of its own, registers
that set's file descriptor with the reactor, and when the reactor says it is
readable, dispatches the ready sockets directly. Timers, monitors, the
admin server and everything else stay on the reactor as usual.

What the relay and the tcp listener need from where their sockets wait is
declared by :class:`IRelayIO`: the reactor's ``addReader``/``removeReader``/
``addWriter``/``removeWriter`` plus three calls the engine makes cheaper
(``switch_to_reading``, ``forget``) or needs (``acquire``/``release``).
:class:`RelayEngine` provides it; :class:`ReactorIO` provides it on a plain
reactor (tests drive the relay on a ``MemoryReactor`` through it).
"""

from __future__ import annotations

import select
import weakref

from twisted.internet.interfaces import IReadDescriptor
from zope.interface import Interface, implementer

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP
#: events handled per poll, and polls per wake-up of the reactor
MAX_EVENTS = 1024
ROUNDS = 4

_engines: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class IRelayIO(Interface):
    """Where relayed sockets wait for readiness."""

    def addReader(desc):
        """Call ``desc.doRead()`` while its socket is readable."""

    def removeReader(desc):
        """Stop that."""

    def addWriter(desc):
        """Call ``desc.doWrite()`` while its socket is writable."""

    def removeWriter(desc):
        """Stop that."""

    def switch_to_reading(desc):
        """A connect finished: stop waiting to write, start reading."""

    def forget(desc):
        """``desc``'s socket is about to be closed: stop watching it."""

    def acquire():
        """A listener starts using this (once per listener)."""

    def release():
        """A listener stopped using this (once per ``acquire``)."""


@implementer(IRelayIO)
class ReactorIO:
    """:class:`IRelayIO` on a plain reactor: each socket registered with the
    reactor itself (tests, with a ``MemoryReactor``; a reactor without epoll)."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.addReader = reactor.addReader
        self.removeReader = reactor.removeReader
        self.addWriter = reactor.addWriter
        self.removeWriter = reactor.removeWriter

    def switch_to_reading(self, desc) -> None:
        self.reactor.removeWriter(desc)
        self.reactor.addReader(desc)

    def forget(self, desc) -> None:
        self.reactor.removeReader(desc)
        self.reactor.removeWriter(desc)

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


@implementer(IReadDescriptor, IRelayIO)
class RelayEngine:
    def __init__(self, reactor):
        self.reactor = reactor
        self.epoll = select.epoll()
        self.fd = self.epoll.fileno()
        self.descriptors: dict = {}  # fd -> descriptor
        self.masks: dict = {}  # fd -> registered event mask
        self.users = 0

    @classmethod
    def for_reactor(cls, reactor) -> "RelayEngine":
        engine = _engines.get(reactor)
        if engine is None:
            engine = _engines[reactor] = cls(reactor)
        return engine

    # -- lifetime: registered with the reactor while a service uses it --

    def acquire(self) -> None:
        if self.users == 0:
            self.reactor.addReader(self)
        self.users += 1

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.reactor.removeReader(self)

    # -- the reactor's FD-set methods ------------------------------------

    def _set(self, desc, add: int, remove: int) -> None:
        fd = desc.fileno()
        if fd < 0:
            return
        masks = self.masks
        old = masks.get(fd, 0)
        new = (old | add) & ~remove
        if new == old:
            return
        if not old:
            self.epoll.register(fd, new)
            self.descriptors[fd] = desc
            masks[fd] = new
        elif not new:
            self.epoll.unregister(fd)
            del self.descriptors[fd]
            del masks[fd]
        else:
            self.epoll.modify(fd, new)
            masks[fd] = new

    def addReader(self, desc) -> None:
        self._set(desc, _IN, 0)

    def removeReader(self, desc) -> None:
        self._set(desc, 0, _IN)

    def addWriter(self, desc) -> None:
        self._set(desc, _OUT, 0)

    def removeWriter(self, desc) -> None:
        self._set(desc, 0, _OUT)

    def switch_to_reading(self, desc) -> None:
        """A connect finished: stop waiting to write, start reading — one
        ``epoll_ctl`` instead of a remove and an add."""
        self._set(desc, _IN, _OUT)

    def forget(self, desc) -> None:
        """``desc``'s socket is about to be closed, which removes it from the
        epoll set by itself: drop it from the books without a system call."""
        fd = desc.fileno()
        if self.masks.pop(fd, None) is not None:
            del self.descriptors[fd]

    # -- the reactor calls this when the epoll set has ready sockets -----

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "lbframe.engine"

    def doRead(self):
        descriptors = self.descriptors
        masks = self.masks
        poll = self.epoll.poll
        # Sockets that became ready while we worked are handled before going
        # back to the reactor (bounded, so timers and the rest still run).
        for _ in range(ROUNDS):
            events = poll(0, MAX_EVENTS)
            if not events:
                break
            for fd, event in events:
                desc = descriptors.get(fd)
                if desc is None:
                    continue
                if event == _IN:  # the common case
                    desc.doRead()
                    continue
                if event & _IN:
                    desc.doRead()
                    # The read may have closed it or stopped it writing.
                    if descriptors.get(fd) is not desc:
                        continue
                elif event & _ERR:
                    # Error or hang-up with nothing to read: as Twisted's
                    # reactor does, that is a lost connection (for a
                    # connecting socket, a failed connect) even if writable.
                    desc.connectionLost(None)
                    continue
                if event & _OUT and masks[fd] & _OUT:
                    desc.doWrite()
        return None

    def connectionLost(self, reason) -> None:
        pass
