#!/usr/bin/env python3
"""How long a reload holds the reactor: the longest stall a heartbeat sees
while a 5,000-member site is reloaded with one change.

Usage (from the repository root)::

    python bench/reload_stall.py [--members 5000] [--rounds 5]

It writes a site of ``--members`` members (one pool, a ``tcp`` monitor with
a one-hour interval so that checks exist but hardly run; every address is
on 127.0.0.0/8), starts it on a real reactor with a heartbeat (a
``LoopingCall`` every 1 ms that keeps the longest gap between two beats),
and reloads it, ``--rounds`` times each:

- **nothing**: the same file again;
- **one weight**: one member's weight changed;
- **weight + member**: one weight changed and one member added (then removed
  again by the next round, so every round changes the same amount);

once on the reactor (:func:`lbframe.site.reload`, the admin's and the
tests' way) and once the way SIGHUP does it (:func:`lbframe.site.reload_in_thread`:
the file is read and compared in a worker thread, only the difference is
applied on the reactor). A control row keeps the reactor idle for one second:
the machine's own noise floor.

Each row gives the longest heartbeat gap minus the 1 ms period (the stall),
over the rounds, the reload's own split from its ``reload`` log event
(reading: parse + plugins + compare; applying), and how many full garbage
collections ran meanwhile (each one walks every object of the process). Run it against an older
checkout with ``PYTHONPATH=that/checkout``: when :mod:`lbframe.site` is not
there it reloads with ``SiteService.reload()`` (the one way there was).

Only the standard library, Twisted and lbframe; one listening socket on
127.0.0.1, no traffic. About 30-60 s.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import sys
import tempfile
import time

if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.logger import globalLogPublisher  # noqa: E402

BEAT = 0.001


def site_text(n: int, weight: int = 1, extra: bool = False) -> str:
    lines = ["[lbframe]\nstop_grace = 1s\n\n",
             "[virtual web]\nlisten = tcp:0:interface=127.0.0.1\npool = p\n\n",
             "[monitor alive]\ntype = tcp\ninterval = 1h\n\n",
             "[pool p]\nmonitor = alive\n"]
    for i in range(n):
        w = weight if i == 7 else 1
        lines.append(f"member m{i} = 127.{(i >> 16) + 1}.{(i >> 8) & 255}.{i & 255}:9 weight={w}\n")
    if extra:
        lines.append("member extra = 127.200.0.1:9\n")
    return "".join(lines)


class FullCollections:
    """Counts the garbage collector's full (generation 2) collections."""

    def __init__(self):
        self.count = 0
        gc.callbacks.append(self.seen)

    def seen(self, phase, info):
        if phase == "start" and info["generation"] == 2:
            self.count += 1


class Heartbeat:
    """A beat every BEAT seconds; keeps the longest gap between two beats."""

    def __init__(self):
        self.last = None
        self.worst = 0.0
        self.loop = task.LoopingCall(self.beat)

    def beat(self):
        now = time.perf_counter()
        if self.last is not None:
            self.worst = max(self.worst, now - self.last - BEAT)
        self.last = now

    def reset(self):
        self.worst = 0.0
        self.last = time.perf_counter()


def spin(seconds: float) -> None:
    """Pure Python work (what a worker thread reading a file does to the
    GIL), without lbframe."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += sum(range(100))


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


class Reloader:
    """The running site and the ways to reload it (now, or as before)."""

    def __init__(self, path: str):
        self.path = path
        try:
            from lbframe import site
        except ImportError:  # before lbframe/site.py
            site = None
        self.site = site
        if site is not None:
            # As under twistd: the process is the site's.
            self.svc = site.make_service(path, reactor, own_process=True)
        else:
            from lbframe.service import SiteService
            from lbframe.tap import load
            self.svc = SiteService(load(path, reactor), reactor, config_path=path)
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.observe)

    def observe(self, event):
        if event.get("lbframe_event") in ("reload", "reload_refused"):
            self.events.append(event)

    def ways(self) -> list[str]:
        return ["read in a thread", "on the reactor"] if self.site else ["before (on the reactor)"]

    def reload(self, way: str) -> defer.Deferred:
        if self.site is None:
            return defer.succeed(self.svc.reload())
        if way == "on the reactor":
            return defer.succeed(self.site.reload(self.svc))
        return self.site.reload_in_thread(self.svc)


@defer.inlineCallbacks
def run(args, rows):
    folder = tempfile.mkdtemp(prefix="lbframe-reload-stall-")
    path = os.path.join(folder, "site.ini")
    try:
        with open(path, "w") as f:
            f.write(site_text(args.members))
        began = time.perf_counter()
        r = Reloader(path)
        r.svc.startService()
        rows.append(("start (load + build + listen)", "", (time.perf_counter() - began) * 1e3,
                     None, None, None))
        beat = Heartbeat()
        beat.loop.start(BEAT)
        collections = FullCollections()
        yield sleep(0.2)
        beat.reset()
        yield sleep(1.0)
        rows.append(("nothing happens (noise floor, 1 s)", "", beat.worst * 1e3, None, None, None))
        # Control: Python work in a thread, no lbframe, as long as a read.
        from twisted.internet import threads
        beat.reset()
        yield threads.deferToThread(spin, 0.25)
        rows.append(("250 ms of Python in a thread (control, no lbframe)", "", beat.worst * 1e3,
                     None, None, None))
        for way in r.ways():
            for change in ("nothing", "one weight", "weight + member"):
                worst, reads, applies = 0.0, [], []
                collections.count = 0
                for i in range(args.rounds):
                    if change == "nothing":
                        text = site_text(args.members)
                    elif change == "one weight":
                        text = site_text(args.members, weight=2 + i % 2)
                    else:
                        text = site_text(args.members, weight=2 + i % 2, extra=i % 2 == 0)
                    with open(path, "w") as f:
                        f.write(text)
                    yield sleep(0.05)
                    del r.events[:]
                    beat.reset()
                    ok = yield r.reload(way)
                    yield sleep(0.03)  # a late stall is the reload's too
                    worst = max(worst, beat.worst)
                    if not ok or not r.events or r.events[-1]["lbframe_event"] != "reload":
                        raise SystemExit(f"reload refused: {r.events}")
                    event = r.events[-1]
                    if "apply_ms" in event:
                        reads.append(event["read_ms"])
                        applies.append(event["apply_ms"])
                    else:
                        applies.append(event["ms"])
                rows.append((change, way, worst * 1e3, max(reads) if reads else None,
                             max(applies), collections.count))
        members = r.svc.runtime.pools["p"].members
        assert len(members) >= args.members, len(members)
        beat.loop.stop()
        yield r.svc.stopService()
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        reactor.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rows: list = []
    reactor.callWhenRunning(run, args, rows)
    reactor.run()
    print(f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs; "
          f"{args.members} members, heartbeat every {BEAT * 1e3:.0f} ms; worst of "
          f"{args.rounds} reloads per row.\n")
    print("| reload | how | longest stall (ms) | reading, worst (ms) | applying, worst (ms) "
          "| full GC runs |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for change, way, stall, read, apply_, full in rows:
        cells = ["" if v is None else f"{v:.1f}" for v in (read, apply_)]
        print(f"| {change} | {way} | {stall:.1f} | {cells[0]} | {cells[1]} | "
              f"{'' if full is None else full} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
