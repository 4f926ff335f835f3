"""``access_log = -`` under ``twistd -n``: the lines on stdout as written,
without twistd's own log prefix in front (twistd turns ``sys.stdout`` into a
log of its own; the access log writes to the real standard output)."""

from __future__ import annotations

import os
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import free_port, serve_canned
from tests.examples.test_quickstart import run_twistd, wait_for_port

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"


class StdoutAccessLogTests(SynchronousTestCase):
    def run_site(self, log_format: str) -> list[str]:
        member = serve_canned(RESPONSE)
        self.addCleanup(member.close)
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        port = free_port()
        config = os.path.join(d, "site.ini")
        with open(config, "w") as f:
            f.write(f"""
[lbframe]
access_log = -
log_format = {log_format}

[virtual web]
listen = tcp:{port}:interface=127.0.0.1
protocol = http
pool = web

[pool web]
member a = 127.0.0.1:{member.getsockname()[1]}
""")
        out = os.path.join(d, "out.log")
        proc = run_twistd(self, config, out)
        wait_for_port(port, proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=5) as r:
            self.assertEqual(r.read(), b"ok\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(out) as f:
                lines = f.read().splitlines()
            if any("/hello" in line for line in lines):
                return lines
            time.sleep(0.05)
        self.fail(f"no access log line: {lines}")

    def test_text_lines_without_a_second_prefix(self):
        lines = [line for line in self.run_site("text") if "/hello" in line]
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("time="), lines[0])
        self.assertIn(" method=GET target=/hello ", lines[0])
        self.assertNotIn("[stdout#", lines[0])

    def test_json_lines_are_json(self):
        import json

        lines = [line for line in self.run_site("json") if "/hello" in line]
        self.assertEqual(len(lines), 1, lines)
        entry = json.loads(lines[0])
        self.assertEqual((entry["target"], entry["status"]), ("/hello", 200))
