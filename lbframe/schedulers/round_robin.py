"""``round-robin`` (F5a): each new connection to the next member in turn.

Cost per pick: O(1) when the next member is usable, O(n) in the worst case
(skipping members that are down, full or excluded). ``backup`` members are
used only when no other member is usable.
"""

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.interfaces import IScheduler
from lbframe.schedulers import SchedulerBase, usable


@implementer(IScheduler)
class RoundRobin(SchedulerBase):
    def __init__(self, pool=None, options=None):
        super().__init__(pool, options)
        self._next = 0

    def pick(self, context, exclude=()):
        members = self.members
        n = len(members)
        start = self._next
        for backup in (False, True):
            for i in range(n):
                m = members[(start + i) % n]
                if m.backup is backup and usable(m, exclude):
                    self._next = (start + i + 1) % n
                    return m
        return None


@hookimpl
def lbframe_register_schedulers(registry):
    registry.add("round-robin", RoundRobin)
