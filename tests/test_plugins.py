"""The plugin manager: built-ins, files, modules, entry points, errors."""

from __future__ import annotations

import os
import sys
import textwrap

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import lbframe
import lbframe.plugins
from lbframe.config.model import Monitor, Pool, Redundancy, Virtual
from lbframe.errors import PluginError
from lbframe.interfaces import IMonitor, IProtocol, IRedundancyDriver, IScheduler
from lbframe.plugins import Registry, load_plugins
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
                          "round-robin", "source-hash", "symmetric-hash", "weighted"])
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
            options = {"dns": {"name": "example.com"}}.get(name, {})  # its required key
            mon = plugins.monitors.get(name).factory(Monitor("m", name, command="true"), options,
                                                     reactor)
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

    def test_package_folder_plugin(self):
        """``plugins =`` may name a plugin package's folder (a plugin used
        from a checkout): imported under the package's own name, and not
        registered twice when that module is loaded already."""
        folder = os.path.join(self.mktemp(), "lbframe_test_pkgplugin")
        os.makedirs(folder)
        with open(os.path.join(folder, "__init__.py"), "w") as f:
            f.write(SCHEDULER_PLUGIN.format(name="pkgfirst"))
        self.addCleanup(sys.modules.pop, "lbframe_test_pkgplugin", None)
        rel = os.path.relpath(folder, os.path.dirname(os.path.dirname(folder)))
        plugins = load_plugins([rel], base_dir=os.path.dirname(os.path.dirname(folder)),
                               entry_points=False)
        self.assertIn("pkgfirst", plugins.schedulers)
        self.assertIn("lbframe_test_pkgplugin", sys.modules)
        again = load_plugins([folder, "lbframe_test_pkgplugin"], entry_points=False)
        self.assertIn("pkgfirst", again.schedulers)  # once: no duplicate-name error

    def test_package_folder_without_init(self):
        folder = os.path.join(self.mktemp(), "not_a_package")
        os.makedirs(folder)
        e = self.assertRaises(PluginError, load_plugins, [folder], entry_points=False)
        self.assertIn("is not a Python package", str(e))

    def test_module_plugin(self):
        path = self.write("lbframe_test_modplugin.py", SCHEDULER_PLUGIN.format(name="modfirst"))
        sys.path.insert(0, os.path.dirname(path))
        self.addCleanup(sys.path.remove, os.path.dirname(path))
        self.addCleanup(sys.modules.pop, "lbframe_test_modplugin", None)
        plugins = load_plugins(["lbframe_test_modplugin"], entry_points=False)
        self.assertIn("modfirst", plugins.schedulers)

    def test_duplicate_name_is_an_error(self):
        """A plugin taking a built-in's name is told whose name it is."""
        path = self.write("dup.py", SCHEDULER_PLUGIN.format(name="weighted"))
        e = self.assertRaises(PluginError, load_plugins, [path], entry_points=False)
        self.assertEqual(str(e), f"scheduler 'weighted' is registered twice: by the built-in "
                                 f"plugin 'lbframe.schedulers.weighted' and by plugin '{path}' "
                                 f"(file); give yours another name")

    def test_duplicate_between_third_parties(self):
        one = self.write("one.py", SCHEDULER_PLUGIN.format(name="mine"))
        two = self.write("two.py", SCHEDULER_PLUGIN.format(name="mine"))
        e = self.assertRaises(PluginError, load_plugins, [one, two], entry_points=False)
        self.assertEqual(str(e), f"scheduler 'mine' is registered twice: by plugin '{one}' "
                                 f"(file) and by plugin '{two}' (file); remove one, or keep one "
                                 f"out with LBFRAME_DISABLE_PLUGINS")

    def test_registration_hook_failing_names_the_plugin(self):
        path = self.write("boom.py", """
            from lbframe import hookimpl

            @hookimpl
            def lbframe_register_monitors(registry):
                registry.add("boom", None)
        """)
        e = self.assertRaises(PluginError, load_plugins, [path], entry_points=False)
        self.assertIn(f"plugin '{path}' registered monitor type 'boom' with a factory that is "
                      f"not callable", str(e))

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
        plugins = load_plugins()
        self.assertNotIn("from-ep", plugins.schedulers)
        self.assertEqual([(i.origin, i.disabled) for i in plugins.infos if i.name == "epplugin"],
                         [("entry point", True)])

    def add_entry_point(self, dist: str, name: str, source: str) -> None:
        site = self.mktemp()
        module = f"lbframe_test_{name}"
        os.makedirs(os.path.join(site, f"{dist}-1.0.dist-info"))
        with open(os.path.join(site, f"{module}.py"), "w") as f:
            f.write(textwrap.dedent(source))
        with open(os.path.join(site, f"{dist}-1.0.dist-info", "METADATA"), "w") as f:
            f.write(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        with open(os.path.join(site, f"{dist}-1.0.dist-info", "entry_points.txt"), "w") as f:
            f.write(f"[lbframe]\n{name} = {module}\n")
        sys.path.insert(0, site)
        self.addCleanup(sys.path.remove, site)
        self.addCleanup(sys.modules.pop, module, None)

    def test_disabled_broken_entry_point_is_never_imported(self):
        """A third-party plugin that breaks on import stops every site until
        LBFRAME_DISABLE_PLUGINS keeps it out, and the error says so."""
        self.add_entry_point("brokenplugin", "broken", "raise RuntimeError('oops')\n")
        e = self.assertRaises(PluginError, load_plugins)
        self.assertIn("entry point plugin 'broken' (lbframe_test_broken) failed to load: "
                      "RuntimeError('oops')", str(e))
        self.assertIn("LBFRAME_DISABLE_PLUGINS=broken", str(e))
        os.environ["LBFRAME_DISABLE_PLUGINS"] = "other, broken"
        self.addCleanup(os.environ.pop, "LBFRAME_DISABLE_PLUGINS", None)
        plugins = load_plugins()
        self.assertNotIn("lbframe_test_broken", sys.modules)
        self.assertIn("round-robin", plugins.schedulers)

    def test_disable_file_plugin_and_builtin(self):
        path = self.write("first.py", SCHEDULER_PLUGIN.format(name="first"))
        self.addCleanup(os.environ.pop, "LBFRAME_DISABLE_PLUGINS", None)
        for spelling in ("first", "first.py", path):
            os.environ["LBFRAME_DISABLE_PLUGINS"] = spelling
            plugins = load_plugins([path], entry_points=False)
            self.assertNotIn("first", plugins.schedulers, spelling)
        # A built-in can be kept out too, e.g. to replace it with your own.
        os.environ["LBFRAME_DISABLE_PLUGINS"] = "lbframe.schedulers.weighted"
        dup = self.write("dup.py", SCHEDULER_PLUGIN.format(name="weighted"))
        plugins = load_plugins([dup], entry_points=False)
        self.assertEqual(plugins.schedulers.get("weighted").plugin, dup)


class PluginAPITests(SynchronousTestCase):
    write = PluginTests.write

    def plugin(self, api: str) -> str:
        return self.write("versioned.py", f"LBFRAME_PLUGIN_API = {api}\n" +
                          SCHEDULER_PLUGIN.format(name="versioned"))

    def test_compatible_versions_load(self):
        for api in ("(1, 0)", "'1.0'", "(1,)", "[1, 0]"):
            plugins = load_plugins([self.plugin(api)], entry_points=False)
            self.assertIn("versioned", plugins.schedulers)
            self.assertEqual([i.api for i in plugins.infos if i.origin == "file"], [(1, 0)])

    def test_undeclared_is_loaded_and_says_so(self):
        path = self.write("plain.py", SCHEDULER_PLUGIN.format(name="plain"))
        plugins = load_plugins([path], entry_points=False)
        self.assertEqual([i.api for i in plugins.infos if i.name == path], [None])

    def test_newer_minor_is_refused(self):
        path = self.plugin("(1, 7)")
        e = self.assertRaises(PluginError, load_plugins, [path], entry_points=False)
        self.assertEqual(str(e), f"plugin '{path}' needs lbframe plugin API 1.7, but lbframe "
                                 f"{lbframe.__version__} provides plugin API 1.1: upgrade lbframe")

    def test_other_major_is_refused(self):
        path = self.plugin("(2, 0)")
        e = self.assertRaises(PluginError, load_plugins, [path], entry_points=False)
        self.assertEqual(str(e), f"plugin '{path}' needs lbframe plugin API 2.0, but lbframe "
                                 f"{lbframe.__version__} provides plugin API 1.1: it was written "
                                 f"for a newer lbframe")
        path = self.plugin("(0, 9)")
        e = self.assertRaises(PluginError, load_plugins, [path], entry_points=False)
        self.assertIn("needs lbframe plugin API 0.9, but lbframe", str(e))
        self.assertIn("written for an older lbframe; the plugin needs updating", str(e))

    def test_older_minor_of_this_major_loads(self):
        self.patch(lbframe.plugins, "PLUGIN_API", (1, 3))
        plugins = load_plugins([self.plugin("(1, 1)")], entry_points=False)
        self.assertIn("versioned", plugins.schedulers)

    def test_nonsense_is_refused(self):
        path = self.plugin("'one'")
        e = self.assertRaises(PluginError, load_plugins, [path], entry_points=False)
        self.assertIn("declares LBFRAME_PLUGIN_API = 'one'; write it as a (major, minor) "
                      "tuple, e.g. (1, 1)", str(e))

    def test_refused_at_start_by_twistd(self):
        """``twistd lbframe`` stops with the message (SystemExit: one line,
        status 1), before anything listens."""
        from lbframe.tap import makeService
        path = self.plugin("(1, 9)")
        site = os.path.join(os.path.dirname(path), "site.ini")
        with open(site, "w") as f:
            f.write("[lbframe]\nplugins = versioned.py\n[virtual web]\n"
                    "listen = tcp:0:interface=127.0.0.1\npool = web\n"
                    "[pool web]\nmember a = 127.0.0.1:1\n")
        e = self.assertRaises(SystemExit, makeService, {"config": site})
        self.assertIn("needs lbframe plugin API 1.9", str(e.code))


OBSERVER_PLUGIN = """
from lbframe import hookimpl

seen = []

@hookimpl(hookwrapper=True)
def lbframe_register_schedulers(registry):
    before = set(registry.names())
    outcome = yield
    seen.append(("old-style", registry.plugin, sorted(set(registry.names()) - before),
                 outcome.exception))


class NewStyle:
    @hookimpl(wrapper=True)
    def lbframe_register_schedulers(self, registry):
        try:
            return (yield)
        finally:
            seen.append(("new-style", registry.plugin))


def lbframe_plugin_loaded():
    pass
"""

RAISING_PLUGIN = """
from lbframe import hookimpl

@hookimpl
def lbframe_register_protocols(registry):
    raise ValueError("no such thing\\nsecond line")
"""


class RegistrationThroughPluggyTests(SynchronousTestCase):
    """Registration hooks are called through pluggy, one call per plugin
    with that plugin's registry: wrappers see every registration and whose
    it is; errors name the plugin, the hook and the error in one line."""

    write = PluginTests.write

    def load(self, *texts: tuple[str, str]):
        paths = [self.write(name, text) for name, text in texts]
        for path in paths:
            module = "lbframe_plugin_" + os.path.splitext(os.path.basename(path))[0]
            self.addCleanup(sys.modules.pop, module, None)
        return paths, load_plugins(paths, entry_points=False)

    def test_hookwrappers_see_each_plugins_registration(self):
        (observer, first), plugins = self.load(("observer.py", OBSERVER_PLUGIN),
                                               ("first.py", SCHEDULER_PLUGIN.format(name="first")))
        seen = sys.modules["lbframe_plugin_observer"].seen
        old_style = {plugin: (names, error) for kind, plugin, *rest in seen
                     if kind == "old-style" for names, error in [rest]}
        self.assertEqual(old_style["lbframe.schedulers.weighted"], (["weighted"], None))
        self.assertEqual(old_style[first], (["first"], None))
        # Every plugin that registers schedulers, and no other, once each.
        self.assertEqual(sorted(old_style), sorted(plugins.schedulers.by_plugin()))
        self.assertEqual(len(old_style), len([s for s in seen if s[0] == "old-style"]))
        self.assertEqual(plugins.schedulers.get("first").plugin, first)

    def test_new_style_wrapper_on_a_plugin_object(self):
        """A plugin that is an object (pm.register(instance)) with a
        ``wrapper=True`` implementation sees the registrations too."""
        import pluggy

        path = self.write("observer2.py", OBSERVER_PLUGIN)
        self.addCleanup(sys.modules.pop, "lbframe_plugin_observer2", None)
        module = lbframe.plugins._load_file_plugin(path)
        pm = pluggy.PluginManager(lbframe.PROJECT)
        pm.add_hookspecs(lbframe.hookspecs)
        import lbframe.schedulers.weighted as weighted
        pm.register(weighted, name="weighted")
        pm.register(module.NewStyle(), name="observer")
        registry = Registry("schedulers")
        lbframe.plugins._fill(pm, registry)
        self.assertEqual(module.seen, [("new-style", "weighted")])
        self.assertEqual(registry.by_plugin(), {"weighted": ["weighted"]})

    def test_a_raising_hook_is_one_line_naming_plugin_hook_and_error(self):
        path = self.write("raising.py", RAISING_PLUGIN)
        self.addCleanup(sys.modules.pop, "lbframe_plugin_raising", None)
        e = self.assertRaises(PluginError, load_plugins, [path], entry_points=False)
        self.assertEqual(str(e), f"plugin '{path}' failed in lbframe_register_protocols: "
                                 "ValueError('no such thing\\nsecond line')")
        self.assertIsInstance(e.__cause__, ValueError)

    def test_a_raising_wrapper_is_named_as_the_culprit(self):
        path = self.write("vetoes.py", """
            from lbframe import hookimpl

            @hookimpl(hookwrapper=True)
            def lbframe_register_schedulers(registry):
                if registry.plugin.endswith("weighted"):
                    raise RuntimeError("weighted is not allowed here")
                yield
        """)
        self.addCleanup(sys.modules.pop, "lbframe_plugin_vetoes", None)
        e = self.assertRaises(PluginError, load_plugins, [path], entry_points=False)
        self.assertEqual(str(e), f"plugin '{path}' failed in its wrapper of "
                                 "lbframe_register_schedulers (around plugin "
                                 "'lbframe.schedulers.weighted'): "
                                 "RuntimeError('weighted is not allowed here')")

    def test_registry_is_the_plugins_own(self):
        path = self.write("whoami.py", """
            from lbframe import hookimpl
            from lbframe.schedulers.round_robin import RoundRobin

            @hookimpl
            def lbframe_register_schedulers(registry):
                assert "weighted" in registry  # what others added is visible
                registry.add(registry.plugin.rsplit("/", 1)[-1], RoundRobin)
        """)
        self.addCleanup(sys.modules.pop, "lbframe_plugin_whoami", None)
        plugins = load_plugins([path], entry_points=False)
        self.assertEqual(plugins.schedulers.get("whoami.py").plugin, path)

    def test_specname_on_a_registration_hook_is_refused(self):
        path = self.write("renamed.py", """
            from lbframe import hookimpl
            from lbframe.schedulers.round_robin import RoundRobin

            @hookimpl(specname="lbframe_register_schedulers")
            def register(registry):
                registry.add("renamed", RoundRobin)
        """)
        self.addCleanup(sys.modules.pop, "lbframe_plugin_renamed", None)
        e = self.assertRaises(PluginError, load_plugins, [path], entry_points=False)
        self.assertEqual(str(e), f"plugin '{path}' implements lbframe_register_schedulers "
                                 "under another name (specname); lbframe calls registration "
                                 "hooks one plugin at a time: name the function "
                                 "lbframe_register_schedulers")

    def test_check_and_twistd_print_the_one_line(self):
        """``lbframe check`` prints it alone on stderr (status 1);
        ``twistd lbframe`` stops with the same line (no traceback)."""
        from lbframe.tap import makeService

        path = self.write("raising.py", RAISING_PLUGIN)
        self.addCleanup(sys.modules.pop, "lbframe_plugin_raising", None)
        site = os.path.join(os.path.dirname(path), "site.ini")
        with open(site, "w") as f:
            f.write("[lbframe]\nplugins = raising.py\n[virtual web]\n"
                    "listen = tcp:0:interface=127.0.0.1\npool = web\n"
                    "[pool web]\nmember a = 127.0.0.1:1\n")
        line = (f"plugin '{os.path.abspath(path)}' failed in lbframe_register_protocols: "
                "ValueError('no such thing\\nsecond line')")
        rc, out, err = PluginsCommandTests.run_cli(self, "check", site)
        self.assertEqual((rc, out, err), (1, "", line + "\n"))
        e = self.assertRaises(SystemExit, makeService, {"config": site})
        self.assertEqual(e.code, line)


class TraceHooksTests(SynchronousTestCase):
    def test_trace_logs_registrations_and_hook_calls(self):
        from twisted.logger import capturedLogs, formatEvent

        os.environ["LBFRAME_TRACE_HOOKS"] = "1"
        self.addCleanup(os.environ.pop, "LBFRAME_TRACE_HOOKS", None)
        with capturedLogs() as events:
            plugins = load_plugins(entry_points=False)
            plugins.hook.lbframe_member_state_changed(pool="web", member="a", old="up",
                                                      new="down", reason="test")
        lines = [formatEvent(e) for e in events]
        self.assertIn("plugin lbframe.schedulers.weighted registered scheduler 'weighted'", lines)
        # Registration is a hook call like any other: the trace sees it.
        self.assertIn("hook lbframe_register_schedulers(registry=<registry of schedulers for "
                      "plugin 'lbframe.schedulers.weighted'>) -> lbframe.schedulers.weighted",
                      lines)
        self.assertIn("hook lbframe_member_state_changed(pool='web', member='a', old='up', "
                      "new='down', reason='test') -> no plugin", lines)
        self.assertIn("hook lbframe_member_state_changed returned []", lines)

    def test_no_trace_by_default(self):
        from twisted.logger import capturedLogs

        os.environ.pop("LBFRAME_TRACE_HOOKS", None)
        with capturedLogs() as events:
            load_plugins(entry_points=False).hook.lbframe_site_started(site=None)
        self.assertEqual([e for e in events if e.get("log_namespace") == "lbframe.plugins"], [])


class MessageTests(SynchronousTestCase):
    def test_unknown_and_not_yet_available_names(self):
        plugins = load_plugins(entry_points=False)
        self.assertEqual(plugins.schedulers.unknown_message("wieghted"),
                         "unknown scheduler 'wieghted' (did you mean 'weighted'?); "
                         "known: composite, least-connections, priority, response-time, "
                         "round-robin, source-hash, symmetric-hash, weighted")
        # A contract name that no loaded plugin provides (an empty registry,
        # so that the test does not depend on what is built in today).
        self.assertEqual(Registry("persistence_methods").unknown_message("source-ip"),
                         "persistence method 'source-ip' is not available in this version of "
                         "lbframe (no loaded plugin provides it); available: none")


class PluginsCommandTests(SynchronousTestCase):
    write = PluginTests.write

    def run_cli(self, *argv):
        import io
        from contextlib import redirect_stderr, redirect_stdout

        from lbframe.cli import main
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            rc = main(list(argv))
        return rc, out.getvalue(), err.getvalue()

    def site(self, *plugins: str) -> str:
        path = os.path.join(os.path.dirname(plugins[0]), "site.ini")
        with open(path, "w") as f:
            f.write("[lbframe]\nplugins = " + " ".join(os.path.basename(p) for p in plugins) +
                    "\n[virtual web]\nlisten = tcp:0:interface=127.0.0.1\npool = web\n"
                    "[pool web]\nmember a = 127.0.0.1:1\n")
        return path

    def test_lists_origin_version_api_and_registrations(self):
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        mine = os.path.join(d, "mine.py")
        with open(mine, "w") as f:
            f.write("__version__ = '2.3'\nLBFRAME_PLUGIN_API = (1, 0)\n" +
                    SCHEDULER_PLUGIN.format(name="mine"))
        rc, out, err = self.run_cli("plugins", self.site(mine))
        self.assertEqual((rc, err), (0, ""))
        self.assertTrue(out.startswith(f"lbframe {lbframe.__version__}, plugin API 1.1\n"), out)
        self.assertIn("lbframe.monitors.http (built-in, 0.1.0)\n    monitor type: http, https\n", out)
        self.assertIn(f"{mine} (file, 2.3, plugin API 1.0)\n    scheduler: mine\n", out)

    def test_disabled_and_refused_plugins(self):
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        broken = os.path.join(d, "broken.py")
        with open(broken, "w") as f:
            f.write("LBFRAME_PLUGIN_API = (3, 0)\n")
        path = self.site(broken)
        rc, out, err = self.run_cli("plugins", path)
        self.assertEqual(rc, 1)
        self.assertIn(f"error: plugin '{broken}' needs lbframe plugin API 3.0", err)
        os.environ["LBFRAME_DISABLE_PLUGINS"] = "broken"
        self.addCleanup(os.environ.pop, "LBFRAME_DISABLE_PLUGINS", None)
        rc, out, err = self.run_cli("plugins", path)
        self.assertEqual((rc, err), (0, ""))
        self.assertIn(f"{broken} (file, disabled by LBFRAME_DISABLE_PLUGINS)\n", out)
