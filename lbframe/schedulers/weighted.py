"""``weighted`` (F5b): smooth weighted round robin in O(log n) per pick.

Weights 4:2:1 give ``a b a c a b a`` rather than ``a a a a b b c``. Each
usable member has a *deadline* on a virtual clock: its k-th turn of a round
falls at ``(2k + 1) / 2w`` (the Sainte-Laguë sequence), so in every round
of the virtual clock a member of weight ``w`` gets exactly ``w`` turns,
spread evenly. A pick takes the earliest deadline from a heap (ties go to
the member listed first) and moves that member's deadline on by ``1/w``.
For 4:2:1 the deadlines are a ⅛, b ¼, a ⅜, c ½, a ⅝, b ¾, a ⅞:
``a b a c a b a``.

Events keep the heap current: a member that becomes usable again, or whose
weight changes, starts from the current virtual time; one that leaves has
its entry dropped lazily. A member at its ``maxconn`` or excluded for this
pick is skipped and re-enters half a turn after the member picked instead,
so that it does not pile up turns to burst through once it has room.

Cost per pick: O(log n) (plus O(log n) for each full or excluded member met
at the top of the heap); O(log n) per event.
"""

from __future__ import annotations

import heapq

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.interfaces import IScheduler
from lbframe.schedulers import SchedulerBase, usable


class _Entry:
    __slots__ = ("deadline", "order", "member", "weight", "live")

    def __init__(self, deadline: float, order: int, member, weight: int):
        self.deadline, self.order, self.member, self.weight = deadline, order, member, weight
        self.live = True

    def __lt__(self, other: "_Entry") -> bool:
        if self.deadline != other.deadline:
            return self.deadline < other.deadline
        return self.order < other.order


@implementer(IScheduler)
class Weighted(SchedulerBase):
    def __init__(self, pool=None, options=None):
        super().__init__(pool, options)
        self._heaps: dict[bool, list[_Entry]] = {False: [], True: []}
        self._entries: dict = {}  # member -> its live entry
        self._order: dict = {}  # member -> its place in the pool (ties)
        self._now = 0.0  # the virtual clock: the deadline of the last pick
        self._added = 0

    def member_added(self, member):
        super().member_added(member)
        self._order[member] = self._added
        self._added += 1
        self._reschedule(member)

    def member_removed(self, member):
        super().member_removed(member)
        self._drop(member)
        del self._order[member]

    def member_changed(self, member):
        entry = self._entries.get(member)
        takes_turns = member.eligible and member.effective_weight > 0
        if entry is not None and takes_turns and entry.weight == member.effective_weight:
            return  # nothing that matters here changed (e.g. a response time)
        self._reschedule(member)

    def _drop(self, member) -> None:
        entry = self._entries.pop(member, None)
        if entry is not None:
            entry.live = False

    def _reschedule(self, member) -> None:
        """(Re)enter ``member`` at the current virtual time, half a turn on."""
        self._drop(member)
        weight = member.effective_weight
        if not (member.eligible and weight > 0):
            return
        entry = _Entry(self._now + 0.5 / weight, self._order[member], member, weight)
        self._entries[member] = entry
        heap = self._heaps[member.backup]
        heapq.heappush(heap, entry)
        if len(heap) > 2 * len(self._entries) + 64:
            heap[:] = [e for e in heap if e.live]
            heapq.heapify(heap)

    def pick(self, context, exclude=()):
        for backup in (False, True):
            heap = self._heaps[backup]
            aside = []
            chosen = None
            while heap:
                entry = heap[0]
                if not entry.live:
                    heapq.heappop(heap)
                elif usable(entry.member, exclude):
                    chosen = entry
                    break
                else:  # full or excluded: keeps its turn for the next pick
                    aside.append(heapq.heappop(heap))
            if chosen is not None:
                now = self._now = chosen.deadline
                chosen.deadline += 1.0 / chosen.weight
                heapq.heapreplace(heap, chosen)
                for entry in aside:
                    # Skipped, not owed: it does not pile up turns to burst
                    # through once it has room again.
                    entry.deadline = max(entry.deadline, now + 0.5 / entry.weight)
            for entry in aside:
                heapq.heappush(heap, entry)
            if chosen is not None:
                return chosen.member
        return None


@hookimpl
def lbframe_register_schedulers(registry):
    registry.add("weighted", Weighted)
