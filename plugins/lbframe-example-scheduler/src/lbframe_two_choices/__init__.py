"""``scheduler = two-choices``: the power of two random choices.

For each new connection, draw two members at random and send it to the one
with fewer connections for its weight. Why it is worth a plugin: it spreads
load almost as evenly as ``least-connections`` (the busiest member is only
O(log log n) above the average instead of O(log n) for a single random draw),
it costs O(1) per pick whatever the pool's size, and several lbframe
processes or nodes using it do not pile onto the same "least loaded" member
at once, because each looks at a different random pair.

The pool section's own keys (lbframe hands them to the factory as strings):

- ``choices``: how many members to draw (default 2; 1 is plain random);
- ``seed``: seed the random draws, for a repeatable order (tests, demos).
"""

from __future__ import annotations

import random

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.errors import OptionError, did_you_mean
from lbframe.interfaces import IScheduler

__version__ = "1.0.0"

#: the lbframe plugin API this plugin was written for; lbframe refuses to
#: start with it if it cannot honour that (see docs/plugins/writing.md)
LBFRAME_PLUGIN_API = (1, 0)

KEYS = ("choices", "seed")


def _choices(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise OptionError("choices", f"must be a whole number, not {text!r}") from None
    if not 1 <= value <= 10:
        raise OptionError("choices", f"must be between 1 and 10, not {value}")
    return value


def usable(member, exclude) -> bool:
    """Up and enabled with a weight (``eligible``, kept by lbframe), under its
    ``maxconn`` (``has_room``), and not excluded for this connection."""
    return member.eligible and member.has_room and member not in exclude


def load(member) -> float:
    """Connections per unit of weight, counting the one about to be added."""
    return (member.active + 1) / max(1, member.effective_weight)


@implementer(IScheduler)
class TwoChoices:
    """lbframe calls the factory with the pool's frozen config and a dict of
    the section's keys that lbframe itself does not define."""

    def __init__(self, pool, options):
        options = dict(options)
        for key in options:
            if key not in KEYS:
                raise OptionError(key, f"unknown key {key!r} for scheduler two-choices"
                                       f"{did_you_mean(key, KEYS)}")
        self.choices = _choices(options.get("choices", "2"))
        self.random = random.Random(options.get("seed"))
        # Backup members are only for when no other member can serve.
        self.primaries: list = []
        self.backups: list = []

    # Events: lbframe's pool tells the scheduler what changed. This one reads
    # member state at pick time, so it only tracks who is in the pool.

    def member_added(self, member):
        (self.backups if member.backup else self.primaries).append(member)

    def member_removed(self, member):
        (self.backups if member.backup else self.primaries).remove(member)

    def member_changed(self, member):
        pass  # up/down, drain, weight: read from the member in pick()

    def connection_taken(self, member):
        pass  # member.active is counted by lbframe

    def connection_released(self, member):
        pass

    # The decision: called for every new connection, so no I/O and no scans
    # in the common case.

    def pick(self, context, exclude=()):
        for group in (self.primaries, self.backups):
            member = self._pick_from(group, exclude)
            if member is not None:
                return member
        return None

    def _pick_from(self, group, exclude):
        if not group:
            return None
        drawn = self.random.sample(group, min(self.choices, len(group)))
        candidates = [m for m in drawn if usable(m, exclude)]
        if not candidates:
            # Unlucky draws, or most of the pool is down: look at everyone
            # (O(n), only when the draws found nobody).
            candidates = [m for m in group if usable(m, exclude)]
            if len(candidates) > self.choices:
                candidates = self.random.sample(candidates, self.choices)
        return min(candidates, key=load, default=None)


@hookimpl
def lbframe_register_schedulers(registry):
    registry.add("two-choices", TwoChoices)
