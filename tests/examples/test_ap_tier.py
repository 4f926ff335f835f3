"""The AP-tier example (F10b), run as its README says, on free ports:
source-ip starves the recovered AP server, cookie and URL persistence do not."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "ap-tier")
PORTS = (8080, 8081, 8082, 8404, 9070, 9080, 9081, 9082, 9083, 9090)


class APTierExampleTests(SynchronousTestCase):
    def test_demo(self):
        with open(os.path.join(EXAMPLE, "site.ini")) as f:
            text = f.read()
        for old in PORTS:
            text = re.sub(rf"(?<=:){old}\b", str(free_port()), text)
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        config = os.path.join(folder, "site.ini")
        with open(config, "w") as f:
            f.write(text)
        env = dict(os.environ, PYTHONPATH=ROOT)
        done = subprocess.run([sys.executable, os.path.join(EXAMPLE, "demo.py"), config,
                               "--json"], capture_output=True, env=env, timeout=240)
        self.assertEqual(done.returncode, 0, done.stderr.decode()[-3000:])
        results = json.loads(done.stdout.decode().strip().splitlines()[-1])
        for mode in ("srcip", "cookie", "url"):
            self.assertEqual(results[mode]["errors"], 0, results)
            self.assertEqual(results[mode]["after_existing_to_recovered"], 0, results)
        # source-ip: the recovered AP server gets nothing back.
        self.assertEqual(results["srcip"]["after_new_to_recovered"], 0, results)
        # cookie / URL: existing sessions stay put, new ones reach it again.
        for mode in ("cookie", "url"):
            self.assertGreater(results[mode]["after_new_to_recovered"], 0, results)
            self.assertEqual(results[mode]["existing_sessions_broken_after_recovery"], 0,
                             results)
