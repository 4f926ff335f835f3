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
from typing import Any, Callable, Iterable

from lbframe import __version__
from lbframe.admin.status import site_status
from lbframe.admin.web import Endpoint, send_text
from lbframe.config.values import MEMBER_WEIGHT

REFRESH_SECONDS = 5
#: actions of the member buttons: label → JSON body
ACTIONS = (("drain", "drain"), ("disable", "disable"), ("enable", "enable"))

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: left;
         vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
.state { font-weight: bold; }
tr.state-up td.state { color: #11772d; }
tr.state-down { background: #fdecea; }
tr.state-down td.state { color: #b3261e; }
tr.state-draining { background: #fff4e0; }
tr.state-draining td.state { color: #a15c00; }
tr.state-disabled { background: #f1f1f1; }
tr.state-disabled td.state { color: #666; }
.muted { color: #666; font-weight: normal; }
.check-fail { color: #b3261e; }
svg.spark { vertical-align: middle; }
svg.spark polyline { fill: none; stroke: #3a6ea5; stroke-width: 1.2; }
td.actions { white-space: nowrap; }
td.actions input { width: 4em; }
#bar { min-height: 1.5em; }
#token-form[hidden], #message:empty { display: none; }
#message { padding: 0.3em 0.6em; background: #eef3fb; border: 1px solid #9bb4d8; }
#message.error { background: #fdecea; border-color: #e3a19b; }
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
        if (fresh) { main.innerHTML = fresh.innerHTML; }
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


def _num(value: Any, cls: str = "") -> str:
    extra = f" {cls}" if cls else ""
    return f'<td class="num{extra}">{_e(value)}</td>'


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _rate(value: float) -> str:
    return f"{value:.1f}/s" if value < 100 else f"{value:.0f}/s"


def sparkline(rates: list[float], width: int = 72, height: int = 16) -> str:
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


def _table(headers: Iterable[str], rows: list[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{''.join(rows)}</tbody>\n</table>\n"


def _virtuals(virtuals: dict[str, dict], rates: Callable[..., list[float]]) -> str:
    if not virtuals:
        return "<p>No virtual servers.</p>\n"
    rows = []
    for name, v in virtuals.items():
        recent = rates("virtual", name)
        rows.append(
            f'<tr data-virtual="{_e(name)}"><td>{_e(name)}</td><td>{_e(v.get("protocol"))}</td>'
            f"<td>{'<br>'.join(_e(x) for x in v.get('listen', []))}</td>"
            f"<td>{_e(v.get('pool', ''))}</td>"
            f"{_num(v.get('connections_active'))}{_num(v.get('connections_total'))}"
            f"{_num(v.get('refused', ''))}"
            f'<td class="rate">{_e(_rate(recent[-1])) if recent else "-"} '
            f"{sparkline(recent)}</td></tr>\n")
    out = _table(["virtual server", "protocol", "listen", "pool", "active", "total",
                  "refused", "recent rate"], rows)
    return out + "".join(_next_hops(name, v) for name, v in virtuals.items() if "next_hops" in v)


def _next_hops(name: str, v: dict) -> str:
    """protocol routed: the kernel's counters per next hop."""
    rows = [f'<tr data-next-hop="{_e(member)}"><td>{_e(member)}</td>{_num(c.get("flows"))}'
            f'{_num(c.get("packets"))}{_num(c.get("bytes"))}</tr>\n'
            for member, c in v["next_hops"].items()]
    return (f"<h3>{_e(name)}: next hops (dropped for want of one: "
            f"{_e(v.get('dropped_packets', 0))} packets)</h3>\n"
            + _table(["next hop", "flows", "packets", "bytes"], rows))


def _last_check(m: dict, now: float | None) -> str:
    """Each monitor's last result: ``tcp: pass (2 s ago)``."""
    parts = []
    for name, c in (m.get("checks") or {}).items():
        last = c.get("last_check")
        if not last:
            parts.append(f"{_e(name)}: <span class=\"muted\">not yet</span>")
            continue
        ok = last.get("result") == "pass"
        cls = "check-pass" if ok else "check-fail"
        text = f"{name}: {last.get('result')}"
        if last.get("reason"):
            text += f" ({last['reason']})"
        when = last.get("time")
        age = ""
        if now is not None and when is not None and 0 <= now - when < 10 ** 6:
            age = f' <span class="muted">{now - when:.0f}s ago</span>'
        parts.append(f'<span class="{cls}">{_e(text)}</span>{age}')
    return "<br>".join(parts) if parts else '<span class="muted">no monitor</span>'


def _actions(pool: str, member: str, m: dict) -> str:
    buttons = "".join(
        f'<button type="button" data-action="{action}">{label}</button>'
        for label, action in ACTIONS)
    return (f'<td class="actions">{buttons} '
            f'<input name="weight" type="number" min="{MEMBER_WEIGHT[0]}" max="{MEMBER_WEIGHT[1]}" value="{_e(m.get("weight"))}" '
            f'aria-label="weight of {_e(pool)}/{_e(member)}">'
            f'<button type="button" data-action="weight">set weight</button></td>')


def _pool(name: str, pool: dict, rates: Callable[..., list[float]], now: float | None) -> str:
    rows = []
    for mname, m in pool.get("members", {}).items():
        state = str(m.get("state", ""))
        cls = f"state-{_e(state)}"
        flags = []
        if m.get("backup"):
            flags.append("backup")
        extra = f' <span class="muted">({_e(", ".join(flags))})</span>' if flags else ""
        recent = rates("member", name, mname)
        rows.append(
            f'<tr class="member {cls}" data-pool="{_e(name)}" data-member="{_e(mname)}">'
            f'<td class="name">{_e(mname)}{extra}</td><td>{_e(m.get("address"))}</td>'
            f'<td class="state">{_e(state)}</td>{_num(m.get("weight"), "weight")}'
            f'{_num(m.get("connections_active"), "active")}'
            f'{_num(m.get("connections_total"), "total")}'
            f'<td class="rate">{_e(_rate(recent[-1])) if recent else "-"} {sparkline(recent)}</td>'
            f'{_num(_ms(m.get("response_time_ms")))}'
            f'<td class="check">{_last_check(m, now)}</td>'
            f'<td class="reason">{_e(m.get("down_reason", ""))}</td>'
            f'{_actions(name, mname, m)}</tr>\n')
    heading = (f'<h2>Pool {_e(name)} <span class="muted">({_e(pool.get("scheduler"))})</span>'
               "</h2>\n")
    return heading + _table(["member", "address", "state", "weight", "active", "total",
                             "recent rate", "response", "last check", "down reason",
                             "change"], rows)


def _no_rates(*key) -> list[float]:
    return []


def render_page(status: dict[str, Any], rates: Callable[..., list[float]] = _no_rates,
                now: float | None = None) -> str:
    """The HTML page for a ``/api/status`` dict. ``rates(kind, *names)``
    gives recent connection rates (see :mod:`lbframe.admin.rates`); ``now``
    (epoch seconds) dates the last checks."""
    red = status.get("redundancy", {})
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f'<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>\n',
        "<title>lbframe status</title>\n",
        f"<style>{STYLE}</style>\n</head>\n<body>\n",
        f'<h1>lbframe <span class="muted">{_e(__version__)}</span></h1>\n',
        '<div id="bar"><form id="token-form" hidden><label>Admin token '
        '<input id="token" type="password" autocomplete="off"></label> '
        '<button type="submit">use</button></form>'
        '<p id="message" role="status"></p></div>\n',
        '<main id="status">\n',
        f"<p>Redundancy: {_e(red.get('driver'))}, state "
        f'<span class="state">{_e(red.get("state"))}</span>'
        + (f' <span class="muted">· {_e(time.strftime("%H:%M:%S", time.localtime(now)))}'
           "</span>" if now is not None else "") + "</p>\n",
        "<h2>Virtual servers</h2>\n",
        _virtuals(status.get("virtuals", {}), rates),
    ]
    for name, pool in status.get("pools", {}).items():
        parts.append(_pool(name, pool, rates, now))
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
        return send_text(request, render_page(site_status(self.runtime), rates, time.time()),
                         content_type=b"text/html; charset=utf-8")
