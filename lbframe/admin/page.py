"""``GET /``: the status page, built from the ``/api/status`` dict.

Server-rendered HTML that reads completely without JavaScript (and then
refreshes itself with a ``<meta refresh>`` inside ``<noscript>``). With
JavaScript, one small inline script:

- refreshes the page's ``<main>`` every :data:`REFRESH_SECONDS` by fetching
  the page again (so the server renders everything, the script only swaps
  it in), pausing while a weight field is being edited;
- makes the drain/disable/enable/weight buttons post to the JSON API; when
  the API asks for the token (401, or 403 for a wrong one) it shows a token
  field, keeps what was typed in ``sessionStorage`` (this tab only, gone
  when it closes) and retries.

No external assets: the machine may have no internet. The
Content-Security-Policy allows exactly this script (by its hash), inline
styles and requests to this server. Every value is HTML-escaped, since
pool, member and virtual server names and down reasons come from the config
and from the network.
"""

from __future__ import annotations

import base64
import hashlib
import time
from html import escape
from typing import Any, Callable

import attrs

from lbframe import __version__
from lbframe.admin import summary
from lbframe.admin.status import site_status
from lbframe.admin.web import Endpoint, send_text
from lbframe.config.values import MEMBER_WEIGHT

REFRESH_SECONDS = 5
#: actions of the member buttons: label → JSON body
ACTIONS = (("drain", "drain"), ("disable", "disable"), ("enable", "enable"))

STYLE = """
body { font: 13px/1.35 system-ui, sans-serif; margin: 1em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 0.3em; }
h2 { font-size: 1.15em; margin: 1.2em 0 0.4em; }
.wrap { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; width: 100%; margin-bottom: 0.8em; }
th, td { padding: 0.2em 0.35em; border-bottom: 1px solid #ddd; text-align: left;
         vertical-align: top; }
thead th { background: #f3f3f3; font-weight: 600; white-space: nowrap; }
thead tr.group th { background: #e6e6e6; text-align: center; border-left: 1px solid #fff; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.name { overflow-wrap: anywhere; min-width: 5em; }
.addr { display: block; color: #666; font-size: 0.9em; white-space: nowrap; }
tr.summary td.name { white-space: nowrap; }
.state { font-weight: bold; white-space: nowrap; }
.state .since { font-weight: normal; }
tr.state-up .state { color: #11772d; }
tr.state-down { background: #fdecea; }
tr.state-down .state { color: #b3261e; }
tr.state-draining { background: #fff4e0; }
tr.state-draining .state { color: #a15c00; }
tr.state-disabled { background: #f1f1f1; }
tr.state-disabled .state { color: #666; }
tr.summary { background: #eef3fb; font-weight: 600; }
tr.summary td { border-bottom: 2px solid #9bb4d8; }
.muted { color: #666; font-weight: normal; }
.check-fail { color: #b3261e; }
td.check { max-width: 14em; }
details.line > summary { white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
                         cursor: pointer; list-style: none; }
details.line > summary::-webkit-details-marker { display: none; }
details.line[open] > summary { white-space: normal; }
details.line > div { white-space: pre-wrap; font-size: 0.9em; color: #444;
                     overflow-wrap: anywhere; }
svg.spark { vertical-align: middle; }
svg.spark polyline { fill: none; stroke: #3a6ea5; stroke-width: 1.2; }
td.actions { width: 10.5em; }
td.actions button { font-size: 0.85em; padding: 0.05em 0.3em; margin: 0 0.1em 0.15em 0; }
td.actions input { width: 3.6em; font-size: 0.85em; }
#redundancy .state { font-size: 1.05em; }
#bar { min-height: 1.5em; }
#token-form[hidden], #message:empty { display: none; }
#message { padding: 0.3em 0.6em; background: #eef3fb; border: 1px solid #9bb4d8; }
#message.error { background: #fdecea; border-color: #e3a19b; }
@media (max-width: 1100px) {
  /* Narrow screens: every row becomes a card of "label: value" lines, so
     nothing needs horizontal scrolling and nothing is cut off. */
  table, tbody, tr, td { display: block; width: auto; }
  thead { display: none; }
  tr { border: 1px solid #ccc; border-radius: 4px; margin-bottom: 0.6em; padding: 0.2em 0;
       display: grid; grid-template-columns: repeat(auto-fill, minmax(10.5em, 1fr)); }
  td.name, td.check, td.actions, td.refused, td.state, td.up-count { grid-column: 1 / -1; }
  td:empty, td[data-label=""] { display: none; }
  td { border: none; padding: 0.1em 0.6em; display: flex; gap: 0.8em;
       justify-content: space-between; text-align: right; max-width: none; }
  td.num { text-align: right; }
  td::before { content: attr(data-label); color: #666; font-weight: normal;
               text-align: left; flex: none; }
  td.name, td.check { display: block; text-align: left; }
  .addr { white-space: normal; overflow-wrap: anywhere; }
  td.name::before, td.check::before { display: block; }
  td.check details { min-width: 0; }
  td.actions { white-space: normal; flex-wrap: wrap; justify-content: flex-start;
               width: auto; align-items: baseline; gap: 0.3em; }
  td.state .word { margin-left: auto; }
  tr.summary td { border-bottom: none; }
}
"""

SCRIPT = """
(function () {
  "use strict";
  var REFRESH = %(refresh)d * 1000;
  var main = document.getElementById("status");
  var form = document.getElementById("token-form");
  var tokenInput = document.getElementById("token");
  var message = document.getElementById("message");
  var pending = null;
  var busy = false;
  document.documentElement.className = "js";

  function say(text, isError) {
    message.textContent = text;
    message.className = isError ? "error" : "";
  }
  function headers(extra) {
    var h = extra || {};
    var token = sessionStorage.getItem("lbframe-token");
    if (token) { h["Authorization"] = "Bearer " + token; }
    return h;
  }
  function editing() {
    var a = document.activeElement;
    return a && a.tagName === "INPUT" && main.contains(a);
  }
  function refresh() {
    if (busy || editing()) { return Promise.resolve(); }
    return fetch(location.pathname, {headers: headers(), cache: "no-store"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null || editing()) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("status");
        if (!fresh) { return; }
        var open = {};
        main.querySelectorAll("details[open][data-key]").forEach(function (d) {
          open[d.dataset.key] = true;
        });
        main.innerHTML = fresh.innerHTML;
        main.querySelectorAll("details[data-key]").forEach(function (d) {
          if (open[d.dataset.key]) { d.open = true; }
        });
        document.dispatchEvent(new Event("lbframe:refreshed"));
      })
      .catch(function () { say("lbframe does not answer; retrying", true); });
  }
  function send(change) {
    busy = true;
    var url = "/api/pools/" + encodeURIComponent(change.pool) + "/members/" +
              encodeURIComponent(change.member);
    return fetch(url, {method: "POST", body: JSON.stringify(change.body),
                       headers: headers({"Content-Type": "application/json"})})
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) {
          busy = false;
          if (r.status === 401 || r.status === 403) {
            if (r.status === 403) { sessionStorage.removeItem("lbframe-token"); }
            pending = change;
            form.hidden = false;
            tokenInput.focus();
            say((j.error || "the admin token is needed") + ": enter it above", true);
            return;
          }
          if (!r.ok) { say(j.error || ("error " + r.status), true); return; }
          say(change.pool + "/" + change.member + ": now " + j.state +
              ", weight " + j.weight, false);
          return refresh();
        });
      })
      .catch(function (e) { busy = false; say("request failed: " + e, true); });
  }
  main.addEventListener("click", function (ev) {
    var b = ev.target.closest("button[data-action]");
    if (!b) { return; }
    var row = b.closest("tr[data-member]");
    var body;
    if (b.dataset.action === "weight") {
      var n = parseInt(row.querySelector("input[name=weight]").value, 10);
      if (isNaN(n) || n < 0 || n > 256) {
        say("weight must be a whole number from 0 to 256", true); return;
      }
      body = {weight: n};
    } else {
      body = {state: b.dataset.action};
    }
    b.blur();
    send({pool: row.dataset.pool, member: row.dataset.member, body: body});
  });
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    sessionStorage.setItem("lbframe-token", tokenInput.value);
    tokenInput.value = "";
    form.hidden = true;
    if (pending) { var p = pending; pending = null; send(p); }
  });
  window.lbframeRefresh = refresh;
  setInterval(refresh, REFRESH);
})();
""" % {"refresh": REFRESH_SECONDS}

SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()
                                           ).decode("ascii")
CSP = ("default-src 'none'; style-src 'unsafe-inline'; "
       f"script-src '{SCRIPT_HASH}'; connect-src 'self'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _td(value: Any, label: str, cls: str = "num") -> str:
    """A cell; ``label`` names it on narrow screens (each row a card)."""
    return f'<td class="{cls}" data-label="{_e(label)}">{_e(value)}</td>'


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def sparkline(rates: list[float], width: int = 60, height: int = 14) -> str:
    """An inline SVG of ``rates`` (oldest first), with the numbers as its title."""
    if len(rates) < 2:
        return ""
    top = max(rates) or 1.0
    step = width / (len(rates) - 1)
    points = " ".join(f"{i * step:.1f},{height - 1 - (r / top) * (height - 2):.1f}"
                      for i, r in enumerate(rates))
    title = "connections per second, oldest first: " + ", ".join(f"{r:.1f}" for r in rates)
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} '
            f'{height}" role="img"><title>{_e(title)}</title>'
            f'<polyline points="{points}"/></svg>')


def _line(text: str, details: str, key: str, cls: str = "") -> str:
    """``text`` kept to one line (cut with an ellipsis); a click shows
    ``details`` below it, the title shows them on hover."""
    extra = f' class="{cls}"' if cls else ""
    return (f'<details class="line" data-key="{_e(key)}"><summary title="{_e(details)}"'
            f'{extra}>{_e(text)}</summary><div>{_e(details)}</div></details>')


@attrs.frozen
class View:
    """What every section is given: the status dict, the time it describes
    (epoch seconds, for "down 3m12s") and the rate history for sparklines."""

    status: dict
    now: float | None
    rates: Callable[..., list[float]]


def _table(groups: list[tuple[str, int]], headers: list[str], rows: list[str],
           cls: str) -> str:
    """A table with a row of column groups (``(title, span)``) over its headers."""
    group = "".join(f'<th colspan="{span}">{_e(title)}</th>' if span > 1 else
                    f"<th>{_e(title)}</th>" for title, span in groups)
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return (f'<div class="wrap"><table class="{cls}">\n<thead><tr class="group">{group}</tr>'
            f"<tr>{head}</tr></thead>\n<tbody>\n{''.join(rows)}</tbody>\n</table></div>\n")


# -- sections: one function per kind of thing, in page order -----------------


def redundancy_section(view: View) -> str:
    """The node's redundancy driver and state (``standalone`` without one)."""
    red = view.status.get("redundancy") or {}
    when = ""
    if view.now is not None:
        when = (f' <span class="muted">· {_e(time.strftime("%H:%M:%S", time.localtime(view.now)))}'
                "</span>")
    extra = ""
    for key, value in red.items():
        if key not in ("driver", "state") and isinstance(value, (str, int, float)):
            extra += f' <span class="muted">· {_e(key)} {_e(value)}</span>'
    return (f'<p id="redundancy">Redundancy: <span class="state" data-driver="'
            f'{_e(red.get("driver"))}">{_e(summary.redundancy_line(red))}</span>{extra}'
            f"{when}</p>\n" + _redundancy_groups(red))


VIRTUAL_GROUPS = [("virtual server", 2), ("sessions", 4), ("rate", 2), ("bytes", 2),
                  ("http", 1), ("refused", 1)]
VIRTUAL_HEADERS = ["name", "pool", "cur", "max", "limit", "total", "cur", "max", "in", "out",
                   "responses", "by reason"]


def _responses(v: dict) -> str:
    if not v.get("requests") and not any((v.get("responses") or {}).values()):
        return "-"
    return " ".join(f"{code} {n}" for code, n in (v.get("responses") or {}).items() if n) or "0"


def virtuals_section(view: View) -> str:
    """Per virtual server: sessions, rates, bytes, responses, refusals by reason."""
    virtuals = view.status.get("virtuals") or {}
    out = "<h2>Virtual servers</h2>\n"
    if not virtuals:
        return out + "<p>No virtual servers.</p>\n"
    rows = []
    for name, v in virtuals.items():
        recent = view.rates("virtual", name)
        listen = " ".join(v.get("listen", []))
        limit = v.get("max_connections")
        rows.append(
            f'<tr class="virtual" data-virtual="{_e(name)}">'
            f'<td class="name" data-label="virtual server">{_e(name)}'
            f'<span class="addr">{_e(v.get("protocol"))} · {_e(listen)}</span></td>'
            f'{_td(v.get("pool", ""), "pool", "pool")}'
            f'{_td(v.get("connections_active"), "sessions", "num active")}'
            f'{_td(v.get("connections_max", "-"), "max sessions", "num max")}'
            f'{_td("-" if limit is None else limit, "limit", "num limit")}'
            f'{_td(v.get("connections_total"), "total sessions", "num total")}'
            f'<td class="num rate" data-label="rate">{_e(summary.rate(v.get("rate", 0.0)))}'
            f" {sparkline(recent)}</td>"
            f'{_td(summary.rate(v.get("rate_max", 0.0)), "max rate", "num rate-max")}'
            f'{_td(summary.size(v.get("bytes_in")), "bytes in", "num bytes-in")}'
            f'{_td(summary.size(v.get("bytes_out")), "bytes out", "num bytes-out")}'
            f'{_td(_responses(v), "responses", "responses")}'
            f'<td class="refused" data-label="refused">'
            f'{_e(summary.refusals_line(v))}</td></tr>\n')
    return out + _table(VIRTUAL_GROUPS, VIRTUAL_HEADERS, rows, "virtuals")


def next_hops_section(view: View) -> str:
    """protocol routed/nat: the kernel's counters per next hop, a table per
    virtual server that has them."""
    out = []
    for name, v in (view.status.get("virtuals") or {}).items():
        hops = v.get("next_hops")
        if not hops:
            continue
        rows = [f'<tr data-next-hop="{_e(member)}">'
                f'<td class="name" data-label="next hop">{_e(member)}</td>'
                f'{_td(c.get("flows"), "flows")}{_td(c.get("packets"), "packets")}'
                f'{_td(c.get("bytes"), "bytes")}</tr>\n'
                for member, c in hops.items()]
        out.append(f"<h3>{_e(name)}: next hops (dropped for want of one: "
                   f"{_e(v.get('dropped_packets', 0))} packets)</h3>\n")
        out.append(_table([("next hop", 1), ("kernel counters", 3)],
                          ["name", "flows", "packets", "bytes"], rows, "next-hops"))
    return "".join(out)


MEMBER_GROUPS = [("member", 4), ("checks", 3), ("sessions", 3), ("rate", 2), ("bytes", 2),
                 ("errors", 3), ("", 1), ("", 1)]
MEMBER_HEADERS = ["name", "state", "weight", "last check", "ok", "failed", "downs", "cur", "max",
                  "total", "cur", "max", "in", "out", "conn", "retr", "5xx", "response",
                  "change"]


def _actions(pool: str, member: str, m: dict) -> str:
    buttons = "".join(
        f'<button type="button" data-action="{action}">{label}</button>'
        for label, action in ACTIONS)
    return (f'<td class="actions" data-label="change">{buttons} '
            f'<input name="weight" type="number" min="{MEMBER_WEIGHT[0]}" '
            f'max="{MEMBER_WEIGHT[1]}" value="{_e(m.get("weight"))}" '
            f'aria-label="weight of {_e(pool)}/{_e(member)}">'
            f'<button type="button" data-action="weight" title="set the weight">set</button></td>')


def _summary_row(name: str, pool: dict) -> str:
    s = summary.pool_summary(pool)
    queue = s["queue"]
    return (
        f'<tr class="summary" data-pool-summary="{_e(name)}">'
        f'<td class="name" data-label="pool">{_e(name)} total</td>'
        f'<td class="state up-count" data-label="members up">{s["up"]} of {s["members"]} up</td>'
        f'{_td("", "", "weight")}{_td("", "", "check")}'
        f'{_td(s["checks_ok"], "checks ok")}{_td(s["checks_failed"], "checks failed")}'
        f'{_td(s["downs"], "downs", "num downs")}'
        f'{_td(s["active"], "sessions", "num active")}'
        f'{_td("-" if s["max"] is None else s["max"], "max sessions", "num max")}'
        f'{_td(s["total"], "total sessions", "num total")}'
        f'{_td(summary.rate(s["rate"] if s["rate"] is not None else 0.0), "rate", "num rate")}'
        f'{_td("", "", "num")}'
        f'{_td(summary.size(s["bytes_in"]), "bytes in")}'
        f'{_td(summary.size(s["bytes_out"]), "bytes out")}'
        f'{_td(s["failures"], "connect errors")}{_td(s["retries"], "retries")}'
        f'{_td(s["responses_5xx"], "5xx")}{_td("", "", "num")}'
        f'{_td("-" if queue is None else f"queue {queue}", "queue", "queue")}</tr>\n')


def _downs(m: dict) -> str:
    """How often it went down, and for how long in all (HAProxy's Dwn, Dwntme)."""
    downs = m.get("downs")
    if downs is None:
        return _td("-", "downs", "num downs")
    text = str(downs)
    if downs:
        text += f" · {summary.duration(m.get('downtime') or 0)}"
    return (f'<td class="num downs" data-label="downs" title="went down {_e(downs)} '
            f'times, down {_e(summary.duration(m.get("downtime") or 0))} in all">'
            f"{_e(text)}</td>")


def _member_row(pname: str, mname: str, m: dict, view: View) -> str:
    state = str(m.get("state", ""))
    flags = ["backup"] if m.get("backup") else []
    if m.get("maxconn") is not None:
        flags.append(f"maxconn {m['maxconn']}")
    extra = f' <span class="muted">({_e(", ".join(flags))})</span>' if flags else ""
    since = m.get("state_since")
    lasted = (f' <span class="since">{_e(summary.duration(view.now - since))}</span>'
              if view.now is not None and since is not None else "")
    ok, failed = summary.check_counts(m)
    line = summary.check_line(m, view.now)
    cls = "check-fail" if m.get("down_reason") or "fail" in line else ""
    recent = view.rates("member", pname, mname)
    return (
        f'<tr class="member state-{_e(state)}" data-pool="{_e(pname)}" data-member="{_e(mname)}">'
        f'<td class="name" data-label="member">{_e(mname)}{extra}'
        f'<span class="addr">{_e(m.get("address"))}</span></td>'
        f'<td class="state" data-label="state"><span class="word">{_e(state)}</span>{lasted}</td>'
        f'{_td(m.get("weight"), "weight", "num weight")}'
        f'<td class="check" data-label="last check">'
        f'{_line(line, summary.check_details(m, view.now), f"{pname}/{mname}", cls)}</td>'
        f'{_td(ok, "checks ok", "num checks-ok")}{_td(failed, "checks failed", "num checks-failed")}'
        f'{_downs(m)}'
        f'{_td(m.get("connections_active"), "sessions", "num active")}'
        f'{_td(m.get("connections_max", "-"), "max sessions", "num max")}'
        f'{_td(m.get("connections_total"), "total sessions", "num total")}'
        f'<td class="num rate" data-label="rate">{_e(summary.rate(m.get("rate", 0.0)))} '
        f"{sparkline(recent)}</td>"
        f'{_td(summary.rate(m.get("rate_max", 0.0)), "max rate", "num rate-max")}'
        f'{_td(summary.size(m.get("bytes_in")), "bytes in", "num bytes-in")}'
        f'{_td(summary.size(m.get("bytes_out")), "bytes out", "num bytes-out")}'
        f'{_td(m.get("failures", 0), "connect errors", "num failures")}'
        f'{_td(m.get("retries", 0), "retries", "num retries")}'
        f'{_td(m.get("responses_5xx", 0), "5xx", "num responses-5xx")}'
        f'{_td(_ms(m.get("response_time_ms")), "response", "num response")}'
        f'{_actions(pname, mname, m)}</tr>\n')


def pools_section(view: View) -> str:
    """Per pool: a summary row, then a row per member."""
    out = []
    for name, pool in (view.status.get("pools") or {}).items():
        s = summary.pool_summary(pool)
        rows = [_summary_row(name, pool)]
        rows += [_member_row(name, mname, m, view)
                 for mname, m in (pool.get("members") or {}).items()]
        out.append(f'<h2>Pool {_e(name)} <span class="muted">({_e(pool.get("scheduler"))}, '
                   f'{s["up"]} of {s["members"]} up)</span></h2>\n')
        out.append(_table(MEMBER_GROUPS, MEMBER_HEADERS, rows, "pool"))
    return "".join(out)


#: the page's sections in order, each ``View → HTML``. A new kind of thing
#: (flows, next hops, …) adds its function here, after the one it follows.
SECTIONS: list[Callable[[View], str]] = [redundancy_section, virtuals_section,
                                         next_hops_section, pools_section]


def _no_rates(*key) -> list[float]:
    return []


def _redundancy_groups(red: dict[str, Any]) -> str:
    """One line per VRRP group (driver ``vrrp``): state, priority, master, VIPs."""
    groups = red.get("groups") or {}
    if not groups:
        return ""
    items = "".join(
        f'<li>VRID {_e(vrid)}: <span class="state">{_e(g.get("state"))}</span>, priority '
        f'{_e(g.get("priority"))}{" (fault)" if g.get("fault") else ""}, master '
        f'{_e(g.get("master") or "unknown")}, VIPs {_e(", ".join(g.get("vips", [])))}</li>'
        for vrid, g in groups.items())
    return f'<ul class="redundancy">{items}</ul>\n'


def render_page(status: dict[str, Any], rates: Callable[..., list[float]] = _no_rates,
                now: float | None = None) -> str:
    """The HTML page for a ``/api/status`` dict. ``rates(kind, *names)``
    gives recent connection rates (see :mod:`lbframe.admin.rates`); ``now``
    (epoch seconds; default the status's own ``time``) dates states and checks."""
    view = View(status, status.get("time") if now is None else now, rates)
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        f'<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>\n',
        "<title>lbframe status</title>\n",
        f"<style>{STYLE}</style>\n</head>\n<body>\n",
        f'<h1>lbframe <span class="muted">{_e(__version__)}</span></h1>\n',
        '<div id="bar"><form id="token-form" hidden><label>Admin token '
        '<input id="token" type="password" autocomplete="off"></label> '
        '<button type="submit">use</button></form>'
        '<p id="message" role="status"></p></div>\n',
        '<main id="status">\n',
    ]
    parts += [section(view) for section in SECTIONS]
    parts.append("</main>\n")
    parts.append(f"<script>{SCRIPT}</script>\n</body>\n</html>\n")
    return "".join(parts)


class PageResource(Endpoint):
    """``GET /``."""

    def render_GET(self, request):
        request.setHeader(b"content-security-policy", CSP.encode("ascii"))
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        sampler = getattr(self.context, "rates", None)
        rates = sampler.rates if sampler is not None else _no_rates
        status = site_status(self.runtime, sampler)
        return send_text(request, render_page(status, rates),
                         content_type=b"text/html; charset=utf-8")
