"""The interfaces every plugin object provides.

A plugin registers a *factory* for one of these kinds (see
:mod:`lbframe.hookspecs`); the factory builds objects providing the matching
interface. Tests call ``zope.interface.verify.verifyObject`` on every built-in.
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
    """Extracts a persistence key from a request context (and, for learning
    methods, from a member's response)."""

    def key_for(context):
        """The key for ``context``, or ``None`` when it carries none."""


class IPersistenceStore(Interface):
    """Maps persistence keys to member *names*, with idle expiry."""

    def get(key):
        """The member name stored for ``key``, or ``None``."""

    def set(key, member_name):
        """Remember ``key`` → ``member_name``."""

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
