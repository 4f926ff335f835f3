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

from twisted.application.service import IService
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

    def idle():
        """A Deferred that fires once nothing this monitor started is still
        running (a ``script`` monitor's processes). Called when the site
        stops, after every check was cancelled, so that stopping lbframe
        leaves nothing behind. A monitor with nothing of its own returns
        ``defer.succeed(None)`` (:class:`lbframe.monitoring.BaseMonitor` does).
        """


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
        """Return an :class:`IListener` that accepts on the virtual server's
        endpoints while running and serves each connection through
        ``balancer`` (a :class:`lbframe.balancer.Balancer`)."""


class IListener(IService):
    """The running side of one virtual server: its listening sockets and the
    connections (or flows) accepted on them.

    The site's service tree starts, reloads, drains and stops every listener
    through these methods only, whatever its protocol (tcp, http, ssl, udp,
    a third party's). :class:`lbframe.testing.ListenerContract` checks what
    the docstrings promise.
    """

    def start_listening():
        """Bind every endpoint of the virtual server. Returns a Deferred that
        fires (with None) once all of them listen, or fails with
        :class:`lbframe.errors.ListenError` naming the virtual server, the
        endpoint and why (nothing is left bound then). Called from
        ``privilegedStartService`` (before twistd drops root) and again from
        ``startService``: a second call returns the first call's outcome.
        An endpoint whose ``listen()`` answers asynchronously is fine."""

    def addresses():
        """The bound addresses, one ``IAddress`` (``.host``, ``.port``) per
        listening socket, in the order of the ``listen`` key; empty when not
        listening. Tests use it to find ports bound as ``:0``."""

    def apply(balancer, protocol):
        """A reload kept this virtual server's endpoints and protocol name:
        connections (or flows) that start from now on use ``balancer``, and
        the listener takes ``protocol``'s settings (limits, timeouts,
        certificates) without closing its sockets. Established connections
        finish with the decision they made."""

    def stop_listening():
        """Close the listening sockets; established connections go on.
        Always returns a Deferred, firing once the sockets are closed (so
        that a replacement may bind the same address)."""

    def connection_count():
        """Client connections (or live flows) still open, an ``int``."""

    def close_all(reason):
        """Close every connection still open; ``reason`` (a short phrase)
        goes to their log lines."""

    def pause_accepting():
        """Stop taking new connections without closing the sockets (the
        process-wide accept gate: ``[lbframe] max_connections`` or out of
        descriptors); clients wait in the kernel's listen backlog."""

    def resume_accepting():
        """Take new connections again after :meth:`pause_accepting`."""


class IRedundancyDriver(Interface):
    """Decides whether this node owns the VIPs."""

    state = Attribute("One of 'standalone', 'init', 'backup', 'master'.")
    service = Attribute("An IService that runs the driver.")
