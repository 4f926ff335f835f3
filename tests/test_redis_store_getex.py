"""Review: the Redis store on a Redis without GETEX (before 6.2) falls back to
GET + EXPIRE instead of treating the error answer as an outage."""

from __future__ import annotations

import importlib.util
import os
import sys
from types import SimpleNamespace

from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

if importlib.util.find_spec("lbframe_redis") is None:  # not installed: the checkout's
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "plugins", "lbframe-redis", "src"))

import txredisapi  # noqa: E402

from lbframe_redis import RedisStore  # noqa: E402


class OldRedis:
    """A txredisapi connection to a Redis 6.0: GETEX is an unknown command."""

    def __init__(self):
        self.table = {"lbframe:persist:cart:s1": b"a"}
        self.commands = []

    def execute_command(self, *args):
        self.commands.append(args[0])
        if args[0] == "GETEX":
            return defer.fail(txredisapi.ResponseError(
                "ERR unknown command 'GETEX', with args beginning with: "))
        if args[0] == "GET":
            return defer.succeed(self.table.get(args[1]))
        if args[0] == "EXPIRE":
            return defer.succeed(1)
        raise AssertionError(f"unexpected {args!r}")


class GetexFallbackTests(TestCase):
    def setUp(self):
        self.clock = task.Clock()
        profile = SimpleNamespace(name="cart", timeout=60.0, options={})
        self.store = RedisStore("redis://127.0.0.1:6379/0", profile, self.clock)
        self.redis = self.store._client = OldRedis()

    def test_reads_with_get_when_getex_is_unknown(self):
        results = []
        self.store.get("s1").addCallback(results.append)
        self.assertEqual(results, ["a"])
        self.assertFalse(self.store.down)
        self.assertEqual(self.redis.commands, ["GETEX", "GET", "EXPIRE"])
        # From then on GET (and EXPIRE) only.
        self.store.get("s1").addCallback(results.append)
        self.assertEqual(results, ["a", "a"])
        self.assertEqual(self.redis.commands[3:], ["GET", "EXPIRE"])
