"""The admin web server: status page, JSON API and ``/metrics``.

:func:`make_admin_service` is what the site service calls when
``[lbframe] admin`` is set::

    make_admin_service(runtime, "tcp:8404:interface=127.0.0.1", token, reactor)

It reads the run-time objects of :mod:`lbframe.runtime` and changes members
only through :class:`lbframe.runtime.PoolState`. One module per job:

- :mod:`~lbframe.admin.status`: the status dict (the ``/api/status`` JSON);
- :mod:`~lbframe.admin.api`: the JSON resources under ``/api``;
- :mod:`~lbframe.admin.page`: the HTML page at ``/``;
- :mod:`~lbframe.admin.metrics`: ``/metrics`` in Prometheus text format;
- :mod:`~lbframe.admin.auth`: the bearer token and loopback rules;
- :mod:`~lbframe.admin.web`: what the resources share;
- :mod:`~lbframe.admin.client`: the blocking client ``lbframe status`` and
  ``lbframe member`` use.
"""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.web import server
from twisted.web.resource import Resource

from lbframe.admin.api import ApiRoot
from lbframe.admin.auth import Auth, endpoint_is_loopback
from lbframe.admin.metrics import MetricsResource
from lbframe.admin.page import PageResource
from lbframe.admin.rates import RateSampler
from lbframe.admin.web import AdminContext, AdminRequest, ErrorResource, not_found

__all__ = ["AdminService", "make_admin_service", "make_resource", "endpoint_is_loopback"]

#: an idle admin connection is closed after this many seconds
IDLE_TIMEOUT = 60


class AdminRoot(Resource):
    """``/``: checks the token once for every request, then routes."""

    def __init__(self, context: AdminContext):
        super().__init__()
        self.context = context
        self.putChild(b"", PageResource(context))
        self.putChild(b"api", ApiRoot(context))
        self.putChild(b"metrics", MetricsResource(context))

    def getChildWithDefault(self, path: bytes, request):
        denied = self.context.auth.check(request)
        if denied is not None:
            return ErrorResource(*denied)
        if path in self.children:
            return self.children[path]
        return not_found(request)

    def render(self, request):
        return not_found(request).render(request)


def make_resource(context: AdminContext) -> Resource:
    """The root resource of the admin web server."""
    return AdminRoot(context)


class AdminSite(server.Site):
    """The admin ``Site``: quiet (changes are logged by the API itself, not
    one line per scrape) and with a short idle timeout."""

    noisy = False
    displayTracebacks = False
    requestFactory = AdminRequest

    def log(self, request) -> None:
        pass


class AdminService(StreamServerEndpointService):
    """The admin web server as a service named ``admin``.

    ``port`` is the listening port once started. ``context.runtime`` is what
    every request reads: :meth:`set_runtime` swaps it (on reload).
    A port that cannot be bound is an error at start, as for listeners.
    """

    _raiseSynchronously = True

    def __init__(self, endpoint, site: server.Site, context: AdminContext):
        super().__init__(endpoint, site)
        self.context = context
        self.port = None
        self.setName("admin")

    def set_runtime(self, runtime) -> None:
        self.context.runtime = runtime

    def set_token(self, token: str | None) -> None:
        """A reload changed ``admin_token`` (the endpoint is the same)."""
        self.context.auth = Auth(token or None, everything=self.context.auth.everything)

    def startService(self) -> None:
        super().startService()
        if getattr(self.context, "rates", None) is not None:
            self.context.rates.start()

    def stopService(self):
        if getattr(self.context, "rates", None) is not None:
            self.context.rates.stop()
        return super().stopService()

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port):
        self.port = port
        return port


def make_admin_service(runtime, endpoint: str, token: str | None, reactor) -> AdminService:
    """The admin web server for ``runtime`` (a :class:`lbframe.service.SiteRuntime`),
    listening on the Twisted endpoint string ``endpoint``.

    With ``token``, changes need ``Authorization: Bearer TOKEN``; when
    ``endpoint`` is not loopback-only every request needs it, and a missing
    token is a ``ValueError`` (the config refuses such a site first).
    """
    ep = serverFromString(reactor, endpoint)
    auth = Auth(token or None, everything=not endpoint_is_loopback(ep))
    context = AdminContext(runtime, auth)
    context.rates = RateSampler(lambda: context.runtime, reactor)
    site = AdminSite(make_resource(context), timeout=IDLE_TIMEOUT, reactor=reactor)
    return AdminService(ep, site, context)
