"""Failover times of a two-node lbframe VRRP pair, measured on the wire.

Not a test (it has no test case: it takes a few minutes); run it as root::

    python -m tests.system.test_vrrp_measure [ROUNDS]

For each advert interval (1 s, 0.1 s) it kills the master (SIGKILL) ROUNDS
times (default 10) and prints, from tcpdump's timestamps in the client's
namespace, the time from the master's last advert to the backup's first
advert and to its first gratuitous ARP, against the RFC 5798 figure
(the backup's Master_Down_Interval); then the same for a clean stop
(priority 0: the backup's Skew_Time).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from lbframe.redundancy.vrrp.machine import master_down_interval, skew_time
from tests.system import netns
from tests.system.test_vrrp import node_config
from tests.system.vrrp_lan import LAN, VIP, kill9, parse_capture, wait_for


class Run:
    """Enough of a test case for the helpers: clean-ups and a folder."""

    def __init__(self):
        self.cleanups = []
        self.dir = tempfile.mkdtemp(prefix="vrrp-measure-")

    def addCleanup(self, fn, *args, **kw):
        self.cleanups.append((fn, args, kw))

    def close(self):
        for fn, args, kw in reversed(self.cleanups):
            try:
                fn(*args, **kw)
            except Exception as e:
                print("clean-up:", e, file=sys.stderr)


def measure(interval: float, rounds: int) -> dict:
    run = Run()
    try:
        lan = LAN.build(run)
        for name, host in (("a", 1), ("b", 2), ("client", 100), ("member", 50)):
            lan.add(name, host)
        lan.member("member", os.path.join(run.dir, "www"), "ok\n")
        wire = os.path.join(run.dir, "wire.txt")
        lan.capture("client", wire)
        time.sleep(0.3)
        configs = {}
        for name, prio in (("a", 200), ("b", 100)):
            configs[name] = os.path.join(run.dir, f"{name}.ini")
            with open(configs[name], "w") as f:
                f.write(node_config(lan.address(name), prio, interval=f"{interval}s"))
        procs = {n: lan.lbframe(n, configs[n], os.path.join(run.dir, f"{n}.log")) for n in "ab"}
        a_addr, b_addr = lan.address("a"), lan.address("b")

        def adverts():
            return [s for s in parse_capture(wire) if s.kind == "advert"]

        def a_is_master(since):
            return any(s.source == a_addr and s.time > since for s in adverts()) and \
                lan.has_vip("a") and not lan.has_vip("b")

        kills, garps, stops = [], [], []
        for i in range(rounds):
            wait_for(lambda: a_is_master(time.time() - interval * 2), 30, "a master")
            time.sleep(interval * 3 + 0.5)
            killed = kill9(procs["a"])
            first = wait_for(lambda: next((s for s in adverts() if s.source == b_addr
                                           and s.time > killed and s.priority), None),
                             10, "b's first advert")
            last = [s for s in adverts() if s.source == a_addr and s.time <= killed][-1]
            arp = wait_for(lambda: next((s for s in parse_capture(wire) if s.kind == "arp"
                                         and s.source == VIP and s.time >= first.time - 0.01),
                                        None), 5, "b's GARP")
            kills.append(first.time - last.time)
            garps.append(arp.time - last.time)
            # a SIGKILLed node leaves its VIP: its restart removes it, then preempts
            procs["a"] = lan.lbframe("a", configs["a"], os.path.join(run.dir, "a.log"))
            restarted = time.time()
            wait_for(lambda: a_is_master(restarted), 30, "a master again")
        for i in range(rounds):
            wait_for(lambda: a_is_master(time.time() - interval * 2), 30, "a master")
            time.sleep(interval * 3 + 0.5)
            t = time.time()
            procs["a"].terminate()
            procs["a"].wait(20)
            zero = wait_for(lambda: next((s for s in adverts() if s.source == a_addr
                                          and s.priority == 0 and s.time >= t - 0.1), None),
                            10, "a's priority 0")
            first = wait_for(lambda: next((s for s in adverts() if s.source == b_addr
                                           and s.time > zero.time and s.priority), None),
                             10, "b's first advert")
            stops.append(first.time - zero.time)
            procs["a"] = lan.lbframe("a", configs["a"], os.path.join(run.dir, "a.log"))
            restarted = time.time()
            wait_for(lambda: a_is_master(restarted), 30, "a master again")
        return {"kill": kills, "garp": garps, "stop": stops}
    finally:
        run.close()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    netns.require_system()
    print(f"{'advert':>7} {'event':<22} {'RFC':>8} {'median':>8} {'worst':>8}  (seconds, "
          f"{rounds} rounds)")
    for interval in (1.0, 0.1):
        got = measure(interval, rounds)
        mdi, skew = master_down_interval(100, interval), skew_time(100, interval)
        for key, what, rfc in (("kill", "SIGKILL → new advert", mdi),
                               ("garp", "SIGKILL → new GARP", mdi),
                               ("stop", "clean stop → advert", skew)):
            values = got[key]
            print(f"{interval:>6}s {what:<22} {rfc:>8.3f} {statistics.median(values):>8.3f} "
                  f"{max(values):>8.3f}", flush=True)


if __name__ == "__main__":
    main()
