"""Review: the admin API never shows a password carried in a store URL."""

from __future__ import annotations

import json

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody

from lbframe.admin import make_admin_service
from lbframe.config import parse_site
from lbframe.plugins import load_plugins
from lbframe.service import build_runtime

# A store URL with a password (``redis://:PASSWORD@HOST``); the memory store
# ignores its URL, so the site loads without the Redis plugin.
SITE = """
[virtual one]
listen = tcp:18091:interface=127.0.0.1
pool = p
persistence = cart

[persistence cart]
method = source-ip
store = memory://:hunter2@127.0.0.1:6379/0

[pool p]
member a = 127.0.0.1:1
"""


class StorePasswordTests(TestCase):
    def setUp(self):
        runtime = build_runtime(parse_site(SITE), load_plugins(entry_points=False), reactor)
        service = make_admin_service(runtime, "tcp:0:interface=127.0.0.1", None, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.url = f"http://127.0.0.1:{service.port.getHost().port}"
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=pool)
        self.addCleanup(pool.closeCachedConnections)

    @defer.inlineCallbacks
    def get(self, path):
        response = yield self.agent.request(b"GET", (self.url + path).encode())
        body = yield readBody(response)
        self.assertEqual(response.code, 200, body)
        return body

    @defer.inlineCallbacks
    def test_status_hides_password(self):
        body = yield self.get("/api/status")
        self.assertNotIn(b"hunter2", body)

    @defer.inlineCallbacks
    def test_profiles_hide_password(self):
        # Read without a token on a loopback admin server.
        body = yield self.get("/api/persistence")
        self.assertNotIn(b"hunter2", body)
        self.assertIn("***", json.loads(body)["cart"]["store"])

    @defer.inlineCallbacks
    def test_profile_entries_hide_password(self):
        body = yield self.get("/api/persistence/cart")
        self.assertNotIn(b"hunter2", body)
