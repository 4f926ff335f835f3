"""``GET /``: a plain HTML status page, built from the ``/api/status`` dict.

No scripts and no external assets: one document that refreshes itself every
few seconds. Every value is HTML-escaped, since pool, member and virtual
server names and down reasons come from the config and from the network.
"""

from __future__ import annotations

from html import escape
from typing import Any, Iterable

from lbframe import __version__
from lbframe.admin.status import site_status
from lbframe.admin.web import Endpoint, send_text

REFRESH_SECONDS = 5

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
.state { font-weight: bold; }
.state-up { color: #11772d; }
.state-down { color: #b3261e; }
.state-draining { color: #a15c00; }
.state-disabled { color: #666; }
.muted { color: #666; font-weight: normal; }
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _num(value: Any) -> str:
    return f'<td class="num">{_e(value)}</td>'


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _table(headers: Iterable[str], rows: list[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{''.join(rows)}</tbody>\n</table>\n"


def _virtuals(virtuals: dict[str, dict]) -> str:
    if not virtuals:
        return "<p>No virtual servers.</p>\n"
    rows = []
    for name, v in virtuals.items():
        rows.append(
            f"<tr><td>{_e(name)}</td><td>{_e(v.get('protocol'))}</td>"
            f"<td>{'<br>'.join(_e(x) for x in v.get('listen', []))}</td>"
            f"<td>{_e(v.get('pool', ''))}</td>"
            f"{_num(v.get('connections_active'))}{_num(v.get('connections_total'))}"
            f"{_num(v.get('refused', ''))}</tr>\n")
    return _table(["virtual server", "protocol", "listen", "pool", "active", "total",
                   "refused"], rows)


def _pool(name: str, pool: dict) -> str:
    rows = []
    for mname, m in pool.get("members", {}).items():
        state = str(m.get("state", ""))
        cls = f"state-{_e(state)}"
        flags = []
        if m.get("backup"):
            flags.append("backup")
        extra = f' <span class="muted">({_e(", ".join(flags))})</span>' if flags else ""
        rows.append(
            f'<tr class="member {cls}"><td>{_e(mname)}{extra}</td><td>{_e(m.get("address"))}</td>'
            f'<td class="state {cls}">{_e(state)}</td>{_num(m.get("weight"))}'
            f'{_num(m.get("connections_active"))}{_num(m.get("connections_total"))}'
            f'{_num(_ms(m.get("response_time_ms")))}<td>{_e(m.get("down_reason", ""))}</td></tr>\n')
    heading = (f'<h2>Pool {_e(name)} <span class="muted">({_e(pool.get("scheduler"))})</span>'
               "</h2>\n")
    return heading + _table(["member", "address", "state", "weight", "active", "total",
                             "response", "down reason"], rows)


def render_page(status: dict[str, Any]) -> str:
    """The HTML page for a ``/api/status`` dict."""
    red = status.get("redundancy", {})
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">\n',
        "<title>lbframe status</title>\n",
        f"<style>{STYLE}</style>\n</head>\n<body>\n",
        f'<h1>lbframe <span class="muted">{_e(__version__)}</span></h1>\n',
        f"<p>Redundancy: {_e(red.get('driver'))}, state "
        f'<span class="state">{_e(red.get("state"))}</span></p>\n',
        "<h2>Virtual servers</h2>\n",
        _virtuals(status.get("virtuals", {})),
    ]
    for name, pool in status.get("pools", {}).items():
        parts.append(_pool(name, pool))
    parts.append("</body>\n</html>\n")
    return "".join(parts)


class PageResource(Endpoint):
    """``GET /``."""

    def render_GET(self, request):
        request.setHeader(b"content-security-policy",
                          b"default-src 'none'; style-src 'unsafe-inline'")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return send_text(request, render_page(site_status(self.runtime)),
                         content_type=b"text/html; charset=utf-8")
