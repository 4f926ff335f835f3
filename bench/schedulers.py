#!/usr/bin/env python3
"""Micro-benchmark of every registered scheduler: µs per pick.

Usage (from the repository root): ``python bench/schedulers.py [--time 0.1]``

For every scheduler that ``lbframe.plugins.load_plugins(entry_points=False)``
registers — built-ins only, whatever they are today — it builds pools of 10,
100 and 1000 members (mixed weights 1-5, three priority groups, one member
in ten down, half the members carrying one to three active connections taken
through ``pool.take``, ``priority_threshold = 4``) and times, with
:mod:`timeit`, one ``pick`` + ``take`` + ``release`` cycle, each pick with
the next of 4096 RequestContexts of varying client addresses (IPv4 and IPv6)
so that ``source-hash`` hashes a different key each time. The figure is the
median, over three runs, of the mean per cycle; the ``(loop)`` row is the
harness alone (a pick that returns None), already included in every figure.

A second table gives the cost of an event: one member going down (the
state change through ``PoolState.report_check``) plus the next pick, in ms
— where a scheduler that rebuilds something (``source-hash``'s lookup
table) pays for it.

Only the standard library and lbframe; no sockets, no reactor. A run takes
about 10-20 s.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import statistics
import sys
import time
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lbframe.balancer import RequestContext  # noqa: E402
from lbframe.config.model import Address, MemberSpec, Pool  # noqa: E402
from lbframe.plugins import load_plugins  # noqa: E402
from lbframe.runtime import PoolState  # noqa: E402

SIZES = (10, 100, 1000)
REPEAT = 3
CONTEXTS = 4096


def contexts(rnd: random.Random) -> list[RequestContext]:
    out = []
    for i in range(CONTEXTS):
        if i % 4 == 3:
            host = "2001:db8::%x:%x" % (rnd.getrandbits(16), rnd.getrandbits(16))
        else:
            host = "%d.%d.%d.%d" % (rnd.randrange(1, 224), rnd.getrandbits(8),
                                    rnd.getrandbits(8), rnd.randrange(1, 255))
        out.append(RequestContext(host, rnd.randrange(1024, 65536), "bench"))
    return out


def build(name: str, factory, n: int, rnd: random.Random) -> PoolState:
    specs = tuple(
        MemberSpec(f"m{i}", Address(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 80),
                   weight=rnd.randint(1, 5), priority=1 + 3 * i // n)
        for i in range(n))
    spec = Pool("bench", specs, scheduler=name, priority_threshold=4)
    pool = PoolState.build(spec, factory(spec, {}))
    for i, m in enumerate(pool.members.values()):
        if i % 2 == 0:
            for _ in range(1 + i % 3):
                pool.take(m)
        if i % 10 == 3:
            down(pool, m)
    return pool


def down(pool: PoolState, member) -> None:
    pool.report_check(member, "bench", False, "bench: down", rise=1, fall=1, now=0.0)


def up(pool: PoolState, member) -> None:
    pool.report_check(member, "bench", True, "bench: up", rise=1, fall=1, now=0.0)


def cycle(pool: PoolState, ctxs):
    pick, take, release = pool.scheduler.pick, pool.take, pool.release
    nxt = itertools.cycle(ctxs).__next__

    def one():
        m = pick(nxt(), ())
        if m is not None:
            take(m)
            release(m)
    return one


def per_call(fn, budget: float) -> float:
    """Median over REPEAT runs of the mean seconds per call of ``fn``."""
    timer = timeit.Timer(fn)
    number = 1
    while True:  # calibrate: one run takes about ``budget`` seconds
        t = timer.timeit(number)
        if t >= budget / 5:
            number = max(1, int(number * budget / t))
            break
        number *= 4
    return statistics.median(timer.repeat(REPEAT, number)) / number


def event_cost(pool: PoolState, ctxs) -> float:
    """Seconds for one member going down plus the next pick (median of 3)."""
    members = [m for m in pool.members.values() if m.eligible]
    costs = []
    for k in range(3):
        m = members[(k * 7919) % len(members)]
        t0 = time.perf_counter()
        down(pool, m)
        pool.scheduler.pick(ctxs[k], ())
        costs.append(time.perf_counter() - t0)
        up(pool, m)
        pool.scheduler.pick(ctxs[k], ())
    return statistics.median(costs)


def table(title: str, unit: str, rows: dict, fmt) -> str:
    lines = [f"**{title}**", "",
             "| scheduler | " + " | ".join(f"{n} members" for n in SIZES) + " |",
             "| --- | " + " | ".join("---:" for _ in SIZES) + " |"]
    for name, cells in rows.items():
        lines.append(f"| {name} | " + " | ".join(
            c if isinstance(c, str) else fmt(c) for c in cells) + " |")
    lines.append(f"\n({unit})")
    return "\n".join(lines)


class _Nothing:
    """The harness alone: a scheduler that never finds anyone."""

    def __init__(self, pool=None, options=None):
        pass

    def pick(self, context, exclude=()):
        return None

    def member_added(self, member):
        pass

    member_removed = member_changed = connection_taken = connection_released = member_added


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time", type=float, default=0.1,
                        help="seconds per timed run (3 runs per cell; default 0.1)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    registry = load_plugins(entry_points=False).schedulers
    ctxs = contexts(random.Random(1))
    schedulers = [("(loop)", _Nothing)] + [(n, registry.get(n).factory) for n in registry.names()]
    picks: dict = {}
    events: dict = {}
    for name, factory in schedulers:
        picks[name], events[name] = [], []
        for n in SIZES:
            try:
                pool = build(name, factory, n, random.Random(n))
                pool.scheduler.pick(ctxs[0], ())  # a lazily built structure is built now
                picks[name].append(per_call(cycle(pool, ctxs), args.time) * 1e6)
                events[name].append(event_cost(pool, ctxs) * 1e3 if factory is not _Nothing else "")
            except Exception as e:  # another author's scheduler: report, go on
                picks[name].append(f"error: {type(e).__name__}")
                events[name].append(f"error: {type(e).__name__}")
            sys.stderr.write(".")
            sys.stderr.flush()
    sys.stderr.write("\n")
    del events["(loop)"]

    print(f"Python {platform.python_version()} ({platform.python_implementation()}), "
          f"{platform.machine()}, {platform.system()}; pools with mixed weights 1-5, "
          "3 priority groups, 1 in 10 members down, half with 1-3 active connections.\n")
    print(table("pick + take + release", "µs per cycle, median of 3 runs", picks,
                lambda v: f"{v:.2f}"))
    print()
    print(table("one member goes down, then one pick", "ms", events, lambda v: f"{v:.3f}"))
    print(f"\n(whole run: {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
