"""Built-in schedulers, one module per algorithm (HAProxy's ``lb_*.c`` shape).

:class:`SchedulerBase` gives the event methods of
:class:`lbframe.interfaces.IScheduler` as no-ops, so an algorithm overrides
only the events it cares about.
"""

from __future__ import annotations

from lbframe.errors import reject_unknown_options


class SchedulerBase:
    """Keeps the pool's members in file order; ignores the other events."""

    def __init__(self, pool=None, options=None):
        reject_unknown_options(options)
        self.members: list = []

    def member_added(self, member):
        self.members.append(member)

    def member_removed(self, member):
        self.members.remove(member)

    def member_changed(self, member):
        pass

    def connection_taken(self, member):
        pass

    def connection_released(self, member):
        pass


def usable(member, exclude) -> bool:
    """Eligible, under its ``maxconn`` and not excluded."""
    return member.eligible and member.has_room and member not in exclude
