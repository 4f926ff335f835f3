"""Recent connection rates for the status page's sparklines.

The runtime counts connections (``total``) but keeps no history. The admin
server samples every member's and virtual server's total every
:data:`SAMPLE_SECONDS` and keeps the last :data:`SAMPLES` differences, so
the page can show the rate of the last two minutes without JavaScript and
without the data path doing anything. Bounded: one short deque per member
and virtual server that exists now (removed ones are forgotten).
"""

from __future__ import annotations

from collections import deque

from twisted.internet import task

SAMPLE_SECONDS = 5.0
SAMPLES = 24


class RateSampler:
    """Per-second rates of new connections, sampled on ``clock``."""

    def __init__(self, get_runtime, clock, interval: float = SAMPLE_SECONDS,
                 samples: int = SAMPLES):
        self.get_runtime = get_runtime
        self.clock = clock
        self.interval = interval
        self.samples = samples
        #: key → (last total, last time, deque of rates per second)
        self._series: dict[tuple, tuple[int, float, deque]] = {}
        #: key → the highest rate sampled since it appeared
        self._max: dict[tuple, float] = {}
        self._loop = task.LoopingCall(self.sample)
        self._loop.clock = clock

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _counters(self):
        runtime = self.get_runtime()
        for pname, pool in runtime.pools.items():
            for mname, m in pool.members.items():
                yield ("member", pname, mname), m.total
        for vname, v in runtime.virtuals.items():
            yield ("virtual", vname), v.total

    def sample(self) -> None:
        now = self.clock.seconds()
        seen = {}
        for key, total in self._counters():
            old = self._series.get(key)
            if old is None:
                seen[key] = (total, now, deque(maxlen=self.samples))
                continue
            last_total, last_time, rates = old
            elapsed = now - last_time
            if elapsed > 0:
                # A member re-created by a reload starts again from 0.
                rate = max(0, total - last_total) / elapsed
                rates.append(rate)
                if rate > self._max.get(key, 0.0):
                    self._max[key] = rate
            seen[key] = (total, now, rates)
        self._series = seen
        self._max = {key: value for key, value in self._max.items() if key in seen}

    def rates(self, *key) -> list[float]:
        """The per-second rates of ``("member", POOL, MEMBER)`` or
        ``("virtual", NAME)``, oldest first."""
        entry = self._series.get(key)
        return list(entry[2]) if entry is not None else []

    def current(self, *key) -> float:
        """The last sampled rate of ``key``; 0.0 before the first interval
        ends, so that every view shows the same number from the start."""
        entry = self._series.get(key)
        return entry[2][-1] if entry is not None and entry[2] else 0.0

    def maximum(self, *key) -> float:
        """The highest sampled rate of ``key`` since it appeared."""
        return self._max.get(key, 0.0)
