"""Builds the running site from a frozen :class:`~lbframe.config.Site`.

:func:`build_runtime` resolves every plugin name and builds every plugin
object (which validates the plugin's own keys) without binding a socket, so
``lbframe check`` runs it too. :class:`SiteService` is the root of the
twisted.application service tree: monitors, redundancy, admin, and the
virtual servers' listeners last (so they stop first).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.application import service
from twisted.logger import Logger

from lbframe.balancer import Balancer
from lbframe.config.model import Site, Source
from lbframe.errors import ConfigError, OptionError
from lbframe.monitors import MonitorRunner
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


def build_runtime(site: Site, plugins: Plugins, reactor) -> SiteRuntime:
    """Build every run-time object of ``site``; raises ConfigError."""
    monitors = {
        name: _build(plugins.monitors, spec.type, spec.source, "type",
                     spec, dict(spec.options), reactor)
        for name, spec in site.monitors.items()
    }
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
        scheme = spec.store.split("://", 1)[0] if "://" in spec.store else spec.store
        stores[name] = _build(plugins.persistence_stores, scheme, spec.source, "store",
                              spec.store, spec, reactor)

    rules = {name: CompiledRule.compile(spec) for name, spec in site.rules.items()}
    virtuals, balancers, protocols = {}, {}, {}
    for name, spec in site.virtuals.items():
        protocols[name] = _build(plugins.protocols, spec.protocol, spec.source, "protocol",
                                 spec, dict(spec.options), site)
        virtuals[name] = VirtualState(spec)
        balancers[name] = Balancer(
            virtuals[name], pools[spec.pool],
            sorry_pool=pools[spec.sorry_pool] if spec.sorry_pool else None,
            rules=[(rules[r], pools[rules[r].pool]) for r in spec.rules])

    red = site.redundancy
    redundancy = _build(plugins.redundancy_drivers, red.driver, red.source, "driver",
                        red, dict(red.options), reactor)
    return SiteRuntime(site, plugins, pools, virtuals, balancers, protocols, monitors,
                       redundancy, stores)


class SiteService(service.MultiService):
    """The root service of a running site."""

    def __init__(self, runtime: SiteRuntime, reactor):
        super().__init__()
        self.runtime = runtime
        self.reactor = reactor
        self.setName("lbframe")
        site = runtime.site

        runner = MonitorRunner(reactor)
        for pname, pool in runtime.pools.items():
            for mname in pool.spec.monitors:
                for member in pool.members.values():
                    runner.add(pool, member, site.monitors[mname], runtime.monitors[mname])
        runner.setServiceParent(self)
        self.monitor_runner = runner

        runtime.redundancy.service.setServiceParent(self)

        if site.lbframe.admin:
            from lbframe.admin import make_admin_service
            make_admin_service(runtime, site.lbframe.admin, site.lbframe.admin_token,
                               reactor).setServiceParent(self)

        # Listeners last, so that they stop first.
        for name, proto in runtime.protocols.items():
            proto.make_service(runtime.balancers[name], reactor).setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self.runtime.plugins.hook.lbframe_site_started(site=self.runtime.site)

    def stopService(self):
        d = super().stopService()
        for pool in self.runtime.pools.values():
            pool.stop()
        return d
