"""The running objects of a site and the service tree that runs them.

:func:`build_runtime` resolves every plugin name and builds every plugin
object (which validates the plugin's own keys) without binding a socket, so
``lbframe check`` runs it too; a reload builds only what changed, with the
same ``build_*`` functions. :class:`SiteService` is the root of the
twisted.application service tree: monitors, redundancy, admin, and the
virtual servers' listeners (kept apart, so they stop first).

Reading ``site.ini``, starting and reloading are :mod:`lbframe.site`'s.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from lbframe.balancer import Balancer
from lbframe.config.model import Site, Source
from lbframe.errors import ConfigError, OptionError
from lbframe.interfaces import IListener
from lbframe.monitoring import MonitorRunner
from lbframe.profiles import build_profile
from lbframe.plugins import Plugins, Registry
from lbframe.rules import CompiledRule
from lbframe.runtime import PoolState, VirtualState

log = Logger(namespace="lbframe")


@attrs.define(eq=False)
class SiteRuntime:
    """Everything that runs for one site: the admin API and the status table
    read these objects. A reload makes a new SiteRuntime holding the running
    objects it kept and the ones it built (:func:`lbframe.site.apply`)."""

    site: Site
    plugins: Plugins
    pools: dict[str, PoolState]
    virtuals: dict[str, VirtualState]
    balancers: dict[str, Balancer]
    protocols: dict[str, Any]
    monitors: dict[str, Any]
    redundancy: Any
    persistence_stores: dict[str, Any] = attrs.field(factory=dict)
    #: persistence profiles by section name (shared by the virtual servers naming one)
    profiles: dict[str, Any] = attrs.field(factory=dict)
    #: compiled ``[rule X]`` sections
    rules: dict[str, CompiledRule] = attrs.field(factory=dict)
    #: tells the plugins' ``lbframe_member_state_changed`` about every pool's changes
    events: "MemberEvents | None" = None


class MemberEvents:
    """The state-change listener of every pool of a site: calls the
    ``lbframe_member_state_changed`` hook of the plugins loaded now (a
    reload points :attr:`plugins` at the new ones without visiting the pools)."""

    def __init__(self, plugins: Plugins):
        self.plugins = plugins

    def __call__(self, pool, member, old, new, reason) -> None:
        self.plugins.hook.lbframe_member_state_changed(
            pool=pool, member=member, old=old, new=new, reason=reason)


def _build(registry: Registry, name: str, source: Source | None, key: str, *args):
    """Look ``name`` up in ``registry`` and call its factory, turning every
    problem into a ConfigError at ``key`` (or at the plugin's own key)."""
    if name not in registry:
        raise _error(source, key, registry.unknown_message(name))
    factory = registry.get(name).factory
    try:
        return factory(*args)
    except OptionError as e:
        raise _error(source, e.key or key, e.message) from None
    except ConfigError:
        raise
    except Exception as e:
        raise _error(source, key, f"{registry.noun} {name!r} failed to load: {e!r}") from e


def _error(source: Source | None, key: str | None, message: str) -> ConfigError:
    if source is None:
        return ConfigError(message, key=key)
    return source.error(key, message)


# -- one builder per kind of section (start and reload use the same ones) --

def build_monitor(spec, plugins: Plugins, reactor):
    return _build(plugins.monitors, spec.type, spec.source, "type", spec, dict(spec.options),
                  reactor)


def build_scheduler(spec, plugins: Plugins):
    return _build(plugins.schedulers, spec.scheduler, spec.source, "scheduler",
                  spec, dict(spec.options))


def build_pool(spec, scheduler, reactor, events: MemberEvents) -> PoolState:
    pool = PoolState.build(spec, scheduler, clock=reactor)
    pool.on_state_change.append(events)
    return pool


def store_scheme(spec) -> str:
    """``redis`` for ``store = redis://...``, ``memory`` for ``memory``."""
    return spec.store.split("://", 1)[0] if "://" in spec.store else spec.store


def build_store(spec, plugins: Plugins, reactor):
    if spec.method not in plugins.persistence_methods:
        raise _error(spec.source, "method", plugins.persistence_methods.unknown_message(spec.method))
    return _build(plugins.persistence_stores, store_scheme(spec), spec.source, "store",
                  spec.store, spec, reactor)


def build_protocol(spec, plugins: Plugins, site: Site):
    return _build(plugins.protocols, spec.protocol, spec.source, "protocol",
                  spec, dict(spec.options), site)


def build_balancer(state: VirtualState, pools: dict[str, PoolState],
                   rules: dict[str, CompiledRule], profiles: dict) -> Balancer:
    spec = state.spec
    return Balancer(
        state, pools[spec.pool],
        sorry_pool=pools[spec.sorry_pool] if spec.sorry_pool else None,
        rules=[(rules[r], pools[rules[r].pool]) for r in spec.rules],
        persistence=profiles[spec.persistence] if spec.persistence else None)


def build_redundancy(spec, plugins: Plugins, reactor):
    return _build(plugins.redundancy_drivers, spec.driver, spec.source, "driver",
                  spec, dict(spec.options), reactor)


def build_runtime(site: Site, plugins: Plugins, reactor) -> SiteRuntime:
    """Build every run-time object of ``site``; raises ConfigError. Binds
    nothing and starts nothing, so ``lbframe check`` runs it too."""
    events = MemberEvents(plugins)
    monitors = {name: build_monitor(spec, plugins, reactor)
                for name, spec in site.monitors.items()}
    pools = {name: build_pool(spec, build_scheduler(spec, plugins), reactor, events)
             for name, spec in site.pools.items()}
    stores = {name: build_store(spec, plugins, reactor)
              for name, spec in site.persistence.items()}
    # One profile per section, shared by every virtual server naming it (F6f).
    profiles = {name: build_profile(spec, plugins, reactor, store=stores[name])
                for name, spec in site.persistence.items()}
    rules = {name: CompiledRule.compile(spec) for name, spec in site.rules.items()}
    virtuals, balancers, protocols = {}, {}, {}
    for name, spec in site.virtuals.items():
        protocols[name] = build_protocol(spec, plugins, site)
        virtuals[name] = VirtualState(spec)
        balancers[name] = build_balancer(virtuals[name], pools, rules, profiles)
    redundancy = build_redundancy(site.redundancy, plugins, reactor)
    return SiteRuntime(site, plugins, pools, virtuals, balancers, protocols, monitors,
                       redundancy, stores, profiles, rules, events)


#: how often a graceful stop or a retiring listener looks at its connection count
DRAIN_POLL = 0.1


class SiteService(service.MultiService):
    """The root service of a running site: the monitors, the redundancy
    driver and the admin server are its children; the virtual servers'
    listeners are not.

    Listeners are kept in :attr:`listeners` (by virtual server name) and
    started, drained and stopped here, because their life is not a child's:
    they stop first, and gracefully (``stop_grace``); a reload retires one
    while its replacement under the same name already listens; and a
    listen failure means different things at start (exit) and on reload
    (log, and serve the rest). The tree is changed only through
    :meth:`replace_child`, :meth:`add_listener`, :meth:`retire_listener` and
    :meth:`apply_listener`, which :func:`lbframe.site.apply` calls.

    ``on_hup``: called (on the reactor) on SIGHUP when ``signals`` is true,
    as under ``twistd``; :func:`lbframe.site.make_service` makes it reload.
    """

    def __init__(self, runtime: SiteRuntime, reactor, config_path: str | None = None,
                 signals: bool = False, on_hup=None):
        super().__init__()
        self.runtime = runtime
        self.reactor = reactor
        self.config_path = config_path
        self.signals = signals
        self.on_hup = on_hup
        self.setName("lbframe")
        self.stopping = False
        self._stopped = None  # while stopping: Deferreds of callers that asked again
        self._old_hup = None
        #: a reload reading in a thread (lbframe.site.reload_in_thread), and
        #: the callers that asked for another meanwhile
        self.reload_pending = None
        self.reload_waiters: list[defer.Deferred] = []
        #: listener services by virtual server name
        self.listeners: dict[str, IListener] = {}
        #: listeners of removed or re-bound virtual servers, finishing their connections
        self.retiring: set = set()
        #: virtual server name → the re-binding under way (see _in_turn)
        self._rebinding: dict[str, defer.Deferred] = {}
        site = runtime.site

        runner = MonitorRunner(reactor)
        for pname, pool in runtime.pools.items():
            for mname in pool.spec.monitors:
                for member in pool.members.values():
                    runner.add(pool, member, site.monitors[mname], runtime.monitors[mname])
        runner.setServiceParent(self)
        self.monitor_runner = runner

        self.redundancy_service = runtime.redundancy.service
        self.redundancy_service.setServiceParent(self)

        self.admin = None
        if site.lbframe.admin:
            self.admin = self.make_admin(runtime)
            self.admin.setServiceParent(self)

        for name, proto in runtime.protocols.items():
            self.listeners[name] = self.make_listener(name, proto, runtime.balancers[name])

    #: set by ``twistd lbframe`` for ``log_format = json`` (see setServiceParent)
    log_observer = None
    #: the process is this site's (``twistd lbframe``): lbframe.site may tune
    #: its garbage collector (lbframe.site.settle_heap)
    own_process = False

    def setServiceParent(self, parent):
        # twistd's application: it logs through an ILogObserver component
        # set on it, when there is one (twisted.application.app.AppLogger).
        if self.log_observer is not None and isinstance(parent, Componentized):
            from twisted.logger import ILogObserver
            parent.setComponent(ILogObserver, self.log_observer)
        return super().setServiceParent(parent)

    def make_listener(self, name: str, protocol, balancer) -> IListener:
        """The listener of virtual ``name``. lbframe.workers overrides it: its
        parent holds the sockets the workers accept on."""
        return protocol.make_service(balancer, self.reactor)

    def site_applied(self) -> None:
        """:func:`lbframe.site.apply` made this service run a new site: the
        workers' parent (lbframe.workers) passes the reload on."""

    def make_admin(self, runtime):
        from lbframe.admin import make_admin_service
        g = runtime.site.lbframe
        return make_admin_service(runtime, g.admin, g.admin_token, self.reactor)

    # -- start and stop ----------------------------------------------------

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        # Bind before twistd drops root (--uid): ports below 1024.
        for listener in self.listeners.values():
            listener.privilegedStartService()
        self._listen_or_exit()

    def startService(self) -> None:
        super().startService()
        for listener in self.listeners.values():
            listener.startService()
        self._listen_or_exit()
        self.stopping = False
        if self.signals and self.on_hup is not None:
            import signal
            self._old_hup = signal.signal(signal.SIGHUP, self._on_hup)
        self.runtime.plugins.hook.lbframe_site_started(site=self.runtime.site)

    _listen_asked = False

    def _listen_or_exit(self) -> None:
        """Ask every listener how its binding went (once, whichever of
        privilegedStartService and startService runs first), as Twisted's
        ``StreamServerEndpointService`` does: a failure known now ends
        ``twistd`` with its one line (``virtual web: cannot listen on
        ENDPOINT: why``) and status 1, no traceback; a failure known later
        (an endpoint whose ``listen()`` answers asynchronously) is logged
        with the same line and stops the process, since a site missing a
        virtual server is not what the operator started."""
        if self._listen_asked:
            return
        self._listen_asked = True
        for listener in self.listeners.values():
            outcome: list = []
            d = listener.start_listening()
            d.addBoth(outcome.append)
            if outcome and isinstance(outcome[0], Failure):
                raise SystemExit(outcome[0].getErrorMessage())
            if not outcome:
                listener.start_listening().addErrback(self._failed_later)

    def _failed_later(self, failure: Failure) -> None:
        log.error("{error}", error=failure.getErrorMessage(), lbframe_event="listener_failed")
        if self.running and not self.stopping:
            log.error("stopping: a virtual server cannot listen", lbframe_event="stopping")
            self.reactor.callLater(0, self.reactor.stop)

    def _on_hup(self, signum, frame) -> None:
        # Signal handlers run between bytecodes: do the work on the reactor.
        self.reactor.callFromThread(self.on_hup)

    def stopService(self):
        """Graceful stop: stop accepting, let open connections finish for up
        to ``[lbframe] stop_grace``, close the rest, then stop everything.
        Stopping again while (or after) stopping changes nothing."""
        if self._stopped is not None:
            waiter: defer.Deferred = defer.Deferred()
            self._stopped.append(waiter)
            return waiter
        if not self.running:
            return defer.succeed(None)
        self.stopping = True
        if self._old_hup is not None:
            import signal
            signal.signal(signal.SIGHUP, self._old_hup)
            self._old_hup = None
        grace = self.runtime.site.lbframe.stop_grace
        listeners = list(self.listeners.values()) + list(self.retiring)
        open_now = sum(s.connection_count() for s in listeners)
        if open_now:
            log.info("stopping: {count} connections open, waiting up to {grace:g}s for them",
                     count=open_now, grace=grace, lbframe_event="stopping")
        self._stopped = []  # callers that asked again meanwhile
        d = self._drain(listeners, grace, "stopping: stop_grace passed")
        d.addCallback(lambda _: defer.gatherResults(
            [defer.maybeDeferred(s.stopService) for s in listeners if s.running],
            consumeErrors=True))
        d.addCallback(lambda _: service.MultiService.stopService(self))

        def stopped(result):
            for pool in self.runtime.pools.values():
                pool.stop()
            waiters, self._stopped = self._stopped, None
            for waiter in waiters:
                waiter.callback(None)
            return result

        return d.addCallback(stopped)

    def _drain(self, listeners, grace: float, reason: str) -> defer.Deferred:
        """Stop ``listeners`` listening, then fire once none of them has a
        connection open or ``grace`` seconds passed (closing what is left)."""
        closed = self._stop_listening(listeners)
        return self._wait_connections(closed, listeners, grace, reason)

    @staticmethod
    def _stop_listening(listeners) -> defer.Deferred:
        """Fires when every one of ``listeners`` has closed its listening sockets."""
        waits = [s.stop_listening() for s in listeners]
        return defer.gatherResults(waits, consumeErrors=True)

    def _wait_connections(self, closed: defer.Deferred, listeners, grace: float,
                          reason: str) -> defer.Deferred:
        clock = self.reactor
        deadline = clock.seconds() + grace
        done: defer.Deferred = defer.Deferred()

        def poll():
            left = {s: s.connection_count() for s in listeners}
            total = sum(left.values())
            if total and clock.seconds() < deadline:
                clock.callLater(min(DRAIN_POLL, max(0.0, deadline - clock.seconds())), poll)
                return
            if total:
                log.warn("{reason}: closing {count} connections", reason=reason, count=total,
                         lbframe_event="connections_closed")
                for s, n in left.items():
                    if n:
                        s.close_all(reason)
            done.callback(total)

        closed.addBoth(lambda _: poll())
        return done

    # -- what a reload changes (lbframe.site.apply) ----------------------------

    def replace_child(self, old, new) -> bool:
        """Put child service ``new`` where ``old`` was (either may be None):
        ``old`` is stopped, ``new`` started when the site runs. A ``new``
        that cannot start (the admin server's port is taken) is logged and
        left out; the rest of the site goes on. True when ``new`` runs."""
        if old is not None:
            d = self.removeService(old)
            if d is not None:
                d.addErrback(lambda f: log.failure("stopping {name}", f, name=old.name))
        if new is None:
            return False
        try:
            new.setServiceParent(self)
        except Exception as e:
            log.error("{name}: cannot start after the reload, it is not running: {error}",
                      name=new.name, error=str(e), lbframe_event="service_failed")
            if new.parent is self:
                d = new.disownServiceParent()
                if d is not None:
                    d.addErrback(lambda f: None)  # it never started
            return False
        return True

    def listener_settled(self, name: str) -> bool:
        """Virtual ``name`` has a listener and no re-binding of it is under way."""
        return name in self.listeners and name not in self._rebinding

    def apply_listener(self, name: str, balancer, protocol) -> None:
        """A reload kept virtual ``name``'s endpoints and protocol name: new
        connections use ``balancer``, the listener takes ``protocol``'s settings."""
        self.listeners[name].apply(balancer, protocol)

    def rebind_listener(self, name: str, protocol, balancer, grace: float) -> defer.Deferred:
        """Give virtual ``name`` a new listener (its endpoints or protocol
        changed, or it is new, or it failed to bind before): the old one
        retires and the new one binds once the old one's sockets are closed
        (it may bind the same address). Fires when that is done."""

        def rebind():
            closed = (self.retire_listener(name, grace) if name in self.listeners
                      else defer.succeed(None))
            return closed.addCallback(lambda _: self._add_listener(name, protocol, balancer))

        return self._in_turn(name, rebind)

    def remove_listener(self, name: str, grace: float) -> defer.Deferred:
        """A reload removed virtual ``name``: its listener retires."""
        return self._in_turn(name, lambda: self.retire_listener(name, grace)
                             if name in self.listeners else None)

    def _in_turn(self, name: str, step) -> defer.Deferred:
        """Run ``step`` (which may return a Deferred) once the steps asked
        before for listener ``name`` are done: a reload that comes while an
        earlier one still waits for a socket to close acts after it."""
        previous = self._rebinding.get(name)
        done: defer.Deferred = defer.Deferred()
        self._rebinding[name] = done

        def run(_=None):
            d = defer.maybeDeferred(step)
            d.addErrback(lambda f: log.failure("listener of virtual {virtual}", f, virtual=name))
            d.addBoth(finished)
            return None

        def finished(_):
            if self._rebinding.get(name) is done:
                del self._rebinding[name]
            done.callback(None)

        if previous is None:
            run()
        else:
            previous.addCallback(run)
        return done

    def _add_listener(self, name: str, protocol, balancer) -> defer.Deferred:
        """Start listening for virtual ``name``. A bind failure, now or
        later, is logged with its one line (``virtual web: cannot listen on
        ENDPOINT: why``) and the rest of the site keeps serving. Fires when
        the listener listens (or failed)."""
        listener = self.make_listener(name, protocol, balancer)
        self.listeners[name] = listener
        listener.privilegedStartService()
        listener.startService()

        def failed(f):
            log.error("{error}; it is not serving after the reload", error=f.getErrorMessage(),
                      virtual=name, lbframe_event="listener_failed")
            if self.listeners.get(name) is listener:
                del self.listeners[name]
            return listener.stopService()

        return listener.start_listening().addErrback(failed)

    def retire_listener(self, name: str, grace: float) -> defer.Deferred:
        """Stop virtual ``name``'s listener accepting; stop it once its
        connections are done (or ``grace`` passed). Fires when its listening
        sockets are closed, so that a replacement may bind the same address."""
        listener = self.listeners.pop(name)
        self.retiring.add(listener)
        closed = self._stop_listening([listener])
        d = self._wait_connections(closed, [listener], grace,
                                   f"virtual {name} retired by a reload")

        def remove(_):
            self.retiring.discard(listener)
            return listener.stopService() if listener.running else None

        d.addCallback(remove)
        d.addErrback(lambda f: log.failure("retiring virtual {virtual}", f, virtual=name))
        # A caller's callbacks must not change what the drain sees.
        result: defer.Deferred = defer.Deferred()
        closed.addBoth(lambda r: result.callback(None))
        return result
