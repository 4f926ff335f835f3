"""Readiness of the http path's connections without Twisted's per-event wrapping.

The reactor wraps every readiness event in logging-context calls (about ten
Python calls per event, twice per proxied request: more than the ``recv``
itself costs). As the tcp path's relay engine does (see
:mod:`lbframe.protocols.engine`), the http path's sockets wait in an epoll
set of their own, which the reactor sees as one reader; when it is readable,
the ready connections are served directly.

Two kinds of connection wait here. The http path's own streams and
connects (:mod:`lbframe.protocols.http.transport`: accepted client
connections of ``tcp:``/``tcp6:``/``ssl:`` listeners, member connections of
pools without ``tls``) register themselves (:meth:`Dispatcher.watch`) and are
served first, with nothing between the poll and their ``doRead``: they stay
here until they close (each holds the set with :meth:`Dispatcher.acquire`).

The others are Twisted's own TCP transports (``tls = yes`` member
connections, ``unix:`` listeners' connections). They wait here
(``tcp.Server``/``tcp.Client``, with or without TLS on them), unchanged: a
transport is moved here by setting its ``reactor`` attribute to a
:class:`_Redirect`, through which its ``startReading``/``startWriting`` and
the rest reach this set, while ``callLater`` and everything else still reach
the reactor. Events are handled exactly as the epoll reactor handles them
(``_doReadOrWrite``: a read's or write's return value or exception
disconnects the transport, a hang-up while reading is a clean close), so
producers, half-close, TLS and ``abortConnection`` behave as before.

While no http virtual server runs and no stream is open, the set is not
registered with the reactor; when the last user goes, every Twisted
transport still here goes back to the reactor with its registrations, so
nothing is stranded.
"""

from __future__ import annotations

import select
import sys
import weakref

from twisted.internet import error, tcp
from twisted.internet.interfaces import IHalfCloseableDescriptor, IReadDescriptor
from twisted.python import failure, log
from zope.interface import implementer

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_HUP = select.EPOLLHUP | select.EPOLLERR
#: events per poll, and polls per wake-up of the reactor (as the relay engine)
MAX_EVENTS = 1024
ROUNDS = 4

_DONE = failure.Failure(error.ConnectionDone())
_LOST = failure.Failure(error.ConnectionLost())
_FAILURES = {error.ConnectionDone: _DONE, error.ConnectionLost: _LOST}

_dispatchers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class _Redirect:
    """What a moved transport sees as its ``reactor``."""

    __slots__ = ("_dispatch", "_reactor", "addReader", "removeReader", "addWriter",
                 "removeWriter")

    def __init__(self, dispatch: "Dispatcher", reactor):
        self._dispatch = dispatch
        self._reactor = reactor
        self.addReader = dispatch.addReader
        self.removeReader = dispatch.removeReader
        self.addWriter = dispatch.addWriter
        self.removeWriter = dispatch.removeWriter

    def __getattr__(self, name):
        return getattr(self._reactor, name)


@implementer(IReadDescriptor)
class Dispatcher:
    """One epoll set of Twisted transports for a reactor (an epoll reactor)."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.epoll = select.epoll()
        self.fd = self.epoll.fileno()
        self.redirect = _Redirect(self, reactor)
        #: fd -> transport, and transport -> (fd, mask): the fd is kept because
        #: a transport's ``fileno()`` is -1 once its socket is closed
        self.by_fd: dict = {}
        self.masks: dict = {}
        #: fd -> the http path's own streams and connects (transport.py),
        #: which keep their mask themselves
        self.streams: dict = {}
        #: inside doRead (streams closing then wait for its round's end)
        self.serving = False
        self.closing: list = []
        self.users = 0

    @classmethod
    def for_reactor(cls, reactor) -> "Dispatcher | None":
        """The reactor's dispatcher, or None when it has no epoll set (tests'
        fake reactors, other reactors): transports then stay where they are."""
        if not all(hasattr(reactor, a) for a in ("_poller", "_reads", "_writes", "_selectables")):
            return None
        found = _dispatchers.get(reactor)
        if found is None:
            found = _dispatchers[reactor] = cls(reactor)
        return found

    # -- lifetime ----------------------------------------------------------

    def acquire(self) -> None:
        if self.users == 0:
            self.reactor.addReader(self)
        self.users += 1

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.reactor.removeReader(self)
            self._give_back()

    def _give_back(self) -> None:
        """Every transport still here waits in the reactor again."""
        reactor = self.reactor
        for desc, (fd, mask) in list(self.masks.items()):
            self._unregister(desc, fd)
            desc.reactor = reactor
            if desc.fileno() == -1:
                continue
            if mask & _IN:
                reactor.addReader(desc)
            if mask & _OUT:
                reactor.addWriter(desc)

    # -- the http path's own streams (lbframe.protocols.http.transport) ------

    def watch(self, stream, old: int, new: int) -> None:
        """``stream`` waits for ``new`` (it waited for ``old``)."""
        fd = stream.fd
        if not old:
            self.epoll.register(fd, new)
            self.streams[fd] = stream
        elif not new:
            self.epoll.unregister(fd)
            del self.streams[fd]
        else:
            self.epoll.modify(fd, new)

    def forget(self, stream) -> None:
        """``stream``'s socket is about to be closed, which takes it out of
        the epoll set: drop it from the books without a system call."""
        if self.streams.get(stream.fd) is stream:
            del self.streams[stream.fd]

    def close_soon(self, stream) -> None:
        """Close ``stream`` (``close_now``) when this round of events ends."""
        self.closing.append(stream)

    def _close_pending(self) -> None:
        closing = self.closing
        while closing:
            self.closing = []
            for stream in closing:
                try:
                    stream.close_now()
                except BaseException:
                    log.err(None, "lbframe.http.dispatch: closing {stream!r}".format(
                        stream=stream))
            closing = self.closing

    def handover(self, old, new) -> None:
        """``new`` takes ``old``'s registration (a connect became a stream)."""
        self.streams[new.fd] = new

    def adopt(self, transport) -> None:
        """Move a connected TCP transport (or the one under a TLS protocol)
        from the reactor to this set, keeping what it waits for."""
        if self.users == 0:
            return
        raw = transport
        if not isinstance(raw, tcp.Connection):
            raw = getattr(transport, "transport", None)  # TLSMemoryBIOProtocol
            if not isinstance(raw, tcp.Connection):
                return
        reactor = self.reactor
        if raw.reactor is not reactor or raw.fileno() == -1:
            return
        fd = raw.fileno()
        if reactor._selectables.get(fd) is not raw:
            return
        reading = fd in reactor._reads
        writing = fd in reactor._writes
        if reading:
            reactor.removeReader(raw)
        if writing:
            reactor.removeWriter(raw)
        raw.reactor = self.redirect
        if reading:
            self.addReader(raw)
        if writing:
            self.addWriter(raw)

    # -- the FD-set methods a moved transport calls ------------------------

    def _set(self, desc, add: int, remove: int) -> None:
        entry = self.masks.get(desc)
        if entry is None:
            if not add:
                return
            fd = desc.fileno()
            if fd < 0:
                return
            old = 0
        else:
            fd, old = entry
        new = (old | add) & ~remove
        if new == old:
            return
        if not old:
            stale = self.by_fd.get(fd)
            if stale is not None:
                # That fd's previous transport closed without telling us
                # (closing removed it from the set): forget it.
                del self.masks[stale]
            self.epoll.register(fd, new)
            self.by_fd[fd] = desc
            self.masks[desc] = (fd, new)
        elif not new:
            self._unregister(desc, fd)
        else:
            try:
                self.epoll.modify(fd, new)
            except OSError:
                # Closed under us (its socket is gone): forget it.
                self._unregister(desc, fd)
                return
            self.masks[desc] = (fd, new)

    def _unregister(self, desc, fd: int) -> None:
        del self.masks[desc]
        if self.by_fd.get(fd) is desc:
            del self.by_fd[fd]
            try:
                self.epoll.unregister(fd)
            except (OSError, ValueError):
                pass  # already closed: the kernel dropped it from the set

    def addReader(self, desc) -> None:
        self._set(desc, _IN, 0)

    def removeReader(self, desc) -> None:
        self._set(desc, 0, _IN)

    def addWriter(self, desc) -> None:
        self._set(desc, _OUT, 0)

    def removeWriter(self, desc) -> None:
        self._set(desc, 0, _OUT)

    # -- the reactor calls this when the set has ready transports ----------

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "lbframe.http.dispatch"

    def doRead(self):
        self.serving = True
        try:
            self._serve()
        finally:
            self.serving = False
            if self.closing:
                self._close_pending()
        return None

    def _serve(self) -> None:
        by_fd = self.by_fd
        masks = self.masks
        streams = self.streams
        poll = self.epoll.poll
        for _ in range(ROUNDS):
            events = poll(0, MAX_EVENTS)
            if not events:
                break
            for fd, event in events:
                stream = streams.get(fd)
                if stream is not None:
                    try:
                        if event == _IN:  # the common case
                            stream.doRead()
                        else:
                            stream.on_event(event)
                    except BaseException:
                        log.err(None, "lbframe.http.dispatch: in {stream!r}".format(
                            stream=stream))
                        stream.connectionLost(failure.Failure())
                    continue
                desc = by_fd.get(fd)
                if desc is None:
                    continue
                # The epoll reactor's _doReadOrWrite, without its log context.
                why = None
                in_read = False
                if event & _HUP and not event & _IN:
                    entry = masks.get(desc)
                    if entry is not None and entry[1] & _IN:
                        in_read = True
                        why = error.ConnectionDone()
                    else:
                        why = error.ConnectionLost()
                else:
                    try:
                        if desc.fileno() == -1:
                            why = error.ConnectionFdescWentAway("file descriptor lost")
                        else:
                            if event & _IN:
                                why = desc.doRead()
                                in_read = True
                            if not why and event & _OUT:
                                why = desc.doWrite()
                                in_read = False
                    except BaseException:
                        why = sys.exc_info()[1]
                        log.err()
                if why:
                    self._disconnect(desc, why, in_read)
            if self.closing:
                self._close_pending()

    def _disconnect(self, desc, why, is_read: bool) -> None:
        """The reactor's ``_disconnectSelectable``, on this set."""
        self.removeReader(desc)
        f = _FAILURES.get(why.__class__)
        if f is not None:
            if (is_read and why.__class__ is error.ConnectionDone
                    and IHalfCloseableDescriptor.providedBy(desc)):
                desc.readConnectionLost(f)
            else:
                self.removeWriter(desc)
                desc.connectionLost(f)
        else:
            self.removeWriter(desc)
            desc.connectionLost(failure.Failure(why))

    def connectionLost(self, reason) -> None:
        pass
