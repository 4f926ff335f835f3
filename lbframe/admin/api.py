"""The JSON API under ``/api``.

- ``/api/status``: GET the whole site (:func:`lbframe.admin.status.site_status`);
- ``/api/pools``, ``/api/pools/POOL``, ``/api/pools/POOL/members``: GET;
- ``/api/pools/POOL/members/MEMBER``: GET one member; POST ``{"state": S}``
  and/or ``{"weight": N}`` changes it and answers its new JSON;
- ``/api/persistence``: GET the persistence profiles;
- ``/api/persistence/NAME``: GET a profile's entries (``?offset=&limit=``);
  DELETE forgets them all;
- ``/api/redundancy``: GET this node's redundancy state;
  ``/api/redundancy/takeover`` and ``/api/redundancy/release``: POST, the
  manual failback of the heartbeat driver (``lbframe takeover|release``).

Member changes go through :class:`lbframe.runtime.PoolState`, the one owner
of member state; this module only checks the request and says what changed.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET

from lbframe.admin.status import member_status, pool_status, site_status, store_shown
from lbframe.admin.web import MAX_BODY, AdminContext, Endpoint, ErrorResource, client_host, \
    not_found, send_error, send_json
from lbframe.config.values import MEMBER_WEIGHT
from lbframe.errors import did_you_mean

log = Logger(namespace="lbframe.admin")

#: ``"state"`` values of a member change → the pool's admin state
STATE_ACTIONS = {"drain": "draining", "disable": "disabled", "enable": "enabled"}

#: paging of persistence entries
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class BadRequest(Exception):
    """The request is malformed; the message says how (answered with ``code``)."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.code = code


class ApiRoot(Endpoint):
    def __init__(self, context: AdminContext):
        super().__init__(context)
        self.putChild(b"status", StatusResource(context))
        self.putChild(b"pools", PoolsResource(context))
        self.putChild(b"persistence", PersistenceResource(context))
        self.putChild(b"redundancy", RedundancyResource(context))

    def render_GET(self, request):
        return send_json(request, {"endpoints": ["/api/status", "/api/pools",
                                                 "/api/persistence", "/api/redundancy"]})


class StatusResource(Endpoint):
    def render_GET(self, request):
        status = site_status(self.runtime, getattr(self.context, "rates", None))
        workers = getattr(self.context, "workers", None)  # workers = N (lbframe.workers)
        if workers is not None:
            status["workers"] = workers.status()
        return send_json(request, status)


# -- pools and members ---------------------------------------------------------


class PoolsResource(Endpoint):
    def render_GET(self, request):
        return send_json(request, {name: pool_status(p) for name, p in self.runtime.pools.items()})

    def getChild(self, path: bytes, request):
        if path == b"" and not request.postpath:
            return self
        name = path.decode("utf-8", "replace")
        if name not in self.runtime.pools:
            return ErrorResource(404, f"no pool {name!r}")
        return PoolResource(self.context, name)


class PoolResource(Endpoint):
    def __init__(self, context: AdminContext, pool: str):
        super().__init__(context)
        self.pool = pool

    def render_GET(self, request):
        return send_json(request, pool_status(self.runtime.pools[self.pool]))

    def getChild(self, path: bytes, request):
        if path == b"members":
            return MembersResource(self.context, self.pool)
        return super().getChild(path, request)


class MembersResource(Endpoint):
    def __init__(self, context: AdminContext, pool: str):
        super().__init__(context)
        self.pool = pool

    def render_GET(self, request):
        return send_json(request, pool_status(self.runtime.pools[self.pool])["members"])

    def getChild(self, path: bytes, request):
        if path == b"" and not request.postpath:
            return self
        name = path.decode("utf-8", "replace")
        if name not in self.runtime.pools[self.pool].members:
            return ErrorResource(404, f"no member {name!r} in pool {self.pool!r}")
        return MemberResource(self.context, self.pool, name)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: a key given twice is refused, not "last one wins"."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise BadRequest(f"key {key!r} is given twice")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    """``parse_constant``: ``NaN`` and ``Infinity`` are not JSON (RFC 8259)."""
    raise BadRequest(f"request body is not JSON: {name} is not a JSON value")


def read_json_object(request) -> dict[str, Any]:
    """The request body as a JSON object; raises :class:`BadRequest`.

    Every way a body can be wrong is a 400 (413 when too large), never a 500:
    not UTF-8, not JSON, nested too deep for the parser, a key given twice,
    ``NaN``, or not an object.
    """
    body = request.content.read(MAX_BODY + 1) if request.content is not None else b""
    if len(body) > MAX_BODY or getattr(request, "body_too_large", False):
        raise BadRequest(f"request body is larger than {MAX_BODY} bytes", 413)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request body is not JSON: it is not UTF-8 text") from None
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except ValueError as e:  # json.JSONDecodeError, and too many digits in a number
        raise BadRequest(f"request body is not JSON: {e}") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    if not isinstance(obj, dict):
        raise BadRequest("request body must be a JSON object")
    return obj


def _show(value: Any, limit: int = 40) -> str:
    """A JSON value as the client wrote it, shortened for an error message."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "…"


def parse_member_change(body: dict[str, Any]) -> tuple[str | None, int | None]:
    """``(admin state or None, weight or None)`` from a member-change body;
    raises :class:`BadRequest`."""
    unknown = sorted(set(body) - {"state", "weight"})
    if unknown:
        raise BadRequest(f"unknown key {unknown[0]!r}"
                         f"{did_you_mean(unknown[0], ('state', 'weight'))}: "
                         "give 'state' and/or 'weight'")
    if not body:
        raise BadRequest("nothing to change: give 'state' and/or 'weight'")
    admin = weight = None
    if "state" in body:
        state = body["state"]
        if not isinstance(state, str) or state not in STATE_ACTIONS:
            raise BadRequest(f"state must be one of 'drain', 'disable', 'enable', not "
                             f"{_show(state)}")
        admin = STATE_ACTIONS[state]
    if "weight" in body:
        weight = body["weight"]
        low, high = MEMBER_WEIGHT  # the rule of ``member ... weight=`` in site.ini
        if isinstance(weight, bool) or not isinstance(weight, int) \
                or not low <= weight <= high:
            raise BadRequest(f"weight must be a whole number from {low} to {high}, "
                             f"not {_show(weight)}")
    return admin, weight


class MemberResource(Endpoint):
    def __init__(self, context: AdminContext, pool: str, member: str):
        super().__init__(context)
        self.pool = pool
        self.member = member

    def render_GET(self, request):
        member = self.runtime.pools[self.pool].members[self.member]
        return send_json(request, member_status(member))

    def render_POST(self, request):
        try:
            admin, weight = parse_member_change(read_json_object(request))
        except BadRequest as e:
            return send_error(request, e.code, str(e))
        pool = self.runtime.pools[self.pool]
        member = pool.members[self.member]
        client = client_host(request)
        changes = []
        if admin is not None and admin != member.admin:
            changes.append(f"admin state {member.admin} -> {admin}")
        if weight is not None and weight != member.weight:
            changes.append(f"weight {member.weight} -> {weight}")
        if admin is not None:
            # Logged once, below, with everything that changed.
            pool.set_admin(member, admin, reason=f"by admin API from {client}", quiet=True)
        if weight is not None:
            pool.set_weight(member, weight)
        if changes:
            up, total = pool.count_up()
            log.info("admin API from {client}: member {pool}/{member}: {changes}; now "
                     "{state}, {up} of {members} up", client=client, pool=self.pool,
                     member=self.member, changes=", ".join(changes), admin=admin,
                     weight=weight, state=member.state, up=up, members=total,
                     lbframe_event="admin_change")
        return send_json(request, member_status(member))


# -- persistence ---------------------------------------------------------------


def _json_key(key) -> Any:
    if isinstance(key, (str, int, float)) and not isinstance(key, bool):
        return key
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).hex()
    return str(key)


def _check_args(request, known: tuple[str, ...]) -> None:
    """Refuse a query parameter the resource does not take, or one given twice."""
    for raw, values in request.args.items():
        name = raw.decode("utf-8", "replace")
        if name not in known:
            hint = did_you_mean(name, known) or f" (use {', '.join(known)})"
            raise BadRequest(f"unknown parameter {name!r}{hint}")
        if len(values) > 1:
            raise BadRequest(f"parameter {name!r} is given twice")


def _int_arg(request, name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter: digits only (no sign, blanks or ``_``)."""
    values = request.args.get(name.encode("ascii"))
    if not values:
        return default
    text = values[0]
    if not text.isdigit() or not text.isascii() or len(text) > 20:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    value = int(text)
    if not low <= value <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return value


def _answer_later(request, d: defer.Deferred, what: str):
    """Answer ``request`` with the JSON ``d`` fires with (or a 500)."""
    finished = []
    request.notifyFinish().addBoth(finished.append)

    def done(obj):
        if not finished:
            request.write(send_json(request, obj))
            request.finish()

    def failed(failure):
        log.failure("admin API: {what} failed", failure, what=what)
        if not finished:
            request.write(send_error(request, 500, f"{what} failed: {failure.getErrorMessage()}"))
            request.finish()

    d.addCallbacks(done, failed)
    return NOT_DONE_YET


class PersistenceResource(Endpoint):
    def render_GET(self, request):
        site = self.runtime.site
        stores = self.runtime.persistence_stores
        out = {}
        for name, spec in site.persistence.items():
            store = stores.get(name)
            try:
                entries = len(store) if store is not None else None
            except TypeError:
                entries = None
            out[name] = {"method": spec.method, "store": store_shown(spec.store), "entries": entries}
        return send_json(request, out)

    def getChild(self, path: bytes, request):
        if path == b"" and not request.postpath:
            return self
        name = path.decode("utf-8", "replace")
        if name not in self.runtime.persistence_stores:
            return ErrorResource(404, f"no persistence profile {name!r}")
        if request.postpath and request.postpath != [b""]:
            return not_found(request)
        return ProfileResource(self.context, name)


class ProfileResource(Endpoint):
    isLeaf = True

    def __init__(self, context: AdminContext, name: str):
        super().__init__(context)
        self.name = name

    @property
    def store(self):
        return self.runtime.persistence_stores[self.name]

    def render_GET(self, request):
        try:
            _check_args(request, ("offset", "limit"))
            offset = _int_arg(request, "offset", 0, 0, 2**62)
            limit = _int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        except BadRequest as e:
            return send_error(request, e.code, str(e))
        store = self.store
        if not callable(getattr(store, "items", None)):
            return send_error(request, 501, f"the store of persistence profile {self.name!r} "
                                            "cannot list its entries")
        spec = self.runtime.site.persistence[self.name]

        def page(items):
            items = list(items)
            return {
                "profile": self.name, "method": spec.method, "store": store_shown(spec.store),
                "total": len(items), "offset": offset, "limit": limit,
                "entries": [{"key": _json_key(k), "member": m, "age": round(age, 3)}
                            for k, m, age in items[offset:offset + limit]],
            }

        d = defer.maybeDeferred(store.items)
        d.addCallback(page)
        return _answer_later(request, d, f"listing persistence profile {self.name!r}")

    def render_DELETE(self, request):
        store = self.store
        if not callable(getattr(store, "clear", None)):
            return send_error(request, 501, f"the store of persistence profile {self.name!r} "
                                            "cannot forget its entries")
        client = client_host(request)

        def cleared(_):
            log.info("admin API from {client}: persistence profile {profile}: every entry "
                     "forgotten", client=client, profile=self.name, lbframe_event="admin_change")
            return {"profile": self.name, "cleared": True}

        d = defer.maybeDeferred(store.clear)
        d.addCallback(cleared)
        return _answer_later(request, d, f"clearing persistence profile {self.name!r}")


# -- redundancy ----------------------------------------------------------------


class RedundancyResource(Endpoint):
    def __init__(self, context: AdminContext):
        super().__init__(context)
        self.putChild(b"takeover", RedundancyCommand(context, "takeover"))
        self.putChild(b"release", RedundancyCommand(context, "release"))

    def render_GET(self, request):
        from lbframe.admin.status import redundancy_status
        return send_json(request, redundancy_status(self.runtime))


class RedundancyCommand(Endpoint):
    """POST: ask the redundancy driver to take the shared IP over or release
    it; 409 when the driver has no such command or cannot do it now."""

    def __init__(self, context: AdminContext, command: str):
        super().__init__(context)
        self.command = command

    def render_POST(self, request):
        from lbframe.admin.status import redundancy_status

        driver = self.runtime.redundancy
        fn = getattr(driver, self.command, None)
        if not callable(fn):
            return send_error(request, 409, f"redundancy driver "
                                            f"{self.runtime.site.redundancy.driver!r} has no "
                                            f"manual {self.command}")
        try:
            result = fn()
        except Exception as e:  # the driver's CommandError: why not now
            return send_error(request, 409, f"{self.command} refused: {e}")
        log.warn("admin API from {client}: redundancy {command}: {result}",
                 client=client_host(request), command=self.command, result=result,
                 lbframe_event="admin_change")
        return send_json(request, redundancy_status(self.runtime))
