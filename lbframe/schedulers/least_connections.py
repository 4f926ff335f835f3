"""``least-connections`` (F5d): the member with the fewest active connections
for its weight.

A member's load is ``active / effective_weight`` (``effective_weight`` is the
weight, lowered while the member slow-starts), so a weight-2 member carries
twice the connections of a weight-1 one at the same load. The usable member
with the lowest load wins; members with equal load take turns (round robin),
so three idle members get one connection each. ``backup`` members are used
only when no other member is usable. Use it for long sessions, where counting
connections says more than counting picks.

How (HAProxy's ``lb_fwlc.c`` idea, with a binary heap instead of a tree):
the members that can take a connection (eligible and under ``maxconn``) sit
in a heap ordered by ``(load, turn)``, one heap for the primaries and one for
the backups. The scheduler is told of every change (connection taken or
released, member changed) and re-keys that one member by pushing a new entry;
the old entry is left in place and dropped when it reaches the top (lazy
invalidation), and the heaps are rebuilt when they hold more stale entries
than live ones. A pick takes the top entry and moves it behind its equals.

Cost per pick: O(log n) amortized, plus O(log n) for each member of
``exclude`` that sits at the top of the heap; per event: O(log n). A pick
never scans the pool's members. Full or ineligible members are not in the
heap at all.

Exactness: loads are compared without floats. The key is
``floor(active * 2**S / weight)`` with ``2**S >= w1 * w2`` for any two
weights in the pool; two different ratios differ by at least
``1 / (w1 * w2)``, so the keys order members exactly as cross-multiplying
(``a1 * w2 < a2 * w1``) does. ``S`` starts at 64 (weights below 2**32) and
grows, with a rebuild, if a larger weight ever appears.
"""

from __future__ import annotations

import heapq
from itertools import count

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.interfaces import IScheduler
from lbframe.schedulers import SchedulerBase

_heappush = heapq.heappush
_heappop = heapq.heappop
_heapreplace = heapq.heapreplace


class HeapScheduler(SchedulerBase):
    """Picks the usable member with the lowest key; equal keys take turns.

    Members that can take a connection (eligible, under ``maxconn``) are in
    a heap; a subclass's :meth:`_where` says which heap and with what key.
    An entry is the list ``[key, turn, member, slot]``; it is live while
    ``self._entry[member]`` is that very list. ``turn`` is unique, so
    members are never compared.
    """

    #: heaps, tried in order by :meth:`pick`: primaries, then backups
    slots = 2
    #: live entries above which the stale ones trigger a rebuild
    _SLACK = 64

    def __init__(self, pool=None, options=None):
        super().__init__(pool, options)
        self._heaps: list[list] = [[] for _ in range(self.slots)]
        self._entry: dict = {}
        #: members of the pool (a connection of a removed member may still
        #: be released, a timer may still report on it: ignore those)
        self._known: set = set()
        self._turn = count()
        self._stale = 0
        #: see the module docstring: keys of weighted ratios are exact for
        #: weights up to ``_wmax``
        self._shift = 64
        self._wmax = (1 << 32) - 1

    # -- what subclasses define ------------------------------------------

    def _where(self, member):
        """``(heap index, key)`` of a member that can take a connection."""
        raise NotImplementedError

    def _ratio(self, n: int, member) -> int:
        """An exact, integer key for ``n / effective_weight``."""
        return (n << self._shift) // max(member.effective_weight, 1)

    # -- events ------------------------------------------------------------

    def member_added(self, member):
        super().member_added(member)
        self._known.add(member)
        self._place(member)

    def member_removed(self, member):
        super().member_removed(member)
        self._known.discard(member)
        if self._entry.pop(member, None) is not None:
            self._stale += 1

    # -- the heaps ---------------------------------------------------------

    def _place(self, member):
        """Put ``member`` where its current state says, or drop it."""
        if member not in self._known:
            return
        if member.effective_weight > self._wmax:
            self._widen()
        old = self._entry.get(member)
        if not (member.eligible and member.has_room):
            if old is not None:
                del self._entry[member]
                self._stale += 1
            return
        slot, key = self._where(member)
        if old is not None:
            if old[0] == key and old[3] == slot:
                return  # unchanged: keep its turn
            self._stale += 1
        entry = [key, next(self._turn), member, slot]
        self._entry[member] = entry
        _heappush(self._heaps[slot], entry)
        if self._stale > len(self._entry) + self._SLACK:
            self._compact()

    # every event just re-places the one member it is about
    member_changed = connection_taken = connection_released = _place

    def _compact(self):
        live = self._entry
        for heap in self._heaps:
            heap[:] = [e for e in heap if live.get(e[2]) is e]
            heapq.heapify(heap)
        self._stale = 0

    def _widen(self):
        """A weight too big for exact keys arrived: widen them and rebuild."""
        bits = max(max(m.effective_weight, 1) for m in self.members).bit_length()
        self._shift = max(self._shift, 2 * bits)
        self._wmax = (1 << (self._shift // 2)) - 1
        self._entry.clear()
        for heap in self._heaps:
            heap.clear()
        self._stale = 0
        for m in self.members:
            self._place(m)

    def _top(self, heap, exclude, skipped):
        """The live entry of a usable member at the top of ``heap``, or None.

        Stale entries met on the way are dropped; live ones that cannot be
        chosen now (excluded) are popped into ``skipped``: the caller pushes
        them back after it has used the top entry.
        """
        live = self._entry
        while heap:
            entry = heap[0]
            member = entry[2]
            if live.get(member) is not entry:
                _heappop(heap)
                self._stale -= 1
            elif member in exclude or not (member.eligible and member.has_room):
                skipped.append(_heappop(heap))
            else:
                return entry
        return None

    def _take_turn(self, heap, entry):
        """``entry`` (the top of ``heap``) was picked: move it behind its equals."""
        entry[1] = next(self._turn)
        _heapreplace(heap, entry)

    def pick(self, context, exclude=()):
        for heap in self._heaps:
            skipped: list = []
            entry = self._top(heap, exclude, skipped)
            if entry is not None:
                self._take_turn(heap, entry)
            for e in skipped:
                _heappush(heap, e)
            if entry is not None:
                return entry[2]
        return None


@implementer(IScheduler)
class LeastConnections(HeapScheduler):
    """Lowest ``active / effective_weight``; ties in turn."""

    def _where(self, member):
        return (1 if member.backup else 0,
                (member.active << self._shift) // max(member.effective_weight, 1))


@hookimpl
def lbframe_register_schedulers(registry):
    registry.add("least-connections", LeastConnections)
