"""``source-hash``: the client's address picks the member, by Maglev hashing.

Stateless stickiness: every lbframe worker and every node that has the same
members (same names, same weights, same states) maps a client address to the
same member without talking to the others, and when one of ``n`` members
comes or goes only about ``1/n`` of the clients move.

Maglev (Eisenbud et al., NSDI 2016): each member gets a permutation of the
slots of a lookup table of prime size ``M`` (``offset + j × skip mod M``,
``offset`` and ``skip`` from a stable hash of the member's *name*); members
take turns claiming the next free slot of their own permutation until the
table is full. Turns are weighted (as Envoy does it): a member of weight
``w`` takes its k-th slot in round ``⌊k × max(weights) / w⌋``, the members
of a round in name order, so it owns its weight's share of the slots to
within 1 %. A client address hashes (BLAKE2b, never Python's salted
``hash()``) to one slot; the slot's member is the answer.

- ``M`` is the smallest of :data:`TABLE_SIZES` that is at least 100 × the
  members of the tier (all of them, whatever their state), so health changes
  never resize the table; a reload that crosses a size (655 → 656 members)
  remaps nearly every client.
- The table holds every member of the tier with a weight above 0, whether
  it is up or not: a member going down (or disabled, draining, full) is
  skipped at lookup time (see below), so health changes need no rebuild and
  move only that member's clients; when it comes back, they return.
- A change that alters the table (a member added or removed, a weight
  set) is taken in at the next pick: if the members and weights are those
  of the answering table (a reload that changed only ``maxconn``, a weight
  set back), nothing is built. Otherwise a new table is built **in slices**
  of about :data:`SLICE_BUDGET` seconds on the reactor
  (:class:`~lbframe.schedulers.maglev.MaglevBuild`; a fill is O(M log M),
  about 0.15 s of CPU for 131 071 slots and 0.6-0.9 s for 524 287 on
  CPython 3.11) while **the old table keeps answering**, skipping members
  that left the tier; the new one is swapped in whole when full. It is the
  same table, slot for slot, as a build in one go: nodes still agree.
- The first table (at start, or for a pool new in a reload) has no old one
  to answer meanwhile: slots the build has filled already answer with their
  final member, the others take the name-order fallback below, until the
  table is full (deterministic, but weights are not honoured there).
- Without a clock (``clock=None`` and the global reactor not running: a
  script, a synchronous test) builds are done in one go at the pick.
  Slow start does not apply: the table uses the set weight.
- When the slot's member cannot take this connection (at ``maxconn`` or
  excluded), the next slots of the table are tried in order, up to
  :data:`FALLBACK_PROBES` of them, then every member of the tier in name
  order starting at a place chosen by the same hash. Both are deterministic,
  and a full member's clients spread over the others in proportion to their
  weights.
- ``backup`` members have their own table, used only when no other member is
  usable.
- No context, or no client address: round robin over the usable members.

Cost per pick: O(1) — one BLAKE2b of the address and two indexes; O(n)
only when almost every member is full or excluded.
"""

from __future__ import annotations

import hashlib
import time

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.interfaces import IScheduler
from lbframe.schedulers import SchedulerBase, usable
from lbframe.schedulers.maglev import (SLOTS_PER_MEMBER, TABLE_SIZES,  # noqa: F401 (API)
                                       MaglevBuild, maglev_table, member_hash, table_size)
from lbframe.schedulers.round_robin import RoundRobin

#: how many following slots are tried when the hashed member cannot be used
FALLBACK_PROBES = 32
#: seconds of reactor time one slice of a table build may take (about)
SLICE_BUDGET = 0.005
#: units of fill work (see MaglevBuild.run) between two looks at the timer:
#: 0.2-0.6 ms on CPython 3.11, which is how far a slice can overrun its budget
SLICE_STEPS = 2048


def key_hash(host: str) -> int:
    """Stable 64-bit hash of a client address, the same in every process.

    An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack
    socket reports) hashes like the IPv4 address.
    """
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return int.from_bytes(hashlib.blake2b(host.encode(), digest_size=8).digest(), "big")


def _member_hash(name: str) -> tuple[int, int]:  # the name tests and plugins knew
    return member_hash(name)


class _Tier:
    """The non-backup or the backup members, the table that answers for
    them, and the table being built when they changed.

    Events only note what changed (O(1)); the first lookup after them
    compares the tier with what the answering table was built from and, only
    if the table would differ, starts a build (:meth:`refresh`). Until that
    build is done the old table answers, skipping members that left the tier.
    """

    __slots__ = ("weights", "ordered", "slots", "slot_members", "built_from", "build",
                 "building", "dirty", "builds", "slices")

    def __init__(self):
        #: member → the weight it has in the table, or None when not in it
        #: (weight 0); the keys are the tier's members, in the order added
        self.weights: dict = {}
        #: all members of the tier, in name order (the last-resort scan)
        self.ordered: list = []
        #: the table that answers (see MaglevBuild: slot → 1 + index into
        #: slot_members), and the (size, {member: weight}) it was built from
        self.slots = ()
        self.slot_members: list = [None]
        self.built_from = (0, {})
        #: the build under way (a MaglevBuild) and what it is built from
        self.build: MaglevBuild | None = None
        self.building = None
        self.dirty = False
        #: finished builds (tables swapped in), and slices run, for tests and tools
        self.builds = 0
        self.slices = 0

    @property
    def members(self) -> list:
        return list(self.weights)

    @property
    def table(self) -> list:
        """The answering table as a list of members (for tests and tools)."""
        members = self.slot_members
        return [members[i] for i in self.slots]

    @staticmethod
    def weight_of(member):
        # The table holds every member by its set weight, whatever its
        # health: a member going down or up, or a slow-start step, needs no
        # rebuild (the lookup skips members that cannot take a connection),
        # and only that member's clients move.
        w = member.weight
        return w if w > 0 else None

    def add(self, member):
        self.weights[member] = self.weight_of(member)
        self.dirty = True

    def remove(self, member):
        del self.weights[member]
        self.dirty = True

    def changed(self, member):
        w = self.weight_of(member)
        if w != self.weights[member]:
            self.weights[member] = w
            self.dirty = True

    def refresh(self) -> bool:
        """Take the changes in: True when a build must run (it is set up in
        :attr:`build`, not run). Nothing to build when the members and
        weights are those of the answering table (a reload that changed a
        member's ``maxconn``, a weight set back) or of the build under way.
        O(n log n) in the tier's members, not in the table's slots."""
        self.dirty = False
        self.ordered = ordered = sorted(self.weights, key=lambda m: m.name)
        weights = self.weights
        want = (table_size(len(weights)), {m: w for m, w in weights.items() if w is not None})
        if want == self.built_from:
            self.build = self.building = None  # back to what the table has
            return False
        if self.build is not None and want == self.building:
            return False
        if not want[1]:  # nobody with a weight: nothing to hash to
            self.swap((), [None], want)
            return False
        self.build = MaglevBuild([(m.name, weights[m], m) for m in ordered
                                  if weights[m] is not None], want[0])
        self.building = want
        return True

    def swap(self, slots, members, built_from):
        """The new table answers from now on (a pick sees the old table or
        the new one, never a mixture: nothing yields in between)."""
        self.slots, self.slot_members, self.built_from = slots, members, built_from
        self.build = self.building = None
        self.builds += 1

    def finish(self):
        build = self.build
        self.swap(build.slots, build.members, self.building)

    def rebuild(self):
        """Bring the table up to date now, in one go (the reactor waits)."""
        if self.dirty:
            self.refresh()
        build = self.build
        if build is not None:
            while not build.run(1 << 30):
                pass
            self.finish()

    def lookup(self, h: int, exclude):
        slots, members = self.slots, self.slot_members
        stale = self.build is not None  # members may have left since it was built
        if not slots and stale:
            # The first table is being built: the slots it has filled already
            # hold their final member; the others are 0 (None).
            slots, members, stale = self.build.slots, self.build.members, False
        weights = self.weights
        if slots:
            size = len(slots)
            slot = h % size
            m = members[slots[slot]]
            if m is not None and usable(m, exclude) and (not stale or m in weights):
                return m
            for step in range(1, FALLBACK_PROBES + 1):
                m = members[slots[(slot + step) % size]]
                if m is not None and usable(m, exclude) and (not stale or m in weights):
                    return m
        ordered = self.ordered
        n = len(ordered)
        for k in range(n):
            m = ordered[(h + k) % n]
            if usable(m, exclude):
                return m
        return None


@implementer(IScheduler)
class SourceHash(SchedulerBase):
    """See the module's docstring. ``clock`` (an ``IReactorTime``) runs table
    builds in slices of ``budget`` seconds as measured by ``timer``; without
    one, the global reactor does while it runs, and builds are synchronous
    when it does not (scripts, synchronous tests). A test on a running
    reactor that must not end with a slice pending (trial's dirty-reactor
    check) calls :meth:`settle`, or passes a ``task.Clock``."""

    def __init__(self, pool=None, options=None, *, clock=None, timer=time.perf_counter,
                 budget: float = SLICE_BUDGET, steps: int = SLICE_STEPS):
        super().__init__(pool, options)
        self._tiers = (_Tier(), _Tier())  # non-backup, backup
        self._clock, self._timer, self._budget, self._steps = clock, timer, budget, steps
        self._calls: dict = {}  # tier → the pending slice (an IDelayedCall)
        #: the longest slice so far, as ``timer`` measured it (tests, tools)
        self.longest_slice = 0.0
        # no address to hash: round robin over the same members
        self._rr = RoundRobin()
        self._rr.members = self.members

    def member_added(self, member):
        super().member_added(member)
        self._tiers[member.backup].add(member)

    def member_removed(self, member):
        super().member_removed(member)
        self._tiers[member.backup].remove(member)

    def member_changed(self, member):
        self._tiers[member.backup].changed(member)

    # -- building ----------------------------------------------------------

    def clock(self):
        """The clock that runs builds, or None: build synchronously."""
        if self._clock is not None:
            return self._clock
        from twisted.internet import reactor
        return reactor if reactor.running else None

    def _refresh(self, tier: _Tier) -> None:
        if not tier.refresh():
            return
        clock = self.clock()
        if clock is None:
            tier.rebuild()
        elif tier not in self._calls:
            self._calls[tier] = clock.callLater(0, self._slice, tier, clock)

    def _slice(self, tier: _Tier, clock) -> None:
        """Fill on for about :attr:`_budget` seconds, then yield to the
        reactor; swap the table in when it is full."""
        del self._calls[tier]
        build = tier.build
        if build is None:  # the change was undone meanwhile
            return
        tier.slices += 1
        timer, budget, steps = self._timer, self._budget, self._steps
        began = timer()
        while not build.run(steps):
            spent = timer() - began
            if spent >= budget:
                self.longest_slice = max(self.longest_slice, spent)
                self._calls[tier] = clock.callLater(0, self._slice, tier, clock)
                return
        self.longest_slice = max(self.longest_slice, timer() - began)
        tier.finish()

    def settle(self) -> None:
        """Finish any build under way now, synchronously (for tools and
        tests; the reactor waits)."""
        for tier in self._tiers:
            call = self._calls.pop(tier, None)
            if call is not None and call.active():
                call.cancel()
            tier.rebuild()

    @property
    def building(self) -> bool:
        """True while the answering table may not be the one the members and
        weights call for: a change not yet looked at (the next pick does),
        or a build under way (the old table answers meanwhile)."""
        return any(t.build is not None or t.dirty for t in self._tiers)

    # -- picking -------------------------------------------------------------

    def pick(self, context, exclude=()):
        host = getattr(context, "client_host", None)
        if not host:
            return self._rr.pick(context, exclude)
        h = key_hash(host)
        for tier in self._tiers:
            if tier.dirty:
                self._refresh(tier)
            m = tier.lookup(h, exclude)
            if m is not None:
                return m
        return None


@hookimpl
def lbframe_register_schedulers(registry):
    registry.add("source-hash", SourceHash)
