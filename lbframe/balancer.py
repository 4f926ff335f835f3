"""The balancing decision of a virtual server: one synchronous call, no I/O.

0. (``prepare``, before the call: a remote persistence store is read);
1. persistence lookup → a member, when the profile knows one that is usable;
2. L7 rules (http) → a pool;
3. the pool's scheduler → a member;
4. admission: nobody can take it → the sorry pool → refuse (``None``);
5. (``responded``, when a member's response head arrives: learning
   persistence methods learn, cookie-insert adds its cookie).
"""

from __future__ import annotations

from typing import Sequence

import attrs

from lbframe.runtime import Member, PoolState, VirtualState

#: :meth:`Balancer.responded` without persistence: nothing to add
NO_HEADERS: tuple = ()


@attrs.define(slots=True)
class RequestContext:
    """What the decision may look at: who asks, on which virtual server, and
    for L7 protocols the parsed request head."""

    client_host: str
    client_port: int
    virtual: str
    head: object = None
    #: the ``[rule X]`` that chose the pool (http), for the access log
    rule: str | None = None
    #: what the persistence profile found for this request (its own record)
    persistence: object = None
    #: ``protocol = ssl``: the ClientHello's SNI host name (lower case) or None,
    #: its legacy session id (b"" when none), and the parsed
    #: :class:`lbframe.tls.hello.ClientHello`
    tls_sni: str | None = None
    tls_session_id: bytes | None = None
    tls_hello: object = None


@attrs.define(slots=True, frozen=True)
class Decision:
    pool: PoolState
    #: None when the connection should wait in ``pool``'s queue
    member: Member | None
    #: True when the member came from the sorry pool
    sorry: bool = False

    @property
    def wait(self) -> bool:
        """Every usable member is at its ``maxconn``: queue for
        ``queue_timeout`` (the caller enqueues on ``pool``)."""
        return self.member is None


@attrs.define(eq=False)
class Balancer:
    """Decides where one virtual server's connections go."""

    virtual: VirtualState
    pool: PoolState
    sorry_pool: PoolState | None = None
    #: (rule, PoolState) pairs in the virtual server's order; used by L7 protocols
    rules: Sequence = ()
    #: the :class:`lbframe.profiles.Profile` this virtual server names
    persistence: object = None

    def choose(self, context: RequestContext, exclude=(), may_wait: bool = True
               ) -> Decision | None:
        """A member for ``context``; a :attr:`Decision.wait` decision when the
        pool's members are all full and it has a ``queue_timeout`` (and
        ``may_wait``); a sorry-pool member; or None (refuse)."""
        vspec = self.virtual.spec
        if vspec.max_connections is None or self.virtual.active < vspec.max_connections:
            pool = self._pool_for(context)
            member = self._persisted(context, pool, exclude)
            if member is None:
                member = pool.scheduler.pick(context, exclude)
                if member is not None and self.persistence is not None:
                    self.persistence.picked(context, member)
            if member is not None:
                return Decision(pool, member)
            if may_wait and pool.spec.queue_timeout > 0 and pool.has_full_members(exclude):
                return Decision(pool, None)
        return self.choose_sorry(context, exclude)

    def choose_sorry(self, context: RequestContext, exclude=()) -> Decision | None:
        """The sorry pool's pick, or None."""
        sorry = self.sorry_pool
        if sorry is not None:
            member = sorry.scheduler.pick(context, exclude)
            if member is not None:
                return Decision(sorry, member, sorry=True)
        return None

    def _pool_for(self, context: RequestContext) -> PoolState:
        if context.head is not None:
            for rule, pool in self.rules:
                if rule.matches(context.head):
                    context.rule = rule.name
                    return pool
        return self.pool

    def _persisted(self, context: RequestContext, pool: PoolState, exclude) -> Member | None:
        """The member the persistence profile holds for ``context``, if usable."""
        profile = self.persistence
        if profile is None:
            return None
        return profile.member_for(context, pool, exclude)

    # -- persistence around the decision (lbframe.profiles) ---------------

    def prepare(self, context: RequestContext):
        """Call before :meth:`choose`: None, or a Deferred to wait for first
        (a remote persistence store being read). The Deferred never fails:
        a store error means the scheduler decides."""
        profile = self.persistence
        if profile is None:
            return None
        return profile.prepare(context)

    def responded(self, context: RequestContext, decision: Decision | None, response):
        """Call once per response head from a member (http): learning
        methods learn here. Returns the ``(bytes name, bytes value)``
        headers to add to the answer sent to the client (cookie-insert's
        ``Set-Cookie``), usually an empty tuple."""
        profile = self.persistence
        if profile is None:
            return NO_HEADERS
        return profile.responded(context, decision, response)
