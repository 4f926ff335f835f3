"""Passive health: what real traffic says about a member.

A member that is dead but has no monitor (or whose monitor has not noticed
yet) would otherwise keep getting its share of connections, each paying a
refused or timed-out connect and a retry. The data paths report each such
failure to the member's :class:`lbframe.runtime.PoolState`, which keeps a
:class:`PassiveState` per member and applies these rules (nginx's
``max_fails``/``fail_timeout``, HAProxy's ``observe layer4``):

- ``max_fails`` failures in a row, none more than ``fail_timeout`` after the
  first of them, take the member out (state ``down``, reason ``passive: …``);
  a success in between starts the count again;
- after ``fail_timeout`` the member may take **one** connection (the probe):
  if the member answers, it is back; if it fails, it stays out for another
  ``fail_timeout``; if the probe ends without either (the client left), the
  next connection probes;
- ``max_fails = 0`` turns it off;
- the last usable member of a pool is never taken out (a pool of one
  member above all): with nowhere else to go, taking it out turns a short
  hiccup into ``fail_timeout`` of certain refusals (nginx ignores
  ``max_fails`` for a single server; Envoy caps ejections with
  ``max_ejection_percent``), and a client able to make members time out
  could otherwise empty the pool. It is taken out once another member is
  usable again and it fails once more.

What counts as a failure is the data path's business: a connect refused or
timed out, and for http a member that closes or times out before any byte
of a response. A response, even a ``5xx``, is a success (that is layer 7).

This module holds the counting, so it can be tested on its own; applying the
verdicts to the member (eligibility, log line, event) is PoolState's.
"""

from __future__ import annotations

import attrs

#: probe states (``PassiveState.probe``)
NO_PROBE = 0
#: the member's ``fail_timeout`` is over: the next connection to it probes
PROBE_READY = 1
#: a probe connection is under way: nobody else goes to the member
PROBE_SENT = 2

#: at most one line per member per this many seconds for its failures
#: (each state change has its own line besides)
FAILURE_LOG_INTERVAL = 10.0


@attrs.define(eq=False)
class PassiveState:
    """One member's passive-health record."""

    #: failures in a row in the current window
    fails: int = 0
    #: when the window's first failure happened (clock seconds)
    window_start: float = 0.0
    #: out of the pool until a probe succeeds
    down: bool = False
    #: ``passive: …``, the words for the status page and the log
    reason: str = ""
    probe: int = NO_PROBE
    #: the clock call that ends the down window
    window_call: object = None
    #: the last failure's words
    last: str = ""
    #: failures seen but not logged yet, and until when lines are held back
    unlogged: int = 0
    quiet_until: float = float("-inf")
    flush_call: object = None

    def cancel_calls(self) -> None:
        """The member or its pool goes away: no timer may outlive them."""
        for name in ("window_call", "flush_call"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)


def count_failure(state: PassiveState, now: float, max_fails: int, fail_timeout: float) -> bool:
    """Count one failure of a member that is in; True when it makes
    ``max_fails`` in a row within ``fail_timeout`` (take the member out).

    A failure more than ``fail_timeout`` after the window's first one starts
    a new window: three refusals spread over an hour are bad luck, not a
    dead member.
    """
    if max_fails <= 0:
        return False
    if state.fails == 0 or now - state.window_start > fail_timeout:
        state.fails, state.window_start = 1, now
    else:
        state.fails += 1
    return state.fails >= max_fails


def down_reason(fails: int, last: str) -> str:
    """``passive: 3 failures in a row (last: connect refused)``."""
    if fails <= 1:
        return f"passive: {last}"
    return f"passive: {fails} failures in a row (last: {last})"


def hold_back(state: PassiveState, now: float) -> bool:
    """True when a failure line should be held back (one was logged less
    than :data:`FAILURE_LOG_INTERVAL` ago): it is counted for the summary."""
    if now >= state.quiet_until:
        state.quiet_until = now + FAILURE_LOG_INTERVAL
        return False
    state.unlogged += 1
    return True
