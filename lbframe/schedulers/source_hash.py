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
  move only that member's clients; when it comes back, they return. The
  table is rebuilt lazily, at the first pick after a member was added or
  removed (reload) or its weight was set (admin). A rebuild costs
  O(M log M) — about 0.05-0.15 s for 65 537 slots (up to 655 members), 0.35 s
  for 131 071 (1000 members) on CPython 3.11 — during which the reactor
  waits, so weight changes on a big source-hash pool are best made rarely.
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

Cost per pick: O(1) — one BLAKE2b of the address and one list index; O(n)
only when almost every member is full or excluded.
"""

from __future__ import annotations

import hashlib
from heapq import heapreplace

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.interfaces import IScheduler
from lbframe.schedulers import SchedulerBase, usable
from lbframe.schedulers.round_robin import RoundRobin

#: lookup table sizes (primes, each about twice the previous one)
TABLE_SIZES = (65537, 131071, 262147, 524287, 1048573, 2097143, 4194301)
#: slots per member, at least (Maglev's advice: M ≥ 100 × n)
SLOTS_PER_MEMBER = 100
#: how many following slots are tried when the hashed member cannot be used
FALLBACK_PROBES = 32


def _is_prime(n: int) -> bool:
    if n < 2 or n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def table_size(members: int) -> int:
    """The prime table size for a tier of ``members`` members."""
    want = SLOTS_PER_MEMBER * members
    for size in TABLE_SIZES:
        if size >= want:
            return size
    size = want | 1
    while not _is_prime(size):
        size += 2
    return size


def key_hash(host: str) -> int:
    """Stable 64-bit hash of a client address, the same in every process.

    An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack
    socket reports) hashes like the IPv4 address.
    """
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return int.from_bytes(hashlib.blake2b(host.encode(), digest_size=8).digest(), "big")


def _member_hash(name: str) -> tuple[int, int]:
    d = hashlib.blake2b(name.encode(), digest_size=16, person=b"lbframe-maglev").digest()
    return int.from_bytes(d[:8], "big"), int.from_bytes(d[8:], "big")


def maglev_table(entries, size: int) -> list:
    """Fill a table of ``size`` (a prime) slots from ``entries``, a sequence of
    ``(name, weight, member)`` with distinct names and weights above 0.

    The result depends only on the set of ``(name, weight)`` pairs, not on the
    order of ``entries``.
    """
    entries = sorted(entries, key=lambda e: e[0])
    table: list = [None] * size
    if not entries:
        return table
    maxw = max(w for _, w, _ in entries)
    members, weights, pos, skips, taken = [], [], [], [], []
    for name, w, m in entries:
        h1, h2 = _member_hash(name)
        members.append(m)
        weights.append(w)
        pos.append(h1 % size)
        skips.append(h2 % (size - 1) + 1)
        taken.append(0)
    # (round, index): member i takes its k-th slot (k = 0, 1, ...) in round
    # ⌊k·maxw/w⌋, the members of one round in name order.
    heap = [(0, i) for i in range(len(members))]
    for _ in range(size):
        i = heap[0][1]
        c, skip = pos[i], skips[i]
        while table[c] is not None:
            c = (c + skip) % size
        table[c] = members[i]
        pos[i] = (c + skip) % size
        k = taken[i] = taken[i] + 1
        heapreplace(heap, (k * maxw // weights[i], i))
    return table


class _Tier:
    """The non-backup or the backup members, and their lookup table."""

    __slots__ = ("members", "weights", "ordered", "table", "dirty", "builds")

    def __init__(self):
        self.members: list = []
        #: member → the weight it has in the table, or None when not in it
        self.weights: dict = {}
        #: all members of the tier, in name order (the last-resort scan)
        self.ordered: list = []
        self.table: list = []
        self.dirty = False
        self.builds = 0

    @staticmethod
    def weight_of(member):
        # The table holds every member by its set weight, whatever its
        # health: a member going down or up, or a slow-start step, needs no
        # rebuild (the lookup skips members that cannot take a connection),
        # and only that member's clients move.
        w = member.weight
        return w if w > 0 else None

    def add(self, member):
        self.members.append(member)
        self.weights[member] = self.weight_of(member)
        self.dirty = True

    def remove(self, member):
        self.members.remove(member)
        del self.weights[member]
        self.dirty = True

    def changed(self, member):
        w = self.weight_of(member)
        if w != self.weights[member]:
            self.weights[member] = w
            self.dirty = True

    def rebuild(self):
        self.dirty = False
        self.builds += 1
        self.ordered = sorted(self.members, key=lambda m: m.name)
        entries = [(m.name, w, m) for m, w in self.weights.items() if w is not None]
        self.table = maglev_table(entries, table_size(len(self.members))) if entries else []

    def lookup(self, h: int, exclude):
        if self.dirty:
            self.rebuild()
        table = self.table
        if table:
            size = len(table)
            slot = h % size
            m = table[slot]
            if usable(m, exclude):
                return m
            for step in range(1, FALLBACK_PROBES + 1):
                m = table[(slot + step) % size]
                if usable(m, exclude):
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
    def __init__(self, pool=None, options=None):
        super().__init__(pool, options)
        self._tiers = (_Tier(), _Tier())  # non-backup, backup
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

    def pick(self, context, exclude=()):
        host = getattr(context, "client_host", None)
        if not host:
            return self._rr.pick(context, exclude)
        h = key_hash(host)
        for tier in self._tiers:
            m = tier.lookup(h, exclude)
            if m is not None:
                return m
        return None


@hookimpl
def lbframe_register_schedulers(registry):
    registry.add("source-hash", SourceHash)
