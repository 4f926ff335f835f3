"""Persistence (F6): methods, profiles, the memory store, the balancer seam.

Unit tests through :class:`lbframe.balancer.Balancer` with request and
response heads (no sockets); the end-to-end ones are in
``test_persistence_live.py``.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from lbframe.balancer import NO_HEADERS, RequestContext
from lbframe.config import parse_site
from lbframe.errors import ConfigError
from lbframe.interfaces import IPersistenceMethod, IPersistenceStore
from lbframe.messages import RequestHead, ResponseHead
from lbframe.persistence.memory import MemoryStore
from lbframe.plugins import load_plugins
from lbframe.service import build_runtime

PLUGINS = load_plugins(entry_points=False)


def runtime_for(profile_lines: str, members: int = 3, extra: str = "", clock=None,
                pool_lines: str = ""):
    text = f"""
[virtual v]
listen = tcp:18080:interface=127.0.0.1
pool = p
persistence = s

[persistence s]
{profile_lines}

[pool p]
{pool_lines}
""" + "".join(f"member m{i} = 127.0.0.1:{19000 + i}\n" for i in range(members)) + extra
    return build_runtime(parse_site(text, "site.ini"), PLUGINS, clock or Clock())


def request(target="/", cookie=None, host="192.0.2.1", port=40000, virtual="v"):
    headers = [(b"Host", b"shop.example")]
    if cookie:
        headers.append((b"Cookie", cookie.encode()))
    return RequestContext(host, port, virtual, RequestHead("GET", target, "1.1", headers))


def response(*set_cookies, location=None):
    headers = [(b"Set-Cookie", c.encode()) for c in set_cookies]
    if location:
        headers.append((b"Location", location.encode()))
    return ResponseHead(200, "OK", "1.1", headers)


class Exchange:
    """One request through a balancer: prepare, choose, the member answers."""

    def __init__(self, balancer):
        self.balancer = balancer

    def __call__(self, context, answer=None):
        self.assert_sync(self.balancer.prepare(context))
        decision = self.balancer.choose(context)
        extra = self.balancer.responded(context, decision, answer or response())
        return decision.member.name, extra

    @staticmethod
    def assert_sync(d):
        assert d is None, "a memory store must not make the data path wait"


class InterfaceTests(SynchronousTestCase):
    def test_builtins_provide_the_interfaces(self):
        for method in ("source-ip", "cookie-insert", "cookie-learn", "url-session"):
            cookie = "\ncookie = JSESSIONID" if method == "cookie-learn" else ""
            rt = runtime_for(f"method = {method}{cookie}")
            profile = rt.balancers["v"].persistence
            self.assertTrue(verifyObject(IPersistenceMethod, profile.method))
            self.assertTrue(verifyObject(IPersistenceStore, profile.store))

    def test_no_persistence_costs_nothing(self):
        rt = build_runtime(parse_site("[virtual v]\nlisten = tcp:1\npool = p\n"
                                      "[pool p]\nmember a = 127.0.0.1:1\n"), PLUGINS, Clock())
        b = rt.balancers["v"]
        ctx = request()
        self.assertIsNone(b.prepare(ctx))
        self.assertIs(b.responded(ctx, b.choose(ctx), response()), NO_HEADERS)


class ConfigTests(SynchronousTestCase):
    def error(self, profile_lines):
        with self.assertRaises(ConfigError) as e:
            runtime_for(profile_lines)
        return str(e.exception)

    def test_unknown_key_names_file_line_section_key(self):
        msg = self.error("method = source-ip\nmask6 = 64\nsecrte = x")
        self.assertIn("site.ini:", msg)
        self.assertIn("[persistence s] secrte", msg)

    def test_cookie_insert_keys_checked(self):
        self.assertIn("samesite", self.error("method = cookie-insert\nsamesite = sometimes"))
        self.assertIn("secure", self.error("method = cookie-insert\nsecure = perhaps"))

    def test_mask_is_ipv4_mask6_is_ipv6(self):
        self.assertIn("mask6", self.error("method = source-ip\nmask = 64"))
        self.assertIn("mask6", self.error("method = source-ip\nmask6 = 129"))

    def test_memory_max_entries(self):
        self.assertIn("max_entries", self.error("method = source-ip\nmax_entries = 0"))
        rt = runtime_for("method = source-ip\nmax_entries = 7")
        self.assertEqual(rt.persistence_stores["s"].max_entries, 7)

    def test_unavailable_store(self):
        self.assertIn("store", self.error("method = source-ip\nstore = nosuch://x"))


class SourceIPTests(SynchronousTestCase):
    def key(self, host, lines=""):
        rt = runtime_for("method = source-ip\n" + lines)
        return rt.balancers["v"].persistence.method.key_for(RequestContext(host, 1, "v"))

    def test_keys(self):
        self.assertEqual(self.key("192.0.2.77"), "192.0.2.77")
        self.assertEqual(self.key("192.0.2.77", "mask = 24"), "192.0.2.0/24")
        self.assertEqual(self.key("192.0.2.77", "mask = 0"), "0.0.0.0/0")
        self.assertEqual(self.key("::ffff:192.0.2.77", "mask = 24"), "192.0.2.0/24")
        self.assertEqual(self.key("2001:db8:0:0::1"), "2001:db8::1")
        self.assertEqual(self.key("2001:db8:1:2:3::1", "mask6 = 48"), "2001:db8:1::/48")
        self.assertIsNone(self.key("not-an-address", "mask = 24"))

    def test_sticks_and_new_clients_get_scheduler_picks(self):
        rt = runtime_for("method = source-ip\nmask = 24")
        b = rt.balancers["v"]
        first = b.choose(RequestContext("192.0.2.1", 1, "v")).member
        for i in range(20):
            self.assertIs(b.choose(RequestContext(f"192.0.2.{i}", i, "v")).member, first)
        others = {b.choose(RequestContext(f"198.51.{i}.1", 1, "v")).member.name for i in range(2)}
        self.assertEqual(len(others | {first.name}), 3)  # round robin went on
        self.assertEqual(len(rt.persistence_stores["s"]), 3)

    def test_member_down_repicks_and_new_member_sticks(self):
        rt = runtime_for("method = source-ip")
        b, pool = rt.balancers["v"], rt.pools["p"]
        ctx = lambda: RequestContext("192.0.2.1", 1, "v")  # noqa: E731
        first = b.choose(ctx()).member
        pool.report_check(first, "t", False, "dead", rise=1, fall=1, now=0)
        second = b.choose(ctx()).member
        self.assertIsNot(second, first)
        for _ in range(20):
            self.assertIs(b.choose(ctx()).member, second)
        self.assertEqual(rt.persistence_stores["s"].get("192.0.2.1"), second.name)
        self.assertEqual(b.persistence.replaced, 1)
        # The first member comes back: the session stays where it is now.
        pool.report_check(first, "t", True, "ok", rise=1, fall=1, now=1)
        self.assertIs(b.choose(ctx()).member, second)

    def test_draining_keeps_sessions_disabled_moves_them(self):
        rt = runtime_for("method = source-ip")
        b, pool = rt.balancers["v"], rt.pools["p"]
        first = b.choose(RequestContext("192.0.2.1", 1, "v")).member
        pool.set_admin(first, "draining")
        self.assertIs(b.choose(RequestContext("192.0.2.1", 2, "v")).member, first)
        new = {b.choose(RequestContext(f"203.0.113.{i}", 1, "v")).member for i in range(10)}
        self.assertNotIn(first, new)
        pool.set_admin(first, "disabled")
        self.assertIsNot(b.choose(RequestContext("192.0.2.1", 3, "v")).member, first)

    def test_excluded_member_is_replaced(self):
        """The tcp path retries a refusing member with ``exclude``."""
        rt = runtime_for("method = source-ip")
        b = rt.balancers["v"]
        first = b.choose(RequestContext("192.0.2.1", 1, "v")).member
        ctx = RequestContext("192.0.2.1", 2, "v")
        retry = b.choose(ctx, exclude=[first]).member
        self.assertIsNot(retry, first)
        self.assertIs(b.choose(RequestContext("192.0.2.1", 3, "v")).member, retry)

    def test_full_member_keeps_its_entry(self):
        rt = runtime_for("method = source-ip", members=0,
                         extra="member a = 127.0.0.1:1 maxconn=1\nmember b = 127.0.0.1:2\n")
        b, pool = rt.balancers["v"], rt.pools["p"]
        a = pool.members["a"]
        self.assertIs(b.choose(RequestContext("192.0.2.1", 1, "v")).member, a)
        pool.take(a)
        self.assertIs(b.choose(RequestContext("192.0.2.1", 2, "v")).member, pool.members["b"])
        pool.release(a)
        self.assertIs(b.choose(RequestContext("192.0.2.1", 3, "v")).member, a)

    def test_sorry_pool_decisions_are_not_remembered(self):
        text = """
[virtual v]
listen = tcp:18080:interface=127.0.0.1
pool = p
sorry = sorry
persistence = s
[persistence s]
method = cookie-insert
[pool p]
member a = 127.0.0.1:1
[pool sorry]
member s = 127.0.0.1:2
"""
        rt = build_runtime(parse_site(text), PLUGINS, Clock())
        b, pool = rt.balancers["v"], rt.pools["p"]
        pool.report_check(pool.members["a"], "t", False, "dead", rise=1, fall=1, now=0)
        ctx = request()
        decision = b.choose(ctx)
        self.assertTrue(decision.sorry)
        self.assertEqual(b.responded(ctx, decision, response()), ())


class CookieInsertTests(SynchronousTestCase):
    LINES = "method = cookie-insert\nsecret = s3cret\nsamesite = Lax\nsecure = yes"

    def test_first_answer_sets_the_cookie_then_it_routes(self):
        rt = runtime_for(self.LINES)
        ex = Exchange(rt.balancers["v"])
        name, extra = ex(request())
        (header, value), = extra
        self.assertEqual(header, b"Set-Cookie")
        cookie = value.decode().split(";")[0]
        self.assertTrue(cookie.startswith("LBSERVER="))
        self.assertEqual(value.decode()[len(cookie):], "; Path=/; HttpOnly; SameSite=Lax; Secure")
        self.assertNotIn("127.0.0.1", value.decode())
        self.assertNotIn("1900", value.decode())
        for _ in range(20):
            again, extra = ex(request(cookie=f"other=1; {cookie}"))
            self.assertEqual(again, name)
            self.assertEqual(extra, ())  # only the first answer carries it
        # A new client gets the scheduler's next pick.
        self.assertNotEqual(ex(request())[0], name)
        self.assertEqual(len(rt.persistence_stores["s"]), 0)  # no table at all

    def test_token_survives_a_restart_and_depends_on_the_secret(self):
        one = runtime_for(self.LINES).balancers["v"].persistence.method
        two = runtime_for(self.LINES).balancers["v"].persistence.method
        other = runtime_for("method = cookie-insert\nsecret = another").balancers["v"].persistence.method
        self.assertEqual(one.token("m1"), two.token("m1"))
        self.assertNotEqual(one.token("m1"), one.token("m2"))
        self.assertNotEqual(one.token("m1"), other.token("m1"))

    def test_dead_member_repicked_and_new_cookie_set(self):
        rt = runtime_for(self.LINES)
        ex = Exchange(rt.balancers["v"])
        name, extra = ex(request())
        cookie = extra[0][1].decode().split(";")[0]
        pool = rt.pools["p"]
        pool.report_check(pool.members[name], "t", False, "dead", rise=1, fall=1, now=0)
        new, extra = ex(request(cookie=cookie))
        self.assertNotEqual(new, name)
        new_cookie = extra[0][1].decode().split(";")[0]
        self.assertNotEqual(new_cookie, cookie)
        for _ in range(5):
            self.assertEqual(ex(request(cookie=new_cookie)), (new, ()))

    def test_forged_token_gets_a_scheduler_pick(self):
        rt = runtime_for(self.LINES)
        ex = Exchange(rt.balancers["v"])
        name, extra = ex(request(cookie="LBSERVER=0123456789abcdef"))
        self.assertEqual(len(extra), 1)


class CookieLearnTests(SynchronousTestCase):
    LINES = "method = cookie-learn\ncookie = JSESSIONID"

    def test_learns_from_set_cookie_and_routes(self):
        rt = runtime_for(self.LINES)
        ex = Exchange(rt.balancers["v"])
        name, extra = ex(request(), response("JSESSIONID=abc123; Path=/; HttpOnly", "x=1"))
        self.assertEqual(extra, ())
        self.assertEqual(rt.persistence_stores["s"].get("abc123"), name)
        for _ in range(20):
            self.assertEqual(ex(request(cookie="JSESSIONID=abc123"))[0], name)
        # Other clients are spread by the scheduler.
        self.assertEqual(len({ex(request())[0] for _ in range(3)}), 3)

    def test_unknown_id_is_owned_by_the_member_that_answers(self):
        rt = runtime_for(self.LINES)
        ex = Exchange(rt.balancers["v"])
        name, _ = ex(request(cookie="JSESSIONID=fromyesterday"))
        for _ in range(5):
            self.assertEqual(ex(request(cookie="JSESSIONID=fromyesterday"))[0], name)

    def test_deleted_cookie_is_not_learned(self):
        rt = runtime_for(self.LINES)
        Exchange(rt.balancers["v"])(request(), response("JSESSIONID=; Max-Age=0"))
        self.assertEqual(len(rt.persistence_stores["s"]), 0)

    def test_member_dies_next_request_repicks_and_sticks(self):
        rt = runtime_for(self.LINES)
        ex, pool = Exchange(rt.balancers["v"]), rt.pools["p"]
        name, _ = ex(request(), response("JSESSIONID=s1"))
        pool.report_check(pool.members[name], "t", False, "dead", rise=1, fall=1, now=0)
        new, _ = ex(request(cookie="JSESSIONID=s1"))
        self.assertNotEqual(new, name)
        for _ in range(20):
            self.assertEqual(ex(request(cookie="JSESSIONID=s1"))[0], new)


class URLSessionTests(SynchronousTestCase):
    def test_path_and_query_parameters(self):
        rt = runtime_for("method = url-session")
        key = rt.balancers["v"].persistence.method.key_for
        self.assertEqual(key(request("/cart;jsessionid=A1?item=3")), "A1")
        self.assertEqual(key(request("/cart;JSESSIONID=A1")), "A1")
        self.assertEqual(key(request("/a;x=1/cart;jsessionid=B2;v=1")), "B2")
        self.assertEqual(key(request("/cart?item=3&jsessionid=C3")), "C3")
        self.assertIsNone(key(request("/cart?jsessionid=")))
        self.assertIsNone(key(request("/cart")))
        rt = runtime_for("method = url-session\nparameter = sid")
        self.assertEqual(rt.balancers["v"].persistence.method.key_for(request("/x?sid=9")), "9")

    def test_first_request_scheduled_answering_member_owns_it(self):
        rt = runtime_for("method = url-session")
        ex = Exchange(rt.balancers["v"])
        name, _ = ex(request("/cart;jsessionid=NEW1"))
        for i in range(20):
            target = f"/page{i};jsessionid=NEW1" if i % 2 else f"/page{i}?jsessionid=NEW1"
            self.assertEqual(ex(request(target))[0], name)
        self.assertNotEqual(ex(request("/cart;jsessionid=NEW2"))[0], name)

    def test_learns_from_the_cookie_of_the_same_name(self):
        """The answer that starts a session: cookie and rewritten links."""
        rt = runtime_for("method = url-session")
        ex = Exchange(rt.balancers["v"])
        name, _ = ex(request("/start"), response("JSESSIONID=U7; Path=/"))
        for _ in range(5):
            self.assertEqual(ex(request("/next;jsessionid=U7"))[0], name)

    def test_learns_from_a_redirect(self):
        rt = runtime_for("method = url-session")
        ex = Exchange(rt.balancers["v"])
        name, _ = ex(request("/login"), response(location="/home;jsessionid=R9"))
        self.assertEqual(ex(request("/home;jsessionid=R9"))[0], name)


class SharedProfileTests(SynchronousTestCase):
    """F6f: two virtual servers naming one profile share its table."""

    def test_cart_learned_on_http_honoured_on_https(self):
        text = """
[virtual shop]
listen = tcp:18080:interface=127.0.0.1
pool = p
persistence = cart

[virtual shop-tls]
listen = tcp:18443:interface=127.0.0.1
pool = p443
persistence = cart

[persistence cart]
method = cookie-learn
cookie = JSESSIONID

[pool p]
member a = 127.0.0.1:19001
member b = 127.0.0.1:19002
member c = 127.0.0.1:19003

[pool p443]
member a = 127.0.0.1:19441
member b = 127.0.0.1:19442
member c = 127.0.0.1:19443
"""
        rt = build_runtime(parse_site(text), PLUGINS, Clock())
        shop, tls = Exchange(rt.balancers["shop"]), Exchange(rt.balancers["shop-tls"])
        self.assertIs(rt.balancers["shop"].persistence, rt.balancers["shop-tls"].persistence)
        tls(request(virtual="shop-tls"))  # move the TLS round robin on
        name, _ = shop(request(virtual="shop"), response("JSESSIONID=cart42"))
        for _ in range(20):
            self.assertEqual(tls(request(cookie="JSESSIONID=cart42", virtual="shop-tls"))[0],
                             name)


class MemoryStoreTests(SynchronousTestCase):
    def test_lru_eviction(self):
        store = MemoryStore(60, Clock(), max_entries=3)
        for key in "abc":
            store.set(key, "m-" + key)
        store.get("a")  # a is now the most recently used
        store.set("d", "m-d")
        self.assertIsNone(store.get("b"))
        self.assertEqual([k for k, _, _ in store.items()], ["c", "a", "d"])
        self.assertEqual(store.evicted, 1)
        self.assertEqual(len(store), 3)

    def test_idle_expiry_on_a_clock(self):
        clock = Clock()
        store = MemoryStore(10, clock)
        store.set("a", "m1")
        store.set("b", "m2")
        clock.advance(6)
        self.assertEqual(store.get("a"), "m1")  # use refreshes a
        clock.advance(6)
        self.assertIsNone(store.get("b"))  # 12 s idle
        self.assertEqual(store.get("a"), "m1")  # 6 s idle
        clock.advance(11)
        self.assertEqual(len(store), 0)
        self.assertEqual(store.expired, 2)

    def test_writes_sweep_expired_entries_without_reads(self):
        clock = Clock()
        store = MemoryStore(5, clock)
        for i in range(100):
            store.set(f"k{i}", "m")
        clock.advance(6)
        for i in range(20):
            store.set(f"n{i}", "m")
        # 8 expired entries dropped per write: the old 100 are gone.
        self.assertEqual(len(store._entries), 20)

    def test_touch_delete_clear(self):
        clock = Clock()
        store = MemoryStore(10, clock)
        store.set("a", "m1")
        clock.advance(8)
        store.touch("a")
        clock.advance(8)
        self.assertEqual(store.get("a"), "m1")
        store.delete("a")
        self.assertIsNone(store.get("a"))
        store.set("b", "m")
        store.clear()
        self.assertEqual(len(store), 0)

    def test_profile_timeout_drives_expiry(self):
        clock = Clock()
        rt = runtime_for("method = source-ip\ntimeout = 1m", clock=clock)
        b = rt.balancers["v"]
        first = b.choose(RequestContext("192.0.2.1", 1, "v")).member
        b.choose(RequestContext("192.0.2.2", 1, "v"))  # round robin moves on
        clock.advance(61)
        self.assertIsNot(b.choose(RequestContext("192.0.2.1", 1, "v")).member, first)


class FakeRemoteStore:
    """An asynchronous store whose reads the test answers."""

    asynchronous = True

    def __init__(self):
        self.data, self.reads, self.writes = {}, [], []

    def get(self, key):
        d = defer.Deferred()
        self.reads.append((key, d))
        return d

    def set(self, key, name):
        self.writes.append((key, name))
        self.data[key] = name

    def touch(self, key):
        pass

    def delete(self, key):
        self.data.pop(key, None)


class AsynchronousStoreTests(SynchronousTestCase):
    def setUp(self):
        self.rt = runtime_for("method = source-ip")
        self.balancer = self.rt.balancers["v"]
        self.store = self.balancer.persistence.store = FakeRemoteStore()

    def test_read_before_the_decision_written_after(self):
        ctx = RequestContext("192.0.2.1", 1, "v")
        d = self.balancer.prepare(ctx)
        self.assertIsNotNone(d)
        (key, read), = self.store.reads
        self.assertEqual(key, "192.0.2.1")
        read.callback("m2")
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.balancer.choose(ctx).member.name, "m2")
        self.assertEqual(self.store.writes, [])  # a hit writes nothing
        ctx = RequestContext("192.0.2.9", 1, "v")
        d = self.balancer.prepare(ctx)
        self.store.reads[-1][1].callback(None)
        member = self.balancer.choose(ctx).member
        self.assertEqual(self.store.writes, [("192.0.2.9", member.name)])

    def test_store_failure_means_the_scheduler_decides(self):
        ctx = RequestContext("192.0.2.1", 1, "v")
        d = self.balancer.prepare(ctx)
        self.store.reads[-1][1].errback(ConnectionError("store unreachable"))
        self.assertIsNone(self.successResultOf(d))  # never an errback into the data path
        self.assertIsNotNone(self.balancer.choose(ctx).member)
        self.flushLoggedErrors(ConnectionError)

    def test_unprepared_context_falls_back_to_the_scheduler(self):
        ctx = RequestContext("192.0.2.1", 1, "v")
        self.assertIsNotNone(self.balancer.choose(ctx).member)
        self.assertEqual(self.store.reads, [])
