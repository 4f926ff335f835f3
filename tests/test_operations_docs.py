"""docs/operations.md shows the systemd unit of examples/systemd as it is,
and that unit has what running lbframe for real needs."""

from __future__ import annotations

import configparser
import os

from twisted.trial.unittest import SynchronousTestCase

from tests.examples.test_quickstart import ROOT

UNIT = os.path.join(ROOT, "examples", "systemd", "lbframe.service")


class SystemdUnitTests(SynchronousTestCase):
    def unit(self) -> configparser.RawConfigParser:
        parser = configparser.RawConfigParser(strict=False, interpolation=None)
        parser.optionxform = str
        # systemd allows a key more than once (ExecReload): keep the last,
        # the repeats are checked on the text.
        parser.read(UNIT)
        return parser

    def test_docs_show_the_example_unit(self):
        with open(UNIT) as f:
            unit = f.read()
        with open(os.path.join(ROOT, "docs", "operations.md")) as f:
            docs = f.read()
        self.assertIn("```ini\n" + unit + "```", docs)

    def test_reload_is_a_sighup_after_a_check(self):
        with open(UNIT) as f:
            lines = [line.strip() for line in f if line.startswith("ExecReload=")]
        self.assertEqual(lines, ["ExecReload=/usr/local/bin/lbframe check /etc/lbframe/site.ini",
                                 "ExecReload=/bin/kill -HUP $MAINPID"])

    def test_privileges_are_capabilities(self):
        service = self.unit()["Service"]
        caps = set(service["AmbientCapabilities"].split())
        self.assertEqual(caps, {"CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"})
        self.assertEqual(set(service["CapabilityBoundingSet"].split()), caps)
        self.assertNotEqual(service["User"], "root")
        self.assertIn("-n --pidfile= lbframe", service["ExecStart"])


class InstallPathTests(SynchronousTestCase):
    """Every ``pip install ./PATH`` in the plugin guide and the plugins'
    READMEs names a package from the repository root, where they say to run it."""

    def test_paths_are_packages_from_the_root(self):
        import glob
        import re

        docs = (glob.glob(os.path.join(ROOT, "docs", "plugins", "*.md"))
                + glob.glob(os.path.join(ROOT, "plugins", "*", "README.md"))
                + [os.path.join(ROOT, "docs", "persistence.md")])
        seen = 0
        for doc in docs:
            with open(doc) as f:
                text = f.read()
            for path in re.findall(r"pip install\s+(\./[\w./-]+)", text):
                seen += 1
                package = os.path.join(ROOT, path)
                self.assertTrue(os.path.isfile(os.path.join(package, "pyproject.toml")),
                                f"{os.path.relpath(doc, ROOT)}: pip install {path}")
            self.assertNotIn("pip install lbframe", text.replace("pip install lbframe-", ""),
                             f"{doc}: lbframe is not on PyPI")
            self.assertNotIn("pip install lbframe-example-scheduler", text, doc)
        self.assertGreaterEqual(seen, 3)
