"""``weighted`` (F5b): smooth weighted round robin, as nginx does it.

Weights 4:2:1 give ``a b a c a b a`` rather than ``a a a a b b c``: every
pick adds each usable member's weight to its running score, takes the
highest score and subtracts the total from it. Over any window of
``sum(weights)`` picks each member gets exactly its share.

Cost per pick: O(n) over the pool's members.
"""

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.interfaces import IScheduler
from lbframe.schedulers import SchedulerBase, usable


@implementer(IScheduler)
class Weighted(SchedulerBase):
    def __init__(self, pool=None, options=None):
        super().__init__(pool, options)
        self._score: dict = {}

    def member_added(self, member):
        super().member_added(member)
        self._score[member] = 0

    def member_removed(self, member):
        super().member_removed(member)
        del self._score[member]

    def member_changed(self, member):
        # A member coming back starts level with the others, not with a
        # debt or a credit from before.
        if not member.eligible:
            self._score[member] = 0

    def pick(self, context, exclude=()):
        for backup in (False, True):
            score = self._score
            best = None
            best_score = 0
            total = 0
            for m in self.members:
                if m.backup is not backup or not usable(m, exclude):
                    continue
                s = score[m] + m.effective_weight
                score[m] = s
                total += m.effective_weight
                if best is None or s > best_score:
                    best, best_score = m, s
            if best is not None:
                score[best] = best_score - total
                return best
        return None


@hookimpl
def lbframe_register_schedulers(registry):
    registry.add("weighted", Weighted)
