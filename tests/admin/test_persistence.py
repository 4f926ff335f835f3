"""Persistence in the admin API: /api/status counts, listing and clearing a
profile, /metrics counters."""

from __future__ import annotations

import json

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from lbframe.admin import make_admin_service
from lbframe.balancer import RequestContext
from lbframe.config import parse_site
from lbframe.plugins import load_plugins
from lbframe.service import build_runtime

SITE = """
[virtual one]
listen = tcp:18081:interface=127.0.0.1
pool = p
persistence = src

[virtual two]
listen = tcp:18082:interface=127.0.0.1
pool = p
persistence = src

[persistence src]
method = source-ip
max_entries = 4

[persistence cart]
method = cookie-learn
cookie = JSESSIONID

[pool p]
member a = 127.0.0.1:1
member b = 127.0.0.1:2
"""


class PersistenceAdminTests(TestCase):
    def setUp(self):
        self.runtime = build_runtime(parse_site(SITE), load_plugins(entry_points=False), reactor)
        service = make_admin_service(self.runtime, "tcp:0:interface=127.0.0.1", "tok", reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.url = f"http://127.0.0.1:{service.port.getHost().port}"
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=pool)
        self.addCleanup(pool.closeCachedConnections)
        balancer = self.runtime.balancers["one"]
        for i in range(6):  # 6 clients into a table of 4
            balancer.choose(RequestContext(f"192.0.2.{i}", 1, "one"))
        balancer.choose(RequestContext("192.0.2.5", 2, "one"))  # a hit

    @defer.inlineCallbacks
    def request(self, method, path, token=None):
        headers = Headers()
        if token:
            headers.addRawHeader("Authorization", f"Bearer {token}")
        response = yield self.agent.request(method.encode(), (self.url + path).encode(), headers)
        body = yield readBody(response)
        return response.code, body

    @defer.inlineCallbacks
    def test_status_counts_entries_per_profile(self):
        code, body = yield self.request("GET", "/api/status")
        self.assertEqual(code, 200)
        status = json.loads(body)["persistence"]
        self.assertEqual(status["src"]["entries"], 4)
        self.assertEqual(status["src"]["evicted"], 2)
        self.assertEqual(status["src"]["hits"], 1)
        self.assertEqual(sorted(status["src"]["virtuals"]), ["one", "two"])
        self.assertEqual(status["cart"]["entries"], 0)

    @defer.inlineCallbacks
    def test_list_and_clear(self):
        code, body = yield self.request("GET", "/api/persistence/src")
        self.assertEqual(code, 200)
        entries = json.loads(body)["entries"]
        self.assertEqual([e["key"] for e in entries],
                         ["192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"])
        self.assertEqual({e["member"] for e in entries}, {"a", "b"})
        code, _ = yield self.request("DELETE", "/api/persistence/src")
        self.assertEqual(code, 401)
        code, _ = yield self.request("DELETE", "/api/persistence/src", token="tok")
        self.assertEqual(code, 200)
        self.assertEqual(len(self.runtime.persistence_stores["src"]), 0)

    @defer.inlineCallbacks
    def test_metrics(self):
        code, body = yield self.request("GET", "/metrics")
        text = body.decode()
        self.assertIn('lbframe_persistence_entries{profile="src"} 4.0', text)
        self.assertIn('lbframe_persistence_lookups_total{profile="src",result="hit"} 1.0', text)
        self.assertIn('lbframe_persistence_lookups_total{profile="src",result="miss"} 6.0', text)
        self.assertIn('lbframe_persistence_dropped_total{profile="src",reason="evicted"} 2.0',
                      text)
