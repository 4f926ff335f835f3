"""What a reload changes: two :class:`~lbframe.config.Site` compared.

Pure functions over frozen config objects (no reactor, no running state),
so :func:`lbframe.site.reload` can work the difference out in a thread
while the reactor goes on serving, and apply only what changed.

Comparing two sites costs what is in them (a 5,000-member pool compares
5,000 member specs); applying the result costs what changed. Specs compare
without their file positions (``source`` is ``eq=False``).
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from lbframe.runtime import PoolState


@attrs.define
class Named:
    """The names of one section kind that a reload added, changed or removed."""

    added: list[str] = attrs.field(factory=list)
    changed: list[str] = attrs.field(factory=list)
    removed: list[str] = attrs.field(factory=list)

    @classmethod
    def of(cls, old: Mapping[str, Any], new: Mapping[str, Any]) -> "Named":
        found = cls()
        for name, spec in new.items():
            if name not in old:
                found.added.append(name)
            elif old[name] != spec:
                found.changed.append(name)
        found.removed.extend(name for name in old if name not in new)
        return found

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def __contains__(self, name: str) -> bool:
        """Added, changed or removed."""
        return name in self.added or name in self.changed or name in self.removed

    def as_dict(self) -> dict[str, list[str]]:
        return {what: names for what, names in (("added", self.added), ("changed", self.changed),
                                                 ("removed", self.removed)) if names}


@attrs.define
class Changes:
    """Every difference between two sites, by section kind.

    ``members`` holds, for each pool in both sites whose members differ,
    which members were added, changed or removed; ``pool_settings`` the pools
    whose settings other than members and monitors changed (a new scheduler,
    and the protocols that read the pool, e.g. its TLS to members);
    ``pool_monitors`` the pools whose list of monitors changed.
    """

    lbframe: bool = False
    redundancy: bool = False
    virtuals: Named = attrs.field(factory=Named)
    pools: Named = attrs.field(factory=Named)
    monitors: Named = attrs.field(factory=Named)
    persistence: Named = attrs.field(factory=Named)
    rules: Named = attrs.field(factory=Named)
    members: dict[str, "MemberChanges"] = attrs.field(factory=dict)
    pool_settings: set[str] = attrs.field(factory=set)
    pool_monitors: set[str] = attrs.field(factory=set)

    def __bool__(self) -> bool:
        return bool(self.lbframe or self.redundancy or self.virtuals or self.pools
                    or self.monitors or self.persistence or self.rules)

    def as_dict(self) -> dict[str, dict[str, list[str]]]:
        """``{"members": {"added": ["web/b"]}, ...}``: what the ``reload`` log event carries."""
        found: dict[str, dict[str, list[str]]] = {}
        if self.lbframe:
            found["lbframe"] = {"changed": ["[lbframe]"]}
        for kind in ("virtuals", "pools"):
            if getattr(self, kind):
                found[kind] = getattr(self, kind).as_dict()
        members = Named()
        for pool, named in self.members.items():
            for what in ("added", "changed", "removed"):
                getattr(members, what).extend(f"{pool}/{m}" for m in getattr(named, what))
        if members:
            found["members"] = members.as_dict()
        for kind in ("monitors", "persistence", "rules"):
            if getattr(self, kind):
                found[kind] = getattr(self, kind).as_dict()
        if self.redundancy:
            found["redundancy"] = {"changed": ["[redundancy]"]}
        return found

    def summary(self) -> str:
        """``pools: changed web | members: added web/d``, or ``nothing changed``."""
        parts = []
        for kind, whats in self.as_dict().items():
            words = [f"{what} {', '.join(names)}" for what, names in whats.items()]
            parts.append(f"{kind}: {'; '.join(words)}")
        return " | ".join(parts) if parts else "nothing changed"


def diff_sites(old, new) -> Changes:
    """Every section that differs between two :class:`~lbframe.config.Site`;
    members are compared only in pools whose spec differs."""
    changes = Changes(lbframe=old.lbframe != new.lbframe,
                      redundancy=old.redundancy != new.redundancy,
                      virtuals=Named.of(old.virtuals, new.virtuals),
                      pools=Named.of(old.pools, new.pools),
                      monitors=Named.of(old.monitors, new.monitors),
                      persistence=Named.of(old.persistence, new.persistence),
                      rules=Named.of(old.rules, new.rules))
    for name in changes.pools.changed:
        before, after = old.pools[name], new.pools[name]
        if before.members != after.members:
            changes.members[name] = MemberChanges.of_pools(before, after)
        if pool_settings(before) != pool_settings(after):
            changes.pool_settings.add(name)
        if before.monitors != after.monitors:
            changes.pool_monitors.add(name)
    return changes


def pool_settings(pool_spec) -> Any:
    """A pool's settings without its members and monitors: what its
    scheduler (and a protocol sending to it) may read. When they change,
    the pool gets a new scheduler."""
    return attrs.evolve(pool_spec, members=(), monitors=())


#: the name this had before it also covered protocols
scheduler_settings = pool_settings


@attrs.define
class MemberChanges(Named):
    """:class:`Named` for the members of one pool, with what applying it
    needs so that it never has to look at the unchanged members: the specs
    of the added and changed ones, and the new order when adding at the end
    and removing in place do not give the file's order."""

    specs: dict = attrs.field(factory=dict)
    order: list | None = None

    @classmethod
    def of_pools(cls, before, after) -> "MemberChanges":
        old = {m.name: m for m in before.members}
        new = {m.name: m for m in after.members}
        found = cls()
        for name, spec in new.items():
            if name not in old:
                found.added.append(name)
            elif old[name] != spec:
                found.changed.append(name)
            else:
                continue
            found.specs[name] = spec
        found.removed.extend(name for name in old if name not in new)
        # merge_members removes in place and appends what it adds: first
        # the re-addressed members (a new Member each), then the added ones.
        moved = [name for name in found.changed if old[name].address != new[name].address]
        gone = set(found.removed) | set(moved)
        expected = [name for name in old if name not in gone] + moved + found.added
        if expected != list(new):
            found.order = list(new)
        return found


def merge_members(pool: PoolState, spec, members: MemberChanges | None) -> list:
    """Make the running ``pool`` hold the members of ``spec`` (its new
    spec), touching only the ``members`` a reload added, changed or removed:
    a member whose address is unchanged keeps its
    :class:`~lbframe.runtime.Member` (health, admin state, counters, checks).
    ``members`` None: compare every member (when the difference is not known).
    Returns the Member objects it made (added, or re-addressed)."""
    if members is None:
        members = MemberChanges.of_pools(attrs.evolve(pool.spec, members=tuple(
            m.spec for m in pool.members.values())), spec)
    made = []
    for name in members.removed:
        pool.remove_member(name)
    for name in members.changed:
        mspec = members.specs[name]
        if pool.members[name].spec.address != mspec.address:
            pool.remove_member(name)
            made.append(pool.add_member(mspec))
        else:
            pool.update_member(mspec)
    for name in members.added:
        made.append(pool.add_member(members.specs[name]))
    if members.order is not None:  # the file's order, for the status page and the CLI table
        pool.members = {name: pool.members[name] for name in members.order}
    pool.spec = spec
    return made


def merge_pool(old: PoolState, new: PoolState, plugins) -> None:
    """Make ``old`` (running) look like ``new`` (just built from the new
    spec), keeping the Member objects of members whose address did not
    change; ``new`` is stopped. (Kept for callers holding two pools;
    :func:`lbframe.site.apply` merges from the spec alone.)"""
    old_spec, spec = old.spec, new.spec
    merge_members(old, spec, None)
    if pool_settings(old_spec) != pool_settings(spec):
        factory = plugins.schedulers.get(spec.scheduler).factory
        old.replace_scheduler(factory(spec, dict(spec.options)))
    old.on_state_change[:] = new.on_state_change
    forget_dropped_checks(old)
    new.stop()


def forget_dropped_checks(pool: PoolState) -> None:
    """Check results of monitors the pool no longer names stop counting."""
    for member in pool.members.values():
        for monitor in [m for m in member.checks if m not in pool.spec.monitors]:
            pool.forget_check(member, monitor)
