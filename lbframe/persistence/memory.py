"""``store = memory``: a bounded in-process table with idle expiry and LRU eviction."""

from __future__ import annotations

from collections import OrderedDict

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.interfaces import IPersistenceStore

DEFAULT_MAX_ENTRIES = 100_000


@implementer(IPersistenceStore)
class MemoryStore:
    """Key → member name, forgotten after ``timeout`` idle seconds; when full,
    the least recently used entry goes first. O(1) per operation."""

    def __init__(self, timeout: float, clock, max_entries: int = DEFAULT_MAX_ENTRIES):
        self.timeout = timeout
        self.clock = clock
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()  # key -> (member, last_used)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key):
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self.clock.seconds()
        member, last = entry
        if now - last > self.timeout:
            del self._entries[key]
            return None
        self._entries[key] = (member, now)
        self._entries.move_to_end(key)
        return member

    def set(self, key, member_name):
        self._entries[key] = (member_name, self.clock.seconds())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evicted += 1

    def delete(self, key):
        self._entries.pop(key, None)

    def clear(self):
        self._entries.clear()

    def items(self):
        """(key, member, age) for the admin API, oldest use first."""
        now = self.clock.seconds()
        return [(k, m, now - t) for k, (m, t) in self._entries.items()]


def memory_store(url, profile, reactor):
    return MemoryStore(profile.timeout, reactor)


@hookimpl
def lbframe_register_persistence_stores(registry):
    registry.add("memory", memory_store)
