"""lbframe.testing, the plugin authors' kit: its contract tests run against
every built-in (read from the registry when this module is imported, so a
new built-in is covered without an edit here), catch broken plugins, and
its fakes, clock-driven monitor runner and tiny real site work."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from twisted.internet import defer, reactor
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from lbframe.config.model import Monitor
from lbframe.errors import ConfigError, PluginError
from lbframe.interfaces import IMonitor, IScheduler
from lbframe.monitoring import CheckResult
from lbframe.schedulers import SchedulerBase, usable
from lbframe.schedulers.round_robin import RoundRobin
from lbframe.testing import (FakePool, HTTPBackends, MonitorContract, MonitorDriver,
                             PersistenceMethodContract, PersistenceStoreContract,
                             SchedulerContract, builtin_factories, fetch, member, start_site,
                             verify_provides)

#: Monitor fields some built-in monitor types need for the contract's two checks
MONITOR_KEYS = {
    "script": {"refused_keys": {"command": "exit 1"}, "silent_keys": {"command": "sleep 30"},
               "monitor_keys": {"command": "exit 1"}},
    "dns": {"options": {"name": "www.example.test"}},
}
#: Persistence profile fields some built-in methods need
METHOD_KEYS: dict[str, dict] = {}


def _classname(kind: str, name: str) -> str:
    return "Builtin" + kind.title() + "".join(p.title() for p in name.replace("_", "-").split("-"))


def _contract_classes():
    """A test case per built-in plugin object and kind."""
    out = {}
    for name, factory in builtin_factories("schedulers").items():
        out[_classname("Scheduler", name)] = type(
            _classname("Scheduler", name), (SchedulerContract, SynchronousTestCase),
            {"factory": staticmethod(factory)})
    for name, factory in builtin_factories("monitors").items():
        out[_classname("Monitor", name)] = type(
            _classname("Monitor", name), (MonitorContract, TestCase),
            {"factory": staticmethod(factory), "type_name": name, **MONITOR_KEYS.get(name, {})})
    for name, factory in builtin_factories("persistence_methods").items():
        out[_classname("Method", name)] = type(
            _classname("Method", name), (PersistenceMethodContract, SynchronousTestCase),
            {"factory": staticmethod(factory), "method_name": name,
             "profile_keys": METHOD_KEYS.get(name, {})})
    for name, factory in builtin_factories("persistence_stores").items():
        out[_classname("Store", name)] = type(
            _classname("Store", name), (PersistenceStoreContract, TestCase),
            {"factory": staticmethod(factory), "url": name})
    return out


globals().update(_contract_classes())


class CoverageTests(SynchronousTestCase):
    def test_every_builtin_has_contract_tests(self):
        """The generated cases cover every built-in scheduler, monitor,
        persistence method and store in the registry."""
        for kind, prefix in (("schedulers", "Scheduler"), ("monitors", "Monitor"),
                             ("persistence_methods", "Method"), ("persistence_stores", "Store")):
            for name in builtin_factories(kind):
                self.assertIn(_classname(prefix, name), globals(), f"{kind} {name}")
        self.assertIn("BuiltinSchedulerWeighted", globals())
        self.assertIn("BuiltinMonitorHttp", globals())
        self.assertIn("BuiltinStoreMemory", globals())


# -- the contract catches broken plugins ------------------------------------

@implementer(IScheduler)
class IgnoresEligibility(SchedulerBase):
    """Broken: picks the first member, up or not."""

    def pick(self, context, exclude=()):
        return self.members[0] if self.members else None


@implementer(IScheduler)
class IgnoresBackup(SchedulerBase):
    """Broken: a backup is as good as anyone."""

    def pick(self, context, exclude=()):
        for m in reversed(self.members):
            if usable(m, exclude):
                return m
        return None


@implementer(IScheduler)
class ForgetsRemovals(RoundRobin):
    """Broken: keeps members that left."""

    def member_removed(self, member):
        pass


@implementer(IScheduler)
class AcceptsAnything(RoundRobin):
    def __init__(self, pool=None, options=None):
        super().__init__(pool, None)


class NoPick(SchedulerBase):
    """Broken: no pick at all, no interface declared."""


class ContractCatchesBrokenSchedulers(SynchronousTestCase):
    def run_contract(self, factory, test: str):
        case = type("Case", (SchedulerContract, SynchronousTestCase),
                    {"factory": staticmethod(factory), "scenarios": 40})(test)
        result = _Result()
        case.run(result)
        return result

    def assertFails(self, factory, test: str, words: str):
        result = self.run_contract(factory, test)
        self.assertEqual(len(result.failures), 1, f"{factory.__name__} passed {test}")
        self.assertIn(words, result.failures[0])

    def test_catches_picking_an_unusable_member(self):
        self.assertFails(IgnoresEligibility, "test_contract_nobody_usable_picks_nobody", "is not None")
        self.assertFails(IgnoresEligibility, "test_contract_never_picks_an_unusable_member",
                         "picked")

    def test_catches_backup_misuse(self):
        self.assertFails(IgnoresBackup, "test_contract_backup_only_when_no_other_member_is_usable",
                         "spare")

    def test_catches_stale_members(self):
        result = self.run_contract(ForgetsRemovals, "test_contract_members_join_and_leave")
        self.assertEqual(len(result.failures) + len(result.errors), 1)

    def test_catches_unchecked_keys(self):
        self.assertFails(AcceptsAnything, "test_contract_rejects_unknown_key",
                         "accepted an unknown key")

    def test_catches_missing_interface(self):
        self.assertFails(NoPick, "test_contract_provides_ischeduler",
                         "does not provide IScheduler")

    def test_a_good_scheduler_passes_everything(self):
        case_cls = type("Case", (SchedulerContract, SynchronousTestCase),
                        {"factory": staticmethod(RoundRobin), "scenarios": 40})
        names = [n for n in dir(case_cls) if n.startswith("test_contract_")]
        self.assertGreaterEqual(len(names), 7)
        for name in names:
            result = _Result()
            case_cls(name).run(result)
            self.assertEqual((result.failures, result.errors), ([], []), name)


class _Result:
    """A minimal TestResult collecting failure texts."""

    def __init__(self):
        self.failures, self.errors, self.successes = [], [], 0

    def startTest(self, test):
        pass

    def stopTest(self, test):
        pass

    def addSuccess(self, test):
        self.successes += 1

    def _text(self, err):
        if isinstance(err, Failure):
            return err.getErrorMessage()
        return str(err[1])

    def addFailure(self, test, err):
        self.failures.append(self._text(err))

    def addError(self, test, err):
        self.errors.append(self._text(err))

    def addSkip(self, test, reason):
        pass

    def addExpectedFailure(self, *a):
        pass

    def addUnexpectedSuccess(self, *a):
        pass

    def addCleanup(self, *a):
        pass


@implementer(IMonitor)
class ErrbackingMonitor:
    """Broken: lets a connect failure errback instead of returning a result."""

    def __init__(self, spec, options, reactor):
        self.reactor = reactor

    def check(self, member):
        from twisted.internet.endpoints import TCP4ClientEndpoint
        from twisted.internet.protocol import Factory, Protocol
        ep = TCP4ClientEndpoint(self.reactor, member.address.host, member.address.port)
        return ep.connect(Factory.forProtocol(Protocol)).addCallback(
            lambda p: (p.transport.loseConnection(), CheckResult(True))[1])


class ContractCatchesBrokenMonitors(TestCase):
    @defer.inlineCallbacks
    def test_catches_an_errback(self):
        case = type("Case", (MonitorContract, TestCase),
                    {"factory": staticmethod(ErrbackingMonitor)})(
            "test_contract_refused_member_gives_a_result")
        result = _Result()
        yield case.run(result)
        self.assertEqual(len(result.failures), 1)
        self.assertIn("errbacked", result.failures[0])

    def test_catches_a_monitor_without_idle(self):
        """A monitor written before IMonitor.idle fails the contract with
        what to do (lbframe still runs it, adapted; the kit says fix it)."""
        case = type("Case", (MonitorContract, TestCase),
                    {"factory": staticmethod(ErrbackingMonitor)})(
            "test_contract_provides_imonitor")
        result = _Result()
        case.run(result)
        self.assertEqual(len(result.failures), 1)
        self.assertIn("has no idle()", result.failures[0])
        self.assertIn("lbframe.monitoring.BaseMonitor", result.failures[0])

    def test_catches_an_idle_that_is_not_a_deferred(self):
        class NoneIdle(ErrbackingMonitor):
            def idle(self):
                return None

        case = type("Case", (MonitorContract, TestCase),
                    {"factory": staticmethod(NoneIdle)})("test_contract_idle_fires")
        result = _Result()
        case.run(result)
        self.assertEqual(len(result.failures), 1)
        self.assertIn("idle() must return a Deferred", result.failures[0])


# -- the fakes --------------------------------------------------------------

class FakePoolTests(SynchronousTestCase):
    def test_state_changes_reach_the_scheduler(self):
        pool = FakePool(RoundRobin, "a", "b", "c")
        pool.set_state("b", "down")
        self.assertEqual(pool.picks(4), ["a", "c", "a", "c"])
        self.assertEqual(pool["b"].state, "down")
        pool.set_state("b", "draining")
        self.assertEqual((pool["b"].state, pool["b"].eligible), ("draining", False))
        pool.set_state("b", "up")
        self.assertEqual(sorted(pool.picks(3)), ["a", "b", "c"])
        self.assertRaises(ValueError, pool.set_state, "a", "sleepy")

    def test_weight_connections_and_exclude(self):
        from lbframe.schedulers.least_connections import LeastConnections
        pool = FakePool(LeastConnections, member("a", maxconn=2), member("b"))
        pool.set_connections("b", 3)
        self.assertEqual(pool.pick(), "a")
        self.assertEqual(pool.pick(exclude=["a"]), "b")
        pool.set_connections("a", 2)
        self.assertEqual(pool.usable(), ["b"])
        self.assertEqual(pool.pick(), "b")
        pool.set_connections("b", 0)
        pool.set_connections("a", 0)
        self.assertEqual((pool["a"].active, pool["b"].active), (0, 0))
        pool.set_weight("a", 0)
        self.assertEqual(pool.picks(3), ["b", "b", "b"])
        self.assertEqual(pool.serve(2), ["b", "b"])
        self.assertEqual(pool["b"].active, 2)

    def test_response_time(self):
        from lbframe.schedulers.response_time import ResponseTime
        pool = FakePool(ResponseTime, "a", "b")
        pool.set_response_time("a", 0.5)
        pool.set_response_time("b", 0.01)
        self.assertEqual(pool.pick(), "b")

    def test_verify_provides_names_the_problem(self):
        e = self.assertRaises(AssertionError, verify_provides, IScheduler, NoPick())
        self.assertIn("does not provide IScheduler", str(e))
        self.assertIn("pick", str(e))


class MonitorDriverTests(SynchronousTestCase):
    def test_rise_and_fall_on_a_memory_reactor(self):
        """A tcp monitor on a MemoryReactorClock: connections the test fails
        or completes, rise and fall applied by lbframe's runner."""
        from twisted.internet.error import ConnectionRefusedError

        from lbframe.monitors.tcp import TCPMonitor
        clock = MemoryReactorClock()
        spec = Monitor("tcp", "tcp", interval=1.0, timeout=0.5, fall=2, rise=2)
        driver = MonitorDriver(TCPMonitor(spec, {}, clock), "a", spec=spec, reactor=clock).start()

        def next_attempt():
            seen = len(clock.tcpClients)
            while len(clock.tcpClients) == seen:
                driver.advance(0.05)
            return clock.tcpClients[-1][2]

        for _ in range(2):
            next_attempt().clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(driver.state("a"), "down")
        self.assertEqual([r[1:3] for r in driver.results],
                         [(False, "connect refused")] * 2)
        self.assertEqual(driver.pool["a"].down_reason, "tcp: connect refused (2/2)")
        # A check that never connects times out (the runner cancels it)...
        next_attempt()
        driver.advance(0.5)
        self.assertEqual(driver.results[-1][1:3], (False, "timeout after 0.5s"))
        # ... and two that connect bring the member back up (rise = 2).
        for _ in range(2):
            next_attempt().buildProtocol(None).makeConnection(StringTransport())
        self.assertEqual(driver.state("a"), "up")
        self.assertEqual(driver.results[-1][1:3], (True, ""))
        driver.stop()

    def test_checks_run_every_interval(self):
        @implementer(IMonitor)
        class Always:
            def __init__(self, ok):
                self.ok = ok

            def check(self, member):
                return defer.succeed(CheckResult(self.ok, "" if self.ok else "no"))

        spec = Monitor("m", "always", interval=2.0, fall=3, rise=1)
        driver = MonitorDriver(Always(False), "a", "b", spec=spec).start()
        driver.advance(7.0)
        self.assertEqual(driver.states(), {"a": "down", "b": "down"})
        # The first check of each falls somewhere in the first interval.
        self.assertEqual(len(driver.results), 6 + sum(r[3] < 1.0 for r in driver.results))
        per_member = [t for n, ok, r, t in driver.results if n == "a"]
        self.assertEqual([round(b - a, 6) for a, b in zip(per_member, per_member[1:])],
                         [2.0] * (len(per_member) - 1))
        driver.stop()


# -- the tiny real site -----------------------------------------------------

TWO_FIRST = '''
from lbframe import hookimpl
from lbframe.schedulers.round_robin import RoundRobin

LBFRAME_PLUGIN_API = (1, 0)

@hookimpl
def lbframe_register_schedulers(registry):
    registry.add("first-then-rr", RoundRobin)
'''


class StartSiteTests(TestCase):
    @defer.inlineCallbacks
    def test_site_with_a_one_off_plugin_serves(self):
        backends = HTTPBackends.start("a", "b", "c")
        self.addCleanup(backends.stop)
        site = start_site(f"""
[lbframe]
plugins = mine.py

[virtual web]
listen = tcp:0:interface=127.0.0.1
pool = web

[pool web]
scheduler = first-then-rr
{backends.members()}
""", self.mktemp(), files={"mine.py": TWO_FIRST})
        self.addCleanup(site.stop)
        port = site.port("web")
        answers = []
        for _ in range(6):
            answers.append((yield fetch(port)))
        self.assertEqual(answers, [b"a", b"b", b"c"] * 2)
        self.assertEqual(site.pool("web").members["a"].total, 2)
        self.assertEqual(site.runtime.plugins.schedulers.get("first-then-rr").plugin,
                         os.path.join(os.path.dirname(site.path), "mine.py"))

    def test_config_errors_are_raised(self):
        e = self.assertRaises(ConfigError, start_site,
                              "[virtual web]\nlisten = tcp:0:interface=127.0.0.1\npool = web\n"
                              "[pool web]\nscheduler = nope\nmember a = 127.0.0.1:1\n",
                              self.mktemp())
        self.assertIn("[pool web] scheduler: unknown scheduler 'nope'", str(e))
        e = self.assertRaises(ConfigError, start_site, "[lbframe]\nplugins = missing.py\n",
                              self.mktemp())
        self.assertIn("site.ini:2: [lbframe] plugins: cannot read plugin file", str(e))
        e = self.assertRaises(PluginError, start_site, "[lbframe]\nplugins = mine.py\n"
                              "[virtual web]\nlisten = tcp:0:interface=127.0.0.1\npool = web\n"
                              "[pool web]\nmember a = 127.0.0.1:1\n",
                              self.mktemp(), files={"mine.py": TWO_FIRST.replace(
                                  "first-then-rr", "round-robin")})
        self.assertIn("scheduler 'round-robin' is registered twice", str(e))

    @defer.inlineCallbacks
    def test_fetch_times_out(self):
        from twisted.internet.protocol import Factory, Protocol
        factory = Factory.forProtocol(Protocol)
        factory.noisy = False
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        with self.assertRaises(defer.TimeoutError):
            yield fetch(listening.getHost().port, timeout=0.2)


# -- the example plugin's own tests, from the checkout -------------------------
# (tests/test_packaging.py installs it into a fresh venv and runs them there,
# through its entry point.)

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "plugins", "lbframe-example-scheduler", "src")


def _example_tests():
    """The example's test module: installed, or from the checkout and then
    off sys.path again, so that nothing there (a build's .egg-info) looks
    like an installed entry point to the other tests of this process."""
    if importlib.util.find_spec("lbframe_two_choices") is not None:
        return importlib.import_module("lbframe_two_choices.test.test_two_choices")
    sys.path.append(EXAMPLE)
    try:
        return importlib.import_module("lbframe_two_choices.test.test_two_choices")
    finally:
        sys.path.remove(EXAMPLE)


_example = _example_tests()


# Subclasses, so that these tests are named (and found by trial's workers
# under -j) as tests.test_testing.Example*.
class ExampleTwoChoicesContract(_example.TwoChoicesContract):
    pass


class ExampleOneChoiceContract(_example.OneChoiceContract):
    pass


class ExampleTwoChoicesTests(_example.TwoChoicesTests):
    pass


class ExampleCheckTests(_example.CheckTests):
    pass


class ExampleSiteTests(_example.SiteTests):
    pass
