"""``log_format = json``: one JSON object a line, under twistd too."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time

from twisted.logger import Logger, LogPublisher
from twisted.python.logfile import LogFile
from twisted.trial.unittest import SynchronousTestCase

from lbframe.logs import JSONLinesObserver, event_as_dict, json_line, twistd_log_file
from tests.helpers import free_port
from tests.examples.test_quickstart import run_twistd, wait_for_port
from tests.test_site import site


def logged_events(emit) -> list[dict]:
    """The events ``emit(log)`` logs, as dicts, through a JSONLinesObserver."""
    out = io.StringIO()
    publisher = LogPublisher(JSONLinesObserver(out))
    emit(Logger(namespace="lbframe.test", observer=publisher))
    lines = out.getvalue().splitlines()
    return [json.loads(line) for line in lines]


class JSONLineTests(SynchronousTestCase):
    def test_fields_and_message(self):
        [event] = logged_events(lambda log: log.info(
            "member {pool}/{member} {state}: {reason}", pool="web", member="a", state="down",
            reason="connect refused (3/3)", old="up", lbframe_event="member_state"))
        self.assertEqual(event["message"], "member web/a down: connect refused (3/3)")
        self.assertEqual(event["event"], "member_state")
        self.assertEqual(event["level"], "info")
        self.assertEqual(event["namespace"], "lbframe.test")
        self.assertEqual((event["pool"], event["member"], event["state"], event["old"]),
                         ("web", "a", "down", "up"))
        self.assertRegex(event["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
        self.assertNotIn("log_format", event)

    def test_values_that_are_not_json(self):
        [event] = logged_events(lambda log: log.warn(
            "odd {thing}", thing=object(), nested={"a": (1, 2), 3: b"x"}, message="clash"))
        self.assertIn("<object object", event["thing"])
        self.assertEqual(event["nested"], {"a": [1, 2], "3": "x"})
        self.assertEqual(event["level"], "warn")
        self.assertTrue(event["message"].startswith("odd <object"), "own message wins")
        self.assertIsNone(event["event"])

    def test_failure_has_its_traceback(self):
        def emit(log):
            try:
                1 / 0
            except ZeroDivisionError:
                log.failure("it broke")
        [event] = logged_events(emit)
        self.assertEqual(event["level"], "critical")
        self.assertIn("ZeroDivisionError", event["failure"])

    def test_one_line_per_event(self):
        text = json_line({"log_format": "two\nlines", "log_time": 0.0, "log_namespace": "x",
                          "log_level": None})
        self.assertNotIn("\n", text)
        self.assertEqual(json.loads(text)["message"], "two\nlines")
        self.assertEqual(event_as_dict({"log_time": 0.0})["time"], "1970-01-01T00:00:00.000+00:00")


class TwistdFileTests(SynchronousTestCase):
    def test_where_twistd_would_log(self):
        self.assertIs(twistd_log_file({"nodaemon": True, "logfile": None}), sys.stdout)
        self.assertIs(twistd_log_file({"nodaemon": True, "logfile": "-"}), sys.stdout)
        self.assertIsNone(twistd_log_file({"syslog": True}))
        self.assertIsNone(twistd_log_file({"logger": "my.observer"}))
        path = os.path.abspath(self.mktemp())
        out = twistd_log_file({"nodaemon": False, "logfile": path})
        self.addCleanup(out.close)
        self.assertIsInstance(out, LogFile)
        self.assertEqual(out.path, path)


class TwistdJSONTests(SynchronousTestCase):
    """``twistd -n lbframe`` with ``log_format = json``: every line is JSON,
    and a refused and an applied reload say so."""

    def test_json_lines_through_a_refused_and_an_applied_reload(self):
        vport = free_port()
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        config = os.path.join(d, "site.ini")
        good = site(vport, {"a": 1001}).replace("[lbframe]\n", "[lbframe]\nlog_format = json\n")
        with open(config, "w") as f:
            f.write(good)
        out_path = os.path.join(d, "out.log")
        proc = run_twistd(self, config, out_path)
        wait_for_port(vport, proc)

        def events():
            with open(out_path) as f:
                return [json.loads(line) for line in f if line.strip()]

        def wait_for(name):
            end = time.monotonic() + 15
            while time.monotonic() < end:
                found = [e for e in events() if e.get("event") == name]
                if found:
                    return found
                time.sleep(0.05)
            self.fail(f"no {name} event in {events()}")

        with open(config, "w") as f:
            f.write(good.replace("pool = web", "pool = nowhere"))
        proc.send_signal(signal.SIGHUP)
        [refused] = wait_for("reload_refused")
        self.assertEqual(refused["level"], "error")
        self.assertIn(f"{config}:", refused["error"])
        self.assertIn("[virtual web] pool:", refused["error"])

        with open(config, "w") as f:
            f.write(good.replace("127.0.0.1:1001", "127.0.0.1:1001\nmember b = 127.0.0.1:1002"))
        proc.send_signal(signal.SIGHUP)
        [reload] = wait_for("reload")
        self.assertEqual(reload["changes"]["members"], {"added": ["web/b"]})
        self.assertIn("reloaded", reload["message"])

        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(15), -signal.SIGTERM)
        messages = [e["message"] for e in events()]
        self.assertIn("Server Shut Down.", messages)
