"""``priority`` (F5c): fill the priority-1 group, overflow to 2, then 3...

Members are grouped by ``priority`` (1 is the highest). A new connection goes
to the highest group that has a usable member *under the threshold*: the
pool's ``priority_threshold`` active connections, or, when that is unset,
the member's own ``maxconn`` (a member with neither is never at the
threshold). When every usable member of a group is at the threshold the
group overflows to the next one; as connections end, new connections go back
to the higher group. Lower-priority servers therefore stay idle, free for
other work, until the higher groups are busy.

Inside a group, smooth weighted round robin (:class:`~lbframe.schedulers.
weighted.Weighted`, one instance per group, members at the threshold
excluded), so a group's members get exact weight shares.

When every group is at the threshold (only possible with
``priority_threshold``, which is a point of overflow and not a cap; ``maxconn``
is the cap), the connection goes to the highest group that has a usable
member at all, rather than being refused while members have room.
``backup`` members form groups of their own, used the same way but only
when no non-backup member is usable.

Event-driven: group membership changes on ``member_added``/``removed``, and
each group counts its members that are usable and under the threshold,
updated in O(1) on every ``connection_taken``/``released`` and
``member_changed``. A pick skips full groups in O(1) each and costs O(g) in
the group it picks from (g = that group's size): O(groups + g). Only when
every group of a tier is at ``priority_threshold`` does a pick scan the
tier's members again.
"""

from __future__ import annotations

from bisect import insort

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.interfaces import IScheduler
from lbframe.schedulers import SchedulerBase
from lbframe.schedulers.weighted import Weighted


class _Group:
    """The members of one (backup, priority) pair."""

    __slots__ = ("priority", "wrr", "full", "open")

    def __init__(self, priority: int):
        self.priority = priority
        #: smooth weighted round robin over the group's members
        self.wrr = Weighted()
        #: members with ``active`` at or above the threshold
        self.full: set = set()
        #: how many members are eligible, under ``maxconn`` and under the threshold
        self.open = 0


@implementer(IScheduler)
class Priority(SchedulerBase):
    def __init__(self, pool=None, options=None):
        super().__init__(pool, options)
        #: the pool's ``priority_threshold``; None: each member's ``maxconn``
        self.threshold: int | None = getattr(pool, "priority_threshold", None)
        #: per tier (non-backup, backup): groups in priority order
        self._tiers: tuple[list, list] = ([], [])
        self._group: dict = {}  # member → its _Group
        self._open: dict = {}  # member → counted in its group's ``open``

    # -- events ----------------------------------------------------------

    def member_added(self, member):
        super().member_added(member)
        tier = self._tiers[member.backup]
        for group in tier:
            if group.priority == member.priority:
                break
        else:
            group = _Group(member.priority)
            insort(tier, group, key=lambda g: g.priority)
        group.wrr.member_added(member)
        self._group[member] = group
        self._open[member] = False
        self._update(member)

    def member_removed(self, member):
        super().member_removed(member)
        group = self._group.pop(member)
        if self._open.pop(member):
            group.open -= 1
        group.full.discard(member)
        group.wrr.member_removed(member)
        if not group.wrr.members:
            self._tiers[member.backup].remove(group)

    def member_changed(self, member):
        self._group[member].wrr.member_changed(member)
        self._update(member)

    def connection_taken(self, member):
        self._update(member)

    def connection_released(self, member):
        self._update(member)

    def _update(self, member):
        group = self._group[member]
        limit = self.threshold if self.threshold is not None else member.maxconn
        at = limit is not None and member.active >= limit
        if at:
            group.full.add(member)
        else:
            group.full.discard(member)
        now = not at and member.eligible and member.has_room
        if now != self._open[member]:
            self._open[member] = now
            group.open += 1 if now else -1

    # -- pick ------------------------------------------------------------

    def pick(self, context, exclude=()):
        for tier in self._tiers:
            for group in tier:
                if group.open:
                    skip = group.full.union(exclude) if exclude else group.full
                    m = group.wrr.pick(context, skip)
                    if m is not None:
                        return m
            if self.threshold is not None:
                # Every group at the threshold: the threshold is where
                # overflow starts, not a cap, so use the highest group with
                # room under maxconn. (Without a threshold, at the threshold
                # means at maxconn, so there is nothing more to find.)
                for group in tier:
                    m = group.wrr.pick(context, exclude)
                    if m is not None:
                        return m
        return None


@hookimpl
def lbframe_register_schedulers(registry):
    registry.add("priority", Priority)
