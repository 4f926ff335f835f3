"""Reload: compare two sites and carry the running state into the new one.

A reload builds the new site's runtime first, the same way a start does
(so a bad file is refused before anything changes), and only then applies
the difference here:

- a pool that keeps its name keeps its :class:`~lbframe.runtime.PoolState`
  object, so connections in flight release their member where they took it;
  members are added, removed or updated in place (a member whose address is
  unchanged keeps its :class:`~lbframe.runtime.Member`: health, admin
  state, counters and check results);
- the scheduler is replaced only when the pool's scheduler settings changed;
- a virtual server that keeps its name keeps its
  :class:`~lbframe.runtime.VirtualState` (counters);
- the new balancers are pointed at the carried objects;
- monitor checks whose pool, member and monitor settings are unchanged keep
  running on their own schedule; the others are replaced.

Persistence stores, monitor objects and the redundancy driver of unchanged
sections are carried by :func:`lbframe.service.build_runtime` itself (its
``previous`` argument), because other objects are built around them.

What this module does not do: listeners, the admin server and the service
tree; :class:`lbframe.service.SiteService` owns those.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from lbframe.runtime import PoolState


@attrs.define
class Changes:
    """What a reload changed, by kind: ``{"added": [...], "removed": [...],
    "changed": [...]}`` of names (members as ``POOL/MEMBER``)."""

    kinds: dict[str, dict[str, list[str]]] = attrs.field(factory=dict)

    def note(self, kind: str, what: str, name: str) -> None:
        self.kinds.setdefault(kind, {}).setdefault(what, []).append(name)

    def as_dict(self) -> dict[str, dict[str, list[str]]]:
        return {k: dict(v) for k, v in self.kinds.items() if v}

    def __bool__(self) -> bool:
        return any(self.kinds.values())

    def summary(self) -> str:
        """``pools: changed web; members: added web/d`` or ``nothing changed``."""
        parts = []
        for kind, whats in self.kinds.items():
            words = [f"{what} {', '.join(names)}" for what, names in whats.items() if names]
            if words:
                parts.append(f"{kind}: {'; '.join(words)}")
        return " | ".join(parts) if parts else "nothing changed"


def diff_named(changes: Changes, kind: str, old: Mapping[str, Any], new: Mapping[str, Any]
               ) -> None:
    """Note the added, removed and changed names of two ``{name: spec}``
    maps (specs compare without their file positions)."""
    for name in new:
        if name not in old:
            changes.note(kind, "added", name)
        elif old[name] != new[name]:
            changes.note(kind, "changed", name)
    for name in old:
        if name not in new:
            changes.note(kind, "removed", name)


def diff_sites(old, new) -> Changes:
    """Every section that differs between two :class:`~lbframe.config.Site`."""
    changes = Changes()
    if old.lbframe != new.lbframe:
        changes.note("lbframe", "changed", "[lbframe]")
    diff_named(changes, "virtuals", old.virtuals, new.virtuals)
    diff_named(changes, "pools", old.pools, new.pools)
    for name, pool in new.pools.items():
        if name in old.pools:
            diff_named(changes, "members", {f"{name}/{m.name}": m for m in old.pools[name].members},
                       {f"{name}/{m.name}": m for m in pool.members})
    diff_named(changes, "monitors", old.monitors, new.monitors)
    diff_named(changes, "persistence", old.persistence, new.persistence)
    diff_named(changes, "rules", old.rules, new.rules)
    if old.redundancy != new.redundancy:
        changes.note("redundancy", "changed", "[redundancy]")
    return changes


def scheduler_settings(pool_spec) -> Any:
    """The part of a pool's settings a scheduler may read: everything but
    its members and monitors. When it changes, the pool gets a new scheduler."""
    return attrs.evolve(pool_spec, members=(), monitors=())


def merge_pool(old: PoolState, new: PoolState, plugins) -> None:
    """Make ``old`` (running) look like ``new`` (just built), keeping the
    Member objects of members whose address did not change."""
    old_spec, spec = old.spec, new.spec
    wanted = {m.name: m for m in spec.members}
    for name in [n for n in old.members if n not in wanted]:
        old.remove_member(name)
    for name, mspec in wanted.items():
        member = old.members.get(name)
        if member is None:
            old.add_member(mspec)
        elif member.spec.address != mspec.address:
            old.remove_member(name)
            old.add_member(mspec)
        elif member.spec != mspec:
            old.update_member(mspec)
    # The file's order, for the status page and the CLI table.
    old.members = {name: old.members[name] for name in wanted}
    old.spec = spec
    if scheduler_settings(old_spec) != scheduler_settings(spec):
        factory = plugins.schedulers.get(spec.scheduler).factory
        old.replace_scheduler(factory(spec, dict(spec.options)))
    # State-change listeners call the new plugins' hooks.
    old.on_state_change[:] = new.on_state_change
    for member in old.members.values():
        for monitor in [m for m in member.checks if m not in spec.monitors]:
            old.forget_check(member, monitor)
    new.stop()


def _repoint(value, pools: Mapping[str, PoolState]):
    """``value`` with PoolState objects replaced by the carried ones of the
    same name (a PoolState, or a sequence of pairs such as ``rules``)."""
    if isinstance(value, PoolState):
        return pools.get(value.name, value)
    if isinstance(value, (tuple, list)):
        items = [_repoint(v, pools) for v in value]
        return type(value)(items) if isinstance(value, list) else tuple(items)
    return value


def repoint_balancer(balancer, pools: Mapping[str, PoolState], virtuals: Mapping) -> None:
    """Point a just-built balancer at the carried pools and virtual state."""
    balancer.virtual = virtuals.get(balancer.virtual.name, balancer.virtual)
    for field in attrs.fields(type(balancer)) if attrs.has(type(balancer)) else ():
        if field.name == "virtual":
            continue
        value = getattr(balancer, field.name)
        new_value = _repoint(value, pools)
        if new_value is not value:
            setattr(balancer, field.name, new_value)


def carry_runtime(old, new) -> Changes:
    """Move the running state of ``old`` into ``new`` (both
    :class:`~lbframe.service.SiteRuntime`); ``new`` is the runtime from now
    on. Returns what changed."""
    changes = diff_sites(old.site, new.site)
    for name, pool in list(new.pools.items()):
        running = old.pools.get(name)
        if running is not None:
            merge_pool(running, pool, new.plugins)
            new.pools[name] = running
    for name, virtual in list(new.virtuals.items()):
        running = old.virtuals.get(name)
        if running is not None:
            running.spec = virtual.spec
            new.virtuals[name] = running
    for balancer in new.balancers.values():
        repoint_balancer(balancer, new.pools, new.virtuals)
    for name, pool in old.pools.items():
        if name not in new.pools:
            pool.stop()
    return changes


def update_checks(runner, new) -> tuple[int, int]:
    """Make a :class:`~lbframe.monitors.MonitorRunner` run the checks of
    ``new``: checks whose pool, member, monitor settings and monitor object
    are unchanged go on on their schedule; the others stop, and the new ones
    start. Returns (kept, started)."""
    wanted = {}
    for pool in new.pools.values():
        for mname in pool.spec.monitors:
            for member in pool.members.values():
                wanted[(pool.name, member.name, mname)] = (pool, member)
    kept = set()
    for check in list(runner.checks):
        key = (check.pool.name, check.member.name, check.spec.name)
        target = wanted.get(key)
        spec = new.site.monitors.get(check.spec.name)
        if (target is not None and target[0] is check.pool and target[1] is check.member
                and spec == check.spec and new.monitors.get(spec.name) is check.monitor):
            check.spec = spec  # equal, but carries the new file position
            kept.add(key)
            continue
        check.stop()
        runner.checks.remove(check)
    started = 0
    for key, (pool, member) in wanted.items():
        if key not in kept:
            mname = key[2]
            runner.add(pool, member, new.site.monitors[mname], new.monitors[mname])
            started += 1
    return len(kept), started
