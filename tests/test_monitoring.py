"""lbframe.monitoring: the monitor lifecycle (idle at stop), BaseMonitor, and
monitors written before IMonitor.idle (adapted at build time)."""

from __future__ import annotations

import os
import random
import sys
import textwrap

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from lbframe.config.model import Monitor
from lbframe.interfaces import IMonitor
from lbframe.monitoring import (
    BaseMonitor, CheckResult, LegacyMonitor, MonitorRunner, adapting_factory, as_monitor)
from lbframe.monitors.tcp import TCPMonitor
from lbframe.plugins import load_plugins
from lbframe.schedulers.round_robin import RoundRobin
from tests.helpers import member_spec, pool_state


class Up(BaseMonitor):
    def __init__(self, *args):
        self.calls = 0

    def check(self, member):
        self.calls += 1
        return defer.succeed(CheckResult(True))


class Busy(Up):
    """idle() fires only when the test says so (a script monitor's
    processes still running)."""

    def __init__(self, *args):
        super().__init__()
        self.idles: list[defer.Deferred] = []

    def idle(self):
        d = defer.Deferred()
        self.idles.append(d)
        return d


@implementer(IMonitor)
class OldStyle:
    """Written for plugin API 1.0 before idle() was declared."""

    def __init__(self, spec=None, options=None, reactor=None):
        self.spec = spec
        self.probes = 0

    def check(self, member):
        self.probes += 1
        return defer.succeed(CheckResult(False, "old"))


class BaseMonitorTests(SynchronousTestCase):
    def test_idle_fires_at_once(self):
        self.assertIsNone(self.successResultOf(Up().idle()))

    def test_a_base_monitor_with_check_provides_imonitor(self):
        self.assertTrue(verifyObject(IMonitor, Up()))

    def test_every_builtin_monitor_is_a_base_monitor(self):
        plugins = load_plugins(entry_points=False)
        for name in plugins.monitors.names():
            factory = plugins.monitors.get(name).factory
            self.assertIsInstance(factory, type, name)  # the plugin's class, not wrapped
            self.assertTrue(issubclass(factory, BaseMonitor), name)


class RunnerStopTests(SynchronousTestCase):
    def setUp(self):
        self.pool = pool_state(RoundRobin(), member_spec("a"), member_spec("b"))
        self.runner = MonitorRunner(Clock(), random.Random(1))
        self.spec = Monitor("m", "busy")

    def test_stop_waits_for_every_monitor_once(self):
        """One monitor object serves both members: its idle() is asked once,
        and stopping waits for it; a second monitor is waited for too."""
        busy, other = Busy(), Busy()
        for m in self.pool.members.values():
            self.runner.add(self.pool, m, self.spec, busy)
        self.runner.add(self.pool, self.pool.members["a"], Monitor("n", "busy"), other)
        self.runner.startService()
        stopped = self.runner.stopService()
        self.assertEqual((len(busy.idles), len(other.idles)), (1, 1))
        self.assertNoResult(stopped)
        busy.idles[0].callback(None)
        self.assertNoResult(stopped)
        other.idles[0].callback(None)
        self.assertIsNone(self.successResultOf(stopped))

    def test_a_failing_idle_does_not_stop_the_stop(self):
        busy = Busy()
        self.runner.add(self.pool, self.pool.members["a"], self.spec, busy)
        self.runner.startService()
        stopped = self.runner.stopService()
        busy.idles[0].errback(RuntimeError("gone wrong"))
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stop_without_checks(self):
        self.runner.startService()
        self.assertIsNone(self.runner.stopService())


class LegacyMonitorTests(SynchronousTestCase):
    def test_adapted_monitor_probes_through_the_old_one(self):
        old = OldStyle()
        monitor = as_monitor(old)
        self.assertIsInstance(monitor, LegacyMonitor)
        self.assertTrue(verifyObject(IMonitor, monitor))
        result = self.successResultOf(monitor.check(None))
        self.assertEqual((result, old.probes), (CheckResult(False, "old"), 1))
        self.assertIsNone(self.successResultOf(monitor.idle()))
        self.assertIs(monitor.spec, old.spec)  # other attributes are the old one's

    def test_a_monitor_with_idle_is_itself(self):
        m = Up()
        self.assertIs(as_monitor(m), m)

    def test_no_check_is_an_error_naming_what(self):
        e = self.assertRaises(TypeError, as_monitor, object(), "monitor type 'x' of plugin 'p'")
        self.assertIn("monitor type 'x' of plugin 'p' built <object object", str(e))
        self.assertIn("no check(member) method", str(e))

    def test_wrong_signature_is_an_error(self):
        class TwoArgs(BaseMonitor):
            def check(self, member, extra):
                pass

        e = self.assertRaises(TypeError, as_monitor, TwoArgs(), "monitor type 'two'")
        self.assertIn("does not provide IMonitor", str(e))

    def test_wrong_signature_of_a_legacy_monitor_is_an_error(self):
        class NoMember:
            def check(self):
                pass

        e = self.assertRaises(TypeError, as_monitor, NoMember(), "monitor type 'none'")
        self.assertIn("monitor type 'none' built", str(e))
        self.assertIn("does not provide IMonitor", str(e))

    def test_factory_of_a_class_with_idle_is_kept(self):
        self.assertIs(adapting_factory(TCPMonitor, "tcp"), TCPMonitor)

    def test_factory_of_a_legacy_class_adapts_and_warns_once(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        factory = adapting_factory(OldStyle, "monitor type 'old' of plugin 'p'")
        self.assertIsNot(factory, OldStyle)
        first, second = factory(None, {}, None), factory(None, {}, None)
        self.assertIsInstance(first, LegacyMonitor)
        self.assertIsInstance(second, LegacyMonitor)
        warnings = [e for e in events if "has no idle()" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["what"], "monitor type 'old' of plugin 'p'")

    def test_stop_of_a_site_with_a_legacy_plugin_monitor(self):
        """A plugin registering an old-style monitor (a function factory):
        the registry builds a LegacyMonitor, and the runner stops it."""
        d = self.mktemp()
        os.makedirs(d)
        path = os.path.join(d, "oldmon.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent("""
                from twisted.internet import defer
                from lbframe import hookimpl
                from lbframe.monitoring import CheckResult

                class Ping:
                    def __init__(self, spec, options, reactor):
                        pass

                    def check(self, member):
                        return defer.succeed(CheckResult(True))

                @hookimpl
                def lbframe_register_monitors(registry):
                    registry.add("old-ping", lambda spec, options, reactor:
                                 Ping(spec, options, reactor))
            """))
        self.addCleanup(sys.modules.pop, "lbframe_plugin_oldmon", None)
        plugins = load_plugins([path], entry_points=False)
        monitor = plugins.monitors.get("old-ping").factory(Monitor("m", "old-ping"), {},
                                                            MemoryReactorClock())
        self.assertIsInstance(monitor, LegacyMonitor)
        pool = pool_state(RoundRobin(), member_spec("a"))
        runner = MonitorRunner(Clock(), random.Random(1))
        runner.add(pool, pool.members["a"], Monitor("m", "old-ping"), monitor)
        runner.startService()
        self.assertIsNone(self.successResultOf(runner.stopService()))
