"""Helpers for testing lbframe plugins: the kit lbframe's own built-ins pass.

A plugin author uses it the way a pytest plugin author uses ``pytester``::

    from twisted.trial.unittest import SynchronousTestCase
    from lbframe.testing import FakePool, SchedulerContract, member

    class TwoChoicesContract(SchedulerContract, SynchronousTestCase):
        factory = TwoChoices          # what your plugin registers

    class TwoChoicesTests(SynchronousTestCase):
        def test_prefers_the_idle_member(self):
            pool = FakePool(TwoChoices, member("a"), member("b"))
            pool.set_connections("a", 5)
            self.assertEqual(pool.picks(10), ["b"] * 10)

What is here:

- :func:`member` and :class:`FakePool`: members and a pool whose state,
  weight, connections and response time a test sets by member name. The
  pool is lbframe's real :class:`~lbframe.runtime.PoolState` (the one owner
  of member state), so the scheduler under test is told about every change
  exactly as in a running site.
- :class:`MonitorDriver`: lbframe's real monitor runner (interval, timeout,
  rise, fall) on a clock the test advances.
- :func:`verify_provides`: ``verifyObject`` with a message that says what is
  missing.
- Contract tests, mixins for a trial test case, that every built-in passes
  too: :class:`SchedulerContract`, :class:`MonitorContract`,
  :class:`PersistenceMethodContract`, :class:`PersistenceStoreContract`;
  :class:`ListenerContract` for a protocol's listener (real sockets).
- :func:`start_site`, :class:`HTTPBackends` and :func:`fetch`: a tiny real
  site on 127.0.0.1, loaded exactly as ``twistd lbframe`` loads one, for an
  end-to-end test.

Nothing here needs more than lbframe's own dependencies.
"""

from __future__ import annotations

import os
import random
import socket
import time
from typing import Any, Callable, Iterable

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.testing import MemoryReactorClock
from zope.interface import Invalid
from zope.interface.verify import verifyObject

from lbframe.balancer import RequestContext
from lbframe.config.model import Address, MemberSpec, Monitor, Persistence, Pool
from lbframe.errors import OptionError
from lbframe.interfaces import IMonitor, IPersistenceMethod, IPersistenceStore, IScheduler
from lbframe.runtime import Member, PoolState
from lbframe.schedulers import SchedulerBase

__all__ = [
    "member", "FakePool", "MonitorDriver", "verify_provides", "context",
    "SchedulerContract", "MonitorContract", "PersistenceMethodContract",
    "PersistenceStoreContract", "builtin_factories",
    "start_site", "RunningSite", "HTTPBackends", "fetch", "closed_port",
]

#: the member states a test can set (the contract's words)
STATES = ("up", "down", "draining", "disabled")


# -- members and pools ---------------------------------------------------

def member(name: str, port: int = 80, *, host: str = "127.0.0.1", weight: int = 1,
           priority: int = 1, maxconn: int | None = None, backup: bool = False) -> MemberSpec:
    """A member as ``member NAME = HOST:PORT weight=... priority=... maxconn=... [backup]``
    would give it."""
    return MemberSpec(name, Address(host, port), weight=weight, priority=priority,
                      maxconn=maxconn, backup=backup)


def context(client: str = "192.0.2.1", port: int = 40000, virtual: str = "web",
            head: object = None) -> RequestContext:
    """A request context: who asks (``client``), on which virtual server."""
    return RequestContext(client, port, virtual, head)


class FakePool:
    """A pool around the scheduler under test, driven by member name.

    ``factory`` is what your plugin registers (called as ``factory(pool,
    options)``); ``members`` are :func:`member` specs or plain names; the
    other keywords are :class:`lbframe.config.Pool` fields
    (``slow_start``, ``priority_threshold``, ...). Pass ``clock`` (a
    ``twisted.internet.task.Clock``) when the pool needs time (slow start).
    """

    def __init__(self, factory: Callable[..., Any], *members: MemberSpec | str,
                 options: dict | None = None, name: str = "web", clock=None, **pool_keys):
        specs = tuple(member(m) if isinstance(m, str) else m for m in members)
        self.spec = Pool(name, specs, **pool_keys)
        self.scheduler = factory(self.spec, dict(options or {}))
        self.state = PoolState.build(self.spec, self.scheduler, clock=clock)

    # -- reading ---------------------------------------------------------

    @property
    def members(self) -> dict[str, Member]:
        return self.state.members

    def __getitem__(self, name: str) -> Member:
        return self.state.members[name]

    def usable(self, exclude: Iterable[str] = ()) -> list[str]:
        """Names a scheduler may pick: eligible, under ``maxconn``, not excluded."""
        return [n for n, m in self.members.items()
                if m.eligible and m.has_room and n not in exclude]

    # -- changing (through the pool, so the scheduler is told) ----------

    def set_state(self, name: str, state: str, reason: str = "set by test") -> None:
        """``up``, ``down`` (a failed health check), ``draining`` or ``disabled``."""
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
        m = self[name]
        old = m.state
        m.healthy = state != "down"
        m.admin = state if state in ("draining", "disabled") else "enabled"
        m.down_reason = reason if state == "down" else ""
        self.state._changed(m, old, reason)

    def set_weight(self, name: str, weight: int) -> None:
        self.state.set_weight(self[name], weight)

    def set_connections(self, name: str, active: int) -> None:
        """Take or release connections until ``name`` has ``active`` of them."""
        m = self[name]
        while m.active < active:
            self.state.take(m)
        while m.active > active:
            self.state.release(m)

    def set_response_time(self, name: str, seconds: float | None) -> None:
        """Set the member's measured response time (as monitors and connects do)."""
        m = self[name]
        m.response_time = seconds
        self.scheduler.member_changed(m)

    def add(self, spec: MemberSpec | str) -> Member:
        return self.state.add_member(member(spec) if isinstance(spec, str) else spec)

    def remove(self, name: str) -> Member:
        return self.state.remove_member(name)

    # -- picking ---------------------------------------------------------

    def pick_member(self, client: str | RequestContext = "192.0.2.1",
                    exclude: Iterable[str] = ()) -> Member | None:
        ctx = client if isinstance(client, RequestContext) else context(client)
        excluded = [self.members[n] for n in exclude if n in self.members]
        return self.scheduler.pick(ctx, excluded)

    def pick(self, client: str | RequestContext = "192.0.2.1",
             exclude: Iterable[str] = ()) -> str | None:
        """The picked member's name, or None."""
        m = self.pick_member(client, exclude)
        return None if m is None else m.name

    def picks(self, n: int, client: str | RequestContext = "192.0.2.1",
              exclude: Iterable[str] = ()) -> list[str | None]:
        """``n`` picks in a row (connections are not taken: see
        :meth:`serve` for that)."""
        return [self.pick(client, exclude) for _ in range(n)]

    def serve(self, n: int, client: str = "192.0.2.1") -> list[str | None]:
        """``n`` picks, each taking a connection that stays open, as a busy
        site would; :meth:`set_connections` ends them."""
        out = []
        for _ in range(n):
            m = self.pick_member(client)
            if m is not None:
                self.state.take(m)
            out.append(None if m is None else m.name)
        return out


def verify_provides(interface, obj):
    """``verifyObject(interface, obj)``, failing with an AssertionError that
    names what is missing or has the wrong signature. Returns ``obj``."""
    try:
        verifyObject(interface, obj)
    except Invalid as e:
        raise AssertionError(f"{obj!r} does not provide {interface.__name__}: {e}") from None
    return obj


def builtin_factories(kind: str) -> dict[str, Callable]:
    """``{name: factory}`` of one kind (``"schedulers"``, ``"monitors"``,
    ``"persistence_methods"``, ...) as lbframe's built-in plugins register
    them, read from the registry now (so a new built-in is included)."""
    from lbframe.plugins import load_plugins

    registry = load_plugins(entry_points=False).registries[kind]
    return {name: registry.get(name).factory for name in registry.names()}


# -- monitors on a clock ---------------------------------------------------

class _RecordingPool:
    """What a MemberCheck reports to: the real pool, plus a record."""

    def __init__(self, pool: PoolState, results: list):
        self._pool = pool
        self._results = results

    def report_check(self, member, monitor, ok, reason, **kw):
        self._results.append((member.name, ok, reason, kw["now"]))
        self._pool.report_check(member, monitor, ok, reason, **kw)


class MonitorDriver:
    """lbframe's monitor runner (spread start, interval, timeout by cancel,
    rise/fall) running ``monitor`` against ``members`` on a clock you advance.

    ``reactor`` defaults to a ``MemoryReactorClock``: build your monitor with
    the same reactor so that its connections appear in ``reactor.tcpClients``
    and its timers run when you :meth:`advance`. ``results`` collects
    ``(member, ok, reason, time)`` for every check.
    """

    def __init__(self, monitor, *members: MemberSpec | str, spec: Monitor | None = None,
                 reactor=None, seed: int = 0):
        from lbframe.monitoring import MonitorRunner, as_monitor
        from lbframe.schedulers.round_robin import RoundRobin

        self.reactor = reactor if reactor is not None else MemoryReactorClock()
        self.spec = spec if spec is not None else Monitor("check", "plugin")
        # As the monitor registry does: one without idle() gets BaseMonitor's.
        self.monitor = monitor = as_monitor(monitor)
        self.pool = FakePool(RoundRobin, *(members or ("a",)))
        self.results: list[tuple[str, bool, str, float]] = []
        self.runner = MonitorRunner(self.reactor, random.Random(seed))
        recorder = _RecordingPool(self.pool.state, self.results)
        for m in self.pool.members.values():
            self.runner.add(recorder, m, self.spec, monitor)

    def start(self) -> "MonitorDriver":
        self.runner.startService()
        return self

    def stop(self):
        return self.runner.stopService()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, the clock jumping from one timer to the next
        so that every check starts, and every timeout fires, at its own time."""
        end = self.reactor.seconds() + seconds
        while True:
            now = self.reactor.seconds()
            due = [c.getTime() for c in self.reactor.getDelayedCalls()]
            step = min(due, default=end) - now
            if now + step >= end:
                self.reactor.advance(max(0.0, end - now))
                return
            self.reactor.advance(max(0.0, step))

    def state(self, name: str = "a") -> str:
        return self.pool[name].state

    def states(self) -> dict[str, str]:
        return {n: m.state for n, m in self.pool.members.items()}


# -- contract tests ----------------------------------------------------------

UNKNOWN_KEY = "no_such_key_for_the_contract"


class _OptionsContract:
    """A factory validates its own keys: an unknown one is an OptionError
    naming it, so ``lbframe check`` reports ``site.ini:LINE: [...] KEY: ...``."""

    def _verify(self, interface, obj):
        try:
            verify_provides(interface, obj)
        except AssertionError as e:
            self.fail(str(e))

    def _assert_rejects_unknown_key(self, call):
        try:
            call({UNKNOWN_KEY: "1"})
        except OptionError as e:
            self.assertEqual(e.key, UNKNOWN_KEY, "the OptionError must name the key")
            return
        self.fail(f"{self.factory!r} accepted an unknown key {UNKNOWN_KEY!r}: a typo in "
                  "site.ini would go unnoticed (raise lbframe.errors.OptionError(key, message))")


class SchedulerContract(_OptionsContract):
    """What every scheduler must do, whatever its algorithm. Mix into a
    trial (or unittest) test case and set ``factory``; ``options`` are the
    plugin's own keys for every pool built here.

    The checks: it provides :class:`~lbframe.interfaces.IScheduler`; an
    empty pool, or one with nobody usable, gives None; it never picks a
    member that is down, draining, disabled, at weight 0, at its
    ``maxconn`` or excluded; it picks *someone* while anybody is usable; it
    uses a ``backup`` only while no other member is usable; it keeps all of
    that through random state changes, connections, and members joining and
    leaving; and it rejects a key it does not know.
    """

    factory: Callable[..., Any] = None
    options: dict = {}
    #: random scenarios in the eligibility test; ``seed`` makes them repeatable.
    #: The test stops early after ``time_budget`` seconds (with at least 10
    #: scenarios done), so a scheduler whose changes are costly (source-hash
    #: rebuilds a table) does not make a suite slow.
    scenarios = 150
    seed = 20240601
    time_budget = 2.0

    def contract_pool(self, *members, **pool_keys) -> FakePool:
        return FakePool(self.factory, *members, options=self.options, **pool_keys)

    def test_contract_provides_ischeduler(self):
        self._verify(IScheduler, self.contract_pool(member("a")).scheduler)

    def test_contract_empty_pool_picks_nobody(self):
        pool = self.contract_pool()
        self.assertIsNone(pool.pick())
        self.assertIsNone(pool.pick("198.51.100.7", exclude=["x"]))

    def test_contract_nobody_usable_picks_nobody(self):
        pool = self.contract_pool(member("a"), member("b", maxconn=1), member("c"),
                                  member("d", backup=True), member("e"))
        pool.set_state("a", "down")
        pool.set_connections("b", 1)
        pool.set_state("c", "draining")
        pool.set_state("d", "disabled")
        pool.set_weight("e", 0)
        for i in range(20):
            self.assertIsNone(pool.pick(f"192.0.2.{i}"))
        self.assertEqual(pool.pick(exclude=["a"]), None)

    def test_contract_excluded_member_is_not_picked(self):
        pool = self.contract_pool(member("a"), member("b"))
        for i in range(20):
            self.assertEqual(pool.pick(f"192.0.2.{i}", exclude=["a"]), "b")
        self.assertIsNone(pool.pick(exclude=["a", "b"]))

    def test_contract_backup_only_when_no_other_member_is_usable(self):
        pool = self.contract_pool(member("a"), member("spare", backup=True))
        self.assertEqual({pool.pick(f"192.0.2.{i}") for i in range(20)}, {"a"})
        pool.set_state("a", "down")
        self.assertEqual({pool.pick(f"192.0.2.{i}") for i in range(20)}, {"spare"})
        pool.set_state("a", "up")
        self.assertEqual({pool.pick(f"192.0.2.{i}") for i in range(20)}, {"a"})

    def test_contract_members_join_and_leave(self):
        pool = self.contract_pool(member("a"), member("b"))
        pool.remove("a")
        self.assertEqual({pool.pick(f"192.0.2.{i}") for i in range(20)}, {"b"})
        pool.add(member("c"))
        pool.remove("b")
        self.assertEqual({pool.pick(f"192.0.2.{i}") for i in range(20)}, {"c"})
        pool.remove("c")
        self.assertIsNone(pool.pick())

    def test_contract_never_picks_an_unusable_member(self):
        rng = random.Random(self.seed)
        deadline = time.monotonic() + self.time_budget
        for scenario in range(self.scenarios):
            if scenario >= 10 and time.monotonic() > deadline:
                break
            specs = [member(f"m{i}", weight=rng.choice([0, 1, 1, 2, 3, 10]),
                            priority=rng.choice([1, 1, 2, 3]),
                            maxconn=rng.choice([None, None, 1, 2]),
                            backup=rng.random() < 0.2)
                     for i in range(rng.randrange(0, 9))]
            pool = self.contract_pool(*specs)
            names = [s.name for s in specs]
            for step in range(30):
                self._random_change(rng, pool, names)
                client = f"192.0.2.{rng.randrange(256)}"
                exclude = rng.sample(list(pool.members), k=min(len(pool.members), rng.choice([0, 0, 1])))
                usable = pool.usable(exclude)
                picked = pool.pick_member(client, exclude)
                where = f"scenario {scenario} step {step}: {self._describe(pool, exclude)}"
                if not usable:
                    self.assertIsNone(picked, f"picked {picked and picked.name} with nobody usable; {where}")
                    continue
                self.assertIsNotNone(picked, f"picked nobody while {usable} were usable; {where}")
                self.assertIn(picked.name, usable, f"picked an unusable member; {where}")
                if any(not pool[n].backup for n in usable):
                    self.assertFalse(picked.backup, f"picked backup {picked.name} while a "
                                                    f"primary was usable; {where}")
                if rng.random() < 0.5:
                    pool.state.take(picked)

    def _random_change(self, rng, pool: FakePool, names: list[str]) -> None:
        present = list(pool.members)
        action = rng.random()
        if present and action < 0.35:
            pool.set_state(rng.choice(present), rng.choice(STATES))
        elif present and action < 0.5:
            pool.set_weight(rng.choice(present), rng.choice([0, 1, 2, 5]))
        elif present and action < 0.65:
            m = pool[rng.choice(present)]
            if m.active:
                pool.state.release(m)
        elif present and action < 0.72:
            pool.set_response_time(rng.choice(present), rng.choice([None, 0.001, 0.05, 0.3]))
        elif present and action < 0.78:
            pool.remove(rng.choice(present))
        elif action < 0.85:
            missing = [n for n in names if n not in pool.members]
            if missing:
                pool.add(member(rng.choice(missing), backup=rng.random() < 0.2))

    @staticmethod
    def _describe(pool: FakePool, exclude) -> str:
        return "members " + ", ".join(
            f"{n}({m.state} w{m.weight} p{m.priority} {m.active}/{m.maxconn}"
            f"{' backup' if m.backup else ''})" for n, m in pool.members.items()
        ) + (f", excluding {exclude}" if exclude else "")

    def test_contract_rejects_unknown_key(self):
        self._assert_rejects_unknown_key(lambda options: self.factory(Pool("web", ()), options))


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class _Silent(protocol.Protocol):
    """Accepts and never answers; tells when it is gone."""

    def connectionMade(self):
        self.factory.connections.append(self)
        self.gone = defer.Deferred()

    def connectionLost(self, reason):
        self.factory.connections.remove(self)
        self.gone.callback(None)


class MonitorContract(_OptionsContract):
    """What every monitor must do. Mix into ``twisted.trial.unittest.TestCase``
    (these tests use the real reactor and 127.0.0.1) and set ``factory``.

    The checks: it provides :class:`~lbframe.interfaces.IMonitor`; a check
    of a member that refuses connections fires, within the monitor's
    timeout, with a :class:`~lbframe.monitoring.CheckResult` (never an
    errback; a failure carries a reason); a check cancelled midway (the
    runner's timeout) fires and leaves nothing behind (trial fails a test
    that leaves a connection, timer or process); ``idle()`` (the runner
    waits for it at stop) returns a Deferred that fires once what the
    checks started is gone; it rejects an unknown key.

    ``monitor_keys`` are :class:`lbframe.config.Monitor` fields for every
    check here (e.g. ``{"request_path": "/health"}``); ``refused_keys`` and
    ``silent_keys`` are added for those two checks (a script monitor, for
    instance, needs a ``command`` that fails and one that hangs).
    """

    factory: Callable[..., Any] = None
    options: dict = {}
    monitor_keys: dict = {}
    refused_keys: dict = {}
    silent_keys: dict = {}
    type_name = "plugin"

    def contract_monitor(self, reactor=None, **keys):
        from twisted.internet import reactor as default_reactor

        spec = Monitor("contract", self.type_name, **{"timeout": 3.0, **self.monitor_keys, **keys})
        return self.factory(spec, dict(self.options), reactor or default_reactor), spec

    def test_contract_provides_imonitor(self):
        monitor, _ = self.contract_monitor(MemoryReactorClock())
        if not callable(getattr(monitor, "idle", None)):
            self.fail(f"{monitor!r} has no idle(): lbframe waits for it when the site stops; "
                      "subclass lbframe.monitoring.BaseMonitor (nothing outlives a check) or "
                      "return a Deferred firing once what the checks started is gone")
        self._verify(IMonitor, monitor)

    def test_contract_idle_fires(self):
        """``idle()`` of a fresh monitor fires (nothing was started): a
        Deferred, not None, so the runner's stop can wait for it."""
        monitor, _ = self.contract_monitor(MemoryReactorClock())
        d = monitor.idle()
        self.assertIsInstance(d, defer.Deferred, "idle() must return a Deferred")
        fired = []
        d.addBoth(fired.append)
        self.assertEqual(fired, [None], "idle() of a monitor that ran no check must fire "
                                        "at once, with None")

    def test_contract_rejects_unknown_key(self):
        spec = Monitor("contract", self.type_name, **self.monitor_keys)
        self._assert_rejects_unknown_key(
            lambda options: self.factory(spec, options, MemoryReactorClock()))

    def _member(self, port: int) -> Member:
        pool = PoolState.build(Pool("contract", (member("m", port),)), _NoScheduler())
        return pool.members["m"]

    def _idle(self, monitor):
        return monitor.idle()

    @defer.inlineCallbacks
    def test_contract_refused_member_gives_a_result(self):
        from twisted.internet import reactor

        from lbframe.monitoring import CheckResult

        monitor, spec = self.contract_monitor(**self.refused_keys)
        d = defer.maybeDeferred(monitor.check, self._member(closed_port()))
        d.addTimeout(spec.timeout + 2, reactor)
        try:
            result = yield d
        except defer.TimeoutError:
            self.fail(f"the check did not fire within {spec.timeout + 2:g}s")
        except Exception as e:
            self.fail(f"the check errbacked ({e!r}): a failure must be "
                      "CheckResult(False, reason)")
        self.assertIsInstance(result, CheckResult)
        self.assertIsInstance(result.ok, bool)
        self.assertIsInstance(result.reason, str)
        if not result.ok:
            self.assertTrue(result.reason, "a failed check must say why")
        yield self._idle(monitor)

    @defer.inlineCallbacks
    def test_contract_cancelled_check_cleans_up(self):
        from twisted.internet import reactor, task

        factory = protocol.Factory.forProtocol(_Silent)
        factory.connections = []
        factory.noisy = False
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        monitor, _ = self.contract_monitor(**self.silent_keys)
        d = defer.maybeDeferred(monitor.check, self._member(port.getHost().port))
        outcome = []
        d.addBoth(outcome.append)
        # Give it a moment to get going (connect, send), then time it out.
        for _ in range(20):
            if outcome or factory.connections:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        d.cancel()
        # It must fire (the runner waits for that before the next check),
        # promptly, though not necessarily at once (a dialogue may close first).
        for _ in range(200):
            if outcome:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertTrue(outcome, "the check did not fire within 2s of being cancelled")
        # Leave nothing behind: close our side, and wait (bounded) for the
        # monitor's connections and processes to go away.
        gone = [c.gone for c in factory.connections]
        for c in list(factory.connections):
            c.transport.loseConnection()
        waiting = defer.DeferredList(gone + [self._idle(monitor)])
        waiting.addTimeout(10, reactor)
        yield waiting


class _NoScheduler(SchedulerBase):
    """A scheduler that never picks (members for monitor tests)."""

    def pick(self, context, exclude=()):
        return None


class PersistenceMethodContract(_OptionsContract):
    """What every persistence method must do. Set ``factory`` (called as
    ``factory(profile, options)``) and ``profile_keys`` (fields of
    :class:`lbframe.config.Persistence`, e.g. ``{"cookie": "SRV"}``).

    The checks: it provides :class:`~lbframe.interfaces.IPersistenceMethod`;
    ``key_for`` answers a request context without an L7 head (a TCP
    connection) with None or a hashable key, the same key for the same
    client; it rejects an unknown key.
    """

    factory: Callable[..., Any] = None
    options: dict = {}
    profile_keys: dict = {}
    method_name = "plugin"

    def contract_profile(self) -> Persistence:
        return Persistence("contract", self.method_name, **self.profile_keys)

    def test_contract_provides_ipersistencemethod(self):
        self._verify(IPersistenceMethod, self.factory(self.contract_profile(), dict(self.options)))

    def test_contract_key_for_a_connection(self):
        method = self.factory(self.contract_profile(), dict(self.options))
        first = method.key_for(context("192.0.2.10"))
        if first is not None:
            hash(first)
            self.assertEqual(method.key_for(context("192.0.2.10", port=40001)), first)

    def test_contract_rejects_unknown_key(self):
        """A ``[persistence X]`` section's own keys are shared by its method
        and its store, so a method either refuses a key it does not know or
        says which keys it reads in ``option_keys`` (and lbframe refuses the
        rest for it)."""
        keys = getattr(self.factory, "option_keys", None)
        if keys is None:
            self._assert_rejects_unknown_key(
                lambda options: self.factory(self.contract_profile(), options))
            return
        self.assertFalse(isinstance(keys, str), "option_keys is a sequence of key names")
        for key in keys:
            self.assertIsInstance(key, str)
            self.assertEqual(key, key.lower(), "keys are case-insensitive: write them lower-case")


class PersistenceStoreContract:
    """What every persistence store must do. Mix into
    ``twisted.trial.unittest.TestCase``; set ``factory`` (called as
    ``factory(url, profile, reactor)``) and ``url``.

    Answers may be values or Deferreds (a remote store's are). The checks:
    it provides :class:`~lbframe.interfaces.IPersistenceStore`; ``set`` then
    ``get`` gives the member name back, ``delete`` forgets it, an unknown key
    is None; and, when ``clock_expiry`` (the store times entries on the
    reactor's clock), an entry idle for longer than the profile's
    ``timeout`` is forgotten while a used one is kept.
    """

    factory: Callable[..., Any] = None
    url = "memory"
    profile_keys: dict = {}
    clock_expiry = True

    def contract_store(self, reactor=None):
        from twisted.internet.task import Clock

        profile = Persistence("contract", "source-ip", **{"timeout": 60.0, "store": self.url,
                                                          **self.profile_keys})
        return self.factory(self.url, profile, reactor if reactor is not None else Clock())

    def test_contract_provides_ipersistencestore(self):
        try:
            verify_provides(IPersistenceStore, self.contract_store())
        except AssertionError as e:
            self.fail(str(e))

    @defer.inlineCallbacks
    def test_contract_set_get_delete(self):
        store = self.contract_store()
        self.assertIsNone((yield defer.maybeDeferred(store.get, "contract:unknown")))
        yield defer.maybeDeferred(store.set, "contract:k", "a")
        self.assertEqual((yield defer.maybeDeferred(store.get, "contract:k")), "a")
        yield defer.maybeDeferred(store.set, "contract:k", "b")
        self.assertEqual((yield defer.maybeDeferred(store.get, "contract:k")), "b")
        yield defer.maybeDeferred(store.delete, "contract:k")
        self.assertIsNone((yield defer.maybeDeferred(store.get, "contract:k")))
        yield defer.maybeDeferred(store.delete, "contract:never-set")

    @defer.inlineCallbacks
    def test_contract_idle_entries_expire(self):
        if not self.clock_expiry:
            raise self.skipTest("this store does not expire entries on lbframe's clock")
        from twisted.internet.task import Clock

        clock = Clock()
        store = self.contract_store(clock)
        yield defer.maybeDeferred(store.set, "used", "a")
        yield defer.maybeDeferred(store.set, "idle", "b")
        for _ in range(3):
            clock.advance(40)
            self.assertEqual((yield defer.maybeDeferred(store.get, "used")), "a")
        self.assertIsNone((yield defer.maybeDeferred(store.get, "idle")))


# -- the listener contract (IListener) -------------------------------------

class _ContractMember(protocol.Protocol):
    """A member that answers a request (a complete HTTP head) with a tiny
    HTTP/1.0 response carrying its name, at once or, while its factory's
    ``hold`` is set, when the test says :meth:`_ContractMembers.release`."""

    def connectionMade(self):
        self.data = b""
        self.factory.connections.append(self)

    def dataReceived(self, data):
        self.data += data
        if b"\r\n\r\n" not in self.data:
            return
        if self.factory.hold:
            self.factory.held.append(self)
        else:
            self.answer()

    def answer(self):
        body = self.factory.name.encode()
        self.transport.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close"
                             b"\r\n\r\n%s" % (len(body), body))
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.factory.connections.remove(self)


class _ContractClient(protocol.Protocol):
    """A client of the listener: sends ``first`` once connected, collects
    what comes back, ``done`` fires with it when the connection ends."""

    def __init__(self, first: bytes):
        self.first = first
        self.data = b""
        self.done = defer.Deferred()

    def connectionMade(self):
        if self.first:
            self.transport.write(self.first)

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback(self.data)


class ListenerContract:
    """What every virtual server's listener must do
    (:class:`~lbframe.interfaces.IListener`), checked with real sockets on
    127.0.0.1. Mix into ``twisted.trial.unittest.TestCase`` and set
    ``protocol`` (the ``protocol =`` name) and, for a plugin, ``factory``
    (the :class:`~lbframe.interfaces.IProtocol` factory it registers);
    ``virtual_keys`` adds ``key = value`` lines to the virtual server.

    Members are tiny servers answering an HTTP/1.0 request with their name
    (:meth:`contract_member`); clients talk through the listener
    (:meth:`contract_client_endpoint`). A protocol that is not a TCP
    stream (``udp``) or wraps one (``ssl``: TLS to the member) overrides
    the ``contract_*`` methods that say how to listen, connect, occupy a
    port and see a refusal.
    """

    factory: Callable[..., Any] = None
    protocol = "contract"
    virtual_keys: dict = {}
    #: a whole request, and the start of one (a connection left waiting)
    contract_request = b"GET / HTTP/1.0\r\n\r\n"
    contract_partial = b"GET / HTTP/1.0\r\n"
    #: how long a paused listener is watched not serving, seconds
    contract_pause_watch = 0.3
    #: the longest any wait here lasts, seconds
    contract_timeout = 5.0

    # -- what a non-TCP protocol overrides ------------------------------------

    def contract_endpoint(self, port: int) -> str:
        """The ``listen`` endpoint string for ``port`` on 127.0.0.1."""
        return f"tcp:{port}:interface=127.0.0.1"

    def contract_member(self, factory):
        """Start a member server for ``factory`` on 127.0.0.1: its port
        (with ``getHost().port`` and ``stopListening()``)."""
        from twisted.internet import reactor

        return reactor.listenTCP(0, factory, interface="127.0.0.1")

    def contract_client_endpoint(self, port: int):
        """The client endpoint that reaches the listener on ``port``."""
        from twisted.internet import reactor

        return TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=self.contract_timeout)

    def contract_free_port(self) -> int:
        """A port nothing is bound to now, of the listener's socket type."""
        return closed_port()

    def contract_occupy(self):
        """A socket holding a port of the listener's kind: (socket, port)."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        return s, s.getsockname()[1]

    def contract_port_is_free(self, port: int) -> bool:
        """Whether a listener of this kind could bind ``port`` now."""
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
        finally:
            s.close()

    @defer.inlineCallbacks
    def contract_assert_refused(self, port: int):
        """Nothing listens on ``port`` any more: a connection is refused."""
        from twisted.internet.error import ConnectionRefusedError

        try:
            client = yield connectProtocol(self.contract_client_endpoint(port),
                                           _ContractClient(b""))
        except ConnectionRefusedError:
            return
        client.transport.abortConnection()
        self.fail(f"port {port} still accepts connections after stop_listening")

    # -- building blocks ----------------------------------------------------------

    def contract_members(self, *names: str) -> dict:
        """Start members ``names``: name → their factory (``hold``, ``held``,
        ``connections``, ``port``)."""
        members = {}
        for name in names:
            factory = protocol.Factory.forProtocol(_ContractMember)
            factory.noisy = False
            factory.name, factory.hold, factory.held, factory.connections = name, False, [], []
            factory.port = self.contract_member(factory)
            self.addCleanup(factory.port.stopListening)
            members[name] = factory
        return members

    def contract_runtime(self, members: dict, listen: str | None = None):
        """A site runtime with virtual server ``contract`` (this protocol,
        listening on ``listen``) balancing over ``members``."""
        from twisted.internet import reactor

        from lbframe.config import parse_site
        from lbframe.plugins import load_plugins
        from lbframe.service import build_runtime

        plugins = load_plugins(entry_points=False)
        if self.protocol not in plugins.protocols:
            plugins.protocols.add(self.protocol, self.factory)
        keys = "".join(f"{k} = {v}\n" for k, v in self.virtual_keys.items())
        lines = "".join(f"member {name} = 127.0.0.1:{f.port.getHost().port}\n"
                        for name, f in members.items())
        text = (f"[virtual contract]\nlisten = {listen or self.contract_endpoint(0)}\n"
                f"protocol = {self.protocol}\npool = p\n{keys}\n[pool p]\n{lines}")
        runtime = build_runtime(parse_site(text, "contract.ini"), plugins, reactor)
        self.addCleanup(lambda: [pool.stop() for pool in runtime.pools.values()])
        return runtime

    def contract_listener(self, members: dict, listen: str | None = None):
        """The listener of :meth:`contract_runtime`, started as the site
        service starts it (and stopped when the test ends)."""
        from twisted.internet import reactor

        runtime = self.contract_runtime(members, listen)
        listener = runtime.protocols["contract"].make_service(runtime.balancers["contract"],
                                                               reactor)
        listener.privilegedStartService()
        listener.startService()
        self.addCleanup(lambda: listener.stopService() if listener.running else None)
        return listener

    @defer.inlineCallbacks
    def contract_connect(self, port: int, first: bytes):
        client = yield connectProtocol(self.contract_client_endpoint(port), _ContractClient(first))
        self.addCleanup(lambda: client.transport.abortConnection()
                        if client.transport.connected else None)
        return client

    @defer.inlineCallbacks
    def contract_answer(self, client) -> Any:
        """The member name in what ``client`` got back before the end."""
        from twisted.internet import reactor

        data = yield client.done.addTimeout(self.contract_timeout, reactor)
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1."), f"not an HTTP response: {data[:200]!r}")
        return body.decode()

    @defer.inlineCallbacks
    def contract_fetch(self, port: int):
        client = yield self.contract_connect(port, self.contract_request)
        return (yield self.contract_answer(client))

    @defer.inlineCallbacks
    def contract_until(self, predicate, what: str):
        from twisted.internet import reactor, task

        deadline = reactor.seconds() + self.contract_timeout
        while not predicate():
            if reactor.seconds() > deadline:
                self.fail(f"not within {self.contract_timeout:g}s: {what}")
            yield task.deferLater(reactor, 0.005, lambda: None)

    @staticmethod
    def contract_port(listener) -> int:
        addresses = listener.addresses()
        assert addresses, "addresses() is empty while listening"
        return addresses[0].port

    # -- the promises ---------------------------------------------------------------

    def test_contract_provides_ilistener(self):
        from lbframe.interfaces import IListener

        runtime = self.contract_runtime(self.contract_members("a"))
        listener = runtime.protocols["contract"].make_service(runtime.balancers["contract"],
                                                               MemoryReactorClock())
        try:
            verify_provides(IListener, listener)
        except AssertionError as e:
            self.fail(str(e))

    @defer.inlineCallbacks
    def test_contract_listens_and_serves(self):
        listener = self.contract_listener(self.contract_members("a"))
        self.assertIsNone((yield listener.start_listening()))
        self.assertEqual(len(listener.addresses()), 1)
        port = self.contract_port(listener)
        self.assertEqual((yield self.contract_fetch(port)), "a")
        # Asking again gives the first outcome: no second bind.
        self.assertIsNone((yield listener.start_listening()))
        self.assertEqual(self.contract_port(listener), port)
        self.assertEqual((yield self.contract_fetch(port)), "a")

    @defer.inlineCallbacks
    def test_contract_endpoint_in_use(self):
        from lbframe.errors import ListenError

        busy, busy_port = self.contract_occupy()
        self.addCleanup(busy.close)
        free = self.contract_free_port()
        endpoint = self.contract_endpoint(busy_port)
        listener = self.contract_listener(
            self.contract_members("a"), f"{self.contract_endpoint(free)}, {endpoint}")
        first = yield self.assertFailure(listener.start_listening(), ListenError)
        self.assertEqual(first.virtual, "contract")
        self.assertEqual(first.endpoint, endpoint)
        self.assertIn("virtual contract: cannot listen on " + endpoint, str(first))
        self.assertTrue(first.why)
        self.assertEqual(listener.addresses(), [])
        self.assertTrue(self.contract_port_is_free(free),
                        "the endpoint that did bind was left bound")
        again = yield self.assertFailure(listener.start_listening(), ListenError)
        self.assertEqual(str(again), str(first))
        self.assertIsInstance(listener.stop_listening(), defer.Deferred)

    @defer.inlineCallbacks
    def test_contract_stop_listening(self):
        members = self.contract_members("a")
        listener = self.contract_listener(members)
        yield listener.start_listening()
        port = self.contract_port(listener)
        members["a"].hold = True
        established = yield self.contract_connect(port, self.contract_request)
        yield self.contract_until(lambda: members["a"].held, "the member got the request")
        stopped = listener.stop_listening()
        self.assertIsInstance(stopped, defer.Deferred)
        yield stopped
        self.assertEqual(listener.addresses(), [])
        yield self.contract_assert_refused(port)
        # Established connections go on.
        members["a"].held.pop().answer()
        self.assertEqual((yield self.contract_answer(established)), "a")
        self.assertIsInstance(listener.stop_listening(), defer.Deferred)

    @defer.inlineCallbacks
    def test_contract_counts_and_closes_connections(self):
        from twisted.internet import reactor

        listener = self.contract_listener(self.contract_members("a"))
        yield listener.start_listening()
        port = self.contract_port(listener)
        self.assertEqual(listener.connection_count(), 0)
        clients = []
        for _ in range(2):
            clients.append((yield self.contract_connect(port, self.contract_partial)))
        yield self.contract_until(lambda: listener.connection_count() == 2,
                                  "connection_count() says 2")
        listener.close_all("contract test")
        for client in clients:
            yield client.done.addTimeout(self.contract_timeout, reactor)
        yield self.contract_until(lambda: listener.connection_count() == 0,
                                  "connection_count() back to 0 after close_all")

    @defer.inlineCallbacks
    def test_contract_apply(self):
        members = self.contract_members("a", "b")
        listener = self.contract_listener({"a": members["a"]})
        yield listener.start_listening()
        port = self.contract_port(listener)
        members["a"].hold = True
        established = yield self.contract_connect(port, self.contract_request)
        yield self.contract_until(lambda: members["a"].held, "member a got the request")
        again = self.contract_runtime({"b": members["b"]})
        listener.apply(again.balancers["contract"], again.protocols["contract"])
        self.assertEqual(self.contract_port(listener), port, "apply() rebound the socket")
        self.assertEqual((yield self.contract_fetch(port)), "b")
        members["a"].held.pop().answer()
        self.assertEqual((yield self.contract_answer(established)), "a")

    @defer.inlineCallbacks
    def test_contract_pause_and_resume_accepting(self):
        from twisted.internet import reactor, task

        listener = self.contract_listener(self.contract_members("a"))
        yield listener.start_listening()
        port = self.contract_port(listener)
        listener.pause_accepting()
        answer = self.contract_fetch(port)
        got = []

        def seen(result):
            got.append(result)
            return result

        answer.addBoth(seen)
        yield task.deferLater(reactor, self.contract_pause_watch, lambda: None)
        self.assertEqual(got, [], "a paused listener served a connection")
        self.assertEqual(listener.connection_count(), 0)
        listener.resume_accepting()
        self.assertEqual((yield answer), "a")


__all__.append("ListenerContract")


# -- a tiny real site on 127.0.0.1 ---------------------------------------

class RunningSite:
    """A started site: ``service`` (the :class:`lbframe.service.SiteService`),
    ``runtime``, and :meth:`port` for the port a ``tcp:0`` listener got."""

    def __init__(self, service, path: str):
        self.service = service
        self.runtime = service.runtime
        self.path = path

    def port(self, virtual: str) -> int:
        svc = self.service.listeners[virtual]
        return svc.addresses()[0].port

    def pool(self, name: str) -> PoolState:
        return self.runtime.pools[name]

    def stop(self) -> defer.Deferred:
        return defer.maybeDeferred(self.service.stopService)


def start_site(config: str, directory: str, *, name: str = "site.ini", reactor=None,
               files: dict[str, str] | None = None) -> RunningSite:
    """Write ``config`` to ``directory/name`` (with any ``files``, e.g. a
    one-off plugin ``{"mine.py": source}``), load it exactly as ``twistd
    lbframe --config`` does (its ``plugins =``, installed entry points) and
    start it. Listen on ``tcp:0:interface=127.0.0.1`` and ask
    :meth:`RunningSite.port`. Stop it with ``self.addCleanup(site.stop)``.
    Raises ConfigError/PluginError as ``lbframe check`` would report them."""
    from lbframe.site import make_service

    if reactor is None:
        from twisted.internet import reactor
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    for fname, text in (files or {}).items():
        with open(os.path.join(directory, fname), "w") as f:
            f.write(text)
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(config)
    service = make_service(path, reactor)
    service.startService()
    return RunningSite(service, path)


class _Named(protocol.Protocol):
    """Answers any request with a tiny HTTP/1.0 response carrying its name."""

    def dataReceived(self, data):
        if b"\r\n\r\n" in data or b"\n\n" in data:
            body = self.factory.name.encode()
            self.transport.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                 % (len(body), body))
            self.transport.loseConnection()


class HTTPBackends:
    """Tiny HTTP servers on 127.0.0.1, each answering with its own name:
    ``backends = HTTPBackends.start("a", "b")``, then
    ``backends.members()`` gives the ``member`` lines of a pool."""

    def __init__(self, ports: dict[str, Any]):
        self.listening = ports

    @classmethod
    def start(cls, *names: str, reactor=None) -> "HTTPBackends":
        if reactor is None:
            from twisted.internet import reactor
        ports = {}
        for name in names:
            factory = protocol.Factory.forProtocol(_Named)
            factory.name = name
            factory.noisy = False
            ports[name] = reactor.listenTCP(0, factory, interface="127.0.0.1")
        return cls(ports)

    @property
    def ports(self) -> dict[str, int]:
        return {n: p.getHost().port for n, p in self.listening.items()}

    def members(self, **extra: str) -> str:
        """``member a = 127.0.0.1:PORT`` lines; ``extra`` adds words per
        member, e.g. ``members(a="weight=3")``."""
        return "\n".join(f"member {n} = 127.0.0.1:{p} {extra.get(n, '')}".rstrip()
                         for n, p in self.ports.items())

    def stop(self) -> defer.Deferred:
        return defer.gatherResults([defer.maybeDeferred(p.stopListening)
                                    for p in self.listening.values()])


class _Collect(protocol.Protocol):
    def __init__(self, request: bytes):
        self.request = request
        self.data = bytearray()
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback(bytes(self.data))


def fetch(port: int, request: bytes = b"GET / HTTP/1.0\r\n\r\n", *, host: str = "127.0.0.1",
          body_only: bool = True, timeout: float = 5.0, reactor=None) -> defer.Deferred:
    """Send ``request`` to ``host:port`` and fire with what came back before
    the connection closed (the HTTP body when ``body_only``), or fail after
    ``timeout`` seconds."""
    if reactor is None:
        from twisted.internet import reactor
    proto = _Collect(request)
    d = connectProtocol(TCP4ClientEndpoint(reactor, host, port, timeout=timeout), proto)
    d.addCallback(lambda _: proto.done)

    def body(data: bytes) -> bytes:
        return data.split(b"\r\n\r\n", 1)[1] if body_only and b"\r\n\r\n" in data else data

    def timed_out(result, seconds):
        if proto.transport is not None:
            proto.transport.abortConnection()
        raise defer.TimeoutError(f"no answer from {host}:{port} within {seconds:g}s")

    d.addCallback(body)
    d.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)
    return d
