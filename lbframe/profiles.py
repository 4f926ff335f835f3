"""Persistence profiles: a ``[persistence X]`` section at run time, one
method and one store, shared.

Core, not a plugin: the methods and stores are plugins
(``lbframe/persistence/``, ``plugins/lbframe-redis``); this module puts one
of each together for the balancer.

Every virtual server naming the profile gets the same :class:`Profile`, so a
session learned on one (http on :80) is honoured on another (https on :443,
F6f), whatever their protocols. The balancer calls it at three points:

- :meth:`Profile.prepare` before the decision: a remote store is read here,
  asynchronously (the data path waits for the Deferred); a local one is not;
- :meth:`Profile.member_for` inside the decision, and :meth:`Profile.picked`
  right after a scheduler pick (source-ip writes its entry then);
- :meth:`Profile.responded` when the chosen member's response head arrives
  (http): learning methods write here, cookie-insert adds its cookie.

Entries name members; one naming a member that is down or disabled (or
gone) is ignored and replaced by the scheduler's pick. A draining member
keeps its sessions: draining only stops *new* sessions.
"""

from __future__ import annotations

import attrs
from twisted.logger import Logger

from lbframe.errors import ConfigError, OptionError, did_you_mean

log = Logger(namespace="lbframe.persistence")

#: no headers to add to a response (the same empty tuple methods answer)
NO_HEADERS: tuple = ()


@attrs.define(slots=True, eq=False)
class Lookup:
    """What the profile found for one request (kept on its context)."""

    #: the request head it was made for (a new head is a new request)
    head: object
    key: str | None
    #: the member name the store holds for ``key``, or None
    name: str | None = None
    #: the decision used the entry
    hit: bool = False
    #: the entry's member was full (maxconn): scheduled elsewhere, entry kept
    held: bool = False


@attrs.define(eq=False)
class Profile:
    """A method and a store under one name, with counters for /metrics."""

    spec: object  # lbframe.config.model.Persistence
    method: object  # IPersistenceMethod
    store: object  # IPersistenceStore
    lookups: int = 0
    hits: int = 0
    #: entries that named a member that was down, disabled or gone
    replaced: int = 0
    #: entries written (scheduler picks, learned keys)
    written: int = 0
    _warned: set = attrs.field(factory=set)

    @property
    def name(self) -> str:
        return self.spec.name

    def __len__(self) -> int:
        return len(self.store)

    #: the counters /metrics reads, carried over a reload by :meth:`carry_counters_from`
    COUNTERS = ("lookups", "hits", "replaced", "written")

    def carry_counters_from(self, old: "Profile") -> bool:
        """Continue ``old``'s counters when a reload carried its store (the
        same table, so /metrics must not see a reset where nothing changed).
        A profile with a new store starts from zero, as its table does.
        Returns whether the counters were carried."""
        if old is self or old.store is not self.store:
            return False
        for name in self.COUNTERS:
            setattr(self, name, getattr(old, name))
        return True

    def warn_once(self, what: str, message: str, **kw) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warn(message, profile=self.name, **kw)

    # -- before the decision ----------------------------------------------

    def prepare(self, context):
        """None, or a Deferred (firing with None, never failing) once the
        remote store has been read for ``context``."""
        store = self.store
        if not store.asynchronous or self.method.stateless:
            return None
        key = self.method.key_for(context)
        lookup = context.persistence = Lookup(context.head, key)
        if key is None:
            return None
        try:
            d = store.get(key)
        except Exception:
            log.failure("persistence {profile}: store read failed", profile=self.name)
            return None

        def got(name):
            lookup.name = name
            return None

        def failed(failure):
            # A store should answer None itself when unreachable; this is
            # the last line: never fail the request for it.
            log.warn("persistence {profile}: store read failed ({error}); the scheduler "
                     "decides", profile=self.name, error=failure.getErrorMessage())
            return None

        return d.addCallbacks(got, failed)

    def _lookup(self, context) -> Lookup:
        lookup = context.persistence
        if lookup is not None and lookup.head is context.head:
            return lookup
        method = self.method
        key = method.key_for(context)
        lookup = context.persistence = Lookup(context.head, key)
        if key is not None and not method.stateless:
            store = self.store
            if store.asynchronous:
                self.warn_once("unprepared", "persistence {profile}: a protocol chose a member "
                               "without Balancer.prepare(); a remote store cannot be read "
                               "in the decision, the scheduler decides")
            else:
                lookup.name = store.get(key)
        return lookup

    # -- the decision ------------------------------------------------------

    def member_for(self, context, pool, exclude=()):
        """The member the profile holds for ``context`` in ``pool``, when it
        can take the connection; else None (the scheduler decides)."""
        lookup = self._lookup(context)
        key = lookup.key
        if key is None:
            return None
        self.lookups += 1
        if self.method.stateless:
            member = self.method.member_for(key, pool)
        else:
            name = lookup.name
            member = pool.members.get(name) if name is not None else None
        if member is None:
            if lookup.name is not None:
                self.replaced += 1  # names a member this pool does not have
            return None
        if not member.healthy or member.admin == "disabled" or member in exclude:
            self.replaced += 1
            return None
        if not member.has_room:
            lookup.held = True
            return None
        lookup.hit = True
        self.hits += 1
        return member

    def picked(self, context, member) -> None:
        """The scheduler chose ``member`` (no usable entry): non-learning
        methods remember it now, after the decision."""
        lookup = context.persistence
        if lookup is None or lookup.key is None or lookup.held:
            return
        method = self.method
        if method.stateless or method.learns or lookup.name == member.name:
            return
        self._write(lookup.key, member.name)
        lookup.name = member.name

    def _write(self, key, name) -> None:
        self.written += 1
        try:
            self.store.set(key, name)
        except Exception:
            log.failure("persistence {profile}: store write failed", profile=self.name)

    # -- after the member answered (http) ---------------------------------

    def responded(self, context, decision, response):
        """Learn from ``response``; the headers to add to the client's answer."""
        if decision is None or decision.sorry or decision.member is None:
            return NO_HEADERS
        member = decision.member
        lookup = self._lookup(context)
        method = self.method
        if method.learns:
            name = member.name
            for key in method.learn(context, response):
                if key != lookup.key or lookup.name != name:
                    self._write(key, name)
                    if key == lookup.key:
                        lookup.name = name
            if lookup.key is not None and lookup.name != name and not lookup.held:
                # A new id (or one whose member went away): whoever answered owns it.
                self._write(lookup.key, name)
                lookup.name = name
        return method.response_headers(context, member, lookup.key)

    # -- the admin API -------------------------------------------------------

    def items(self):
        return self.store.items()

    def clear(self):
        return self.store.clear()


def _factory_keys(factory):
    return getattr(factory, "option_keys", None)


def build_profile(spec, plugins, reactor, store=None) -> Profile:
    """The :class:`Profile` of a ``[persistence X]`` section; raises
    :class:`ConfigError` pointing at the key at fault. ``store``: one built
    already (or carried over a reload); else the store factory makes it."""

    def error(key, message):
        if spec.source is None:
            return ConfigError(message, key=key)
        return spec.source.error(key, message)

    methods, stores = plugins.persistence_methods, plugins.persistence_stores
    if spec.method not in methods:
        raise error("method", methods.unknown_message(spec.method))
    scheme = spec.store.split("://", 1)[0] if "://" in spec.store else spec.store
    if scheme not in stores:
        raise error("store", stores.unknown_message(scheme))
    method_factory = methods.get(spec.method).factory
    store_factory = stores.get(scheme).factory

    # The section's extra keys belong to the method or the store; when both
    # say which keys they read, anything else is a mistake.
    method_keys, store_keys = _factory_keys(method_factory), _factory_keys(store_factory)
    options = dict(spec.options)
    if method_keys is not None and store_keys is not None:
        known = tuple(method_keys) + tuple(store_keys)
        for key in options:
            if key not in known:
                raise error(key, f"unknown key {key!r} for persistence method {spec.method} "
                                 f"with store {scheme}{did_you_mean(key, known)}")
    method_options = options if store_keys is None else \
        {k: v for k, v in options.items() if k not in store_keys}

    def call(factory, key, what, *args):
        try:
            return factory(*args)
        except OptionError as e:
            raise error(e.key or key, e.message) from None
        except ConfigError:
            raise
        except Exception as e:
            raise error(key, f"{what} failed to load: {e!r}") from e

    method = call(method_factory, "method", f"persistence method {spec.method!r}",
                  spec, method_options)
    if store is None:
        store = call(store_factory, "store", f"persistence store {scheme!r}",
                     spec.store, spec, reactor)
    if not hasattr(store, "asynchronous"):
        try:
            store.asynchronous = False
        except AttributeError:
            raise error("store", f"persistence store {scheme!r} does not say whether it is "
                                 "asynchronous (an 'asynchronous' attribute)") from None
    return Profile(spec, method, store)
