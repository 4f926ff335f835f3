"""What the status page and ``lbframe status`` both say, worded once.

Both read the ``/api/status`` dict (:mod:`lbframe.admin.status`) and word
it through these functions, so the page and the terminal never disagree:
how long a member has been in its state (``down 3m12s``, as HAProxy's
stats page says it), a member's last check on one line, a pool's summary
(members up of total, sessions, rate), refusals by reason, byte counts.

Everything here takes plain dicts and returns plain strings (no HTML):
the page escapes what it shows.
"""

from __future__ import annotations

from typing import Any

#: refusal reasons as people read them (keys of a virtual server's ``refusals``)
REFUSAL_WORDS = {
    "no_member": "no member",
    "maxconn": "maxconn",
    "queue_full": "queue full",
    "queue_timeout": "queue timeout",
    "sorry": "sorry",
    "bad_request": "bad request",
    "source_limit": "per source",
    "member_failed": "member failed",
    "resources": "no socket",
}


def duration(seconds: float | None) -> str:
    """``12s``, ``3m12s``, ``2h05m``, ``4d3h``: two units at most, as
    HAProxy's "UP 3h2m"."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h}h"


def state_for(member: dict[str, Any], now: float | None) -> str:
    """``down 3m12s`` (the state and how long it has lasted), or the state alone."""
    state = str(member.get("state", "-"))
    since = member.get("state_since")
    if now is None or since is None:
        return state
    return f"{state} {duration(now - since)}"


def check_line(member: dict[str, Any], now: float | None) -> str:
    """One line about the member's health: why it is down when it is,
    else its monitors' last results (``tcp: pass 2s ago``)."""
    if member.get("down_reason"):
        return str(member["down_reason"])
    parts = []
    for name, c in (member.get("checks") or {}).items():
        last = c.get("last_check")
        if not last:
            parts.append(f"{name}: not yet")
            continue
        text = f"{name}: {last.get('result')}"
        if last.get("result") != "pass" and last.get("reason"):
            text += f" ({last['reason']})"
        when = last.get("time")
        if now is not None and when is not None and 0 <= now - when < 10 ** 6:
            text += f" {duration(now - when)} ago"
        parts.append(text)
    return "; ".join(parts) if parts else "no check yet"


def check_details(member: dict[str, Any], now: float | None) -> str:
    """Everything about the member's checks, a line each (the page's
    expanded view): the down reason, then each monitor's last result with
    its reason, age, duration and counters."""
    lines = []
    if member.get("down_reason"):
        lines.append(f"down: {member['down_reason']}")
    for name, c in (member.get("checks") or {}).items():
        last = c.get("last_check")
        total, failed = c.get("checks_total", 0), c.get("checks_failed", 0)
        counts = f"{total - failed} ok, {failed} failed"
        if not last:
            lines.append(f"{name}: not yet run ({counts})")
            continue
        text = f"{name}: {last.get('result')}"
        if last.get("reason"):
            text += f": {last['reason']}"
        when = last.get("time")
        if now is not None and when is not None and 0 <= now - when < 10 ** 6:
            text += f", {duration(now - when)} ago"
        if last.get("duration_ms") is not None:
            text += f", took {last['duration_ms']:.1f} ms"
        lines.append(f"{text} ({counts})")
    return "\n".join(lines) or "no check yet"


def check_counts(member: dict[str, Any]) -> tuple[int, int]:
    """``(passed, failed)`` checks of all the member's monitors."""
    ok = failed = 0
    for c in (member.get("checks") or {}).values():
        total, bad = c.get("checks_total", 0) or 0, c.get("checks_failed", 0) or 0
        ok += total - bad
        failed += bad
    return ok, failed


def pool_summary(pool: dict[str, Any]) -> dict[str, Any]:
    """A pool's summary row: members up of total and its members' sums."""
    members = list((pool.get("members") or {}).values())

    def total(key: str) -> int:
        return sum(m.get(key) or 0 for m in members)

    up = pool.get("members_up")
    if up is None:
        up = sum(1 for m in members if m.get("state") == "up")
    ok, failed = 0, 0
    for m in members:
        a, b = check_counts(m)
        ok, failed = ok + a, failed + b
    return {
        "up": up, "members": len(members),
        "active": pool.get("connections_active", total("connections_active")),
        "max": pool.get("connections_max"),
        "total": pool.get("connections_total", total("connections_total")),
        "rate": pool.get("rate"),
        "bytes_in": total("bytes_in"), "bytes_out": total("bytes_out"),
        "failures": total("failures"), "retries": total("retries"),
        "responses_5xx": total("responses_5xx"),
        "checks_ok": ok, "checks_failed": failed, "downs": total("downs"),
        "queue": pool.get("queue"),
    }


def pool_line(name: str, pool: dict[str, Any]) -> str:
    """``pool web (weighted): 2 of 3 up, sessions 2 (max 3), total 120, rate 1.5/s, queue 0``."""
    s = pool_summary(pool)
    text = (f"pool {name} ({pool.get('scheduler', '-')}): {s['up']} of {s['members']} up, "
            f"sessions {s['active']}")
    if s["max"] is not None:
        text += f" (max {s['max']})"
    text += f", total {s['total']}"
    if s["rate"] is not None:
        text += f", rate {rate(s['rate'])}"
    if s["queue"] is not None:
        text += f", queue {s['queue']}"
    return text


def refusals_line(virtual: dict[str, Any]) -> str:
    """``3: queue timeout 2, maxconn 1`` (non-zero reasons only), or ``0``."""
    refused = virtual.get("refused") or 0
    reasons = [(REFUSAL_WORDS.get(k, k), n) for k, n in (virtual.get("refusals") or {}).items()
               if n]
    if not reasons:
        return str(refused)
    return f"{refused}: " + ", ".join(f"{word} {n}" for word, n in reasons)


def rate(value: float | None) -> str:
    """``1.5/s`` (``12/s`` from 100 up); ``-`` when unknown."""
    if value is None:
        return "-"
    return f"{value:.1f}/s" if value < 100 else f"{value:.0f}/s"


def size(n: int | None) -> str:
    """Bytes as people read them: ``512 B``, ``1.2 kB``, ``3.4 MB``, ``5.6 GB``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # not reached


def redundancy_line(red: dict[str, Any]) -> str:
    """``standalone`` for driver ``none``; else ``vrrp: master``."""
    driver, state = red.get("driver"), red.get("state")
    if not driver or driver == "none":
        return "standalone"
    return f"{driver}: {state or '-'}"
