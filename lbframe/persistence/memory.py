"""``store = memory``: a bounded in-process table with idle expiry and LRU eviction.

Entries are kept in an ordered dict from least to most recently used, so
both limits cost O(1): an entry idle for longer than the profile's
``timeout`` is found at the front (and dropped there, a few at a time, on
every write), and when the table holds ``max_entries`` the front entry makes
room for the new one. The table lives in one process: several lbframe
workers or nodes that must agree use a shared store (``redis://``) or a
stateless method (``cookie-insert``).

Key of its own: ``max_entries`` (default 100000).
"""

from __future__ import annotations

from collections import OrderedDict

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.errors import OptionError
from lbframe.interfaces import IPersistenceStore

DEFAULT_MAX_ENTRIES = 100_000
#: expired entries dropped from the front per write (bounded work per call)
SWEEP_PER_WRITE = 8


@implementer(IPersistenceStore)
class MemoryStore:
    """Key → member name, forgotten after ``timeout`` idle seconds; when full,
    the least recently used entry goes first. O(1) per operation."""

    asynchronous = False

    def __init__(self, timeout: float, clock, max_entries: int = DEFAULT_MAX_ENTRIES):
        self.timeout = timeout
        self.clock = clock
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()  # key -> (member, last_used), LRU first
        #: entries dropped to make room (LRU) and for idleness, since start
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        self._sweep(self.clock.seconds(), len(self._entries))
        return len(self._entries)

    def _sweep(self, now: float, limit: int) -> None:
        """Drop up to ``limit`` idle entries from the front."""
        entries = self._entries
        deadline = now - self.timeout
        while limit > 0 and entries:
            key, (_, last) = next(iter(entries.items()))
            if last >= deadline:
                return
            del entries[key]
            self.expired += 1
            limit -= 1

    def get(self, key):
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self.clock.seconds()
        member, last = entry
        if now - last > self.timeout:
            del self._entries[key]
            self.expired += 1
            return None
        self._entries[key] = (member, now)
        self._entries.move_to_end(key)
        return member

    def set(self, key, member_name):
        now = self.clock.seconds()
        entries = self._entries
        entries[key] = (member_name, now)
        entries.move_to_end(key)
        self._sweep(now, SWEEP_PER_WRITE)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
            self.evicted += 1

    def touch(self, key):
        self.get(key)

    def delete(self, key):
        self._entries.pop(key, None)

    def clear(self):
        self._entries.clear()

    def items(self):
        """(key, member, idle seconds) for the admin API, least recently used first."""
        now = self.clock.seconds()
        self._sweep(now, len(self._entries))
        return [(k, m, now - t) for k, (m, t) in self._entries.items()]


def memory_store(url, profile, reactor):
    max_entries = DEFAULT_MAX_ENTRIES
    text = profile.options.get("max_entries")
    if text is not None:
        try:
            max_entries = int(text)
        except ValueError:
            raise OptionError("max_entries", f"max_entries must be a whole number, not {text!r}") \
                from None
        if max_entries < 1:
            raise OptionError("max_entries", "max_entries must be at least 1")
    return MemoryStore(profile.timeout, reactor, max_entries)


memory_store.option_keys = ("max_entries",)


@hookimpl
def lbframe_register_persistence_stores(registry):
    registry.add("memory", memory_store)
