"""The life of a site, in one place: read, build, start, reload.

::

    read(path)            site.ini → Site, then its plugins   (touches nothing running)
    load(path, reactor)   read + build_runtime                (``lbframe check`` stops here)
    make_service(...)     load + the SiteService tree         (``twistd lbframe`` starts it)
    reload(svc)           read again, diff_sites, apply       (SIGHUP: reload_in_thread)
    apply(svc, ...)       the difference, applied: the one function a reload is

A reload costs what changed, not what exists. Reading and comparing a
5,000-member file takes about 100 ms of CPU, so on SIGHUP
(:func:`reload_in_thread`) both run in a worker thread while the reactor
goes on serving; only :func:`apply` runs on the reactor, and it visits only
the sections, members and checks the difference names. The running objects
of everything else are kept as they are: same pool, same member (health,
admin state, counters), same check on its own schedule, same listener.

Nothing here imports ``twistd``'s layer (:mod:`lbframe.tap`); tap and
:mod:`lbframe.cli` call down into this module.
"""

from __future__ import annotations

import gc
import os
import time

from twisted.internet import defer, threads
from twisted.logger import Logger

from lbframe.config import load_site
from lbframe.config.model import Site
from lbframe.errors import ConfigError, PluginError
from lbframe.profiles import build_profile
from lbframe.plugins import Plugins, load_plugins
from lbframe.reload import (Changes, MemberChanges, diff_sites, forget_dropped_checks,
                             merge_members)
from lbframe.rules import CompiledRule
from lbframe.runtime import VirtualState
from lbframe.service import (SiteRuntime, SiteService, build_balancer, build_monitor, build_pool,
                             build_protocol, build_redundancy, build_runtime, build_scheduler,
                             build_store, store_scheme)

log = Logger(namespace="lbframe")


# -- start ---------------------------------------------------------------

def read(path: str) -> tuple[Site, Plugins]:
    """``path`` parsed, and the plugins it names loaded (its ``plugins =``,
    installed entry points, the built-ins); raises ConfigError or
    PluginError. Builds nothing, so a worker thread may run it."""
    site = load_site(path)
    plugins = load_plugins(site.lbframe.plugins, base_dir=os.path.dirname(os.path.abspath(path)))
    return site, plugins


def load(path: str, reactor) -> SiteRuntime:
    """Read ``path`` and build every run-time object of it (binding
    nothing); raises ConfigError or PluginError."""
    site, plugins = read(path)
    return build_runtime(site, plugins, reactor)


def make_service(path: str, reactor, *, signals: bool = False,
                 own_process: bool = False) -> SiteService:
    """The service tree of the site in ``path``, not started; with
    ``signals``, SIGHUP reloads it (:func:`reload_in_thread`). With
    ``own_process`` (``twistd lbframe``: the process is the site's), the
    site's objects are kept out of the garbage collector's full walks after
    start and after every reload (:func:`settle_heap`); a test or a program
    embedding lbframe keeps its collector as it is."""
    runtime = load(path, reactor)
    service_class = SiteService
    if runtime.site.lbframe.workers > 1:  # a control plane and N data-path processes
        from lbframe.workers.parent import ParentService as service_class
    svc = service_class(runtime, reactor, config_path=path, signals=signals)
    svc.on_hup = lambda: reload_in_thread(svc)
    svc.own_process = own_process
    if own_process:
        settle_heap()
    return svc


def settle_heap() -> None:
    """Take the objects alive now (the site just built or reloaded: specs,
    members, pools) out of the cyclic garbage collector's sight
    (:func:`gc.freeze`).

    Why: they live as long as the site, and a full collection walks every
    tracked object. At 5,000 members that walk holds the reactor 40-90 ms,
    more than a whole reload costs, and reading a new file (tens of
    thousands of new objects) is what sets one off. Frozen objects are
    still freed when nothing refers to them; only a reference cycle among
    objects alive at this moment that later becomes garbage is never
    collected: a bounded amount per start or reload.
    """
    gc.freeze()


# -- reload --------------------------------------------------------------

def reload(svc: SiteService, path: str | None = None) -> bool:
    """Read the site file again and apply it as a difference; True when
    applied. Reads on the calling thread (the reactor's, in tests and the
    admin API): :func:`reload_in_thread` is SIGHUP's way. A file that
    ``lbframe check`` would refuse is refused here, with its message in the
    log, and the running site is left as it is."""
    path = path or svc.config_path
    if not _may_reload(svc, path):
        return False
    began = time.monotonic()
    try:
        site, plugins = read(path)
        changes = diff_sites(svc.runtime.site, site)
    except (ConfigError, PluginError) as e:
        return _refused(e, path)
    applied = _apply_and_log(svc, site, plugins, changes, path, time.monotonic() - began)
    if svc.own_process:
        settle_heap()
    return applied


def reload_in_thread(svc: SiteService, path: str | None = None) -> defer.Deferred:
    """:func:`reload`, with the reading and the comparing done in a worker
    thread (they cost what the file holds); :func:`apply` runs on the
    reactor. Fires with True when applied. Reloads asked for while one
    reads make one more after it (the file may have changed again), and
    fire with its outcome.

    The garbage collector waits meanwhile: the thread makes tens of
    thousands of objects, and a full collection they set off would hold
    the reactor longer than the reload (see :func:`settle_heap`)."""
    path = path or svc.config_path
    if svc.reload_pending is not None:
        waiter: defer.Deferred = defer.Deferred()
        svc.reload_waiters.append(waiter)
        return waiter
    if not _may_reload(svc, path):
        return defer.succeed(False)
    old_site = svc.runtime.site
    reactor = svc.reactor
    began = time.monotonic()

    def read_and_compare():
        site, plugins = read(path)
        return site, plugins, diff_sites(old_site, site), time.monotonic() - began

    def on_reactor(result):
        site, plugins, changes, read_took = result
        if not _may_reload(svc, path):
            return False
        if svc.runtime.site is not old_site:  # applied meanwhile (reload() on the reactor)
            changes = diff_sites(svc.runtime.site, site)
        return _apply_and_log(svc, site, plugins, changes, path, read_took)

    def refused(failure):
        failure.trap(ConfigError, PluginError)
        return _refused(failure.value, path)

    def done(result):
        svc.reload_pending = None
        if svc.own_process:
            settle_heap()
        if collecting:
            gc.enable()
        waiters, svc.reload_waiters = svc.reload_waiters, []
        if waiters:  # asked for while this one read: the file may have changed again
            reload_in_thread(svc, path).addBoth(_fire_all, waiters)
        return result

    collecting = gc.isenabled()
    gc.disable()
    d = threads.deferToThreadPool(reactor, reactor.getThreadPool(), read_and_compare)
    d.addCallbacks(on_reactor, refused)
    d.addBoth(done)
    if not d.called:
        svc.reload_pending = d
    return d


def _fire_all(result, waiters) -> None:
    for waiter in waiters:
        waiter.callback(result)


def _may_reload(svc: SiteService, path) -> bool:
    if svc.stopping or not svc.running:
        log.warn("reload of {path} ignored: lbframe is stopping", path=path,
                 lbframe_event="reload_ignored")
        return False
    return True


def _refused(error, path) -> bool:
    log.error("reload refused, the running site is unchanged: {error}", error=str(error),
              path=path, lbframe_event="reload_refused")
    return False


def _apply_and_log(svc, site, plugins, changes, path, read_took: float) -> bool:
    began = time.monotonic()
    try:
        kept, started = apply(svc, site, plugins, changes)
    except (ConfigError, PluginError) as e:
        return _refused(e, path)
    took = time.monotonic() - began
    log.info("reloaded {path} in {ms:.1f} ms: {summary}", path=path, ms=(read_took + took) * 1000,
             read_ms=read_took * 1000, apply_ms=took * 1000, summary=changes.summary(),
             changes=changes.as_dict(), checks_kept=kept, checks_started=started,
             lbframe_event="reload")
    return True


def apply(svc: SiteService, site: Site, plugins: Plugins, changes: Changes) -> tuple[int, int]:
    """Make the running ``svc`` run ``site``, of which ``changes`` is the
    difference from the running one (:func:`lbframe.reload.diff_sites`).

    First every new or changed object is built, which validates it: a
    ConfigError then leaves the running site as it was. Then the difference
    is applied, section by section; nothing in that half refuses. An
    object is kept when its section is unchanged and the same plugin (by
    name) still provides its type; so a store, a monitor or a driver keeps
    its state over a reload even when its plugin's file was loaded afresh.
    Returns (checks kept, checks started).
    """
    old, reactor = svc.runtime, svc.reactor

    def same(kind: str, name: str) -> bool:
        """``name`` is still registered by the plugin the running site had it from."""
        before, now = getattr(old.plugins, kind), getattr(plugins, kind)
        return name in before and name in now and before.get(name).plugin == now.get(name).plugin

    # 1. Build what is new or changed. -----------------------------------
    monitors = {}
    for name, spec in site.monitors.items():
        if name in old.monitors and name not in changes.monitors and same("monitors", spec.type):
            monitors[name] = old.monitors[name]
        else:
            monitors[name] = build_monitor(spec, plugins, reactor)

    # Pools keep their PoolState; a new scheduler only where one is due.
    schedulers = {name: build_scheduler(spec, plugins) for name, spec in site.pools.items()
                  if name not in old.pools or name in changes.pool_settings
                  or not same("schedulers", spec.scheduler)}

    stores, profiles = {}, {}
    for name, spec in site.persistence.items():
        if (name in old.persistence_stores and name not in changes.persistence
                and same("persistence_stores", store_scheme(spec))):
            stores[name] = old.persistence_stores[name]  # its table goes on
        else:
            stores[name] = build_store(spec, plugins, reactor)
        if stores[name] is old.persistence_stores.get(name) and same("persistence_methods",
                                                                     spec.method):
            profiles[name] = old.profiles[name]  # its counters go on
        else:
            profiles[name] = build_profile(spec, plugins, reactor, store=stores[name])
            if name in old.profiles:  # its store kept: its counters too
                profiles[name].carry_counters_from(old.profiles[name])

    rules = {name: old.rules[name] if name in old.rules and name not in changes.rules
             else CompiledRule.compile(spec) for name, spec in site.rules.items()}

    # Every protocol is built again (cheap: one per virtual server), so a
    # reload reads the files they name again (certificates, OCSP
    # responses), as nginx's and HAProxy's do. A virtual server gets a new
    # balancer only when its section, a rule or its persistence profile changed.
    protocols = {name: build_protocol(spec, plugins, site) for name, spec in site.virtuals.items()}
    rebalanced = {name for name, spec in site.virtuals.items()
                  if name not in old.virtuals or name in changes.virtuals
                  or any(r in changes.rules for r in spec.rules)
                  or (spec.persistence and profiles[spec.persistence]
                      is not old.profiles.get(spec.persistence))}

    red = site.redundancy
    redundancy = (old.redundancy if not changes.redundancy and same("redundancy_drivers", red.driver)
                  else build_redundancy(red, plugins, reactor))

    # 2. Apply the difference; nothing below refuses. --------------------
    events = old.events
    events.plugins = plugins  # every pool's state changes reach the new plugins' hooks
    pools, new_members, gone = {}, [], False
    for name, spec in site.pools.items():
        pool = old.pools.get(name)
        if pool is None:
            pools[name] = pool = build_pool(spec, schedulers[name], reactor, events)
            new_members.extend(pool.members.values())
            continue
        if name in changes.pools.changed:
            members = changes.members.get(name, MemberChanges())
            made = merge_members(pool, spec, members)
            # A member gone, or re-addressed (a new Member), leaves checks to stop.
            gone = gone or bool(members.removed) or len(made) > len(members.added)
            new_members.extend(made)
        if name in schedulers:
            pool.replace_scheduler(schedulers[name])
        if name in changes.pool_monitors:
            forget_dropped_checks(pool)
        pools[name] = pool
    for name in changes.pools.removed:
        old.pools[name].stop()

    virtuals, balancers = {}, {}
    for name, spec in site.virtuals.items():
        if name not in rebalanced:
            virtuals[name], balancers[name] = old.virtuals[name], old.balancers[name]
            continue
        virtuals[name] = old.virtuals.get(name) or VirtualState(spec)
        virtuals[name].spec = spec  # its counters go on
        balancers[name] = build_balancer(virtuals[name], pools, rules, profiles)

    new = SiteRuntime(site, plugins, pools, virtuals, balancers, protocols, monitors,
                      redundancy, stores, profiles, rules, events)

    # Checks: only those of pools whose members or monitors changed.
    changed_monitors = {name for name in site.monitors if monitors[name] is not old.monitors.get(name)}
    recheck = (set(changes.pools.removed) | changes.pool_monitors
               | {name for name, spec in site.pools.items()
                  if changed_monitors.intersection(spec.monitors)})
    kept, started = _update_checks(svc.monitor_runner, new, recheck, new_members, gone)

    # Listeners: retire the removed; re-bind those whose endpoints or
    # protocol changed (or that failed to start); hand the others their
    # (new or same) balancer and protocol, without closing a socket.
    grace = site.lbframe.stop_grace
    for name in changes.virtuals.removed:
        svc.remove_listener(name, grace)
    for name, after in site.virtuals.items():
        before = old.site.virtuals.get(name)
        if (svc.listener_settled(name) and before is not None and before.listen == after.listen
                and before.protocol == after.protocol and same("protocols", after.protocol)):
            svc.apply_listener(name, balancers[name], protocols[name])
        else:
            svc.rebind_listener(name, protocols[name], balancers[name], grace)

    if redundancy is not old.redundancy:
        svc.replace_child(svc.redundancy_service, redundancy.service)
        svc.redundancy_service = redundancy.service

    before, after = old.site.lbframe, site.lbframe
    if svc.admin is not None and before.admin == after.admin:
        if before.admin_token != after.admin_token:
            svc.admin.set_token(after.admin_token)
        svc.admin.set_runtime(new)
    else:
        admin = svc.make_admin(new) if after.admin else None
        svc.admin = admin if svc.replace_child(svc.admin, admin) else None

    _close_dropped_stores(old.persistence_stores, stores)
    svc.runtime = new
    plugins.hook.lbframe_site_reloaded(old=old.site, new=site)
    svc.site_applied()
    return kept, started


def _update_checks(runner, new: SiteRuntime, recheck: set[str], new_members,
                   gone: bool) -> tuple[int, int]:
    """Make ``runner`` (the :class:`~lbframe.monitors.MonitorRunner`) run
    the checks of ``new``, looking only at the pools in ``recheck`` (every
    check of theirs is reconsidered) and at ``new_members`` (Member objects a
    reload created: added, or re-addressed). Checks of members a reload took
    out (``gone``: some were) stop. Everything else goes on on its schedule,
    unvisited when nothing of the kind changed. Returns (kept, started)."""
    if not recheck and not new_members and not gone:
        return len(runner.checks), 0
    monitors, specs = new.monitors, new.site.monitors
    present = set()
    if recheck:
        stale = set()
        for check in runner.checks:
            pool = new.pools.get(check.pool.name)
            if check.member.removed or pool is not check.pool:
                stale.add(check)
            elif pool.name in recheck:
                name = check.spec.name
                if (name in pool.spec.monitors and specs.get(name) == check.spec
                        and monitors.get(name) is check.monitor):
                    present.add((pool.name, check.member.name, name))
                else:
                    stale.add(check)
    else:  # only members came and went: one cheap pass, when some went
        stale = {check for check in runner.checks if check.member.removed} if gone else set()
    for check in stale:
        check.stop()
    if len(stale) > 8:
        runner.checks[:] = [c for c in runner.checks if c not in stale]
    else:
        for check in stale:
            runner.checks.remove(check)
    started = 0
    wanted = [(pool, member) for name in recheck if (pool := new.pools.get(name)) is not None
              for member in pool.members.values()]
    wanted += [(new.pools[m.pool], m) for m in new_members if m.pool not in recheck]
    for pool, member in wanted:
        for mname in pool.spec.monitors:
            if (pool.name, member.name, mname) not in present:
                runner.add(pool, member, specs[mname], monitors[mname])
                started += 1
    return len(runner.checks) - started, started


def _close_dropped_stores(old: dict, kept: dict) -> None:
    """Close the persistence stores the reload did not keep (their section
    changed or went away), when they can be closed (a remote store's connection)."""
    for name, store in old.items():
        close = getattr(store, "close", None)
        if kept.get(name) is store or not callable(close):
            continue
        d = defer.maybeDeferred(close)
        d.addErrback(lambda f, name=name: log.failure(
            "closing the persistence store of {profile}", f, profile=name))
