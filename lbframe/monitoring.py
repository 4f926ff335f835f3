"""Health monitoring (F7): the runner that probes members beside the data path.

A monitor plugin (``lbframe/monitors/``, or a third party's) only knows how
to probe one member once (:class:`lbframe.interfaces.IMonitor`).
:class:`MonitorRunner` owns the clock: it spreads checks over the interval,
never runs two checks of one member and monitor at once, enforces the
timeout, and reports each result to the pool (the one owner of member state),
which applies rise and fall. At stop it waits for every monitor's
:meth:`~lbframe.interfaces.IMonitor.idle`, so that stopping lbframe leaves
no probe process behind.

This module is core, not a plugin: plugins import :class:`CheckResult`,
:func:`check_port` and :class:`BaseMonitor` from here.
"""

from __future__ import annotations

import random

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from lbframe.config.model import Monitor
from lbframe.interfaces import IMonitor
from lbframe.runtime import Member, PoolState

log = Logger(namespace="lbframe.monitoring")


@attrs.frozen
class CheckResult:
    """One probe's outcome. ``reason`` says why in words an operator reads,
    e.g. ``"connect refused"`` or ``"HTTP 500 from POST /dbcheck.cgi"``."""

    ok: bool
    reason: str = ""


def check_port(monitor: Monitor, member: Member) -> int:
    """The port to probe: the monitor's ``port`` (F7e) or the member's."""
    return monitor.port if monitor.port is not None else member.address.port


@implementer(IMonitor)
class BaseMonitor:
    """The lifecycle of a monitor that starts nothing outliving a check:
    :meth:`idle` fires at once. Subclass it and write ``check``; a monitor
    that runs processes (``script``) overrides :meth:`idle`."""

    def idle(self) -> defer.Deferred:
        return defer.succeed(None)


@implementer(IMonitor)
class LegacyMonitor:
    """A monitor written before ``IMonitor.idle`` (plugin API 1.0 made it
    optional), given the idle of :class:`BaseMonitor`: lbframe takes it
    that nothing it starts outlives a cancelled check, as it did then.
    Every other attribute is the wrapped monitor's."""

    def __init__(self, monitor):
        self.monitor = monitor

    def check(self, member):
        return self.monitor.check(member)

    def idle(self) -> defer.Deferred:
        return defer.succeed(None)

    def __getattr__(self, name):
        return getattr(self.__dict__["monitor"], name)

    def __repr__(self) -> str:
        return f"<LegacyMonitor {self.monitor!r}>"


class _IProbe(Interface):
    """What a monitor written before ``IMonitor.idle`` provides."""

    def check(member):
        """As :meth:`lbframe.interfaces.IMonitor.check`."""


def as_monitor(obj, what: str = "monitor"):
    """``obj`` as an :class:`~lbframe.interfaces.IMonitor` provider: itself
    when it has ``check`` and ``idle``, a :class:`LegacyMonitor` around it
    when it has only ``check``. Raises TypeError (naming ``what``) for an
    object that cannot probe at all, or whose methods do not match the
    interface (:func:`zope.interface.verify.verifyObject`)."""
    if not callable(getattr(obj, "check", None)):
        raise TypeError(f"{what} built {obj!r}, which has no check(member) method")
    legacy = not callable(getattr(obj, "idle", None))
    try:
        verifyObject(_IProbe if legacy else IMonitor, obj, tentative=True)
    except Invalid as e:
        raise TypeError(f"{what} built {obj!r}, which does not provide IMonitor: {e}") from None
    return LegacyMonitor(obj) if legacy else obj


def adapting_factory(factory, what: str):
    """``factory`` when it is a class whose instances provide ``check`` and
    ``idle`` (every built-in: the registry keeps the plugin's own class),
    else a factory calling it and passing what it builds through
    :func:`as_monitor`; a legacy monitor is logged once per factory."""
    if isinstance(factory, type) and callable(getattr(factory, "check", None)) \
            and callable(getattr(factory, "idle", None)):
        return factory
    warned = []

    def build(*args, **kwargs):
        built = factory(*args, **kwargs)
        monitor = as_monitor(built, what)
        if monitor is not built and not warned:
            warned.append(True)
            log.warn("{what} has no idle(): lbframe assumes nothing it starts outlives a "
                     "check; give it one (lbframe.monitoring.BaseMonitor)", what=what)
        return monitor

    build.__wrapped__ = factory
    build.__name__ = getattr(factory, "__name__", "build")
    return build


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
        # all gone, so that stopping lbframe leaves nothing behind. One
        # monitor object serves many members: ask it once.
        monitors = {id(c.monitor): c.monitor for c in self.checks}
        if not monitors:
            return None
        waits = [defer.maybeDeferred(m.idle).addErrback(
            lambda f, m=m: log.failure("monitor {monitor!r}: idle() failed", f, monitor=m))
            for m in monitors.values()]
        return defer.DeferredList(waits).addCallback(lambda _: None)
