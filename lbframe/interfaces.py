"""The interfaces every plugin object provides.

A plugin registers a *factory* for one of these kinds (see
:mod:`lbframe.hookspecs`); the factory builds objects providing the matching
interface. Tests call ``zope.interface.verify.verifyObject`` on every built-in,
and :mod:`lbframe.testing`'s contract tests (``SchedulerContract``,
``MonitorContract``, ...) check what the docstrings below promise, for the
built-ins and for third-party plugins alike.

These interfaces are part of the plugin API (:data:`lbframe.PLUGIN_API`):
adding a method is a minor version, changing or removing one a major one.
Every name here needs its entry in ``docs/plugins/interfaces.md`` (a test
fails otherwise).
"""

from zope.interface import Attribute, Interface


class IScheduler(Interface):
    """Chooses a member of one pool for each new connection or request.

    A scheduler is *told* about events and answers :meth:`pick` fast, without
    I/O and without scanning members it was not told about. The pool state
    (:class:`lbframe.runtime.PoolState`) calls these methods; a scheduler never
    changes member state itself.
    """

    def member_added(member):
        """``member`` (a :class:`lbframe.runtime.Member`) joined the pool."""

    def member_removed(member):
        """``member`` left the pool (reload)."""

    def member_changed(member):
        """``member``'s eligibility or weight changed (up/down, drain, weight)."""

    def connection_taken(member):
        """A connection to ``member`` began."""

    def connection_released(member):
        """A connection to ``member`` ended."""

    def pick(context, exclude):
        """Return an eligible member for ``context`` (a
        :class:`lbframe.balancer.RequestContext`), or ``None``.

        ``exclude`` is a (usually empty) container of members that must not be
        chosen, e.g. one that just refused a connection. A member is eligible
        when ``member.eligible`` is true.
        """


class IMonitor(Interface):
    """Probes one member once; scheduling and rise/fall are not its business."""

    def check(member):
        """Probe ``member`` and return a Deferred firing with a
        :class:`lbframe.monitors.CheckResult`. It must not errback: failures
        are results with ``ok=False`` and a ``reason``. The caller enforces
        the monitor's ``timeout`` by cancelling the Deferred, so the check
        must clean up on cancel."""


class IPersistenceMethod(Interface):
    """Finds a persistence key in a request context (and, for learning
    methods, in a member's response). Built once per ``[persistence X]``
    profile by ``factory(profile, options)``; it keeps no table itself (the
    profile's :class:`IPersistenceStore` does).

    :class:`lbframe.persistence.PersistenceMethod` is a base class with the
    defaults below; a plugin method usually overrides :meth:`key_for` and
    one of :meth:`learn` or :meth:`member_for`.
    """

    learns = Attribute(
        "True when members' responses teach entries (cookie-learn, url-session): "
        "the store is written in :meth:`learn`'s time, after the member answered. "
        "False (source-ip): a scheduler pick is written right after the decision.")
    stateless = Attribute(
        "True when the key itself names the member (cookie-insert): no store is "
        "read or written and :meth:`member_for` is asked instead.")

    def key_for(context):
        """The key for ``context`` (a :class:`lbframe.balancer.RequestContext`),
        a ``str``, or ``None`` when it carries none. Cheap: called once per
        connection or request."""

    def learn(context, response):
        """Keys that ``response`` (a :class:`lbframe.messages.ResponseHead`,
        or a protocol's own response object) assigns to the member that sent
        it, e.g. the value of its ``Set-Cookie: JSESSIONID=``; an iterable,
        usually empty."""

    def member_for(key, pool):
        """Stateless methods: the :class:`lbframe.runtime.Member` of ``pool``
        that ``key`` names, or ``None``."""

    def response_headers(context, member, key):
        """``(bytes name, bytes value)`` headers to add to the answer sent to
        the client now that ``member`` answered (cookie-insert's
        ``Set-Cookie``); an empty tuple for most methods. ``key`` is what
        :meth:`key_for` found in the request."""


class IPersistenceStore(Interface):
    """Maps persistence keys (``str``) to member *names*, with idle expiry.

    A local store (``memory``) answers every call at once. A remote store
    (``redis://``) sets :attr:`asynchronous`: its :meth:`get` returns a
    Deferred, which the balancer waits for *before* the decision
    (:meth:`lbframe.balancer.Balancer.prepare`), and its writes return at once
    (they are sent after the decision, never waited for). A remote store's
    Deferreds must not errback for an unreachable server: it logs and answers
    ``None`` so that the scheduler decides instead.
    """

    asynchronous = Attribute("True when :meth:`get` returns a Deferred.")

    def get(key):
        """The member name stored for ``key`` (refreshing its idle time), or
        ``None``; a Deferred firing with that when :attr:`asynchronous`."""

    def set(key, member_name):
        """Remember ``key`` → ``member_name`` (fire and forget)."""

    def touch(key):
        """Refresh the idle time of ``key`` without reading it."""

    def delete(key):
        """Forget ``key``."""


class IProtocol(Interface):
    """A virtual server's protocol: built at load time from its section
    (validating its keys), it makes the listening service at start."""

    def make_service(balancer, reactor):
        """Return an ``IService`` that accepts on the virtual server's
        endpoints while running and serves each connection through
        ``balancer`` (a :class:`lbframe.balancer.Balancer`)."""


class IRedundancyDriver(Interface):
    """Decides whether this node owns the VIPs."""

    state = Attribute("One of 'standalone', 'init', 'backup', 'master'.")
    service = Attribute("An IService that runs the driver.")
