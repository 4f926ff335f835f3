"""Health monitors (F7): probes that run beside the data path, never in it.

A monitor plugin only knows how to probe one member once
(:class:`lbframe.interfaces.IMonitor`). :class:`MonitorRunner` owns the
clock: it spreads checks over the interval, never runs two checks of one
member and monitor at once, enforces the timeout, and reports each result to
the pool (the one owner of member state), which applies rise and fall.
"""

from __future__ import annotations

import random

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.python.failure import Failure

from lbframe.config.model import Monitor
from lbframe.runtime import Member, PoolState


@attrs.frozen
class CheckResult:
    """One probe's outcome. ``reason`` says why in words an operator reads,
    e.g. ``"connect refused"`` or ``"HTTP 500 from POST /dbcheck.cgi"``."""

    ok: bool
    reason: str = ""


def check_port(monitor: Monitor, member: Member) -> int:
    """The port to probe: the monitor's ``port`` (F7e) or the member's."""
    return monitor.port if monitor.port is not None else member.address.port


class MemberCheck:
    """Runs one monitor against one member on its own clock."""

    def __init__(self, pool: PoolState, member: Member, spec: Monitor, monitor, clock,
                 rng: random.Random):
        self.pool = pool
        self.member = member
        self.spec = spec
        self.monitor = monitor
        self.clock = clock
        self.rng = rng
        self.call = None
        self.in_flight: defer.Deferred | None = None
        self.running = False

    def start(self) -> None:
        self.running = True
        # Spread the first checks over the interval so that a big site does
        # not probe every member in the same instant.
        self.call = self.clock.callLater(self.rng.uniform(0, self.spec.interval), self.run)

    def stop(self) -> None:
        self.running = False
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        if self.in_flight is not None:
            self.in_flight.cancel()

    def run(self) -> None:
        self.call = None
        if not self.running or self.in_flight is not None:
            return
        started = self.clock.seconds()
        timeout = self.spec.timeout
        d = defer.maybeDeferred(self.monitor.check, self.member)
        self.in_flight = d
        timed_out = []

        def on_timeout():
            timed_out.append(True)
            d.cancel()

        timer = self.clock.callLater(timeout, on_timeout)

        def done(result):
            if timer.active():
                timer.cancel()
            self.in_flight = None
            if not self.running:
                return None
            if timed_out:
                result = CheckResult(False, f"timeout after {timeout:g}s")
            elif isinstance(result, Failure):
                result = CheckResult(False, f"check error: {result.getErrorMessage()}")
            now = self.clock.seconds()
            duration = now - started
            self.pool.report_check(self.member, self.spec.name, result.ok, result.reason,
                                   rise=self.spec.rise, fall=self.spec.fall, now=now,
                                   duration=duration if result.ok else None)
            if not self.running:  # the report's listeners may have stopped us
                return None
            delay = max(0.0, started + self.spec.interval - now)
            self.call = self.clock.callLater(delay, self.run)
            return None

        d.addBoth(done)


class MonitorRunner(service.Service):
    """Every (member, monitor) check of a site, started and stopped together."""

    def __init__(self, clock, rng: random.Random | None = None):
        self.clock = clock
        self.rng = rng or random.Random()
        self.checks: list[MemberCheck] = []
        self.setName("monitors")

    def add(self, pool: PoolState, member: Member, spec: Monitor, monitor) -> MemberCheck:
        check = MemberCheck(pool, member, spec, monitor, self.clock, self.rng)
        self.checks.append(check)
        if self.running:
            check.start()
        return check

    def startService(self) -> None:
        super().startService()
        for check in self.checks:
            check.start()

    def stopService(self):
        for check in self.checks:
            check.stop()
        super().stopService()
        # Monitors that run something (script's processes) say when it is
        # all gone, so that stopping lbframe leaves nothing behind.
        waits = {id(c.monitor): c.monitor.idle() for c in self.checks
                 if hasattr(c.monitor, "idle")}
        if not waits:
            return None
        return defer.DeferredList(list(waits.values())).addCallback(lambda _: None)
