"""``POST /api/redundancy/takeover|release`` and ``lbframe takeover|release``."""

from __future__ import annotations

import attrs
from twisted.internet import defer, task
from twisted.internet.threads import deferToThread

from lbframe.admin.client import AdminClientError, redundancy_command
from tests.redundancy.test_heartbeat import Wire, node
from tests.admin.test_web import AdminServerTestCase

TOKEN = "heartbeat-admin-token"


class RedundancyAPITests(AdminServerTestCase):
    token = TOKEN

    def setUp(self):
        super().setUp()
        self.clock = task.Clock()
        self.wire = Wire()
        self.a = node("a", self.wire, self.clock, priority=100)
        self.b = node("b", self.wire, self.clock, priority=200)
        self.a.start()
        self.b.start()
        self.addCleanup(self.a.stop)
        self.addCleanup(self.b.stop)
        self.clock.pump([0.1] * 20)
        self.assertEqual((self.a.state, self.b.state), ("backup", "master"))
        self.runtime.redundancy = self.a
        self.runtime.site = attrs.evolve(self.runtime.site, redundancy=self.a.spec)

    @defer.inlineCallbacks
    def test_token_required(self):
        r = yield self.request("POST", "/api/redundancy/takeover", {})
        self.assertEqual(r.code, 401)
        self.assertEqual(self.a.state, "backup")

    @defer.inlineCallbacks
    def test_takeover_then_release(self):
        r = yield self.request("POST", "/api/redundancy/takeover", {}, token=TOKEN)
        self.assertEqual(r.code, 200, r.body)
        self.assertEqual(r.json()["state"], "master")
        self.clock.pump([0.1] * 15)
        self.assertEqual(self.b.state, "backup")
        r = yield self.request("POST", "/api/redundancy/release", {}, token=TOKEN)
        self.assertEqual(r.code, 200, r.body)
        self.assertEqual(r.json()["state"], "backup")
        self.assertEqual(self.b.state, "master")
        r = yield self.request("GET", "/api/redundancy", token=TOKEN)
        self.assertEqual(r.json()["hold"], True)

    @defer.inlineCallbacks
    def test_release_refused_when_nobody_would_serve(self):
        self.wire.nodes.pop("b")
        self.b.stop()
        r = yield self.request("POST", "/api/redundancy/takeover", {}, token=TOKEN)
        self.wire.cut = True
        self.clock.pump([0.1] * 40)
        r = yield self.request("POST", "/api/redundancy/release", {}, token=TOKEN)
        self.assertEqual(r.code, 409)
        self.assertIn("nobody serving", r.json()["error"])
        self.assertEqual(self.a.state, "master")

    @defer.inlineCallbacks
    def test_driver_without_commands(self):
        self.runtime.redundancy = object()
        r = yield self.request("POST", "/api/redundancy/takeover", {}, token=TOKEN)
        self.assertEqual(r.code, 409)
        self.assertIn("has no manual takeover", r.json()["error"])

    @defer.inlineCallbacks
    def test_client(self):
        red = yield deferToThread(redundancy_command, self.url, TOKEN, "takeover")
        self.assertEqual(red["state"], "master")
        with self.assertRaisesRegex(AdminClientError, "refused the token"):
            yield deferToThread(redundancy_command, self.url, "wrong", "release")
