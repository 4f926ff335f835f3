#!/usr/bin/env python3
"""How long a ``source-hash`` table build holds the reactor: the longest
stall seen by a heartbeat, at start and after a weight change.

Usage (from the repository root)::

    python bench/source_hash_stall.py [--members 1000 5000] [--rev 392d84a]

For each pool size it runs a real reactor with a heartbeat (a call every
1 ms that records how late it ran) and traffic (a ``pick`` for a new client
address on every beat), and measures, from the heartbeat:

- **first table**: the first pick after start (the table is built from it);
- **weight change**: one member's weight set through ``PoolState.set_weight``
  (the admin API's way), then picks go on until the new table answers;
- **nothing**: one second with no event, the machine's own noise floor;
- **control**: one second of 5 ms busy loops one after the other (what a
  sliced build does to the reactor, without lbframe): on a machine shared
  with other busy processes the kernel, not lbframe, makes a busy reactor
  late, and this row says by how much.

Each figure is the longest stall (heartbeat lateness, ms) from the event
until the new table answers, the CPU time of the longest build slice (the
stall lbframe itself causes; the rest is other processes), and how long
the new table took to answer (ms of wall time).
``--rev`` also runs the scheduler as it was in that git revision (before
cooperative builds: the table was built in one go at the first pick), for a
before/after comparison; ``one go`` is the time a synchronous build of the
same table takes now (what a pick would wait without slices).

Only the standard library, Twisted and lbframe; no sockets. About 10-30 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import Deferred, inlineCallbacks  # noqa: E402
from twisted.internet.task import deferLater  # noqa: E402

from lbframe.balancer import RequestContext  # noqa: E402
from lbframe.config.model import Address, MemberSpec, Pool  # noqa: E402
from lbframe.runtime import PoolState  # noqa: E402
from lbframe.schedulers.source_hash import SourceHash  # noqa: E402

BEAT = 0.001


class Measured(SourceHash):
    """SourceHash that keeps the CPU time of its longest build slice: the
    part of a stall that is lbframe's own, whatever else the machine runs."""

    longest_cpu = 0.0

    def _slice(self, tier, clock):
        began = time.thread_time()
        super()._slice(tier, clock)
        self.longest_cpu = max(self.longest_cpu, time.thread_time() - began)


class Heartbeat:
    """A call every BEAT seconds that keeps the worst lateness, and a pick
    per beat (the traffic a stalled reactor would hold up)."""

    def __init__(self, pool: PoolState, rnd: random.Random):
        self.pool, self.rnd = pool, rnd
        self.worst = 0.0
        self.picking = False
        self.due = None
        self.call = None

    def start(self):
        self.due = time.perf_counter() + BEAT
        self.call = reactor.callLater(BEAT, self.beat)

    def reset(self):
        self.worst = 0.0

    def beat(self):
        now = time.perf_counter()
        self.worst = max(self.worst, now - self.due)
        host = "%d.%d.%d.%d" % (self.rnd.randrange(1, 224), self.rnd.getrandbits(8),
                                self.rnd.getrandbits(8), self.rnd.randrange(1, 255))
        if self.picking:
            self.pool.scheduler.pick(RequestContext(host, 40000, "bench"), ())
        self.due = time.perf_counter() + BEAT
        self.call = reactor.callLater(BEAT, self.beat)

    def stop(self):
        if self.call is not None and self.call.active():
            self.call.cancel()


def pool_of(factory, n: int) -> PoolState:
    rnd = random.Random(n)
    specs = tuple(MemberSpec(f"m{i}", Address(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 80),
                             weight=rnd.randint(1, 5)) for i in range(n))
    spec = Pool("bench", specs, scheduler="source-hash")
    return PoolState.build(spec, factory(spec, {}))


def busy(seconds: float, piece: float = 0.005) -> Deferred:
    """Keep the reactor busy as a build does — ``piece`` seconds of spinning
    per call, calls one after the other — for ``seconds``: what the machine
    does to a busy process, whatever the process computes."""
    done = Deferred()
    end = time.perf_counter() + seconds

    def spin():
        stop = min(end, time.perf_counter() + piece)
        while time.perf_counter() < stop:
            pass
        if stop >= end:
            done.callback(None)
        else:
            reactor.callLater(0, spin)
    reactor.callLater(0, spin)
    return done


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


def table_of(pool: PoolState):
    """Something that changes when a new table answers."""
    tier = pool.scheduler._tiers[0]
    if hasattr(tier, "slots"):  # now (tier.table would copy the whole table)
        return tier.builds, id(tier.slots)
    return tier.builds, id(tier.table)  # the scheduler of --rev


@inlineCallbacks
def measure(factory, n: int, rows: list, label: str):
    pool = pool_of(factory, n)
    beat = Heartbeat(pool, random.Random(1))
    beat.start()
    yield sleep(0.05)  # the beats pick nothing until the first table is asked for
    results = []
    beat.reset()
    t0 = time.perf_counter()
    yield sleep(1.0)
    results.append(("nothing (noise floor, 1 s)", beat.worst * 1e3, (time.perf_counter() - t0) * 1e3))
    beat.reset()
    t0 = time.perf_counter()
    yield busy(1.0)
    results.append(("5 ms busy loops, no lbframe work (control, 1 s)", beat.worst * 1e3,
                    (time.perf_counter() - t0) * 1e3))
    for event in ("first table", "weight change"):
        before = table_of(pool)
        beat.reset()
        t0 = time.perf_counter()
        beat.picking = True
        if event == "first table":
            pool.scheduler.pick(RequestContext("192.0.2.1", 40000, "bench"), ())
        else:
            m = pool.members["m7"]
            pool.set_weight(m, m.weight + 3)
            pool.scheduler.pick(RequestContext("192.0.2.1", 40000, "bench"), ())
        while table_of(pool) == before:
            yield sleep(BEAT)
        took = time.perf_counter() - t0
        yield sleep(0.02)
        results.append((event, beat.worst * 1e3, took * 1e3))
    beat.stop()
    cpu = getattr(pool.scheduler, "longest_cpu", None)
    for event, worst, took in results:
        rows.append((label, n, event, worst, took, cpu if event in ("first table", "weight change")
                     else None))


def one_go(n: int) -> float:
    pool = pool_of(lambda spec, opts: SourceHash(spec, opts, clock=None), n)
    t0 = time.perf_counter()
    for tier in pool.scheduler._tiers:
        tier.rebuild()
    return time.perf_counter() - t0


def old_factory(rev: str):
    """SourceHash as it was in git revision ``rev``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.run(["git", "show", f"{rev}:lbframe/schedulers/source_hash.py"],
                            cwd=root, check=True, capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "source_hash_old.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("source_hash_old", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SourceHash


@inlineCallbacks
def run_all(args, rows):
    try:
        for n in args.members:
            if args.rev:
                yield measure(old_factory(args.rev), n, rows, f"before ({args.rev})")
            yield measure(lambda spec, opts: Measured(spec, opts, clock=reactor), n, rows,
                          "now (slices)")
            rows.append(("now, one go", n, "build", None, one_go(n) * 1e3, None))
    except Exception:
        import traceback
        traceback.print_exc()
    reactor.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--rev", default="",
                        help="also measure source_hash.py as of this git revision")
    args = parser.parse_args(argv)
    rows: list = []
    reactor.callWhenRunning(run_all, args, rows)
    reactor.run()
    print(f"Python {platform.python_version()} ({platform.python_implementation()}), "
          f"{platform.machine()}; heartbeat every {BEAT * 1e3:.0f} ms with one pick per beat; "
          "weights 1-5.\n")
    print("| scheduler | members | event | longest stall (ms) | longest slice, CPU (ms) "
          "| until the new table answers (ms) |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for label, n, event, worst, took, cpu in rows:
        stall = "" if worst is None else f"{worst:.1f}"
        slice_ = "" if cpu is None else f"{cpu * 1e3:.1f}"
        print(f"| {label} | {n} | {event} | {stall} | {slice_} | {took:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
