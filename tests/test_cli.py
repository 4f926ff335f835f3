"""The ``lbframe`` command: check and plugins."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

from lbframe.cli import main

GOOD = """\
[virtual web]
listen = tcp:8080:interface=127.0.0.1
pool = web

[pool web]
scheduler = weighted
member a = 127.0.0.1:8081 weight=2
member b = 127.0.0.1:8082
"""


class CLITests(SynchronousTestCase):
    def write(self, text: str, name: str = "site.ini") -> str:
        d = self.mktemp()
        os.makedirs(d)
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def run_cli(self, *argv) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            rc = main(list(argv))
        return rc, out.getvalue(), err.getvalue()

    def test_check_good(self):
        path = self.write(GOOD)
        rc, out, err = self.run_cli("check", path)
        self.assertEqual((rc, err), (0, ""))
        self.assertEqual(out, f"{path}: OK (1 virtual servers, 1 pools, 2 members)\n")

    def test_check_unknown_scheduler_lists_known_names(self):
        path = self.write(GOOD.replace("weighted", "wieghted"))
        rc, out, err = self.run_cli("check", path)
        self.assertEqual(rc, 1)
        self.assertEqual(err, f"{path}:6: [pool web] scheduler: unknown scheduler 'wieghted' "
                              "(did you mean 'weighted'?); known: composite, least-connections, "
                              "priority, response-time, round-robin, source-hash, symmetric-hash, weighted\n")

    def test_check_plugin_option_error_has_line(self):
        path = self.write(GOOD.replace("scheduler = weighted", "scheduler = weighted\nspeed = 3"))
        rc, _, err = self.run_cli("check", path)
        self.assertEqual(rc, 1)
        self.assertEqual(err, f"{path}:7: [pool web] speed: unknown key 'speed'\n")

    def test_check_bad_endpoint(self):
        path = self.write(GOOD.replace("tcp:8080:interface", "tcp:8080:interfase"))
        rc, _, err = self.run_cli("check", path)
        self.assertEqual(rc, 1)
        self.assertTrue(err.startswith(f"{path}:2: [virtual web] listen: "), err)

    def test_plugins_lists_builtins_and_file_plugins(self):
        plugin = self.write("from lbframe import hookimpl\n"
                            "from lbframe.schedulers.round_robin import RoundRobin\n"
                            "@hookimpl\n"
                            "def lbframe_register_schedulers(registry):\n"
                            "    registry.add('mine', RoundRobin)\n", "mine.py")
        path = os.path.join(os.path.dirname(plugin), "site.ini")
        with open(path, "w") as f:
            f.write("[lbframe]\nplugins = mine.py\n" + GOOD.replace("weighted", "mine"))
        rc, out, err = self.run_cli("plugins", path)
        self.assertEqual((rc, err), (0, ""))
        self.assertIn("lbframe.schedulers.weighted (built-in, ", out)
        self.assertIn("    scheduler: weighted\n", out)
        self.assertIn(f"{plugin} (file)\n    scheduler: mine\n", out)

    def test_member_weight_range(self):
        # refused before asking the admin API: the range of member weight= in site.ini
        for value in ("257", "-1", "x", "\u0661"):  # the last: ARABIC-INDIC DIGIT ONE
            rc, out, err = self.run_cli("member", "web", "a", "weight", value,
                                        "--admin", "http://127.0.0.1:1")
            self.assertEqual((rc, out), (2, ""), value)
            self.assertEqual(err, "error: weight needs a whole number from 0 to 256, "
                                  "e.g. `weight 3`\n")

    def test_check_issue_13_values_one_line_each(self):
        """Each value that once crashed ``lbframe check`` with a traceback:
        one line on stderr, exit 1."""
        rule = ("[virtual web]\nlisten = tcp:8080:interface=127.0.0.1\npool = web\n"
                "protocol = http\nrules = r\n\n[rule r]\nmatch = {}\npool = web\n\n"
                "[pool web]\nmember a = 127.0.0.1:8081\n")
        cases = [
            (GOOD.replace("tcp:8080:interface=127.0.0.1", "a=b"), ":2: [virtual web] listen: "),
            (GOOD.replace("tcp:8080:interface=127.0.0.1", "tcp:"), ":2: [virtual web] listen: "),
            (GOOD.replace("tcp:8080:interface=127.0.0.1", "tcp:notaport"),
             ":2: [virtual web] listen: "),
            (GOOD.replace("tcp:8080:interface=127.0.0.1", "nosuch:8080"),
             ":2: [virtual web] listen: "),
            (GOOD.replace("tcp:8080:interface=127.0.0.1", "tcp:8080\\"),
             ":2: [virtual web] listen: "),
            (GOOD.replace("tcp:8080:interface=127.0.0.1", "\\"), ":2: [virtual web] listen: "),
            ("[lbframe]\nadmin = a=b\n" + GOOD, ":2: [lbframe] admin: "),
            (rule.format("path ~ a{99999999999}"), ":8: [rule r] match: "),
            (rule.format("path ~ " + "(" * 5000 + ")" * 5000), ":8: [rule r] match: "),
            (rule.format("path ~ \\"), ":8: [rule r] match: "),
            (GOOD + "\n[monitor m]\ntype = http\nexpect = a{99999999999}\n",
             ":12: [monitor m] expect: "),
        ]
        for text, where in cases:
            path = self.write(text)
            rc, out, err = self.run_cli("check", path)
            self.assertEqual((rc, out), (1, ""), text)
            self.assertTrue(err.startswith(path + where), err)
            self.assertEqual(err.count("\n"), 1, err)
            self.assertNotIn("Traceback", err)

    def test_check_accepts_localhost(self):
        path = self.write("[lbframe]\nadmin = tcp:8404:interface=localhost\n"
                          + GOOD.replace("interface=127.0.0.1", "interface=localhost"))
        rc, out, err = self.run_cli("check", path)
        self.assertEqual((rc, err), (0, ""))


class TwistdConfigErrorTests(SynchronousTestCase):
    """``twistd lbframe --config bad.ini`` says what ``lbframe check`` says,
    in one line, and exits 1 — no traceback, nothing started."""

    def test_same_line_as_check_and_status_1(self):
        import subprocess

        from tests.examples.test_quickstart import ROOT, TWISTD

        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        path = os.path.join(d, "bad.ini")
        with open(path, "w") as f:
            f.write(GOOD.replace("weighted", "wieghted"))
        err = io.StringIO()
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            self.assertEqual(main(["check", path]), 1)
        done = subprocess.run(TWISTD + ["-n", "--pidfile=", "lbframe", "--config", path],
                              cwd=d, env=dict(os.environ, PYTHONPATH=ROOT),
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        self.assertEqual(done.stderr, err.getvalue())
        self.assertNotIn("Traceback", done.stdout + done.stderr)


class CommandLineTests(SynchronousTestCase):
    """``--version``, help texts, and a reader that goes away (``| head``)."""

    def run_cli(self, *argv) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                rc = main(list(argv))
            except SystemExit as e:
                rc = e.code
        return rc, out.getvalue(), err.getvalue()

    def test_version(self):
        from lbframe import __version__

        self.assertEqual(self.run_cli("--version"), (0, f"lbframe {__version__}\n", ""))

    def test_help_texts_have_no_markup(self):
        for argv in ([], ["check"], ["plugins"], ["status"], ["member"]):
            rc, out, err = self.run_cli(*argv, "--help")
            self.assertEqual((rc, err), (0, ""), argv)
            self.assertTrue(out.startswith("usage: lbframe"), argv)
            for markup in ("``", ":mod:", ":class:", ":func:", "{check,plugins"):
                self.assertNotIn(markup, out, argv)
        rc, out, _ = self.run_cli("member", "--help")
        self.assertIn("a whole number from 0 to 256", " ".join(out.split()))

    def test_plugins_into_a_closed_pipe(self):
        """``lbframe plugins | head -1``: the reader has gone before lbframe
        writes; no traceback, the status a command killed by SIGPIPE has."""
        import subprocess
        import sys

        from tests.examples.test_quickstart import ROOT

        code = ("import os, sys\n"
                "r, w = os.pipe()\n"
                "os.close(r)\n"
                "os.dup2(w, 1)\n"
                "from lbframe.cli import main\n"
                "sys.exit(main(['plugins']))\n")
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                              text=True, timeout=60)
        self.assertEqual((done.returncode, done.stderr), (141, ""))

    def test_plugins_into_head(self):
        import subprocess
        import sys

        from tests.examples.test_quickstart import ROOT

        done = subprocess.run(f"'{sys.executable}' -m lbframe.cli plugins | head -1",
                              shell=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(done.stderr, "")
        self.assertTrue(done.stdout.startswith("lbframe "), done.stdout)
