"""A built wheel, installed into a fresh venv, gives twistd its ``lbframe`` subcommand;
the example third-party plugin installed beside it works through its entry point."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "plugins", "lbframe-example-scheduler")


class WheelTests(SynchronousTestCase):
    def test_wheel_installs_the_twistd_dropin(self):
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", work, ROOT], check=True, cwd=work, timeout=300)
        wheel, = glob.glob(os.path.join(work, "lbframe-*.whl"))
        names = zipfile.ZipFile(wheel).namelist()
        self.assertIn("twisted/plugins/lbframe_dropin.py", names)
        # An __init__.py there would shadow Twisted's own plugins package.
        self.assertNotIn("twisted/plugins/__init__.py", names)

        # A fresh venv, as a user's: lbframe and its dependencies from the wheel's
        # requirements (pip's cache or the package index), nothing from this checkout.
        venv = os.path.join(work, "venv")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
        py = os.path.join(venv, "bin", "python")
        # The example third-party plugin goes into the same venv (one is slow
        # enough), from its own wheel, in the same pip run.
        # (Built from a copy: a build leaves an .egg-info with the entry point
        # beside the sources, which would make the checkout's tests load it.)
        example = shutil.copytree(EXAMPLE, os.path.join(work, "example"),
                                  ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", work, example], check=True, cwd=work, timeout=300)
        plugin_wheel, = glob.glob(os.path.join(work, "lbframe_example_scheduler-*.whl"))
        subprocess.run([py, "-m", "pip", "install", "-q", wheel, plugin_wheel], check=True,
                       timeout=600, cwd=work)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        where = subprocess.run(
            [py, "-c", "import lbframe, twisted.plugins.lbframe_dropin as d; "
                       "print(lbframe.__file__); print(d.__file__)"],
            cwd=work, env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(where.returncode, 0, where.stderr[-3000:])
        for path in where.stdout.split():
            self.assertTrue(path.startswith(venv), f"{path} is not from the wheel")
        help_text = subprocess.run([py, "-c", "from twisted.scripts.twistd import run; run()",
                                    "--help"], cwd=work,
                                   env=env, capture_output=True, text=True, timeout=60).stdout
        self.assertRegex(help_text, r"\n\s+lbframe\s+lbframe load balancer")
        self.assertTrue(os.path.exists(os.path.join(venv, "bin", "lbframe")))

        self.check_example_plugin(work, venv, env)

    def check_example_plugin(self, work: str, venv: str, env: dict) -> None:
        """plugins/lbframe-example-scheduler, installed from its own wheel, is
        loaded through its entry point and passes its own tests there,
        including a real site on 127.0.0.1 using it."""
        py = os.path.join(venv, "bin", "python")
        listing = subprocess.run([os.path.join(venv, "bin", "lbframe"), "plugins"], cwd=work,
                                 env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(listing.returncode, 0, listing.stderr)
        self.assertIn("two_choices (entry point, 1.0.0, plugin API 1.0)\n"
                      "    scheduler: two-choices\n", listing.stdout)
        where = subprocess.run([py, "-c", "import lbframe_two_choices as m; print(m.__file__)"],
                               cwd=work, env=env, capture_output=True, text=True, check=True,
                               timeout=60).stdout.strip()
        self.assertTrue(where.startswith(venv), f"{where} is not the installed plugin")
        tests = subprocess.run([py, "-m", "twisted.trial", "lbframe_two_choices"], cwd=work,
                               env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(tests.returncode, 0, tests.stdout[-3000:] + tests.stderr[-2000:])
        # Every test ran (none skipped), the real site among them.
        self.assertRegex(tests.stdout, r"test_serves_through_a_real_site \.\.\. +\[OK\]")
        self.assertRegex(tests.stdout, r"\nPASSED \(successes=\d+\)\n")
