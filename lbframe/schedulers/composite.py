"""``composite`` (F5f): active connections and response time together.

Each usable member scores::

    score = (active + 1) * response_time / effective_weight

and the lowest score wins; members with equal scores take turns. ``active +
1`` is the load the member would have with this connection, so an idle
member is judged by its time alone and a busy one pays for every connection
it already holds. ``backup`` members are used only when no other member is
usable.

Worked example (weights 1): ``fast`` answers in 20 ms and holds 9
connections, ``slow`` answers in 100 ms and is idle::

    fast: (9 + 1) * 0.020 = 0.200
    slow: (0 + 1) * 0.100 = 0.100   -> slow wins

``slow`` keeps winning until it holds 1 connection (score 0.200, a tie: they
take turns) and then 2 (0.300, ``fast`` wins). Under steady load ``fast``
carries about five times the connections of ``slow``: in proportion to its
speed, while no member is left idle or buried. With ``weight=2``, ``fast``
would score 0.100 and tie with ``slow`` straight away.

Members without a sample (``response_time is None``: just added, or no
monitor reports times and no traffic reached them yet) count as the pool's
fastest known time: the lowest ``response_time`` among its eligible members.
So a new member is treated as a fast one: it gets connections at once, but
its own connections still count against it, and a burst is not all sent to
it before its first sample arrives. On an equal score an unsampled member
wins, so that it gets measured. While no member has a sample, members are
compared by ``(active + 1) / effective_weight`` (least connections).

How: four event-driven heaps as in ``least-connections`` (see
:mod:`lbframe.schedulers.least_connections`): sampled and unsampled, for
primaries and backups. Sampled members are keyed by their score; unsampled
ones by the exact ratio ``(active + 1) / effective_weight`` (their time is
the same pool-wide number, so that ratio orders them), and a fifth heap
keeps the pool's fastest time. A pick compares the best of the two heaps.

Cost per pick: O(log n) amortized, plus O(log n) for each member of
``exclude`` at the top of a heap; per event: O(log n).
"""

from __future__ import annotations

import heapq

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.interfaces import IScheduler
from lbframe.schedulers.least_connections import HeapScheduler


@implementer(IScheduler)
class Composite(HeapScheduler):
    """Lowest ``(active + 1) * response_time / effective_weight``."""

    #: primaries sampled, primaries unsampled, backups sampled, backups unsampled
    slots = 4

    def __init__(self, pool=None, options=None):
        super().__init__(pool, options)
        #: [response_time, turn, member] of the eligible sampled members
        self._fast: list = []
        self._fast_entry: dict = {}
        self._fast_stale = 0

    def _where(self, member):
        rt = member.response_time
        base = 2 if member.backup else 0
        if rt is None:
            return base + 1, self._ratio(member.active + 1, member)
        return base, (member.active + 1) * rt / max(member.effective_weight, 1)

    # -- the pool's fastest time ---------------------------------------------

    def member_added(self, member):
        super().member_added(member)
        self._place_fast(member)

    def member_removed(self, member):
        super().member_removed(member)
        if self._fast_entry.pop(member, None) is not None:
            self._fast_stale += 1

    def member_changed(self, member):
        super().member_changed(member)
        self._place_fast(member)

    def _place_fast(self, member):
        if member not in self._known:
            return
        old = self._fast_entry.get(member)
        rt = member.response_time
        if rt is None or not member.eligible:
            if old is not None:
                del self._fast_entry[member]
                self._fast_stale += 1
            return
        if old is not None:
            if old[0] == rt:
                return
            self._fast_stale += 1
        entry = [rt, next(self._turn), member]
        self._fast_entry[member] = entry
        heapq.heappush(self._fast, entry)
        if self._fast_stale > len(self._fast_entry) + self._SLACK:
            live = self._fast_entry
            self._fast[:] = [e for e in self._fast if live.get(e[2]) is e]
            heapq.heapify(self._fast)
            self._fast_stale = 0

    def fastest(self):
        """The lowest ``response_time`` of the eligible members, or None."""
        fast = self._fast
        live = self._fast_entry
        while fast and live.get(fast[0][2]) is not fast[0]:
            heapq.heappop(fast)
            self._fast_stale -= 1
        return fast[0][0] if fast else None

    # -- pick ----------------------------------------------------------------

    def pick(self, context, exclude=()):
        heaps = self._heaps
        for slot in (0, 2):
            sampled, unsampled = heaps[slot], heaps[slot + 1]
            skipped_s: list = []
            skipped_u: list = []
            best = self._top(sampled, exclude, skipped_s)
            new = self._top(unsampled, exclude, skipped_u)
            if new is not None:
                fastest = self.fastest()
                if best is not None and fastest is not None:
                    m = new[2]
                    if (m.active + 1) * fastest / max(m.effective_weight, 1) > best[0]:
                        new = None
                if new is not None:
                    best, sampled = new, unsampled
            if best is not None:
                self._take_turn(sampled, best)
            for e in skipped_s:
                heapq.heappush(heaps[slot], e)
            for e in skipped_u:
                heapq.heappush(heaps[slot + 1], e)
            if best is not None:
                return best[2]
        return None


@hookimpl
def lbframe_register_schedulers(registry):
    registry.add("composite", Composite)
