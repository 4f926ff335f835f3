"""The access log: a line per tcp connection when it closes, JSON lines
with ``log_format = json``, and the text format's quoting."""

from __future__ import annotations

import json
import os

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbframe.accesslog import AccessLog
from lbframe.config import parse_site
from lbframe.plugins import load_plugins
from lbframe.service import build_runtime
from tests.helpers import free_port
from tests.protocols.test_tcp import TCPSiteMixin


class TCPAccessLogTests(TCPSiteMixin, TestCase):
    def start(self, log_format: str):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        self.log_path = os.path.join(folder, "access.log")
        vport = free_port()
        text = f"""
[lbframe]
access_log = {self.log_path}
log_format = {log_format}

[virtual v]
listen = tcp:{vport}:interface=127.0.0.1
pool = p

[pool p]
member a = 127.0.0.1:{self.echo_member()}
"""
        runtime = build_runtime(parse_site(text, os.path.join(folder, "site.ini")),
                                load_plugins(entry_points=False), reactor)
        svc = runtime.protocols["v"].make_service(runtime.balancers["v"], reactor)
        svc.startService()
        self.addCleanup(svc.stopService)
        return vport, svc

    def lines(self):
        with open(self.log_path) as f:
            return f.read().splitlines()

    @defer.inlineCallbacks
    def test_one_line_per_connection_when_it_closes(self):
        vport, svc = self.start("text")
        client = yield self.connect(vport)
        client.transport.write(b"ping")
        yield client.got_data
        local_port = client.transport.getHost().port
        self.assertEqual(self.lines(), [])
        client.transport.loseConnection()
        yield self.wait_until(lambda: svc.virtual.active == 0)
        line, = self.lines()
        self.assertIn("virtual=v rule=- pool=p member=a method=- target=- version=- status=- "
                      "bytes_in=4 bytes_out=4", line)
        self.assertIn(f"client=127.0.0.1:{local_port}", line)
        self.assertRegex(line, r"total_ms=\d+\.\d{3} outcome=done$")

    @defer.inlineCallbacks
    def test_json_lines(self):
        vport, svc = self.start("json")
        client = yield self.connect(vport)
        client.transport.write(b"12345")
        yield client.got_data
        client.transport.loseConnection()
        yield self.wait_until(lambda: svc.virtual.active == 0)
        entry = json.loads(self.lines()[0])
        self.assertEqual((entry["virtual"], entry["member"], entry["bytes_in"]), ("v", "a", 5))
        self.assertIsNone(entry["status"])


class TextFormatTests(SynchronousTestCase):
    def test_values_with_spaces_or_quotes_are_quoted(self):
        path = os.path.join(os.path.abspath(self.mktemp()))
        log = AccessLog(path)
        self.addCleanup(log.close)
        log.write({"target": '/a b"c', "outcome": "member p/a: connect failed", "status": 502})
        with open(path) as f:
            line = f.read()
        self.assertIn('target="/a b\\"c"', line)
        self.assertIn('outcome="member p/a: connect failed"', line)
        self.assertIn("status=502", line)
