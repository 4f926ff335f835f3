"""Coarse timeouts for many connections on one reactor timer.

Each connection needs a connect timeout and an idle check. A ``callLater``
per connection costs a ``DelayedCall`` object, a heap push, and a cancel
that leaves garbage in the reactor's heap — per connection, on the path
that decides how many new connections a second lbframe can take. A timer
wheel rounds deadlines up to a *tick* of ``resolution`` seconds and keeps
one set per tick: scheduling and cancelling are a set add and discard, and
the reactor holds a single timer, for the earliest tick.

Entries are objects with an ``expired()`` method.
"""

from __future__ import annotations

import heapq
import math


class TimerWheel:
    def __init__(self, clock, resolution: float):
        self.clock = clock
        self.resolution = resolution
        self.buckets: dict[int, set] = {}
        self._ticks: list[int] = []  # heap of ticks that have a bucket
        self._call = None
        self._call_tick: int | None = None

    def __len__(self) -> int:
        return sum(len(b) for b in self.buckets.values())

    def schedule(self, entry, delay: float) -> int:
        """Call ``entry.expired()`` ``delay`` seconds from now (rounded up
        to the next tick); returns the tick, for :meth:`cancel`."""
        tick = math.ceil((self.clock.seconds() + delay) / self.resolution)
        bucket = self.buckets.get(tick)
        if bucket is None:
            bucket = self.buckets[tick] = set()
            heapq.heappush(self._ticks, tick)
            if self._call_tick is None or tick < self._call_tick:
                self._arm(tick)
        bucket.add(entry)
        return tick

    def cancel(self, entry, tick: int) -> None:
        bucket = self.buckets.get(tick)
        if bucket is not None:
            bucket.discard(entry)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self._call_tick = None
        self.buckets.clear()
        self._ticks.clear()

    def _arm(self, tick: int) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        delay = max(0.0, tick * self.resolution - self.clock.seconds())
        self._call_tick = tick
        self._call = self.clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._call = self._call_tick = None
        # A tick is due once the clock has reached its start (small float
        # error is tolerated, so that a tick is never late by a whole step).
        now_tick = math.floor(self.clock.seconds() / self.resolution + 1e-9)
        ticks, buckets = self._ticks, self.buckets
        while ticks and ticks[0] <= now_tick:
            tick = heapq.heappop(ticks)
            for entry in buckets.pop(tick, ()):
                entry.expired()
        if ticks and self._call is None:
            self._arm(ticks[0])
