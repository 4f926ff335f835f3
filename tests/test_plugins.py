"""The plugin manager: built-ins, files, modules, entry points, errors."""

from __future__ import annotations

import os
import sys
import textwrap

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from lbframe.config.model import Monitor, Pool, Redundancy, Virtual
from lbframe.errors import PluginError
from lbframe.interfaces import IMonitor, IProtocol, IRedundancyDriver, IScheduler
from lbframe.plugins import load_plugins
from tests.helpers import member_spec

SCHEDULER_PLUGIN = '''
from lbframe import hookimpl
from lbframe.schedulers.round_robin import RoundRobin

class First(RoundRobin):
    def pick(self, context, exclude=()):
        return self.members[0]

@hookimpl
def lbframe_register_schedulers(registry):
    registry.add("{name}", First)
'''


class PluginTests(SynchronousTestCase):
    def write(self, name: str, text: str) -> str:
        d = self.mktemp()
        os.makedirs(d)
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path

    def test_builtins_registered(self):
        plugins = load_plugins(entry_points=False)
        self.assertEqual(plugins.schedulers.names(),
                         ["composite", "least-connections", "priority", "response-time",
                          "round-robin", "source-hash", "weighted"])
        self.assertIn("tcp", plugins.protocols)
        self.assertIn("tcp", plugins.monitors)
        self.assertEqual(plugins.schedulers.get("weighted").plugin, "lbframe.schedulers.weighted")

    def test_builtin_objects_provide_interfaces(self):
        plugins = load_plugins(entry_points=False)
        reactor = MemoryReactorClock()
        pool = Pool("web", (member_spec("a"),))
        for name in plugins.schedulers.names():
            self.assertTrue(verifyObject(IScheduler, plugins.schedulers.get(name).factory(pool, {})))
        for name in plugins.monitors.names():
            mon = plugins.monitors.get(name).factory(Monitor("m", name, command="true"), {}, reactor)
            self.assertTrue(verifyObject(IMonitor, mon))
        virtual = Virtual("v", ("tcp:0:interface=127.0.0.1",), "web")
        self.assertTrue(verifyObject(IProtocol, plugins.protocols.get("tcp").factory(virtual, {}, None)))
        driver = plugins.redundancy_drivers.get("none").factory(Redundancy(), {}, reactor)
        self.assertTrue(verifyObject(IRedundancyDriver, driver))

    def test_file_plugin(self):
        path = self.write("first.py", SCHEDULER_PLUGIN.format(name="first"))
        plugins = load_plugins([os.path.basename(path)], base_dir=os.path.dirname(path),
                               entry_points=False)
        self.assertIn("first", plugins.schedulers)
        self.assertEqual(plugins.schedulers.get("first").plugin, path)
        self.assertEqual([i.origin for i in plugins.infos if i.name == path], ["file"])

    def test_module_plugin(self):
        path = self.write("lbframe_test_modplugin.py", SCHEDULER_PLUGIN.format(name="modfirst"))
        sys.path.insert(0, os.path.dirname(path))
        self.addCleanup(sys.path.remove, os.path.dirname(path))
        self.addCleanup(sys.modules.pop, "lbframe_test_modplugin", None)
        plugins = load_plugins(["lbframe_test_modplugin"], entry_points=False)
        self.assertIn("modfirst", plugins.schedulers)

    def test_duplicate_name_is_an_error(self):
        path = self.write("dup.py", SCHEDULER_PLUGIN.format(name="weighted"))
        e = self.assertRaises(PluginError, load_plugins, [path], entry_points=False)
        self.assertEqual(str(e), f"scheduler 'weighted' is registered twice: by plugin "
                                 f"'lbframe.schedulers.weighted' and by plugin '{path}'")

    def test_misspelt_hook_is_an_error(self):
        path = self.write("typo.py", """
            from lbframe import hookimpl

            @hookimpl
            def lbframe_register_schedulerz(registry):
                pass
        """)
        e = self.assertRaises(PluginError, load_plugins, [path], entry_points=False)
        self.assertIn("lbframe_register_schedulerz", str(e))

    def test_missing_file(self):
        e = self.assertRaises(PluginError, load_plugins, ["nope.py"], base_dir="/nonexistent",
                              entry_points=False)
        self.assertEqual(str(e), "plugin file '/nonexistent/nope.py' does not exist")

    def test_entry_point_plugin(self):
        """A plugin installed with an ``lbframe`` entry point is loaded."""
        site = self.mktemp()
        os.makedirs(os.path.join(site, "epplugin-1.2.dist-info"))
        with open(os.path.join(site, "lbframe_test_epplugin.py"), "w") as f:
            f.write(SCHEDULER_PLUGIN.format(name="from-ep"))
        with open(os.path.join(site, "epplugin-1.2.dist-info", "METADATA"), "w") as f:
            f.write("Metadata-Version: 2.1\nName: epplugin\nVersion: 1.2\n")
        with open(os.path.join(site, "epplugin-1.2.dist-info", "entry_points.txt"), "w") as f:
            f.write("[lbframe]\nepplugin = lbframe_test_epplugin\n")
        sys.path.insert(0, site)
        self.addCleanup(sys.path.remove, site)
        self.addCleanup(sys.modules.pop, "lbframe_test_epplugin", None)
        plugins = load_plugins()
        self.assertIn("from-ep", plugins.schedulers)
        info = [i for i in plugins.infos if i.name == "epplugin"]
        self.assertEqual([(i.origin, i.version) for i in info], [("entry point", "1.2")])

        os.environ["LBFRAME_DISABLE_PLUGINS"] = "epplugin"
        self.addCleanup(os.environ.pop, "LBFRAME_DISABLE_PLUGINS", None)
        self.assertNotIn("from-ep", load_plugins().schedulers)


class MessageTests(SynchronousTestCase):
    def test_unknown_and_not_yet_available_names(self):
        plugins = load_plugins(entry_points=False)
        self.assertEqual(plugins.schedulers.unknown_message("wieghted"),
                         "unknown scheduler 'wieghted' (did you mean 'weighted'?); "
                         "known: composite, least-connections, priority, response-time, "
                         "round-robin, source-hash, weighted")
        self.assertEqual(plugins.persistence_methods.unknown_message("source-ip"),
                         "persistence method 'source-ip' is not available in this version of "
                         "lbframe (no loaded plugin provides it); available: none")
