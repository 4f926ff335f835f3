"""The seed's point about AP tiers (F10b), shown with real servers.

Starts lbframe (``twistd -n lbframe --config site.ini``) and the web and AP
tiers (tiers.py), then for each way VIP-AP can persist — source-ip, the
application's cookie, the URL session id — plays the same story:

1. 12 users browse (their pages go through one of the two web servers);
2. the busiest AP server fails; lbframe's monitor marks it down;
3. it recovers; the 12 users browse on and 12 new users arrive.

and counts what reaches the recovered server afterwards, and how many
existing sessions were broken after the recovery.

    python examples/ap-tier/demo.py            # prints a table
    python examples/ap-tier/demo.py --json     # the numbers, for tests
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.web import client, server  # noqa: E402
from twisted.web.http_headers import Headers  # noqa: E402

import tiers  # noqa: E402
from lbframe.config import load_site  # noqa: E402

TWISTD = [sys.executable, "-c", "import sys; sys.argv[0] = 'twistd'; "
                                "from twisted.scripts.twistd import run; run()"]
USERS = 12
LOG = os.path.join(tempfile.gettempdir(), "lbframe-ap-tier-demo.log")
MODES = (("srcip", "source-ip"), ("cookie", "cookie-learn JSESSIONID"),
         ("url", "url-session ;jsessionid="))


class User:
    def __init__(self, agent, web, mode):
        self.agent, self.web, self.mode = agent, web, mode
        self.session = None

    @defer.inlineCallbacks
    def page(self):
        headers = Headers()
        if self.session:
            headers.addRawHeader("Cookie", "APSESSION=" + self.session)
        host, port = self.web
        response = yield self.agent.request(
            b"GET", f"http://{host}:{port}/{self.mode}/page".encode(), headers)
        body = yield client.readBody(response)
        if response.code != 200:
            return {"server": None, "new": False, "error": body.decode("latin-1")}
        info = json.loads(body)
        self.session = info["session"]
        return info


@defer.inlineCallbacks
def browse(users, pages):
    """Every user asks for ``pages`` pages; the answers, in order."""
    out = []
    for _ in range(pages):
        for user in users:
            out.append((user, (yield user.page())))
    return out


@defer.inlineCallbacks
def member_state(agent, admin, name):
    response = yield agent.request(b"GET", f"{admin}/api/status".encode())
    status = json.loads((yield client.readBody(response)))
    return status["pools"]["ap"]["members"][name]["state"]


@defer.inlineCallbacks
def wait_state(agent, admin, name, state, deadline=15.0):
    end = time.monotonic() + deadline
    while (yield member_state(agent, admin, name)) != state:
        if time.monotonic() > end:
            raise RuntimeError(f"{name} is not {state} after {deadline}s")
        yield task.deferLater(reactor, 0.05, lambda: None)


class Crashable(server.Site):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.open = set()

    def buildProtocol(self, addr):
        proto = super().buildProtocol(addr)
        self.open.add(proto)
        return proto

    def crash(self):
        for proto in self.open:
            transport = getattr(getattr(proto, "_channel", proto), "transport", None)
            if transport is not None:
                transport.abortConnection()
        self.open.clear()


@defer.inlineCallbacks
def story(site, aps, mode):
    agent = client.Agent(reactor, pool=client.HTTPConnectionPool(reactor, persistent=False))
    admin = f"http://127.0.0.1:{site.lbframe.admin.split(':')[1]}"
    web = ("127.0.0.1", int(site.virtuals["web"].listen[0].split(":")[1]))
    users = [User(agent, web, mode) for _ in range(USERS)]
    before = yield browse(users, 2)
    counts: dict = {}
    for _, info in before:
        counts[info["server"]] = counts.get(info["server"], 0) + 1
    victim = max(sorted(counts), key=counts.get)

    port, res = aps[victim]
    number = port.getHost().port
    yield port.stopListening()
    port.factory.crash()  # the server dies: its open connections break too
    yield wait_state(agent, admin, victim, "down")
    yield browse(users, 2)

    aps[victim] = (reactor.listenTCP(number, Crashable(res), interface="127.0.0.1"), res)
    yield wait_state(agent, admin, victim, "up")
    newcomers = [User(agent, web, mode) for _ in range(USERS)]
    after_old = yield browse(users, 3)
    after_new = yield browse(newcomers, 3)
    broken = sum(1 for u, info in after_old[USERS:] if info["new"])
    return {
        "victim": victim,
        "before": counts,
        "after_existing_to_recovered": sum(1 for _, i in after_old if i["server"] == victim),
        "after_new_to_recovered": sum(1 for _, i in after_new if i["server"] == victim),
        "after_requests": len(after_old) + len(after_new),
        "existing_sessions_broken_after_recovery": broken,
        "errors": sum(1 for _, i in before + after_old + after_new if i.get("error")),
    }


def start_lbframe(config):
    log = open(LOG, "wb")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p))
    return subprocess.Popen(TWISTD + ["-n", "--pidfile=", "lbframe", "--config", config],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


@defer.inlineCallbacks
def run(config):
    site = load_site(config)
    # Each AP server behind a crashable Site, so that a failure also cuts
    # the connections lbframe keeps open to it.
    aps, webs = tiers.tiers(site, Crashable)
    lb = start_lbframe(config)
    try:
        web_port = int(site.virtuals["web"].listen[0].split(":")[1])
        end = time.monotonic() + 20
        while True:
            try:
                agent = client.Agent(reactor)
                yield agent.request(b"GET", f"http://127.0.0.1:{web_port}/cookie/".encode())
                break
            except Exception:
                if lb.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"lbframe did not start (see {LOG})")
                yield task.deferLater(reactor, 0.1, lambda: None)
        results = {}
        for mode, _ in MODES:
            results[mode] = yield story(site, aps, mode)
        return results
    finally:
        lb.send_signal(signal.SIGTERM)
        try:
            lb.wait(10)
        except subprocess.TimeoutExpired:
            lb.kill()


def table(results):
    lines = [f"{'VIP-AP persists on':28} {'failed':7} {'after recovery, to it:':>24} "
             f"{'existing sessions':>18}",
             f"{'':28} {'':7} {'existing':>11} {'new users':>12} {'broken after':>18}"]
    for mode, label in MODES:
        r = results[mode]
        lines.append(f"{label:28} {r['victim']:7} {r['after_existing_to_recovered']:>11} "
                     f"{r['after_new_to_recovered']:>12} "
                     f"{r['existing_sessions_broken_after_recovery']:>18}")
    lines.append("")
    lines.append("source-ip: the recovered AP server gets nothing back (its only clients, two web")
    lines.append("servers, were moved away for good). Cookie or URL persistence: existing")
    lines.append("sessions stay where they are, new sessions reach the recovered server again.")
    return "\n".join(lines)


def main():
    warnings.simplefilter("ignore", DeprecationWarning)  # readBody on an HTTP/1.0 answer
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    config = args[0] if args else os.path.join(HERE, "site.ini")
    outcome = {}

    def done(results):
        outcome["results"] = results
        reactor.stop()

    def failed(failure):
        outcome["error"] = failure
        reactor.stop()

    reactor.callWhenRunning(lambda: run(config).addCallbacks(done, failed))
    reactor.run()
    if "error" in outcome:
        print(outcome["error"].getTraceback(), file=sys.stderr)
        sys.exit(1)
    if "--json" in sys.argv:
        print(json.dumps(outcome["results"]))
    else:
        print(table(outcome["results"]))


if __name__ == "__main__":
    main()
