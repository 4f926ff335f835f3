"""``store = redis://HOST:PORT/DB``: lbframe persistence tables kept in Redis.

Registered through the ``lbframe`` entry point (``setup.cfg``), exactly as
any third-party plugin. The store is asynchronous
(:attr:`RedisStore.asynchronous`): lbframe reads it *before* the balancing
decision and waits for the answer without blocking the reactor; writes go
out after the decision and are not waited for.

Redis being slow or gone never fails a request: every operation is bounded
by ``redis_timeout``; a failure logs one warning and takes the store out of
the path for ``redis_retry`` (reads answer "no entry", writes are dropped),
so the scheduler decides until Redis answers again.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from lbframe import hookimpl
from lbframe.errors import OptionError
from lbframe.interfaces import IPersistenceStore

__version__ = "0.1.0"
LBFRAME_PLUGIN_API = (1, 0)

log = Logger(namespace="lbframe.redis")

DEFAULT_TIMEOUT = 0.25
DEFAULT_RETRY = 2.0
#: keys listed at most by the admin API's GET /api/persistence/NAME
MAX_LISTED = 10_000
SCAN_COUNT = 500

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(key: str, text: str) -> float:
    m = _DURATION.fullmatch(text)
    if m is None or float(m.group(1)) <= 0:
        raise OptionError(key, f"{key} must be a duration such as 250ms or 2s, not {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_url(url: str) -> tuple[str, int, int, str | None]:
    """``redis://[:PASSWORD@]HOST[:PORT][/DB]`` → (host, port, db, password)."""
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError as e:
        raise OptionError("store", f"bad redis URL {url!r}: {e}") from None
    if parts.scheme != "redis" or not parts.hostname:
        raise OptionError("store", f"bad redis URL {url!r} (use redis://HOST:PORT/DB)")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise OptionError("store", f"bad redis database {path!r} in {url!r} (a number)")
    if parts.query or parts.fragment:
        raise OptionError("store", f"bad redis URL {url!r}: no query or fragment allowed")
    password = unquote(parts.password) if parts.password else None
    return parts.hostname, port, int(path or 0), password


class StoreUnavailable(Exception):
    """Redis did not answer (refused, timed out, or lost the connection)."""


@implementer(IPersistenceStore)
class RedisStore:
    """One profile's table in Redis: ``PREFIX + key`` → member name, expiring
    after the profile's ``timeout`` without use."""

    asynchronous = True

    def __init__(self, url: str, profile, reactor, options=None):
        options = dict(profile.options if options is None else options)
        self.url = url
        self.host, self.port, self.db, self._password = parse_url(url)
        self.profile = profile.name
        self.ttl = max(1, int(round(profile.timeout)))
        self.timeout = parse_duration("redis_timeout", options["redis_timeout"]) \
            if "redis_timeout" in options else DEFAULT_TIMEOUT
        self.retry = parse_duration("redis_retry", options["redis_retry"]) \
            if "redis_retry" in options else DEFAULT_RETRY
        self.prefix = options.get("redis_prefix", f"lbframe:persist:{profile.name}:")
        self.reactor = reactor
        self._client = None
        self._shutdown_trigger = None
        #: the store is out of the path until this time (after a failure)
        self.down_until = 0.0
        self.down = False
        #: operations that failed, and writes dropped while Redis was down
        self.failures = 0
        self.dropped = 0
        self._getex = True  # Redis >= 6.2; else GET then EXPIRE

    # -- the connection ---------------------------------------------------

    def client(self):
        """The txredisapi connection, made on first use (so ``lbframe check``
        never connects)."""
        if self._client is None:
            import txredisapi
            self._client = txredisapi.lazyConnection(
                self.host, self.port, dbid=self.db, reconnect=True, password=self._password,
                connectTimeout=self.timeout, replyTimeout=self.timeout, convertNumbers=False)
            self._shutdown_trigger = self.reactor.addSystemEventTrigger(
                "before", "shutdown", self.close)
        return self._client

    def close(self):
        """Disconnect (at reactor shutdown, or by tests)."""
        client, self._client = self._client, None
        if self._shutdown_trigger is not None:
            try:
                self.reactor.removeSystemEventTrigger(self._shutdown_trigger)
            except (ValueError, KeyError):
                pass
            self._shutdown_trigger = None
        if client is None:
            return defer.succeed(None)
        d = client.disconnect()
        return d.addErrback(lambda _: None) if d is not None else defer.succeed(None)

    def _available(self) -> bool:
        return not self.down or self.reactor.seconds() >= self.down_until

    def _call(self, what, *args):
        """Run one command, bounded by ``redis_timeout``; a Deferred that
        fails with :class:`StoreUnavailable` (after logging), or with Redis's
        own error answer (``txredisapi.ResponseError``)."""
        try:
            d = self.client().execute_command(*args)
        except Exception as e:  # txredisapi raises at once when it knows it is down
            d = defer.fail(e)
        d.addTimeout(self.timeout, self.reactor)
        d.addCallbacks(self._answered, self._failed, errbackArgs=(what,))
        return d

    def _answered(self, result):
        if self.down:
            self.down = False
            log.info("persistence {profile}: Redis at {host}:{port} answers again; "
                     "its table is used again", profile=self.profile, host=self.host,
                     port=self.port)
        return result

    def _failed(self, failure, what):
        self.failures += 1
        import txredisapi
        if failure.check(txredisapi.ResponseError):
            # Redis answered, with an error (e.g. GETEX before Redis 6.2): it is
            # not down, and the caller sees the answer.
            return failure
        if not self.down:
            log.warn("persistence {profile}: Redis at {host}:{port} failed ({error}) on "
                     "{what}; the scheduler decides without the table until Redis answers "
                     "(next try in {retry:g}s)", profile=self.profile, host=self.host,
                     port=self.port, error=_why(failure), what=what, retry=self.retry)
        self.down = True
        self.down_until = self.reactor.seconds() + self.retry
        raise StoreUnavailable(_why(failure))

    # -- IPersistenceStore ----------------------------------------------------

    def get(self, key):
        """A Deferred firing with the member name, or None (no entry, or
        Redis unavailable); never an errback."""
        if not self._available():
            return defer.succeed(None)
        k = self.prefix + key
        if self._getex:
            d = self._call("read", "GETEX", k, "EX", self.ttl)
        else:
            d = self._call("read", "GET", k)
            d.addCallback(self._refresh_after_get, k)
        d.addCallback(_text)
        d.addErrback(self._read_failed, key)
        return d

    def _refresh_after_get(self, value, k):
        if value is not None:
            self._call("refresh", "EXPIRE", k, self.ttl).addErrback(_ignore)
        return value

    def _read_failed(self, failure, key):
        if failure.check(StoreUnavailable):
            return None
        # A Redis error answer: GETEX unknown before Redis 6.2.
        if self._getex and "unknown command" in failure.getErrorMessage().lower():
            self._getex = False
            return self.get(key)
        log.warn("persistence {profile}: Redis read of {key!r} failed: {error}",
                 profile=self.profile, key=key, error=failure.getErrorMessage())
        return None

    def set(self, key, member_name):
        """Sent now, not waited for; the Deferred (for tests) never fails."""
        if not self._available():
            self.dropped += 1
            return defer.succeed(None)
        return self._call("write", "SET", self.prefix + key, member_name, "EX", self.ttl) \
            .addErrback(_ignore)

    def touch(self, key):
        if not self._available():
            return defer.succeed(None)
        return self._call("refresh", "EXPIRE", self.prefix + key, self.ttl).addErrback(_ignore)

    def delete(self, key):
        if not self._available():
            return defer.succeed(None)
        return self._call("delete", "DEL", self.prefix + key).addErrback(_ignore)

    # -- the admin API ----------------------------------------------------------

    def __len__(self):
        raise TypeError("a Redis table is not counted synchronously; see count()")

    @defer.inlineCallbacks
    def _keys(self, limit=None):
        keys, cursor = [], "0"
        while True:
            reply = yield self._call("scan", "SCAN", cursor, "MATCH", self.prefix + "*",
                                     "COUNT", SCAN_COUNT)
            cursor, batch = _text(reply[0]), reply[1]
            keys.extend(_text(k) for k in batch)
            if cursor == "0" or (limit is not None and len(keys) >= limit):
                return keys if limit is None else keys[:limit]

    @defer.inlineCallbacks
    def count(self):
        """A Deferred: how many entries the profile has in Redis."""
        keys = yield self._keys()
        return len(keys)

    @defer.inlineCallbacks
    def items(self):
        """A Deferred: (key, member, idle seconds) of up to MAX_LISTED entries."""
        keys = yield self._keys(MAX_LISTED)
        if not keys:
            return []
        values = yield self._call("list", "MGET", *keys)
        ttls = yield defer.gatherResults([self._call("list", "TTL", k) for k in keys])
        cut = len(self.prefix)
        out = []
        for k, v, ttl in zip(keys, values, ttls):
            if v is None:
                continue
            ttl = int(ttl)
            out.append((k[cut:], _text(v), float(max(0, self.ttl - ttl)) if ttl >= 0 else 0.0))
        out.sort(key=lambda e: -e[2])
        return out

    @defer.inlineCallbacks
    def clear(self):
        """A Deferred: forget every entry of the profile."""
        keys = yield self._keys()
        for i in range(0, len(keys), 500):
            yield self._call("clear", "DEL", *keys[i:i + 500])


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _ignore(failure):
    return None


def _why(failure) -> str:
    if failure.check(defer.TimeoutError, defer.CancelledError):
        return "no answer in time"
    return failure.getErrorMessage() or failure.type.__name__


def redis_store(url, profile, reactor):
    return RedisStore(url, profile, reactor)


#: the profile keys this store reads (lbframe refuses the others)
redis_store.option_keys = ("redis_timeout", "redis_retry", "redis_prefix")


@hookimpl
def lbframe_register_persistence_stores(registry):
    registry.add("redis", redis_store)
