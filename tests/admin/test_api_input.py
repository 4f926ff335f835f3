"""Admin API input: every value is checked with the config's own rules before
anything changes, and a refused request leaves the site and ``/metrics`` as
they were (issue 13, item 6)."""

from __future__ import annotations

from twisted.internet import defer

from tests.admin.test_web import AdminServerTestCase, add_persistence


class RefusedChangeTests(AdminServerTestCase):
    """Each bad member change is a 400 (413 when too large) with a JSON error,
    and neither ``/api/status`` nor ``/metrics`` differ afterwards."""

    @property
    def a(self):
        return self.runtime.pools["web"].members["a"]

    @defer.inlineCallbacks
    def snapshot(self):
        status = yield self.request("GET", "/api/status")
        metrics = yield self.request("GET", "/metrics")
        self.assertEqual((status.code, metrics.code), (200, 200))
        return status.json(), metrics.text

    @defer.inlineCallbacks
    def assertRefused(self, body, code: int, message: str):
        before = yield self.snapshot()
        r = yield self.post_member("web", "a", body)
        self.assertEqual(r.code, code, (body, r.body))
        self.assertEqual(r.header("content-type"), "application/json")
        self.assertIn(message, r.json()["error"])
        after = yield self.snapshot()
        self.assertEqual(after, before, body)
        self.assertEqual((self.a.admin, self.a.weight), ("enabled", 4))

    @defer.inlineCallbacks
    def test_weight_above_the_config_limit(self):
        # member weight= in site.ini is 0-256; the API takes the same.
        for weight in (257, 1000, 2**31, 2**63, 10**400):
            yield self.assertRefused({"weight": weight}, 400,
                                     "weight must be a whole number from 0 to 256, not ")

    @defer.inlineCallbacks
    def test_weight_limits_accepted(self):
        for weight in (256, 0):
            r = yield self.post_member("web", "a", {"weight": weight})
            self.assertEqual((r.code, r.json()["weight"]), (200, weight))
        metrics = yield self.request("GET", "/metrics")
        self.assertIn('lbframe_member_weight{member="a",pool="web"} 0.0', metrics.text)

    @defer.inlineCallbacks
    def test_weight_types(self):
        for weight in (-1, 1.5, 4.0, True, None, "3", [3], {"n": 3}):
            yield self.assertRefused({"weight": weight}, 400, "weight must be a whole number")

    @defer.inlineCallbacks
    def test_state_values(self):
        for state in ("drained", "DRAIN", "", None, 1, ["drain"], {"drain": True}):
            yield self.assertRefused({"state": state}, 400, "state must be one of")

    @defer.inlineCallbacks
    def test_a_bad_field_refuses_the_good_one(self):
        yield self.assertRefused({"state": "drain", "weight": 300}, 400, "weight must be")
        yield self.assertRefused({"state": "nope", "weight": 2}, 400, "state must be")
        yield self.assertRefused({"state": "drain", "colour": "red"}, 400,
                                 "unknown key 'colour'")

    @defer.inlineCallbacks
    def test_not_an_object(self):
        for body in (b"[]", b'"drain"', b"3", b"null", b"true"):
            yield self.assertRefused(body, 400, "request body must be a JSON object")

    @defer.inlineCallbacks
    def test_not_json(self):
        cases = [
            (b"", "request body is not JSON"),
            (b"{", "request body is not JSON"),
            (b"\xff{}", "request body is not JSON: it is not UTF-8 text"),
            (b'{"weight": NaN}', "NaN is not a JSON value"),
            (b'{"weight": Infinity}', "Infinity is not a JSON value"),
            (b'{"weight": ' + b"9" * 5000 + b"}", "request body is not JSON"),
        ]
        for body, message in cases:
            yield self.assertRefused(body, 400, message)

    @defer.inlineCallbacks
    def test_key_given_twice(self):
        # "last one wins" would let a checked value hide an unchecked one
        yield self.assertRefused(b'{"weight": 2, "weight": 3}', 400,
                                 "key 'weight' is given twice")

    @defer.inlineCallbacks
    def test_nested_too_deep(self):
        # Within the size limit, deep enough to exhaust the JSON parser's stack.
        yield self.assertRefused(b"[" * 30000 + b"]" * 30000, 400,
                                 "request body is nested too deeply")
        yield self.assertRefused(b'{"weight": ' + b"[" * 60000, 400,
                                 "request body is nested too deeply")

    @defer.inlineCallbacks
    def test_body_over_the_limit(self):
        yield self.assertRefused(b'{"weight": 2, "pad": "' + b"x" * 70_000 + b'"}', 413,
                                 "request body is larger than 65536 bytes")


class QueryTests(AdminServerTestCase):
    """``/api/persistence/NAME``'s paging parameters: digits in range, each once,
    and no other parameter."""

    def setUp(self):
        super().setUp()
        add_persistence(self.runtime)

    @defer.inlineCallbacks
    def test_good(self):
        r = yield self.request("GET", "/api/persistence/sticky?offset=1&limit=2")
        self.assertEqual((r.code, r.json()["offset"], len(r.json()["entries"])), (200, 1, 2))

    @defer.inlineCallbacks
    def test_refused(self):
        cases = [
            ("?limt=5", "unknown parameter 'limt' (did you mean 'limit'?)"),
            ("?token=x", "unknown parameter 'token' (use offset, limit)"),
            ("?limit=1&limit=2", "parameter 'limit' is given twice"),
            ("?limit=-1", "limit must be a whole number from 1 to 1000"),
            ("?limit=+5", "limit must be a whole number from 1 to 1000"),
            ("?limit=1_0", "limit must be a whole number from 1 to 1000"),
            ("?limit=%205", "limit must be a whole number from 1 to 1000"),
            ("?limit=1001", "limit must be a whole number from 1 to 1000"),
            ("?offset=" + "9" * 5000,
             f"offset must be a whole number from 0 to {2**62}"),
        ]
        for query, message in cases:
            r = yield self.request("GET", "/api/persistence/sticky" + query)
            self.assertEqual((r.code, r.json()), (400, {"error": message}), query)
        self.assertEqual(len(self.runtime.persistence_stores["sticky"]), 6)
