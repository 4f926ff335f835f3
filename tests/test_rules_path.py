"""``path`` rules match a normalised path (issue 13, item 8): every
spelling of ``/admin`` a server reads as ``/admin`` matches
``path ^= /admin``, and the member still gets the target as sent."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbframe.config.model import Rule
from lbframe.messages import RequestHead, normalize_path
from lbframe.rules import CompiledRule
from tests.httpkit import HTTPSiteMixin


def _admin_rule(op: str = "^=", value: str = "/admin") -> CompiledRule:
    return CompiledRule.compile(Rule(name="admin", subject="path", subject_arg=None, op=op,
                                     value=value, pool="admin"))


def _matches(rule: CompiledRule, target: str) -> bool:
    return rule.matches(RequestHead("GET", target, "1.1", [(b"Host", b"h")]))


def _encode(char: str, upper: bool) -> str:
    escape = "%{:02x}".format(ord(char))
    return escape.upper() if upper else escape


# -- generated spellings of /admin ---------------------------------------------

_prefix = st.sampled_from(["", "http://h", "HTTP://example.test:8080", "https://a.b"])
_slash = st.sampled_from(["/", "//", "///", "\\", "/\\"])
#: path pieces that lead back to where they started
_detour = st.sampled_from(["./", ".//", "%2e/", "%2E/", "x/../", "x/%2e%2e/", "x/%2E%2E/",
                           "x/.%2e/", "x/%2e./", "x//..//", "x/..;/", "x/..;a=b/", "../",
                           "%2e%2e/", "x\\..\\", "%78/%2e%2e/"])
#: per letter of "admin": percent-encode it?, with upper-case hex digits?
_letter = st.tuples(st.booleans(), st.booleans())
_suffix = st.sampled_from(["", "/", "/x", "?q=1", "/./", "//y", "/x/../z", "?/../../etc",
                           ";p=1", "/%2e"])


@st.composite
def admin_spellings(draw) -> str:
    name = "".join(_encode(c, up) if enc else c
                   for c, (enc, up) in zip("admin", draw(st.lists(_letter, min_size=5,
                                                                  max_size=5))))
    detours = "".join(draw(st.lists(_detour, max_size=4)))
    return draw(_prefix) + draw(_slash) + detours + name + draw(_suffix)


#: characters a request target is made of, the tricky ones over-represented
_target_text = st.lists(st.sampled_from(
    list("/\\.%;?#:=&-_~aAdDeEfF0123456789xyz") + ["%2e", "%2E", "%2f", "%25", "..", "//",
                                                  "http://"]), max_size=40).map("".join)


class NormalizePathTests(SynchronousTestCase):
    def test_examples(self):
        for target, path in [
            ("/a/b", "/a/b"), ("//admin", "/admin"), ("/x/../admin", "/admin"),
            ("/%2e%2e/admin", "/admin"), ("/x/%2E%2e/admin/", "/admin/"),
            ("http://h/admin?x", "/admin"), ("HTTP://h", "/"), ("/a/./b/.", "/a/b/"),
            ("/..;/admin", "/admin"), ("/a%2fb", "/a%2Fb"), ("/%61dmin", "/admin"),
            ("/a//..//b", "/b"), ("/..", "/"), ("/a/b/..", "/a/"), ("*", "*"),
            ("/a\\..\\admin", "/admin"), ("/x?/../admin", "/x"), ("/%%34%31", "/%2541"),
            ("/cart;jsessionid=1?x", "/cart;jsessionid=1"), ("/%7e%41", "/~A"),
        ]:
            self.assertEqual(normalize_path(target), path, target)

    @settings(max_examples=500, deadline=None)
    @given(_target_text)
    def test_idempotent(self, target):
        once = normalize_path(target)
        self.assertEqual(normalize_path(once), once)

    @settings(max_examples=500, deadline=None)
    @given(_target_text)
    def test_result_is_clean(self, target):
        path = normalize_path(target)
        if path == "*":
            return
        self.assertTrue(path.startswith("/"))
        self.assertNotIn("//", path)
        self.assertNotIn("\\", path)
        segments = [s.split(";", 1)[0] for s in path.split("/")]
        self.assertNotIn(".", segments)
        self.assertNotIn("..", segments)

    @settings(max_examples=1000, deadline=None)
    @given(admin_spellings())
    def test_every_spelling_of_admin_matches(self, target):
        self.assertTrue(_matches(_admin_rule(), target), target)

    def test_encoded_slash_is_not_a_separator(self):
        # Documented: %2F is kept (encoded, upper-cased), not decoded.
        self.assertEqual(normalize_path("/x%2f..%2Fadmin"), "/x%2F..%2Fadmin")
        self.assertFalse(_matches(_admin_rule(), "/x%2f..%2Fadmin"))
        self.assertTrue(_matches(_admin_rule("~", "%2F"), "/a%2fb"))

    def test_other_paths_do_not_match(self):
        for target in ("/", "/adm", "/x/admin", "/administrator/.."):
            self.assertFalse(_matches(_admin_rule(), target), target)

    def test_head_path_stays_raw(self):
        head = RequestHead("GET", "//a/../b?q", "1.1", [])
        self.assertEqual(head.path, "//a/../b")
        self.assertEqual(head.normalized_path, "/b")


class PathRuleEndToEndTests(HTTPSiteMixin, TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def test_bypass_spellings_reach_the_admin_pool_with_the_target_unchanged(self):
        web, web_member = self.member("web")
        admin, admin_member = self.member("admin")
        port = self.serve_http(f"member w = 127.0.0.1:{web}", "rules = admin\nforwarded_for = no",
                               more=f"""
[pool admin]
member a = 127.0.0.1:{admin}

[rule admin]
match = path ^= /admin
pool = admin
""")
        targets = [b"//admin", b"/x/../admin/", b"/%61dmin", b"/%2E%2e/admin",
                   b"http://h/admin/x", b"/.//admin", b"/x/..;/admin", b"/static/../admin"]
        for target in targets:
            client = yield self.exchange(port, b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % target)
            self.assertEqual(client.responses[0].header("x-member"), "admin", target)
        self.assertEqual(admin_member.urls, targets)
        self.assertEqual(web_member.urls, [])
        client = yield self.exchange(port, b"GET /public HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(client.responses[0].header("x-member"), "web")
