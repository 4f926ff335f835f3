"""``symmetric-hash``: a seeded hash of the (outside, inside) address pair picks
the next hop, the same on two separate nodes and for both directions (F11a).

Firewall load balancing (the "sandwich", see docs/sandwich.md) needs both
directions of a flow to cross the same firewall, although two different
load balancers send them: LB-A outside picks for client → server packets,
LB-B inside for server → client packets. Both hash the *same ordered pair*
(outside address, inside address): LB-A reads it as (source, destination),
LB-B as (destination, source) — the virtual server's ``hash_order``.

Why not the kernel's ``symhash``: it mixes in a secret drawn at boot, so two
boxes disagree. nftables' ``jhash`` takes an explicit seed instead; this
module computes exactly what the kernel computes (:func:`jhash`,
:func:`kernel_bucket`: Bob Jenkins' lookup3 as in ``include/linux/jhash.h``
and ``reciprocal_scale`` as in ``net/netfilter/nft_hash.c``), so tests and
the status page can say which firewall a pair goes to without a packet.

The hash picks one of :data:`BUCKETS` buckets; each bucket names a member.
The bucket → member table is a Maglev table (:mod:`lbframe.schedulers.maglev`)
of the *eligible* members, keyed by member **name** and weight: both nodes
must name each firewall the same (their addresses differ, one per side).
Maglev keeps most buckets in place when a member leaves or returns, but the
flows of the buckets that do move change firewall: a stateful firewall then
drops them (the HASH caveat; ``last-hop`` persistence has no such caveat).

In the kernel (``protocol = routed``) the table becomes an nftables map; in
user space (``protocol = tcp``…) :meth:`SymmetricHash.pick` hashes the
client address alone (the context carries no destination), which is a
stateless source hash.
"""

from __future__ import annotations

import ipaddress
import struct

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.errors import OptionError, reject_unknown_options
from lbframe.interfaces import IScheduler
from lbframe.schedulers import SchedulerBase, usable
from lbframe.schedulers.maglev import maglev_table

#: buckets of the hash (a prime, as Maglev wants); the nftables map has this many elements
BUCKETS = 251
#: the seed when the pool gives none (any fixed value: both nodes must use the same)
DEFAULT_SEED = 0x4C424657  # "LBFW"
#: the pool keys this scheduler reads
OPTIONS = ("hash_seed",)

_M32 = 0xFFFFFFFF
_JHASH_INITVAL = 0xDEADBEEF


def _rol(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = (a - c) & _M32; a ^= _rol(c, 4); c = (c + b) & _M32  # noqa: E702
    b = (b - a) & _M32; b ^= _rol(a, 6); a = (a + c) & _M32  # noqa: E702
    c = (c - b) & _M32; c ^= _rol(b, 8); b = (b + a) & _M32  # noqa: E702
    a = (a - c) & _M32; a ^= _rol(c, 16); c = (c + b) & _M32  # noqa: E702
    b = (b - a) & _M32; b ^= _rol(a, 19); a = (a + c) & _M32  # noqa: E702
    c = (c - b) & _M32; c ^= _rol(b, 4); b = (b + a) & _M32  # noqa: E702
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    c ^= b; c = (c - _rol(b, 14)) & _M32  # noqa: E702
    a ^= c; a = (a - _rol(c, 11)) & _M32  # noqa: E702
    b ^= a; b = (b - _rol(a, 25)) & _M32  # noqa: E702
    c ^= b; c = (c - _rol(b, 16)) & _M32  # noqa: E702
    a ^= c; a = (a - _rol(c, 4)) & _M32  # noqa: E702
    b ^= a; b = (b - _rol(a, 14)) & _M32  # noqa: E702
    c ^= b; c = (c - _rol(b, 24)) & _M32  # noqa: E702
    return c


def jhash(key: bytes, initval: int) -> int:
    """The Linux kernel's ``jhash(key, len(key), initval)`` (lookup3), on a
    little-endian machine (x86, arm64): words are read little-endian."""
    length = len(key)
    a = b = c = (_JHASH_INITVAL + length + initval) & _M32
    k = 0
    while length > 12:
        x, y, z = struct.unpack_from("<III", key, k)
        a, b, c = _mix((a + x) & _M32, (b + y) & _M32, (c + z) & _M32)
        length -= 12
        k += 12
    if length == 0:
        return c
    x, y, z = struct.unpack("<III", key[k:] + bytes(12 - length))
    return _final((a + x) & _M32, (b + y) & _M32, (c + z) & _M32)


def kernel_bucket(first: str, second: str, seed: int, modulus: int = BUCKETS) -> int:
    """What ``jhash <first> . <second> mod MODULUS seed SEED`` gives in nftables
    for two addresses of one family (network byte order, concatenated)."""
    key = ipaddress.ip_address(first).packed + ipaddress.ip_address(second).packed
    return (jhash(key, seed) * modulus) >> 32


def bucket_table(members, buckets: int = BUCKETS) -> list:
    """Bucket → member for the eligible ``members`` (by name and weight;
    the file order and the addresses do not matter), or ``[]`` when none is."""
    entries = [(m.name, m.weight, m) for m in members
               if m.eligible and m.weight > 0 and not m.backup]
    if not entries:
        entries = [(m.name, m.weight, m) for m in members
                   if m.eligible and m.weight > 0]
    if not entries:
        return []
    return maglev_table(entries, buckets)


def parse_seed(options) -> int:
    """``hash_seed = N`` (decimal or 0x hex, 0 to 2³²-1), or the default."""
    text = (options or {}).get("hash_seed")
    if text is None:
        return DEFAULT_SEED
    try:
        value = int(text, 0)
    except ValueError:
        raise OptionError("hash_seed", f"hash_seed must be a number (e.g. 0x1234abcd), "
                                       f"not {text!r}") from None
    if not 0 <= value <= _M32:
        raise OptionError("hash_seed", f"hash_seed must be from 0 to {_M32:#x}, not {text}")
    return value


@implementer(IScheduler)
class SymmetricHash(SchedulerBase):
    """In user space: the client address's bucket. In the kernel (routed):
    :func:`bucket_table` and :attr:`seed` become an nftables jhash map."""

    def __init__(self, pool=None, options=None):
        reject_unknown_options({k: v for k, v in (options or {}).items() if k not in OPTIONS},
                               "scheduler symmetric-hash", OPTIONS)
        super().__init__(pool, None)
        self.seed = parse_seed(options)
        self._table: list | None = None

    def member_added(self, member):
        super().member_added(member)
        self._table = None

    def member_removed(self, member):
        super().member_removed(member)
        self._table = None

    def member_changed(self, member):
        self._table = None

    def table(self) -> list:
        if self._table is None:
            self._table = bucket_table(self.members)
        return self._table

    def pick(self, context, exclude=()):
        table = self.table()
        try:
            packed = ipaddress.ip_address(context.client_host).packed
        except (AttributeError, ValueError):
            packed = b""
        start = (jhash(packed, self.seed) * max(1, len(table))) >> 32
        for i in range(len(table)):
            member = table[(start + i) % len(table)]
            if usable(member, exclude):
                return member
        # Every member of the table is full or excluded: the others, name order.
        rest = sorted((m for m in self.members if usable(m, exclude)),
                      key=lambda m: (m.backup, m.name))
        return rest[0] if rest else None


@hookimpl
def lbframe_register_schedulers(registry):
    registry.add("symmetric-hash", SymmetricHash)
