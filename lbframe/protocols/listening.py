"""What every listener needs to keep :class:`lbframe.interfaces.IListener`'s
promise about ``start_listening``: bind once, and hand the first outcome to
every caller.

``privilegedStartService`` binds (before twistd drops root), ``startService``
asks again, and the site service asks a third time to report a failure; all
three must see the same outcome, and an endpoint whose ``listen()`` answers
later must work too (Twisted's ``StreamServerEndpointService`` semantics).
A Deferred can only be consumed once, so :class:`ListenOutcome` keeps the
result and gives each caller a Deferred of its own.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.python.failure import Failure

_PENDING = object()


class ListenOutcome:
    """The outcome of one attempt to bind a listener's endpoints.

    ``binding`` fires with what was bound (sockets, ports: the listener's
    business, kept in :attr:`value`) or fails with a
    :class:`~lbframe.errors.ListenError`, having closed whatever it bound.
    """

    def __init__(self, binding: defer.Deferred):
        self._result = _PENDING
        self._waiters: list[defer.Deferred] = []
        binding.addBoth(self._settle)

    def _settle(self, result) -> None:
        self._result = result
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._fire(waiter)
        # Consumed here: each caller has its own Deferred for the failure.
        return None

    def _fire(self, d: defer.Deferred) -> None:
        if isinstance(self._result, Failure):
            d.errback(self._result)
        else:
            d.callback(None)

    @property
    def done(self) -> bool:
        return self._result is not _PENDING

    @property
    def succeeded(self) -> bool:
        return self.done and not isinstance(self._result, Failure)

    @property
    def value(self):
        """What the binding gave (when :attr:`succeeded`)."""
        return self._result

    def deferred(self) -> defer.Deferred:
        """A new Deferred with the outcome: None, or the ListenError."""
        d: defer.Deferred = defer.Deferred()
        if self._result is _PENDING:
            self._waiters.append(d)
        else:
            self._fire(d)
        return d


def reported_elsewhere(failure: Failure) -> None:
    """Errback for the Deferreds a listener asks for itself (in
    ``privilegedStartService``/``startService``): the failure is the site
    service's to report, through its own ``start_listening()`` call."""
    return None


def why_not(failure: Failure) -> str:
    """The reason a ``listen()`` failed, in the operator's words
    (``Address already in use``, not Twisted's whole sentence)."""
    err = failure.value
    if isinstance(err, CannotListenError) and isinstance(err.socketError, OSError):
        if err.socketError.strerror:
            return err.socketError.strerror
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return failure.getErrorMessage()
