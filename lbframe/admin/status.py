"""The status of a running site as plain data (the ``/api/status`` JSON).

One function per level: :func:`site_status` for everything,
:func:`virtual_status`, :func:`pool_status` and :func:`member_status` for
the parts. The HTML page, the CLI table and the member-change answer are all
built from these dicts, so every view of the site says the same thing.

The contract fixes the keys ``protocol``, ``listen``, ``connections_active``
and ``connections_total`` of a virtual server; ``scheduler`` and
``members`` of a pool; ``address``, ``state``, ``weight``, ``priority``,
``connections_active``, ``connections_total`` and ``response_time_ms`` of a
member; ``driver`` and ``state`` of redundancy. The other keys are
extensions: they may be added to, never renamed.
"""

from __future__ import annotations

import re
import time
from typing import Any

from lbframe.runtime import CheckState, Member, PoolState, VirtualState


def _ms(seconds: float | None) -> float | None:
    """Seconds → milliseconds, rounded to the microsecond; ``None`` stays."""
    return None if seconds is None else round(seconds * 1000.0, 3)


def check_status(check: CheckState) -> dict[str, Any]:
    """One monitor's last result for one member."""
    return {
        "ok": check.last_ok,
        "up": check.up,
        "reason": check.last_reason,
        "time": check.last_time,
        "duration_ms": _ms(check.last_duration),
        "checks_total": check.checks_total,
        "checks_failed": check.checks_failed,
        # the last check as one object: result, reason, time, duration
        "last_check": None if check.last_ok is None else {
            "result": "pass" if check.last_ok else "fail",
            "reason": check.last_reason,
            "time": check.last_time,
            "duration_ms": _ms(check.last_duration),
        },
    }


def member_status(member: Member) -> dict[str, Any]:
    return {
        "address": str(member.address),
        "state": member.state,
        "weight": member.weight,
        "priority": member.priority,
        "connections_active": member.active,
        "connections_total": member.total,
        "response_time_ms": _ms(member.response_time),
        # extensions
        "down_reason": member.down_reason,
        "backup": member.backup,
        "maxconn": member.maxconn,
        "failures": member.failures,
        "checks": {name: check_status(c) for name, c in member.checks.items()},
        "state_since": member.since,
        "connections_max": member.max_active,
        "bytes_in": member.bytes_in,
        "bytes_out": member.bytes_out,
        "retries": member.retries,
        "responses_5xx": member.responses_5xx,
        "downs": member.downs,
        # seconds down in all, the current spell included
        "downtime": round(member.downtime + (time.time() - member.since
                                             if member.state == "down" else 0.0), 3),
    }


def pool_status(pool: PoolState) -> dict[str, Any]:
    members = {name: member_status(m) for name, m in pool.members.items()}
    return {
        "scheduler": pool.spec.scheduler,
        "members": members,
        # extensions: the summary row
        "members_up": sum(1 for m in members.values() if m["state"] == "up"),
        "queue": len(pool.queue),
        "connections_active": sum(m["connections_active"] for m in members.values()),
        "connections_max": pool.max_active,
        "connections_total": sum(m["connections_total"] for m in members.values()),
    }


def virtual_status(virtual: VirtualState) -> dict[str, Any]:
    spec = virtual.spec
    status = {
        "protocol": spec.protocol,
        "listen": list(spec.listen),
        "connections_active": virtual.active,
        "connections_total": virtual.total,
        # extensions
        "pool": spec.pool,
        "refused": virtual.refused,
        "refusals": dict(getattr(virtual, "refusals", {})),
        "connections_max": getattr(virtual, "max_active", 0),
        "max_connections": spec.max_connections,
        "bytes_in": getattr(virtual, "bytes_in", 0),
        "bytes_out": getattr(virtual, "bytes_out", 0),
        "requests": getattr(virtual, "requests", 0),
        "responses": dict(getattr(virtual, "responses", {})),
        **({"udp": virtual.udp.as_dict()} if getattr(virtual, "udp", None) is not None else {}),
    }
    if spec.protocol in ("routed", "nat"):
        # the kernel's counters per next hop (lbframe.protocols.routed)
        from lbframe.protocols.routed.program import next_hop_status
        status.update(next_hop_status(spec.name))
    return status


def redundancy_status(runtime) -> dict[str, Any]:
    out = {
        "driver": runtime.site.redundancy.driver,
        "state": getattr(runtime.redundancy, "state", "standalone"),
    }
    detail = getattr(runtime.redundancy, "status", None)  # a driver's extra keys (vrrp: groups)
    if callable(detail):
        out.update({k: v for k, v in detail().items() if k not in out})
    return out


def store_shown(url: str) -> str:
    """A store URL as the admin API shows it: a password it carries is never shown."""
    return re.sub(r"//[^/@]*@", "//***@", url)


def persistence_status(runtime) -> dict[str, Any]:
    """Each ``[persistence X]`` profile: its table's size (``None`` for a
    store that cannot count at once, e.g. Redis), who uses it, and how its
    lookups went."""
    users: dict[str, list[str]] = {}
    profiles: dict[str, Any] = {}
    for vname, balancer in getattr(runtime, "balancers", {}).items():
        profile = getattr(balancer, "persistence", None)
        if profile is not None:
            profiles[profile.name] = profile
            users.setdefault(profile.name, []).append(vname)
    out = {}
    for name, spec in runtime.site.persistence.items():
        store = runtime.persistence_stores.get(name)
        try:
            entries = len(store) if store is not None else None
        except TypeError:
            entries = None
        profile = profiles.get(name)
        out[name] = {
            "method": spec.method,
            "store": store_shown(spec.store),
            "entries": entries,
            "virtuals": users.get(name, []),
            "lookups": getattr(profile, "lookups", 0),
            "hits": getattr(profile, "hits", 0),
            "replaced": getattr(profile, "replaced", 0),
            "evicted": getattr(store, "evicted", 0),
            "expired": getattr(store, "expired", 0),
        }
    return out


def add_rates(status: dict[str, Any], sampler) -> None:
    """Add ``rate`` and ``rate_max`` (new connections per second, sampled by
    :class:`lbframe.admin.rates.RateSampler`) to every virtual server, pool
    and member of ``status``; a pool's rate is its members' sum."""
    for name, v in status["virtuals"].items():
        v["rate"] = round(sampler.current("virtual", name), 3)
        v["rate_max"] = round(sampler.maximum("virtual", name), 3)
    for pname, pool in status["pools"].items():
        total = 0.0
        for mname, m in pool["members"].items():
            m["rate"] = round(sampler.current("member", pname, mname), 3)
            m["rate_max"] = round(sampler.maximum("member", pname, mname), 3)
            total += m["rate"]
        pool["rate"] = round(total, 3)


def site_status(runtime, rates=None) -> dict[str, Any]:
    """The whole ``/api/status`` document for a :class:`lbframe.service.SiteRuntime`;
    with ``rates`` (a :class:`~lbframe.admin.rates.RateSampler`) the rates too."""
    status = {
        "time": time.time(),
        "virtuals": {name: virtual_status(v) for name, v in runtime.virtuals.items()},
        "pools": {name: pool_status(p) for name, p in runtime.pools.items()},
        "redundancy": redundancy_status(runtime),
    }
    if runtime.site.persistence:
        status["persistence"] = persistence_status(runtime)
    if rates is not None:
        add_rates(status, rates)
    return status
