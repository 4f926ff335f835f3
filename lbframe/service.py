"""Builds the running site from a frozen :class:`~lbframe.config.Site`.

:func:`build_runtime` resolves every plugin name and builds every plugin
object (which validates the plugin's own keys) without binding a socket, so
``lbframe check`` runs it too. :class:`SiteService` is the root of the
twisted.application service tree: monitors, redundancy, admin, and the
virtual servers' listeners last (so they stop first).
"""

from __future__ import annotations

import time
from typing import Any

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from lbframe.balancer import Balancer
from lbframe.config.model import Site, Source
from lbframe.errors import ConfigError, OptionError, PluginError
from lbframe.monitoring import MonitorRunner
from lbframe.profiles import build_profile
from lbframe.plugins import Plugins, Registry
from lbframe.rules import CompiledRule
from lbframe.runtime import PoolState, VirtualState

log = Logger(namespace="lbframe")


@attrs.define(eq=False)
class SiteRuntime:
    """Everything that runs for one site: the admin API and the status table
    read these objects."""

    site: Site
    plugins: Plugins
    pools: dict[str, PoolState]
    virtuals: dict[str, VirtualState]
    balancers: dict[str, Balancer]
    protocols: dict[str, Any]
    monitors: dict[str, Any]
    redundancy: Any
    persistence_stores: dict[str, Any] = attrs.field(factory=dict)


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


def _carried(previous: SiteRuntime | None, section: str, name: str, spec, objects: str):
    """The running object ``previous.<objects>[name]`` when a reload left
    its section unchanged (``previous.site.<section>[name] == spec``), else None."""
    if previous is None:
        return None
    old = getattr(previous.site, section).get(name)
    if old is None or old != spec:
        return None
    return getattr(previous, objects).get(name)


def _carry_profile_counters(previous: "SiteRuntime", profiles: dict) -> None:
    """A profile whose store a reload carried keeps its counters too, so
    /metrics does not see a reset where nothing changed."""
    for balancer in previous.balancers.values():
        old = balancer.persistence
        new = profiles.get(old.name) if old is not None else None
        if new is not None and new.store is old.store:
            new.lookups, new.hits = old.lookups, old.hits
            new.replaced, new.written = old.replaced, old.written


def build_runtime(site: Site, plugins: Plugins, reactor,
                  previous: SiteRuntime | None = None) -> SiteRuntime:
    """Build every run-time object of ``site``; raises ConfigError.

    ``previous`` (on reload: the running site) lends its persistence stores,
    monitor objects and redundancy driver where their sections did not
    change; it is not modified (see :mod:`lbframe.reload` for the rest).
    """
    monitors = {}
    for name, spec in site.monitors.items():
        monitor = _carried(previous, "monitors", name, spec, "monitors")
        if monitor is None:
            monitor = _build(plugins.monitors, spec.type, spec.source, "type",
                             spec, dict(spec.options), reactor)
        monitors[name] = monitor
    pools = {}
    for name, spec in site.pools.items():
        scheduler = _build(plugins.schedulers, spec.scheduler, spec.source, "scheduler",
                           spec, dict(spec.options))
        pools[name] = PoolState.build(spec, scheduler, clock=reactor)
        pools[name].on_state_change.append(
            lambda pool, member, old, new, reason: plugins.hook.lbframe_member_state_changed(
                pool=pool, member=member, old=old, new=new, reason=reason))

    stores = {}
    for name, spec in site.persistence.items():
        if spec.method not in plugins.persistence_methods:
            raise _error(spec.source, "method", plugins.persistence_methods.unknown_message(spec.method))
        carried = _carried(previous, "persistence", name, spec, "persistence_stores")
        if carried is not None:
            stores[name] = carried
            continue
        scheme = spec.store.split("://", 1)[0] if "://" in spec.store else spec.store
        stores[name] = _build(plugins.persistence_stores, scheme, spec.source, "store",
                              spec.store, spec, reactor)

    # One profile per section, shared by every virtual server naming it (F6f).
    profiles = {name: build_profile(spec, plugins, reactor, store=stores[name])
                for name, spec in site.persistence.items()}
    if previous is not None:
        _carry_profile_counters(previous, profiles)

    rules = {name: CompiledRule.compile(spec) for name, spec in site.rules.items()}
    virtuals, balancers, protocols = {}, {}, {}
    for name, spec in site.virtuals.items():
        protocols[name] = _build(plugins.protocols, spec.protocol, spec.source, "protocol",
                                 spec, dict(spec.options), site)
        virtuals[name] = VirtualState(spec)
        balancers[name] = Balancer(
            virtuals[name], pools[spec.pool],
            sorry_pool=pools[spec.sorry_pool] if spec.sorry_pool else None,
            rules=[(rules[r], pools[rules[r].pool]) for r in spec.rules],
            persistence=profiles[spec.persistence] if spec.persistence else None)

    red = site.redundancy
    if previous is not None and previous.site.redundancy == red:
        redundancy = previous.redundancy
    else:
        redundancy = _build(plugins.redundancy_drivers, red.driver, red.source, "driver",
                            red, dict(red.options), reactor)
    return SiteRuntime(site, plugins, pools, virtuals, balancers, protocols, monitors,
                       redundancy, stores)



#: how often a graceful stop or a retiring listener looks at its connection count
DRAIN_POLL = 0.1


def _listener_call(svc, method: str, *args):
    """Call one of the listener-service methods (``stop_listening``,
    ``connection_count``, ``close_all``, ``set_balancer``) if ``svc`` has it."""
    fn = getattr(svc, method, None)
    return None if fn is None else fn(*args)


class SiteService(service.MultiService):
    """The root service of a running site.

    ``config_path``: the file to read again on :meth:`reload` (and on
    SIGHUP when ``signals`` is true, as under ``twistd``).
    """

    def __init__(self, runtime: SiteRuntime, reactor, config_path: str | None = None,
                 signals: bool = False):
        super().__init__()
        self.runtime = runtime
        self.reactor = reactor
        self.config_path = config_path
        self.signals = signals
        self.setName("lbframe")
        self.stopping = False
        self._stopped = None  # while stopping: Deferreds of callers that asked again
        self._old_hup = None
        #: listener services by virtual server name
        self.listeners: dict[str, service.IService] = {}
        #: listeners of removed or re-bound virtual servers, finishing their connections
        self.retiring: set = set()
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
            self.admin = self._make_admin(runtime)
            self.admin.setServiceParent(self)

        # Listeners last, so that they stop first.
        for name, proto in runtime.protocols.items():
            svc = proto.make_service(runtime.balancers[name], reactor)
            self.listeners[name] = svc
            svc.setServiceParent(self)

    #: set by ``twistd lbframe`` for ``log_format = json`` (see setServiceParent)
    log_observer = None

    def setServiceParent(self, parent):
        # twistd's application: it logs through an ILogObserver component
        # set on it, when there is one (twisted.application.app.AppLogger).
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            from twisted.logger import ILogObserver
            parent.setComponent(ILogObserver, self.log_observer)
        return super().setServiceParent(parent)

    def _make_admin(self, runtime):
        from lbframe.admin import make_admin_service
        g = runtime.site.lbframe
        return make_admin_service(runtime, g.admin, g.admin_token, self.reactor)

    # -- start and stop ----------------------------------------------------

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen_or_exit()

    def _listen_or_exit(self) -> None:
        """A listener that could not bind ends ``twistd`` with its one line
        (SystemExit, status 1); one that fails later is logged."""
        for name, svc in self.listeners.items():
            outcome = []
            svc.start_listening().addBoth(outcome.append)
            if not outcome:
                svc.start_listening().addErrback(lambda f: log.error(
                    "{error}", error=f.getErrorMessage(), lbframe_event="listener_failed"))
            elif isinstance(outcome[0], Failure):
                raise SystemExit(f"lbframe: {outcome[0].getErrorMessage()}")

    def startService(self) -> None:
        super().startService()
        self._listen_or_exit()
        self.stopping = False
        if self.signals and self.config_path:
            import signal
            self._old_hup = signal.signal(signal.SIGHUP, self._on_hup)
        self.runtime.plugins.hook.lbframe_site_started(site=self.runtime.site)

    def _on_hup(self, signum, frame) -> None:
        # Signal handlers run between bytecodes: do the work on the reactor.
        self.reactor.callFromThread(self.reload)

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
        open_now = sum(_listener_call(s, "connection_count") or 0 for s in listeners)
        if open_now:
            log.info("stopping: {count} connections open, waiting up to {grace:g}s for them",
                     count=open_now, grace=grace, lbframe_event="stopping")
        self._stopped = []  # callers that asked again meanwhile
        d = self._drain(listeners, grace, "stopping: stop_grace passed")
        d.addCallback(lambda _: service.MultiService.stopService(self))

        def stopped(result):
            for pool in self.runtime.pools.values():
                pool.stop()
            waiters, self._stopped = self._stopped, None
            for waiter in waiters:
                waiter.callback(None)
            return result

        return d.addCallback(stopped)

    def _drain(self, services, grace: float, reason: str) -> defer.Deferred:
        """Stop ``services`` listening, then fire once none of them has a
        connection open or ``grace`` seconds passed (closing what is left)."""
        closed = self._stop_listening(services)
        return self._wait_connections(closed, services, grace, reason)

    @staticmethod
    def _stop_listening(services) -> defer.Deferred:
        """Fires when every one of ``services`` has closed its listening sockets."""
        waits = [defer.maybeDeferred(_listener_call, s, "stop_listening") for s in services]
        return defer.gatherResults(waits, consumeErrors=True)

    def _wait_connections(self, closed: defer.Deferred, services, grace: float,
                          reason: str) -> defer.Deferred:
        clock = self.reactor
        deadline = clock.seconds() + grace
        done: defer.Deferred = defer.Deferred()

        def poll():
            left = {s: _listener_call(s, "connection_count") or 0 for s in services}
            total = sum(left.values())
            if total and clock.seconds() < deadline:
                clock.callLater(min(DRAIN_POLL, max(0.0, deadline - clock.seconds())), poll)
                return
            if total:
                log.warn("{reason}: closing {count} connections", reason=reason, count=total,
                         lbframe_event="connections_closed")
                for s, n in left.items():
                    if n:
                        _listener_call(s, "close_all", reason)
            done.callback(total)

        closed.addBoth(lambda _: poll())
        return done

    # -- reload ------------------------------------------------------------

    def reload(self, path: str | None = None) -> bool:
        """Read the site file again and apply it as a difference; True when
        applied. A file that ``lbframe check`` would refuse is refused here,
        with its message in the log, and the running site is left as it is."""
        from lbframe.reload import carry_runtime, update_checks
        from lbframe.tap import load

        path = path or self.config_path
        if self.stopping or not self.running:
            log.warn("reload of {path} ignored: lbframe is stopping", path=path,
                     lbframe_event="reload_ignored")
            return False
        started = time.monotonic()
        old = self.runtime
        try:
            new = load(path, self.reactor, previous=old)
        except (ConfigError, PluginError) as e:
            log.error("reload refused, the running site is unchanged: {error}", error=str(e),
                      path=path, lbframe_event="reload_refused")
            return False

        changes = carry_runtime(old, new)
        self._reload_listeners(old, new)
        kept, started_checks = update_checks(self.monitor_runner, new)
        if new.redundancy is not old.redundancy:
            self._replace_child(self.redundancy_service, new.redundancy.service)
            self.redundancy_service = new.redundancy.service
        self._reload_admin(old, new)
        self._close_dropped_stores(old, new)
        self.runtime = new
        new.plugins.hook.lbframe_site_reloaded(old=old.site, new=new.site)
        took = time.monotonic() - started
        log.info("reloaded {path} in {ms:.1f} ms: {summary}", path=path, ms=took * 1000,
                 summary=changes.summary(), changes=changes.as_dict(), checks_kept=kept,
                 checks_started=started_checks, lbframe_event="reload")
        return True

    @staticmethod
    def _close_dropped_stores(old: SiteRuntime, new: SiteRuntime) -> None:
        """Close the persistence stores the reload did not carry (their
        section changed or went away), when they can be closed (a remote
        store's connection)."""
        for name, store in old.persistence_stores.items():
            close = getattr(store, "close", None)
            if new.persistence_stores.get(name) is store or not callable(close):
                continue
            d = defer.maybeDeferred(close)
            d.addErrback(lambda f, name=name: log.failure(
                "closing the persistence store of {profile}", f, profile=name))

    def _reload_listeners(self, old: SiteRuntime, new: SiteRuntime) -> None:
        for name in list(self.listeners):
            if name not in new.site.virtuals:
                self._retire(name, new.site.lbframe.stop_grace)
        for name, proto in new.protocols.items():
            svc = self.listeners.get(name)
            before, after = old.site.virtuals.get(name), new.site.virtuals[name]
            if (svc is not None and before is not None and before.listen == after.listen
                    and before.protocol == after.protocol and hasattr(svc, "set_balancer")):
                svc.set_balancer(new.balancers[name])
                # The protocol's own settings (certificates, limits) may have changed.
                _listener_call(svc, "set_protocol", proto)
                continue
            closed = (self._retire(name, new.site.lbframe.stop_grace) if svc is not None
                      else defer.succeed(None))
            # The new listener may bind an address the old one had: once it is closed.
            closed.addCallback(lambda _, name=name, proto=proto, balancer=new.balancers[name]:
                               self._start_listener(name, proto, balancer))

    def _start_listener(self, name: str, proto, balancer) -> None:
        svc = proto.make_service(balancer, self.reactor)
        svc.setServiceParent(self)
        self.listeners[name] = svc

        def failed(f):
            log.error("virtual {virtual}: cannot start its listener after the reload, "
                      "it is not serving: {error}", virtual=name, error=f.getErrorMessage(),
                      lbframe_event="listener_failed")
            if self.listeners.get(name) is svc:
                del self.listeners[name]
            self._detach(svc)

        svc.start_listening().addErrback(failed)

    def _retire(self, name: str, grace: float) -> defer.Deferred:
        """Stop a listener accepting; remove it once its connections are done
        (or ``grace`` passed). Fires when its listening sockets are closed.

        A listener service without ``stop_listening`` (a third-party
        protocol) is simply stopped."""
        svc = self.listeners.pop(name)
        # Its name is free at once for a listener that replaces it.
        if svc.name and self.namedServices.get(svc.name) is svc:
            del self.namedServices[svc.name]
        if not hasattr(svc, "stop_listening"):
            return defer.maybeDeferred(self._detach, svc)
        self.retiring.add(svc)
        closed = self._stop_listening([svc])
        d = self._wait_connections(closed, [svc], grace, f"virtual {name} retired by a reload")

        def remove(_):
            self.retiring.discard(svc)
            return self._detach(svc)

        d.addCallback(remove)
        d.addErrback(lambda f: log.failure("retiring virtual {virtual}", f, virtual=name))
        # A caller's callbacks must not change what the drain sees.
        result: defer.Deferred = defer.Deferred()
        closed.addBoth(lambda r: result.callback(None))
        return result

    def _detach(self, svc):
        """Take ``svc`` out of the tree and stop it (a Deferred or None)."""
        if svc.name and self.namedServices.get(svc.name) is svc:
            del self.namedServices[svc.name]
        if svc in self.services:
            self.services.remove(svc)
        svc.parent = None
        if svc.running:
            return defer.maybeDeferred(svc.stopService)
        return None

    def _replace_child(self, old_svc, new_svc) -> None:
        self._detach(old_svc)
        new_svc.setServiceParent(self)

    def _reload_admin(self, old: SiteRuntime, new: SiteRuntime) -> None:
        before, after = old.site.lbframe, new.site.lbframe
        if self.admin is not None and before.admin == after.admin:
            if before.admin_token != after.admin_token:
                from lbframe.admin.auth import Auth
                self.admin.context.auth = Auth(after.admin_token or None,
                                               everything=self.admin.context.auth.everything)
            self.admin.set_runtime(new)
            return
        if self.admin is not None:
            self._detach(self.admin)
            self.admin = None
        if after.admin:
            self.admin = self._make_admin(new)
            self.admin.setServiceParent(self)
