"""Maglev lookup tables, filled a bounded amount of work at a time.

:class:`MaglevBuild` is the fill of ``source-hash``'s table (see
:mod:`lbframe.schedulers.source_hash` for the algorithm and why) written so
that it can stop after any number of steps and go on later: its whole state
(the table so far, each member's place in its permutation, whose turn it is)
lives in the object, not on a Python stack. The scheduler runs it in slices
of a few milliseconds on the reactor, so that a 500 000-slot table (5000
members, about a second of CPU in CPython) never holds the reactor for
longer than one slice; :func:`maglev_table` runs it to the end in one go.

The table is the same, slot for slot, whether filled in one go or in any
number of slices, and the same as lbframe's first (heap-based) fill gave:
nodes running different lbframe versions still agree.
"""

from __future__ import annotations

import hashlib
from array import array
from functools import lru_cache

#: lookup table sizes (primes, each about twice the previous one)
TABLE_SIZES = (65537, 131071, 262147, 524287, 1048573, 2097143, 4194301)
#: slots per member, at least (Maglev's advice: M ≥ 100 × n)
SLOTS_PER_MEMBER = 100


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


@lru_cache(maxsize=1 << 16)
def member_hash(name: str) -> tuple[int, int]:
    """(offset hash, skip hash) of a member name; cached, because a rebuild
    hashes every member again and names rarely change."""
    d = hashlib.blake2b(name.encode(), digest_size=16, person=b"lbframe-maglev").digest()
    return int.from_bytes(d[:8], "big"), int.from_bytes(d[8:], "big")


class MaglevBuild:
    """One table of ``size`` (a prime) slots being filled from ``entries``, a
    sequence of ``(name, weight, member)`` with distinct names and weights
    above 0 (at least one).

    Member ``i`` (in name order) takes its k-th slot in round
    ``⌊k × max(weights) / w_i⌋``; a round's members go in name order. A
    member has at most one turn per round (``max/w ≥ 1``) and the heaviest
    members have one in every round, so the rounds are kept as lists: the
    current one, and the later ones by number.

    The table is kept as :attr:`slots`, an ``array('I')`` of ``1 + i`` (0:
    not filled yet), with :attr:`members` ``[None, member 0, member 1, ...]``
    to map it: ``members[slots[h % size]]``. An array of machine integers,
    unlike a list of a million references, is not something the garbage
    collector walks through, and costs 4 bytes a slot.

    :meth:`run` does at most ``steps`` units of work (``steps + HASH_COST -
    1`` while names are hashed) — one unit per slot claimed, per occupied
    slot stepped over, and :attr:`HASH_COST` per member hashed before the
    fill — and can stop in the middle of a member's search;
    :attr:`work` counts them all, so a caller (or a test) can tell how much
    a slice did.
    """

    __slots__ = ("size", "slots", "used", "members", "names", "weights", "maxw", "pos",
                 "skips", "taken", "rounds", "round", "turns", "at", "filled", "work")

    #: work units for hashing one member's name
    HASH_COST = 8

    def __init__(self, entries, size: int):
        entries = sorted(entries, key=lambda e: e[0])
        if not entries:
            raise ValueError("a Maglev table needs at least one member")
        self.size = size
        self.slots = array("I", bytes(4 * size))
        self.used = bytearray(size)  # the fill's own look-up: is slot c taken?
        self.members = [None] + [m for _, _, m in entries]
        self.names = [name for name, _, _ in entries]
        self.weights = [w for _, w, _ in entries]
        self.maxw = max(self.weights)
        self.pos, self.skips = [], []  # filled in by run(), a few members at a time
        self.taken = [0] * len(entries)
        self.rounds: dict[int, list[int]] = {}
        self.round = 0
        self.turns = list(range(len(entries)))  # round 0: everyone, in name order
        self.at = 0
        self.filled = 0
        self.work = 0

    @property
    def done(self) -> bool:
        return self.filled == self.size

    @property
    def table(self) -> list:
        """The table as a list of members (None where not filled yet)."""
        members = self.members
        return [members[i] for i in self.slots]

    def _prepare(self, left: int) -> int:
        """Hash members' names into their permutations; returns the work left."""
        size, names, pos, skips = self.size, self.names, self.pos, self.skips
        while len(pos) < len(names) and left > 0:
            h1, h2 = member_hash(names[len(pos)])
            pos.append(h1 % size)
            skips.append(h2 % (size - 1) + 1)
            left -= self.HASH_COST
        return left

    def run(self, steps: int) -> bool:
        """Fill on for at most ``steps`` units of work; True once the table is full."""
        left = steps
        if len(self.pos) < len(self.names):
            left = self._prepare(left)
            if left <= 0:
                self.work += steps - left
                return False
        size, slots, used = self.size, self.slots, self.used
        pos, skips, taken, weights, maxw = self.pos, self.skips, self.taken, self.weights, self.maxw
        rounds, turns, at, filled = self.rounds, self.turns, self.at, self.filled
        while filled < size and left > 0:
            if at == len(turns):
                self.round += 1
                turns = rounds.pop(self.round)
                turns.sort()  # a round's members go in name order
                at = 0
            i = turns[at]
            c, skip = pos[i], skips[i]
            while used[c]:
                c += skip
                if c >= size:
                    c -= size
                left -= 1
                if left <= 0:
                    break
            else:
                used[c] = 1
                slots[c] = i + 1
                filled += 1
                left -= 1
                c += skip
                if c >= size:
                    c -= size
                k = taken[i] = taken[i] + 1
                nxt = k * maxw // weights[i]
                later = rounds.get(nxt)
                if later is None:
                    rounds[nxt] = [i]
                else:
                    later.append(i)
                at += 1
            pos[i] = c
        self.turns, self.at, self.filled = turns, at, filled
        self.work += steps - left
        return filled == size


def maglev_table(entries, size: int) -> list:
    """Fill a table of ``size`` (a prime) slots from ``entries``, a sequence of
    ``(name, weight, member)`` with distinct names and weights above 0, in one go.

    The result depends only on the set of ``(name, weight)`` pairs, not on the
    order of ``entries``.
    """
    if not entries:
        return [None] * size
    build = MaglevBuild(entries, size)
    while not build.run(1 << 30):
        pass
    return build.table
