"""The admin web server (real loopback sockets) and its blocking client."""

from __future__ import annotations

import json
import socket
from io import BytesIO

import attrs
import prometheus_client
from twisted.application.service import IService
from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from lbframe.admin import make_admin_service
from lbframe.admin.auth import Auth, endpoint_is_loopback
from lbframe.admin.client import AdminClientError, change_member, fetch_status, format_status
from lbframe.admin.page import render_page
from lbframe.config.model import (Address, Global, MemberSpec, Persistence, Pool, Redundancy,
                                  Site, Virtual)
from lbframe.persistence.memory import MemoryStore
from lbframe.plugins import load_plugins
from lbframe.runtime import REFUSAL_REASONS
from lbframe.service import build_runtime
from tests.helpers import free_port
from tests.test_site import BULK_SIZE, ReloadCase, SlowReader, ask, bulk_digest, connect
from tests.test_site import site as reload_site

TOKEN = "s3cret-token"


def make_site(**global_kw) -> Site:
    web = Pool("web", (
        MemberSpec("a", Address("127.0.0.1", 8081), weight=4),
        MemberSpec("b", Address("127.0.0.1", 8082), weight=2, priority=2),
        MemberSpec("c", Address("::1", 8083), backup=True, maxconn=10),
    ), scheduler="weighted")
    api = Pool("api", (MemberSpec("x", Address("127.0.0.1", 9001)),))
    return Site(
        "site.ini", Global(**global_kw),
        virtuals={"web": Virtual("web", ("tcp:8080:interface=127.0.0.1",), "web"),
                  "api": Virtual("api", ("tcp:9000:interface=127.0.0.1",
                                         "tcp6:9000:interface=\\:\\:1"), "api")},
        pools={"web": web, "api": api},
        redundancy=Redundancy(driver="none"),
    )


def make_runtime():
    """A small site with some traffic and one member down, built without the
    config parser."""
    runtime = build_runtime(make_site(), load_plugins(entry_points=False), reactor)
    web = runtime.pools["web"]
    a, b = web.members["a"], web.members["b"]
    for _ in range(3):
        web.take(a)
    web.release(a)
    web.record_response_time(a, 0.0017)
    web.report_check(b, "tcp", False, "connect refused", rise=2, fall=1, now=1000.0,
                     duration=0.25)
    runtime.virtuals["web"].active = 3
    runtime.virtuals["web"].total = 120
    runtime.virtuals["web"].refuse("no_member")
    return runtime


def add_persistence(runtime) -> MemoryStore:
    """A ``source-ip`` profile with a memory store (no persistence method is
    registered yet, so it is added after build_runtime)."""
    runtime.site = attrs.evolve(runtime.site, persistence={
        "sticky": Persistence("sticky", "source-ip", timeout=600.0)})
    store = MemoryStore(600.0, reactor)
    runtime.persistence_stores["sticky"] = store
    for i in range(5):
        store.set(f"10.0.0.{i}", "a")
    store.set(b"\x01\x02", "b")
    return store


def member_json(address, state="up", weight=1, priority=1, active=0, total=0, rt=None,
                down_reason="", backup=False, maxconn=None, checks=None, max_active=0,
                downs=0):
    return {"address": address, "state": state, "weight": weight, "priority": priority,
            "connections_active": active, "connections_total": total, "response_time_ms": rt,
            "down_reason": down_reason, "backup": backup, "maxconn": maxconn, "failures": 0,
            "checks": checks or {}, "connections_max": max_active, "bytes_in": 0,
            "bytes_out": 0, "retries": 0, "responses_5xx": 0, "downs": downs}


#: keys whose values depend on the clock: compared apart
VOLATILE = ("time", "state_since", "rate", "rate_max", "downtime")


def stable(obj, top: bool = True):
    """``obj`` (a status document or part of one) without :data:`VOLATILE`
    keys (a check's own ``time`` stays)."""
    if isinstance(obj, dict):
        return {k: stable(v, False) for k, v in obj.items()
                if not (k in VOLATILE and (top or k != "time"))}
    if isinstance(obj, list):
        return [stable(v, False) for v in obj]
    return obj


def virtual_json(listen, active=0, total=0, refused=None, max_active=0):
    return {"protocol": "tcp", "listen": listen, "connections_active": active,
            "connections_total": total, "pool": None, "refused": sum((refused or {}).values()),
            "refusals": dict(dict.fromkeys(REFUSAL_REASONS, 0), **(refused or {})),
            "connections_max": max_active, "max_connections": None, "bytes_in": 0,
            "bytes_out": 0, "requests": 0,
            "responses": {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}}


EXPECTED_STATUS = {
    "virtuals": {
        "web": dict(virtual_json(["tcp:8080:interface=127.0.0.1"], 3, 120,
                                 {"no_member": 1}, max_active=3), pool="web"),
        "api": dict(virtual_json(["tcp:9000:interface=127.0.0.1",
                                  "tcp6:9000:interface=\\:\\:1"]), pool="api"),
    },
    "pools": {
        "web": {"scheduler": "weighted", "members": {
            "a": member_json("127.0.0.1:8081", weight=4, active=2, total=3, rt=1.7,
                             max_active=3),
            "b": member_json("127.0.0.1:8082", state="down", weight=2, priority=2, downs=1,
                             down_reason="tcp: connect refused (1/1)",
                             checks={"tcp": {"ok": False, "up": False,
                                             "reason": "connect refused", "time": 1000.0,
                                             "duration_ms": 250.0, "checks_total": 1,
                                             "checks_failed": 1,
                                             "last_check": {"result": "fail",
                                                            "reason": "connect refused",
                                                            "time": 1000.0,
                                                            "duration_ms": 250.0}}}),
            "c": member_json("[::1]:8083", backup=True, maxconn=10),
        }, "members_up": 2, "queue": 0, "connections_active": 2, "connections_total": 3,
           "connections_max": 3},
        "api": {"scheduler": "round-robin", "members": {
            "x": member_json("127.0.0.1:9001"),
        }, "members_up": 1, "queue": 0, "connections_active": 0, "connections_total": 0,
           "connections_max": 0},
    },
    "redundancy": {"driver": "none", "state": "standalone"},
}


class Response:
    def __init__(self, code: int, headers: Headers, body: bytes):
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def json(self):
        """The body, without the clock-dependent keys (see :func:`stable`)."""
        return stable(json.loads(self.body))

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class AdminServerTestCase(TestCase):
    """Starts an admin service on a loopback port; ``request`` talks to it."""

    token: str | None = None

    def setUp(self):
        self.runtime = make_runtime()
        self.service = self.start(self.runtime, self.token)
        self.url = f"http://127.0.0.1:{self.service.port.getHost().port}"
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=self.pool)
        self.addCleanup(self.pool.closeCachedConnections)

    def start(self, runtime, token, endpoint="tcp:0:interface=127.0.0.1"):
        service = make_admin_service(runtime, endpoint, token, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @defer.inlineCallbacks
    def request(self, method: str, path: str, body=None, token=None, headers=None):
        h = Headers()
        if token is not None:
            h.addRawHeader("Authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            h.addRawHeader(name, value)
        producer = None
        if body is not None:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            producer = FileBodyProducer(BytesIO(raw))
        response = yield self.agent.request(method.encode(), (self.url + path).encode(), h,
                                            producer)
        data = yield readBody(response)
        return Response(response.code, response.headers, data)

    def post_member(self, pool, member, body, token=None):
        return self.request("POST", f"/api/pools/{pool}/members/{member}", body, token=token)

    def capture_log(self) -> list:
        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events


class StatusTests(AdminServerTestCase):
    def test_service(self):
        self.assertTrue(IService.providedBy(self.service))
        self.assertEqual(self.service.name, "admin")

    @defer.inlineCallbacks
    def test_status_exact(self):
        r = yield self.request("GET", "/api/status")
        self.assertEqual(r.code, 200)
        self.assertEqual(r.header("content-type"), "application/json")
        self.assertEqual(r.json(), EXPECTED_STATUS)

    @defer.inlineCallbacks
    def test_status_follows_runtime(self):
        self.runtime.pools["web"].take(self.runtime.pools["web"].members["a"])
        r = yield self.request("GET", "/api/status")
        a = r.json()["pools"]["web"]["members"]["a"]
        self.assertEqual((a["connections_active"], a["connections_total"]), (3, 4))

    @defer.inlineCallbacks
    def test_set_runtime(self):
        other = make_runtime()
        other.virtuals["web"].total = 7
        self.service.set_runtime(other)
        r = yield self.request("GET", "/api/status")
        self.assertEqual(r.json()["virtuals"]["web"]["connections_total"], 7)

    @defer.inlineCallbacks
    def test_pool_and_member_get(self):
        r = yield self.request("GET", "/api/pools/web/members/a")
        self.assertEqual(r.json(), EXPECTED_STATUS["pools"]["web"]["members"]["a"])
        r = yield self.request("GET", "/api/pools/api")
        self.assertEqual(r.json(), EXPECTED_STATUS["pools"]["api"])
        r = yield self.request("GET", "/api/pools")
        self.assertEqual(r.json(), EXPECTED_STATUS["pools"])

    @defer.inlineCallbacks
    def test_head(self):
        r = yield self.request("HEAD", "/api/status")
        self.assertEqual((r.code, r.body), (200, b""))


class MemberChangeTests(AdminServerTestCase):
    @property
    def a(self):
        return self.runtime.pools["web"].members["a"]

    @defer.inlineCallbacks
    def test_drain(self):
        r = yield self.post_member("web", "a", {"state": "drain"})
        self.assertEqual(r.code, 200)
        self.assertEqual(r.json(), dict(EXPECTED_STATUS["pools"]["web"]["members"]["a"],
                                        state="draining"))
        self.assertEqual((self.a.admin, self.a.state, self.a.eligible),
                         ("draining", "draining", False))

    @defer.inlineCallbacks
    def test_disable_then_enable(self):
        r = yield self.post_member("web", "a", {"state": "disable"})
        self.assertEqual(r.json()["state"], "disabled")
        self.assertEqual(self.a.state, "disabled")
        r = yield self.post_member("web", "a", {"state": "enable"})
        self.assertEqual(r.json()["state"], "up")
        self.assertEqual((self.a.admin, self.a.eligible), ("enabled", True))

    @defer.inlineCallbacks
    def test_enable_keeps_down_member_down(self):
        r = yield self.post_member("web", "b", {"state": "enable"})
        self.assertEqual(r.json()["state"], "down")

    @defer.inlineCallbacks
    def test_weight(self):
        r = yield self.post_member("web", "a", {"weight": 9})
        self.assertEqual((r.code, r.json()["weight"], r.json()["state"]), (200, 9, "up"))
        self.assertEqual(self.a.weight, 9)
        r = yield self.post_member("web", "a", {"weight": 0})
        self.assertEqual(r.json()["weight"], 0)
        self.assertFalse(self.a.eligible)

    @defer.inlineCallbacks
    def test_state_and_weight_logged(self):
        events = self.capture_log()
        r = yield self.post_member("web", "a", {"state": "drain", "weight": 2})
        self.assertEqual((r.json()["state"], r.json()["weight"]), ("draining", 2))
        # Logged once: the admin API's line says it all, the pool adds nothing.
        texts = [formatEvent(e) for e in events
                 if str(e.get("log_namespace", "")).startswith("lbframe")]
        self.assertEqual(texts, ["admin API from 127.0.0.1: member web/a: "
                                 "admin state enabled -> draining, weight 4 -> 2; "
                                 "now draining, 1 of 3 up"])

    @defer.inlineCallbacks
    def test_bad_requests(self):
        cases = [
            (b"{not json", "request body is not JSON"),
            (b"\xff\xfe", "request body is not JSON"),
            (b"[1, 2]", "request body must be a JSON object"),
            (b"{}", "nothing to change: give 'state' and/or 'weight'"),
            ({"state": "drained"}, "state must be one of 'drain', 'disable', 'enable', "
                                   "not \"drained\""),
            ({"state": 1}, "state must be one of"),
            ({"weight": -1}, "weight must be a whole number from 0 to 256, not -1"),
            ({"weight": 1.5}, "weight must be a whole number from 0 to 256, not 1.5"),
            ({"weight": True}, "weight must be a whole number from 0 to 256, not true"),
            ({"weight": "3"}, "weight must be a whole number from 0 to 256"),
            ({"state": "drain", "wieght": 3},
             "unknown key 'wieght' (did you mean 'weight'?): give 'state' and/or 'weight'"),
            ({"state": "x" * 100}, 'not "' + "x" * 39 + "…"),
        ]
        for body, message in cases:
            r = yield self.post_member("web", "a", body)
            self.assertEqual(r.code, 400, body)
            self.assertEqual(r.header("content-type"), "application/json")
            self.assertIn(message, r.json()["error"])
        # Nothing half-applied.
        self.assertEqual((self.a.admin, self.a.weight), ("enabled", 4))

    @defer.inlineCallbacks
    def test_body_too_large(self):
        body = b'{"state": "drain", "x": "' + b"x" * 200_000 + b'"}'
        r = yield self.post_member("web", "a", body)
        self.assertEqual((r.code, r.json()),
                         (413, {"error": "request body is larger than 65536 bytes"}))
        self.assertEqual(self.a.state, "up")

    @defer.inlineCallbacks
    def test_not_found(self):
        cases = [
            ("/api/pools/nope/members/a", "no pool 'nope'"),
            ("/api/pools/web/members/zz", "no member 'zz' in pool 'web'"),
            ("/api/pools/web/members/a/more", "nothing at /api/pools/web/members/a/more"),
            ("/api/pools/web/other", "nothing at /api/pools/web/other"),
            ("/api/nothing", "nothing at /api/nothing"),
        ]
        for path, message in cases:
            r = yield self.request("POST", path, {"state": "drain"})
            self.assertEqual((r.code, r.json()), (404, {"error": message}), path)

    @defer.inlineCallbacks
    def test_not_found_outside_api_is_text(self):
        r = yield self.request("GET", "/nothing")
        self.assertEqual((r.code, r.text), (404, "nothing at /nothing\n"))
        self.assertTrue(r.header("content-type").startswith("text/plain"))

    @defer.inlineCallbacks
    def test_wrong_method(self):
        r = yield self.request("DELETE", "/api/pools/web/members/a")
        self.assertEqual(r.code, 405)
        self.assertEqual(r.header("allow"), "GET, HEAD, POST")
        self.assertIn("method DELETE not allowed", r.json()["error"])
        r = yield self.request("POST", "/api/status", {"state": "drain"})
        self.assertEqual((r.code, r.header("allow")), (405, "GET, HEAD"))
        r = yield self.request("POST", "/metrics", b"")
        self.assertEqual(r.code, 405)


class AuthTests(AdminServerTestCase):
    token = TOKEN

    @defer.inlineCallbacks
    def test_reads_are_open_on_loopback(self):
        for path in ("/", "/api/status", "/metrics"):
            r = yield self.request("GET", path)
            self.assertEqual(r.code, 200, path)

    @defer.inlineCallbacks
    def test_change_without_token(self):
        r = yield self.post_member("web", "a", {"state": "drain"})
        self.assertEqual(r.code, 401)
        self.assertEqual(r.header("www-authenticate"), 'Bearer realm="lbframe"')
        self.assertIn("needs the admin token", r.json()["error"])
        self.assertEqual(self.runtime.pools["web"].members["a"].state, "up")

    @defer.inlineCallbacks
    def test_change_with_other_scheme(self):
        r = yield self.request("POST", "/api/pools/web/members/a", {"state": "drain"},
                               headers={"Authorization": f"Basic {TOKEN}"})
        self.assertEqual(r.code, 401)

    @defer.inlineCallbacks
    def test_change_with_wrong_token(self):
        r = yield self.post_member("web", "a", {"state": "drain"}, token="guess")
        self.assertEqual((r.code, r.json()), (403, {"error": "wrong admin token"}))
        self.assertEqual(self.runtime.pools["web"].members["a"].state, "up")

    @defer.inlineCallbacks
    def test_change_with_token(self):
        r = yield self.post_member("web", "a", {"state": "drain"}, token=TOKEN)
        self.assertEqual((r.code, r.json()["state"]), (200, "draining"))

    @defer.inlineCallbacks
    def test_auth_before_not_found(self):
        r = yield self.post_member("nope", "a", {"state": "drain"})
        self.assertEqual(r.code, 401)

    @defer.inlineCallbacks
    def test_everything_needs_token_when_not_loopback(self):
        # As make_admin_service sets it up for a non-loopback endpoint.
        self.service.context.auth = Auth(TOKEN, everything=True)
        for path in ("/", "/api/status", "/metrics", "/nothing"):
            r = yield self.request("GET", path)
            self.assertEqual(r.code, 401, path)
            r = yield self.request("GET", path, token="guess")
            self.assertEqual(r.code, 403, path)
        r = yield self.request("GET", "/api/status", token=TOKEN)
        self.assertEqual((r.code, r.json()), (200, EXPECTED_STATUS))
        r = yield self.request("GET", "/", token=TOKEN)
        self.assertEqual(r.code, 200)


class BrowserTests(AdminServerTestCase):
    """A web page must not drive an open loopback admin API through a browser."""

    @defer.inlineCallbacks
    def test_cross_origin_change_refused(self):
        for origin in ("http://evil.example", "null", "http://127.0.0.1:1"):
            r = yield self.request("POST", "/api/pools/web/members/a", {"state": "disable"},
                                   headers={"Origin": origin})
            self.assertEqual((r.code, r.json()), (403, {"error": "cross-origin request refused"}))
        self.assertEqual(self.runtime.pools["web"].members["a"].state, "up")

    @defer.inlineCallbacks
    def test_same_origin_change_allowed(self):
        r = yield self.request("POST", "/api/pools/web/members/a", {"state": "disable"},
                               headers={"Origin": self.url})
        self.assertEqual((r.code, r.json()["state"]), (200, "disabled"))

    @defer.inlineCallbacks
    def test_foreign_host_refused(self):
        # DNS rebinding: a name the attacker controls now points at 127.0.0.1.
        r = yield self.request("GET", "/api/status", headers={"Host": "evil.example:8404"})
        self.assertEqual(r.code, 403)
        self.assertIn("Host 'evil.example:8404' refused", r.json()["error"])
        for host in ("localhost:8404", "[::1]:8404", "127.0.0.2", "LOCALHOST"):
            r = yield self.request("GET", "/api/status", headers={"Host": host})
            self.assertEqual(r.code, 200, host)


class AuthUnitTests(SynchronousTestCase):
    def test_endpoint_is_loopback(self):
        self.assertTrue(endpoint_is_loopback("tcp:8404:interface=127.0.0.1"))
        self.assertTrue(endpoint_is_loopback("tcp:8404:interface=127.1.2.3"))
        self.assertTrue(endpoint_is_loopback("tcp6:8404:interface=\\:\\:1"))
        self.assertTrue(endpoint_is_loopback("unix:/run/lbframe/admin.sock"))
        self.assertFalse(endpoint_is_loopback("tcp:8404"))
        self.assertFalse(endpoint_is_loopback("tcp:8404:interface=0.0.0.0"))
        self.assertFalse(endpoint_is_loopback("tcp:8404:interface=192.0.2.1"))
        self.assertFalse(endpoint_is_loopback("tcp6:8404"))
        self.assertFalse(endpoint_is_loopback("nonsense:1"))

    def test_non_loopback_without_token_is_refused(self):
        with self.assertRaises(ValueError):
            make_admin_service(make_runtime(), "tcp:8404:interface=0.0.0.0", None, reactor)

    def test_port_in_use_fails_the_start(self):
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        service = make_admin_service(make_runtime(),
                                     f"tcp:{sock.getsockname()[1]}:interface=127.0.0.1",
                                     None, reactor)
        self.assertRaises(CannotListenError, service.privilegedStartService)

    def test_non_loopback_with_token_guards_everything(self):
        service = make_admin_service(make_runtime(), "tcp:8404", TOKEN, reactor)
        self.assertTrue(service.context.auth.everything)
        service = make_admin_service(make_runtime(), "tcp:8404:interface=127.0.0.1", TOKEN,
                                     reactor)
        self.assertFalse(service.context.auth.everything)


class MetricsTests(AdminServerTestCase):
    @defer.inlineCallbacks
    def metrics(self) -> list[str]:
        r = yield self.request("GET", "/metrics")
        self.assertEqual(r.code, 200)
        self.assertEqual(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8")
        return r.text.splitlines()

    @defer.inlineCallbacks
    def test_http_counters_and_queue(self):
        web = self.runtime.virtuals["web"]
        web.requests = 12
        web.responses["2xx"] = 10
        web.responses["5xx"] = 2
        self.runtime.pools["web"].queue.extend([object(), object()])
        lines = yield self.metrics()
        self.assertIn('lbframe_virtual_requests_total{virtual="web"} 12.0', lines)
        self.assertIn('lbframe_virtual_responses_total{code="2xx",virtual="web"} 10.0', lines)
        self.assertIn('lbframe_virtual_responses_total{code="5xx",virtual="web"} 2.0', lines)
        self.assertIn('lbframe_virtual_requests_total{virtual="api"} 0.0', lines)
        self.assertIn('lbframe_pool_queue_length{pool="web"} 2.0', lines)
        self.assertIn('lbframe_pool_queue_length{pool="api"} 0.0', lines)
        self.runtime.pools["web"].queue.clear()

    @defer.inlineCallbacks
    def test_metrics(self):
        lines = yield self.metrics()
        for line in [
            'lbframe_member_up{member="a",pool="web"} 1.0',
            'lbframe_member_up{member="b",pool="web"} 0.0',
            'lbframe_member_state{member="b",pool="web",state="down"} 1.0',
            'lbframe_member_weight{member="a",pool="web"} 4.0',
            'lbframe_member_connections_active{member="a",pool="web"} 2.0',
            'lbframe_member_connections_total{member="a",pool="web"} 3.0',
            'lbframe_member_failures_total{member="a",pool="web"} 0.0',
            'lbframe_member_response_seconds{member="a",pool="web"} 0.0017',
            'lbframe_virtual_connections_active{virtual="web"} 3.0',
            'lbframe_virtual_connections_total{virtual="web"} 120.0',
            'lbframe_virtual_refused_total{virtual="web"} 1.0',
            'lbframe_monitor_checks_total{member="b",monitor="tcp",pool="web",result="ok"} 0.0',
            'lbframe_monitor_checks_total{member="b",monitor="tcp",pool="web",result="fail"} 1.0',
            'lbframe_monitor_up{member="b",monitor="tcp",pool="web"} 0.0',
            'lbframe_redundancy_master 0.0',
            'lbframe_redundancy_state{driver="none",state="standalone"} 1.0',
            '# TYPE lbframe_member_connections_total counter',
        ]:
            self.assertIn(line, lines)
        # Response time only where it is known.
        self.assertFalse([x for x in lines
                          if x.startswith("lbframe_member_response_seconds{") and '"b"' in x])

    @defer.inlineCallbacks
    def test_metrics_follow_changes(self):
        yield self.post_member("web", "a", {"state": "disable"})
        lines = yield self.metrics()
        self.assertIn('lbframe_member_up{member="a",pool="web"} 0.0', lines)
        self.assertIn('lbframe_member_state{member="a",pool="web",state="disabled"} 1.0', lines)
        self.assertIn('lbframe_member_state{member="a",pool="web",state="up"} 0.0', lines)

    @defer.inlineCallbacks
    def test_private_registry(self):
        other = self.start(make_runtime(), None)  # a second registry is no duplicate
        self.assertIsNot(other.factory, self.service.factory)
        yield self.metrics()
        self.assertIsNone(prometheus_client.REGISTRY.get_sample_value(
            "lbframe_member_up", {"pool": "web", "member": "a"}))

    @defer.inlineCallbacks
    def test_persistence_entries(self):
        add_persistence(self.runtime)
        lines = yield self.metrics()
        self.assertIn('lbframe_persistence_entries{profile="sticky"} 6.0', lines)


class PageTests(AdminServerTestCase):
    @defer.inlineCallbacks
    def test_page(self):
        r = yield self.request("GET", "/")
        self.assertEqual(r.code, 200)
        self.assertEqual(r.header("content-type"), "text/html; charset=utf-8")
        page = r.text
        self.assertIn('<noscript><meta http-equiv="refresh" content="5"></noscript>', page)
        self.assertRegex(page, '<tr class="member state-up" data-pool="web" data-member="a">'
                         '<td class="name" data-label="member">a<span class="addr">'
                         '127.0.0.1:8081</span></td><td class="state" data-label="state">'
                         '<span class="word">up</span> <span class="since">[0-9]+s</span></td>'
                         '<td class="num weight" data-label="weight">4</td>')
        self.assertIn('<span class="word">down</span>', page)
        # The reason on one line; the details on hover and when expanded.
        self.assertIn('<summary title="down: tcp: connect refused (1/1)\ntcp: fail: connect '
                      'refused, took 250.0 ms (0 ok, 1 failed)" class="check-fail">'
                      'tcp: connect refused (1/1)</summary>', page)
        self.assertIn('<td class="state up-count" data-label="members up">2 of 3 up</td>', page)
        self.assertIn('data-action="drain"', page)
        csp = r.header("content-security-policy")
        self.assertIn("script-src 'sha256-", csp)
        self.assertIn("connect-src 'self'", csp)
        self.assertNotIn("unsafe-inline'; script", csp.replace("style-src 'unsafe-inline'", ""))
        self.assertIn("1.7 ms", page)
        self.assertIn("<h2>Pool web", page)
        self.assertIn("tcp · tcp:8080:interface=127.0.0.1</span>", page)
        self.assertNotIn("http://", page.replace("http-equiv", ""))  # no external assets

    @defer.inlineCallbacks
    def test_page_follows_changes(self):
        yield self.post_member("web", "a", {"state": "drain"})
        r = yield self.request("GET", "/")
        self.assertRegex(r.text, '<tr class="member state-draining" data-pool="web" '
                         'data-member="a">.*?<span class="word">draining</span>')

    def test_escaping(self):
        status = json.loads(json.dumps(EXPECTED_STATUS))
        evil = "<script>alert('x')</script>"
        status["pools"]["web"]["members"][evil] = dict(
            status["pools"]["web"]["members"]["b"], down_reason='"<b>bad</b>" & more')
        status["virtuals"]["<v>"] = dict(status["virtuals"]["web"], listen=["<l>"])
        page = render_page(status)
        self.assertNotIn("<script>alert", page)
        self.assertEqual(page.count("<script>"), 1)  # the page's own
        self.assertNotIn("<b>bad", page)
        self.assertIn("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;", page)
        self.assertIn("&quot;&lt;b&gt;bad&lt;/b&gt;&quot; &amp; more", page)
        self.assertIn('data-label="virtual server">&lt;v&gt;<span', page)
        self.assertIn("&lt;l&gt;", page)


class PersistenceTests(AdminServerTestCase):
    token = TOKEN

    def setUp(self):
        super().setUp()
        self.store = add_persistence(self.runtime)

    @defer.inlineCallbacks
    def test_list_profiles(self):
        r = yield self.request("GET", "/api/persistence")
        self.assertEqual(r.json(), {"sticky": {"method": "source-ip", "store": "memory",
                                               "entries": 6}})

    @defer.inlineCallbacks
    def test_entries_paged(self):
        r = yield self.request("GET", "/api/persistence/sticky?offset=4&limit=10")
        body = r.json()
        self.assertEqual({k: body[k] for k in ("profile", "method", "store", "total", "offset",
                                               "limit")},
                         {"profile": "sticky", "method": "source-ip", "store": "memory",
                          "total": 6, "offset": 4, "limit": 10})
        self.assertEqual([(e["key"], e["member"]) for e in body["entries"]],
                         [("10.0.0.4", "a"), ("0102", "b")])
        self.assertIsInstance(body["entries"][0]["age"], float)
        r = yield self.request("GET", "/api/persistence/sticky?limit=2")
        self.assertEqual(len(r.json()["entries"]), 2)
        r = yield self.request("GET", "/api/persistence/sticky?limit=0")
        self.assertEqual(r.code, 400)

    @defer.inlineCallbacks
    def test_delete_needs_token(self):
        r = yield self.request("DELETE", "/api/persistence/sticky")
        self.assertEqual(r.code, 401)
        self.assertEqual(len(self.store), 6)
        r = yield self.request("DELETE", "/api/persistence/sticky", token=TOKEN)
        self.assertEqual((r.code, r.json()), (200, {"profile": "sticky", "cleared": True}))
        self.assertEqual(len(self.store), 0)

    @defer.inlineCallbacks
    def test_unknown_profile(self):
        r = yield self.request("GET", "/api/persistence/nope")
        self.assertEqual((r.code, r.json()), (404, {"error": "no persistence profile 'nope'"}))
        r = yield self.request("GET", "/api/persistence/sticky/more")
        self.assertEqual(r.code, 404)


class ClientTests(AdminServerTestCase):
    token = TOKEN

    @defer.inlineCallbacks
    def test_fetch_status(self):
        status = yield deferToThread(fetch_status, self.url, None)
        self.assertEqual(stable(status), EXPECTED_STATUS)
        status = yield deferToThread(fetch_status, self.url + "/", TOKEN)
        self.assertEqual(stable(status), EXPECTED_STATUS)

    @defer.inlineCallbacks
    def test_change_member(self):
        a = self.runtime.pools["web"].members["a"]
        for action, state in [("drain", "draining"), ("disable", "disabled"),
                              ("enable", "up")]:
            member = yield deferToThread(change_member, self.url, TOKEN, "web", "a", action,
                                         None)
            self.assertEqual(member["state"], state)
            self.assertEqual(a.state, state)
        member = yield deferToThread(change_member, self.url, TOKEN, "web", "a", "weight", 7)
        self.assertEqual((member["weight"], a.weight), (7, 7))

    @defer.inlineCallbacks
    def assertClientError(self, message, *args):
        try:
            yield deferToThread(change_member, self.url, *args)
        except AdminClientError as e:
            self.assertEqual(str(e), message)
        else:
            self.fail("no AdminClientError")

    @defer.inlineCallbacks
    def test_errors(self):
        yield self.assertClientError("no member 'x' in pool 'web'",
                                     TOKEN, "web", "x", "drain", None)
        yield self.assertClientError("no pool 'nope'", TOKEN, "nope", "a", "drain", None)
        yield self.assertClientError("admin API refused the token", "guess", "web", "a",
                                     "drain", None)
        yield self.assertClientError("admin API refused the token (none was given: use "
                                     "--token or LBFRAME_ADMIN_TOKEN)",
                                     None, "web", "a", "drain", None)
        yield self.assertClientError("weight needs a number: lbframe member POOL MEMBER "
                                     "weight N", TOKEN, "web", "a", "weight", None)
        yield self.assertClientError("weight must be a whole number from 0 to 256, not -2",
                                     TOKEN, "web", "a", "weight", -2)
        yield self.assertClientError("weight must be a whole number from 0 to 256, not 257",
                                     TOKEN, "web", "a", "weight", 257)
        yield self.assertClientError("unknown action 'stop': use one of drain, disable, "
                                     "enable, weight", TOKEN, "web", "a", "stop", None)

    @defer.inlineCallbacks
    def test_names_are_quoted(self):
        yield self.assertClientError("no member 'a/b c' in pool 'web'",
                                     TOKEN, "web", "a/b c", "drain", None)


class ClientOfflineTests(SynchronousTestCase):
    def test_unreachable(self):
        port = free_port()
        with self.assertRaises(AdminClientError) as cm:
            fetch_status(f"http://127.0.0.1:{port}", None)
        self.assertEqual(str(cm.exception),
                         f"cannot reach admin API at http://127.0.0.1:{port}: connection refused")

    def test_url_without_scheme(self):
        port = free_port()
        with self.assertRaises(AdminClientError) as cm:
            fetch_status(f"127.0.0.1:{port}", None)
        self.assertIn(f"http://127.0.0.1:{port}: connection refused", str(cm.exception))

    def test_format_status(self):
        # The page's words: states with how long, the pool's summary line,
        # refusals by reason, the check on one line.
        status = json.loads(json.dumps(EXPECTED_STATUS))
        status["time"] = 1192.0
        for m in status["pools"]["web"]["members"].values():
            m["state_since"] = 1000.0
        status["pools"]["api"]["members"]["x"]["state_since"] = 1192.0 - 3 * 86400 - 7200
        status["virtuals"]["web"]["rate"] = status["pools"]["web"]["rate"] = 2.5
        status["virtuals"]["api"]["rate"] = 0.0
        self.assertEqual(format_status(status), """\
redundancy: standalone

VIRTUAL  PROTOCOL  LISTEN                                                   POOL  ACTIVE  MAX  TOTAL   RATE  REFUSED
web      tcp       tcp:8080:interface=127.0.0.1                             web        3    3    120  2.5/s  1: no member 1
api      tcp       tcp:9000:interface=127.0.0.1, tcp6:9000:interface=\\:\\:1  api        0    0      0  0.0/s  0

pool web (weighted): 2 of 3 up, sessions 2 (max 3), total 3, rate 2.5/s, queue 0
  MEMBER      ADDRESS         STATE       WEIGHT  ACTIVE  MAX  TOTAL  ERR c/r/5xx  RESP_MS  CHK ok/fail  LAST CHECK
  a           127.0.0.1:8081  up 3m12s         4       2    3      3        0/0/0      1.7          0/0  no check yet
  b           127.0.0.1:8082  down 3m12s       2       0    0      0        0/0/0        -          0/1  tcp: connect refused (1/1)
  c (backup)  [::1]:8083      up 3m12s         1       0    0      0        0/0/0        -          0/0  no check yet

pool api (round-robin): 1 of 1 up, sessions 0 (max 0), total 0, queue 0
  MEMBER  ADDRESS         STATE    WEIGHT  ACTIVE  MAX  TOTAL  ERR c/r/5xx  RESP_MS  CHK ok/fail  LAST CHECK
  x       127.0.0.1:9001  up 3d2h       1       0    0      0        0/0/0        -          0/0  no check yet""")

    def test_format_minimal_status(self):
        # Only the contract's keys, as an older or other server may send.
        status = {"virtuals": {}, "pools": {"p": {"scheduler": "weighted", "members": {
            "m": {"address": "10.0.0.1:80", "state": "draining", "weight": 3, "priority": 1,
                  "connections_active": 1, "connections_total": 2,
                  "response_time_ms": 12.345}}}},
            "redundancy": {"driver": "vrrp", "state": "master"}}
        self.assertEqual(format_status(status), """\
redundancy: vrrp: master

no virtual servers

pool p (weighted): 0 of 1 up, sessions 1, total 2
  MEMBER  ADDRESS      STATE     WEIGHT  ACTIVE  MAX  TOTAL  ERR c/r/5xx  RESP_MS  CHK ok/fail  LAST CHECK
  m       10.0.0.1:80  draining       3       1    -      2        0/0/0     12.3          0/0  no check yet""")


class RatesTests(SynchronousTestCase):
    def test_sampler_rates_and_sparkline(self):
        from twisted.internet.task import Clock

        from lbframe.admin.page import sparkline
        from lbframe.admin.rates import RateSampler

        runtime = make_runtime()
        clock = Clock()
        sampler = RateSampler(lambda: runtime, clock, interval=5, samples=3)
        sampler.start()
        web = runtime.pools["web"]
        a = web.members["a"]
        for n in (10, 20, 0, 5):
            for _ in range(n):
                web.take(a)
            clock.advance(5)
        # three samples kept, oldest first: 20/5, 0/5, 5/5 per second
        self.assertEqual(sampler.rates("member", "web", "a"), [4.0, 0.0, 1.0])
        self.assertEqual(sampler.rates("member", "web", "nobody"), [])
        svg = sparkline(sampler.rates("member", "web", "a"))
        self.assertIn("<svg", svg)
        self.assertIn("4.0, 0.0, 1.0", svg)
        status = json.loads(json.dumps(
            __import__("lbframe.admin.status", fromlist=["x"]).site_status(runtime, sampler)))
        a_json = status["pools"]["web"]["members"]["a"]
        self.assertEqual((a_json["rate"], a_json["rate_max"]), (1.0, 4.0))
        self.assertEqual(status["pools"]["web"]["rate"], 1.0)
        page = render_page(status, sampler.rates)
        self.assertIn('<td class="num rate" data-label="rate">1.0/s <svg', page)
        self.assertIn('<td class="num rate-max" data-label="max rate">4.0/s</td>', page)
        # A member a reload removed is forgotten at the next sample.
        web.remove_member("b")
        clock.advance(5)
        self.assertEqual(sampler.rates("member", "web", "b"), [])
        sampler.stop()


class AdminChangeEventTests(AdminServerTestCase):
    @defer.inlineCallbacks
    def test_change_event_is_structured(self):
        events = self.capture_log()
        yield self.post_member("web", "a", {"state": "disable"})
        [event] = [e for e in events if e.get("lbframe_event") == "admin_change"]
        self.assertEqual((event["pool"], event["member"], event["admin"], event["client"]),
                         ("web", "a", "disabled", "127.0.0.1"))
        # an unchanged request changes nothing and logs nothing
        yield self.post_member("web", "a", {"state": "disable"})
        self.assertEqual(len([e for e in events if e.get("lbframe_event") == "admin_change"]), 1)


class DrainEndToEndTests(ReloadCase):
    """Drain through the admin API on a running site: a held connection to
    the drained member keeps working, new connections avoid it."""

    @defer.inlineCallbacks
    def test_held_connection_survives_drain(self):
        pa, _ = self.backend("a")
        pb, _ = self.backend("b")
        vport, aport = free_port(), free_port()
        text = reload_site(vport, {"a": pa, "b": pb}).replace(
            "[lbframe]\n", f"[lbframe]\nadmin = tcp:{aport}:interface=127.0.0.1\n"
                           f"admin_token = {TOKEN}\n")
        svc = self.start(text)
        reader = SlowReader()
        yield connect(vport, reader)  # round robin: the first goes to a
        yield reader.read_until(1024 * 1024)
        member_a = svc.runtime.pools["web"].members["a"]
        self.assertEqual(member_a.active, 1)

        answer = yield deferToThread(change_member, f"http://127.0.0.1:{aport}", TOKEN,
                                     "web", "a", "drain")
        self.assertEqual(answer["state"], "draining")
        names = []
        for _ in range(4):
            names.append((yield ask(vport)))
        self.assertEqual(names, ["b"] * 4)
        total = yield reader.read_all()
        self.assertEqual(total, BULK_SIZE)
        self.assertEqual(reader.hash.hexdigest(), bulk_digest())
        self.assertEqual(member_a.total, 1)
