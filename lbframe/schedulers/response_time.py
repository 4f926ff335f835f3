"""``response-time`` (F5e): the member that answers fastest for its weight.

Each member's ``response_time`` is a moving average (EWMA, kept by
:class:`lbframe.runtime.PoolState`) of its monitors' probe times and of live
traffic: the connect time for ``tcp``, the time to the first response byte
for ``http``. The usable member with the lowest ``response_time /
effective_weight`` wins, so a weight-2 member is allowed twice the time of a
weight-1 one (and a slow-starting member, with its weight lowered, looks
slower than it is). Members with equal scores take turns.

Members without a sample yet (``response_time is None``: just added, or no
monitor reports times and no traffic reached them) are tried first, in turn,
so that each gets measured. ``backup`` members are used only when no other
member is usable. Use it when members differ in speed; it ignores how busy a
member is (``composite`` does not).

How: the same event-driven heap as ``least-connections`` (see
:mod:`lbframe.schedulers.least_connections`), keyed by ``response_time /
effective_weight``, unsampled members keyed ``-inf``. A new sample re-keys
one member (``record_response_time`` calls ``member_changed``).

Cost per pick: O(log n) amortized, plus O(log n) for each member of
``exclude`` at the top of the heap; per event: O(log n), O(1) for a
connection taken or released by a member without ``maxconn``.
"""

from __future__ import annotations

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.interfaces import IScheduler
from lbframe.schedulers.least_connections import HeapScheduler

_UNSAMPLED = float("-inf")


@implementer(IScheduler)
class ResponseTime(HeapScheduler):
    """Lowest ``response_time / effective_weight``; unsampled members first."""

    def _where(self, member):
        rt = member.response_time
        return (1 if member.backup else 0,
                _UNSAMPLED if rt is None else rt / max(member.effective_weight, 1))


@hookimpl
def lbframe_register_schedulers(registry):
    registry.add("response-time", ResponseTime)
