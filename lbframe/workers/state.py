"""What crosses the channel: member state down, counters up.

Member state (parent → workers): the parent alone runs the monitors and
takes admin changes, so it is the one owner of each member's health, admin
state and weight. :func:`member_state` is the table of those; the parent
sends it whole when a worker starts and after a reload, and the rows that
changed (:func:`changed_rows`) as they change. :func:`apply_member_state`
makes a worker's members agree, through the pool (its scheduler and queue
see the change; the line about it is the parent's to log).

Counters (workers → parent): each worker sends :func:`counters` (flat
``path → number``) a few times a second; the parent adds them up
(:class:`CounterSum`) and writes the sums into its own objects, so that
``/api/status``, ``/metrics`` and the status page read them as they
always did. A worker that died leaves its counted totals behind (a counter
never goes back), not its gauges (its connections are gone).
"""

from __future__ import annotations

#: member fields summed over the workers (counters and the ``active`` gauge)
MEMBER_FIELDS = ("active", "total", "failures", "bytes_in", "bytes_out", "retries",
                 "responses_5xx", "max_active")
VIRTUAL_FIELDS = ("active", "total", "refused", "requests", "max_active", "bytes_in",
                  "bytes_out")
POOL_FIELDS = ("active", "max_active")
PROFILE_FIELDS = ("lookups", "hits", "replaced", "written")
#: the last field of a path that is a gauge (a dead worker's value goes)
GAUGES = ("active",)
#: the last field of a path that is a high-water mark (the most of any moment)
MAXIMA = ("max_active",)


# -- member state, parent → workers --------------------------------------------

def member_state(runtime) -> dict:
    """``{pool: {member: [healthy, admin, weight, down_reason]}}``."""
    return {pname: {m.name: [m.healthy, m.admin, m.weight, m.down_reason]
                    for m in pool.members.values()}
            for pname, pool in runtime.pools.items()}


def state_digest(table: dict) -> str:
    """A short digest of a :func:`member_state` table: a worker reports its
    own, and the parent compares (``/api/status`` ``workers``: ``in_step``)."""
    import hashlib
    import json

    rows = [(p, m, bool(r[0]), r[1], r[2]) for p, ms in table.items() for m, r in ms.items()]
    return hashlib.sha1(json.dumps(sorted(rows)).encode()).hexdigest()[:16]


def changed_rows(before: dict, now: dict) -> dict:
    """The rows of ``now`` that differ from ``before`` (same shape)."""
    out: dict = {}
    for pname, members in now.items():
        old = before.get(pname, {})
        for mname, row in members.items():
            if old.get(mname) != row:
                out.setdefault(pname, {})[mname] = row
    return out


def apply_member_state(runtime, rows: dict) -> int:
    """Make the members named in ``rows`` agree; returns how many changed.
    Members a worker does not know (a reload it has not read yet) are
    skipped: the whole table follows its reload."""
    changed = 0
    for pname, members in rows.items():
        pool = runtime.pools.get(pname)
        if pool is None:
            continue
        for mname, (healthy, admin, weight, reason) in members.items():
            member = pool.members.get(mname)
            if member is None or (member.healthy, member.admin, member.weight) == (
                    healthy, admin, weight):
                continue
            old = member.state
            member.healthy = bool(healthy)
            member.admin = admin
            member.down_reason = reason
            if member.weight != weight:
                member.weight = int(weight)
                member.effective_weight = pool._ramped_weight(member)
            pool._changed(member, old, reason, quiet=True)
            changed += 1
    return changed


# -- counters, workers → parent --------------------------------------------------

def counters(runtime) -> dict:
    """This worker's counters, as ``"kind/name/…/field" → number``."""
    out: dict = {}
    for name, v in runtime.virtuals.items():
        for f in VIRTUAL_FIELDS:
            out[f"v/{name}/{f}"] = getattr(v, f)
        for cls, n in v.responses.items():
            out[f"v/{name}/responses/{cls}"] = n
        for why, n in v.refusals.items():
            out[f"v/{name}/refusals/{why}"] = n
    for pname, pool in runtime.pools.items():
        for f in POOL_FIELDS:
            out[f"p/{pname}/{f}"] = getattr(pool, f)
        for m in pool.members.values():
            for f in MEMBER_FIELDS:
                out[f"m/{pname}/{m.name}/{f}"] = getattr(m, f)
    for name, profile in runtime.profiles.items():
        for f in PROFILE_FIELDS:
            out[f"f/{name}/{f}"] = getattr(profile, f, 0)
    return out


class CounterSum:
    """The parent's sums of its workers' counters.

    ``report(slot, values)`` keeps a worker's latest report; ``retire(slot)``
    folds a dead worker's counters (not its gauges) into what stays;
    :meth:`write` puts ``retired + live workers`` into the runtime's
    objects. What the parent's own objects counted meanwhile (a udp or
    routed virtual server it serves itself) is kept: the parent writes
    ``its own value + the workers' sum``, telling its own part from the
    last sum it wrote.
    """

    def __init__(self):
        self.live: dict[int, dict] = {}
        self.retired: dict[str, int] = {}
        #: path → (id of the object written, the workers' sum written into it)
        self.written: dict[str, tuple] = {}

    def report(self, slot: int, values: dict) -> None:
        self.live[slot] = values

    def retire(self, slot: int) -> None:
        values = self.live.pop(slot, None) or {}
        for path, n in values.items():
            field = path.rsplit("/", 1)[1]
            if field not in GAUGES and field not in MAXIMA:
                self.retired[path] = self.retired.get(path, 0) + n

    def totals(self) -> dict:
        total = dict(self.retired)
        for values in self.live.values():
            for path, n in values.items():
                total[path] = total.get(path, 0) + n
        return total

    def write(self, runtime) -> None:
        total = self.totals()
        written = self.written
        for path, n in total.items():
            target = _resolve(runtime, path)
            if target is None:
                continue
            obj, field, key = target
            current = obj[key] if key is not None else getattr(obj, field)
            if field in MAXIMA:
                value = max(current, n)
            else:
                # What was written into this very object (a reload may have
                # replaced it: a re-addressed member starts afresh).
                owner, before = written.get(path, (None, 0))
                own = current - (before if owner == id(obj) else 0)
                value = own + n
            if key is not None:
                obj[key] = value
            else:
                setattr(obj, field, value)
            written[path] = (id(obj), n if field not in MAXIMA else 0)
        # Objects a reload replaced start from their own values.
        for path in [p for p in written if p not in total]:
            del written[path]


def _resolve(runtime, path: str):
    """(object, field, dict key or None) a counter path names in ``runtime``."""
    parts = path.split("/")
    kind = parts[0]
    try:
        if kind == "v":
            v = runtime.virtuals[parts[1]]
            if len(parts) == 4:
                return getattr(v, parts[2]), parts[3], parts[3]
            return v, parts[2], None
        if kind == "p":
            return runtime.pools[parts[1]], parts[2], None
        if kind == "m":
            return runtime.pools[parts[1]].members[parts[2]], parts[3], None
        if kind == "f":
            return runtime.profiles[parts[1]], parts[2], None
    except (KeyError, IndexError, AttributeError):
        return None
    return None
