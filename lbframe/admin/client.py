"""A small blocking client of the admin API, for ``lbframe status`` and
``lbframe member``.

Every problem a user can meet (nothing listening, a refused token, an
unknown pool or member, a rejected value) is an :class:`AdminClientError`
whose message is ready to print.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from lbframe.config.values import MEMBER_WEIGHT

DEFAULT_ADMIN_URL = "http://127.0.0.1:8404"
TOKEN_ENV = "LBFRAME_ADMIN_TOKEN"
TIMEOUT = 10.0

#: ``lbframe member`` actions that set the member's state
STATE_ACTIONS = ("drain", "disable", "enable")
ACTIONS = STATE_ACTIONS + ("weight",)


class AdminClientError(Exception):
    """The admin API could not do what was asked; ``str()`` says why."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        #: the HTTP status, when the server answered
        self.status = status


def _base(admin_url: str) -> str:
    url = admin_url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def _reason(exc: BaseException) -> str:
    """``connection refused``, ``timed out``, … for an error reaching the server."""
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def _error_message(body: bytes) -> str | None:
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(obj, dict) and isinstance(obj.get("error"), str):
        return obj["error"]
    return None


def _sendable_token(token: str | None) -> str | None:
    """The token stripped of surrounding blanks (as ``admin_token_file`` is),
    or an error that does not repeat it: a token with a blank or a control
    character inside cannot be sent in a header, and urllib's own error
    would quote the whole header, token included."""
    if token is None:
        return None
    token = token.strip()
    if any(not "\x21" <= char <= "\x7e" for char in token):
        raise AdminClientError("the admin token has a character that cannot be sent in an "
                               "HTTP header (use visible ASCII, no blanks)")
    return token


def _without(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` blotted out: an error message must never show the token."""
    return text.replace(secret, "***") if secret else text


def _request(admin_url: str, token: str | None, method: str, path: str,
             body: dict | None = None, *, not_found: str, timeout: float = TIMEOUT) -> dict:
    base = _base(admin_url)
    url = base + path
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    token = _sendable_token(token)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    # The admin API is a local service: never send it through an HTTP proxy
    # taken from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        with opener.open(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as e:
        try:
            detail = _error_message(e.read())
        except OSError:
            detail = None
        if e.code in (401, 403):
            hint = "" if token else f" (none was given: use --token or {TOKEN_ENV})"
            raise AdminClientError(f"admin API refused the token{hint}", e.code) from None
        if e.code == 404:
            raise AdminClientError(detail or not_found, e.code) from None
        if e.code == 400:
            raise AdminClientError(f"admin API rejected the request: {detail or e.reason}",
                                   e.code) from None
        raise AdminClientError(f"admin API at {base} answered {e.code} {detail or e.reason}",
                               e.code) from None
    except (urllib.error.URLError, OSError) as e:
        raise AdminClientError(f"cannot reach admin API at {base}: {_reason(e)}") from None
    except http.client.HTTPException as e:
        raise AdminClientError(f"admin API at {base} did not answer in HTTP: "
                               f"{type(e).__name__}") from None
    except ValueError as e:  # a malformed URL
        raise AdminClientError(f"bad admin API URL {admin_url!r}: "
                               f"{_without(str(e), token)}") from None
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise AdminClientError(f"admin API at {base} answered something that is not JSON "
                               "(is it lbframe's admin endpoint?)") from None
    if not isinstance(obj, dict):
        raise AdminClientError(f"admin API at {base} answered unexpected JSON")
    return obj


def fetch_status(admin_url: str = DEFAULT_ADMIN_URL, token: str | None = None,
                 timeout: float = TIMEOUT) -> dict[str, Any]:
    """The ``/api/status`` document of a running lbframe."""
    return _request(admin_url, token, "GET", "/api/status", timeout=timeout,
                    not_found=f"{_base(admin_url)} has no /api/status: is it lbframe's admin "
                              "endpoint?")


def change_member(admin_url: str, token: str | None, pool: str, member: str, action: str,
                  weight: int | None = None, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Apply ``action`` (``drain``, ``disable``, ``enable`` or ``weight``, the
    last with ``weight``) to a member; return the member's new status dict."""
    if action in STATE_ACTIONS:
        body: dict[str, Any] = {"state": action}
        if weight is not None:
            body["weight"] = weight
    elif action == "weight":
        if weight is None:
            raise AdminClientError("weight needs a number: lbframe member POOL MEMBER weight N")
        body = {"weight": weight}
    else:
        raise AdminClientError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    low, high = MEMBER_WEIGHT
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int)
                               or not low <= weight <= high):
        raise AdminClientError(f"weight must be a whole number from {low} to {high}, "
                               f"not {weight!r}")
    path = (f"/api/pools/{urllib.parse.quote(pool, safe='')}"
            f"/members/{urllib.parse.quote(member, safe='')}")
    return _request(admin_url, token, "POST", path, body, timeout=timeout,
                    not_found=f"no member {member!r} in pool {pool!r}")


def redundancy_command(admin_url: str, token: str | None, command: str,
                       timeout: float = TIMEOUT) -> dict[str, Any]:
    """``takeover`` or ``release`` (the heartbeat driver's manual failback);
    the node's new redundancy status."""
    if command not in ("takeover", "release"):
        raise AdminClientError(f"unknown redundancy command {command!r}")
    return _request(admin_url, token, "POST", f"/api/redundancy/{command}", {},
                    timeout=timeout, not_found="this lbframe has no /api/redundancy")


# -- the status table ----------------------------------------------------------


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def _table(headers: list[str], rows: list[list[str]], right: set[int],
           indent: str = "") -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = []
    for row in [headers] + rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def format_status(status: dict[str, Any], now: float | None = None) -> str:
    """``/api/status`` as the status page shows it, in aligned text: the
    redundancy state, the virtual servers (sessions, rate, refusals by
    reason), then per pool its summary line and its members (state and how
    long, weight, sessions, errors, response time, the check on one line).
    ``now`` (default: the status's own ``time``) dates the states. No
    newline at the end (for ``print``)."""
    from lbframe.admin import summary

    if now is None:
        now = status.get("time")
    lines = []
    red = status.get("redundancy") or {}
    if red:
        lines.append(f"redundancy: {summary.redundancy_line(red)}")
        lines.append("")
    virtuals = status.get("virtuals") or {}
    if virtuals:
        rows = [[name, _cell(v.get("protocol")), ", ".join(v.get("listen") or []) or "-",
                 _cell(v.get("pool")), _cell(v.get("connections_active")),
                 _cell(v.get("connections_max")), _cell(v.get("connections_total")),
                 summary.rate(v.get("rate")), summary.refusals_line(v)]
                for name, v in virtuals.items()]
        lines += _table(["VIRTUAL", "PROTOCOL", "LISTEN", "POOL", "ACTIVE", "MAX", "TOTAL",
                         "RATE", "REFUSED"], rows, right={4, 5, 6, 7})
    else:
        lines.append("no virtual servers")
    for name, pool in (status.get("pools") or {}).items():
        lines.append("")
        lines.append(summary.pool_line(name, pool))
        members = pool.get("members") or {}
        if not members:
            lines.append("  no members")
            continue
        rows = []
        for mname, m in members.items():
            ok, failed = summary.check_counts(m)
            errors = f"{m.get('failures', 0) or 0}/{m.get('retries', 0) or 0}/" \
                     f"{m.get('responses_5xx', 0) or 0}"
            rows.append([mname + (" (backup)" if m.get("backup") else ""),
                         _cell(m.get("address")), summary.state_for(m, now),
                         _cell(m.get("weight")), _cell(m.get("connections_active")),
                         _cell(m.get("connections_max")), _cell(m.get("connections_total")),
                         errors, _ms(m.get("response_time_ms")), f"{ok}/{failed}",
                         summary.check_line(m, now)])
        lines += _table(["MEMBER", "ADDRESS", "STATE", "WEIGHT", "ACTIVE", "MAX", "TOTAL",
                         "ERR c/r/5xx", "RESP_MS", "CHK ok/fail", "LAST CHECK"], rows,
                        right={3, 4, 5, 6, 7, 8, 9}, indent="  ")
    return "\n".join(lines)
