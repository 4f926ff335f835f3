"""examples/dns as its README runs it: two Twisted Names members behind the
udp virtual server, answers alternating, a member taken down by the dns
monitor (in-process, on free ports instead of 5301, 5302 and 5353)."""

from __future__ import annotations

import importlib.util
import os

import dns.message
from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.helpers import WaitMixin
from tests.protocols.udpkit import start_client, start_site, vip_of

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "dns")


def load_members():
    spec = importlib.util.spec_from_file_location("dns_members", os.path.join(EXAMPLE,
                                                                              "members.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ExampleTests(WaitMixin, TestCase):
    @defer.inlineCallbacks
    def test_answers_alternate_and_a_stopped_member_is_taken_out(self):
        members = load_members()
        ports = []
        for index in (1, 2):
            udp, tcp = members.start(index, port=0)
            self.addCleanup(tcp.stopListening)
            self.addCleanup(udp.stopListening)
            ports.append((udp, udp.getHost().port))
        with open(os.path.join(EXAMPLE, "site.ini")) as f:
            text = f.read()
        text = (text.replace("admin = tcp:8404:interface=127.0.0.1", "")
                    .replace("udp:5353:", "udp:0:")
                    .replace("127.0.0.1:5301", f"127.0.0.1:{ports[0][1]}")
                    .replace("127.0.0.1:5302", f"127.0.0.1:{ports[1][1]}")
                    .replace("interval = 2s", "interval = 0.2s")
                    .replace("timeout = 1s", "timeout = 0.15s"))
        svc = start_site(self, text)
        vip = vip_of(svc)
        client, _ = start_client(self)

        @defer.inlineCallbacks
        def ask():
            query = dns.message.make_query("www.example.test", "A")
            wire, source = yield client.ask(query.to_wire(), vip)
            self.assertEqual(source, vip)
            reply = dns.message.from_wire(wire)
            self.assertTrue(query.is_response(reply))
            return reply.answer[0][0].to_text()

        answers = []
        for _ in range(4):
            answers.append((yield ask()))
        self.assertEqual(answers, ["192.0.2.1", "192.0.2.2"] * 2)
        pool = svc.runtime.pools["dns"]
        yield self.wait_until(lambda: all(m.checks.get("ask") and m.checks["ask"].last_ok
                                          for m in pool.members.values()))
        yield ports[1][0].stopListening()  # ns2 stops
        yield self.wait_until(lambda: pool.members["ns2"].state == "down")
        self.assertIn("port unreachable (ICMP)", pool.members["ns2"].down_reason)
        answers = []
        for _ in range(4):
            answers.append((yield ask()))
        self.assertEqual(answers, ["192.0.2.1"] * 4)
