"""The firewall sandwich end to end (issue 17, F11): six namespaces (client,
lb-a, fw-a, fw-b, lb-b, server; 198.18.0.0/15, no default route, no link to
the host), two real ``twistd lbframe`` processes, counting firewalls.

Built by examples/sandwich/sandwich.py (the shipped example, so the example
is what is tested). Each firewall records, in nftables sets, every TCP flow
it forwards in each direction; a flow is symmetric when exactly one firewall
saw it both ways.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from lbframe.schedulers.symmetric_hash import bucket_table, kernel_bucket
from tests.system.netns import require, require_system

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "sandwich", "sandwich.py")
#: monitor timing of these tests
INTERVAL, FALL, RISE = 0.5, 2, 2
SEED = 0x5EED


def load_example():
    spec = importlib.util.spec_from_file_location("sandwich_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sw_module = load_example()


class _Firewall:
    def __init__(self, name):
        self.name, self.weight, self.eligible, self.backup = name, 1, True, False


def predicted(client: str) -> str:
    """The firewall HASH sends (client, server) to, worked out in Python."""
    table = bucket_table([_Firewall(n) for n in sw_module.FIREWALLS])
    return table[kernel_bucket(client, sw_module.SERVER, SEED)].name


class SandwichTests(SynchronousTestCase):
    def setUp(self):
        require_system()
        require(shutil.which("nft") is not None, "the sandwich needs nft (nftables)")
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        self.sw = sw_module.Sandwich(prefix=f"s{os.getpid() % 100000}-", workdir=self.workdir,
                                     interval=INTERVAL, fall=FALL, rise=RISE)
        self.addCleanup(self.sw.clean)
        self.sw.build()

    def run_flows(self, n=40):
        self.sw.reset_counters()
        flows = self.sw.flows(sw_module.sources(n))
        return flows, sw_module.check_flows(flows, self.sw.seen())

    def assert_all_symmetric(self, summary, n, both=True):
        self.assertEqual(summary["failed"], [])
        self.assertEqual(summary["translated"], [], "the server saw a translated address")
        self.assertEqual(summary["asymmetric"], [])
        self.assertEqual(summary["unseen"], [])
        self.assertEqual(len(summary["symmetric"]), n)
        if both:
            self.assertTrue(all(summary["by_firewall"].values()), summary["by_firewall"])

    def survive_failure(self, mode):
        """fw-a dies: new flows all pass through fw-b within interval × fall
        (plus one interval of phase and the flows' own time); then it comes
        back and both are used again."""
        self.sw.take_down("fw-a")
        died = time.monotonic()
        bound = INTERVAL * FALL + INTERVAL + 1.5
        while True:
            flows = self.sw.flows(sw_module.sources(6), timeout=0.5)
            summary = sw_module.check_flows(flows, self.sw.seen())
            if not summary["failed"] and summary["by_firewall"]["fw-a"] == 0:
                break
            self.assertLess(time.monotonic() - died, bound + 5,
                            f"{mode}: flows still fail {bound + 5:.1f}s after fw-a died")
            self.sw.reset_counters()
        took = time.monotonic() - died
        self.assertLess(took, bound, f"{mode}: new flows passed only after {took:.2f}s")
        flows, summary = self.run_flows(20)
        self.assert_all_symmetric(summary, 20, both=False)
        self.assertEqual(summary["by_firewall"], {"fw-a": 0, "fw-b": 20})
        self.sw.bring_up("fw-a")
        self.sw.wait_live({"lb-a": {"fw-a", "fw-b"}, "lb-b": {"fw-a", "fw-b"}},
                          deadline=INTERVAL * RISE + 5)
        flows, summary = self.run_flows()
        self.assert_all_symmetric(summary, 40)
        return took

    def stop_and_check_removed(self):
        self.sw.stop_lbframe()
        for node in ("lb-a", "lb-b"):
            self.assertIsNone(self.sw.table(node), f"{node} kept lbframe's table")
            self.assertNotIn("fwmark 0x4c42", self.sw.ip(node, "rule", "show"))

    def test_hash(self):
        self.sw.start_lbframe("hash")
        flows, summary = self.run_flows()
        self.assert_all_symmetric(summary, 40)
        # The kernel's jhash is the one lbframe computes: each flow crossed
        # the firewall predicted in Python, on both nodes.
        for flow in summary["symmetric"]:
            self.assertEqual(flow["there"], [predicted(flow["src"])], flow)
        # lbframe's status shows the kernel's counters per next hop: LB-A
        # steered every new flow, each to the firewall that saw it.
        hops = self.sw.next_hops("lb-a", wait_flows=40)
        self.assertEqual({n: h["flows"] for n, h in hops.items()}, summary["by_firewall"])
        self.assertTrue(all(h["packets"] >= 3 * h["flows"] for h in hops.values()), hops)
        self.survive_failure("hash")
        self.stop_and_check_removed()

    def test_last_hop(self):
        self.sw.start_lbframe("lasthop")
        flows, summary = self.run_flows()
        self.assert_all_symmetric(summary, 40)
        # LB-A's round robin differs from LB-B's hash for many flows; the
        # replies still went back through the firewall the flow came from.
        differ = [f for f in summary["symmetric"] if f["there"] != [predicted(f["src"])]]
        self.assertGreater(len(differ), 5)
        self.survive_failure("lasthop")
        self.stop_and_check_removed()

    def test_negative_control_detects_asymmetry(self):
        """LB-A round robin, LB-B hashing without last-hop: the paths part
        for about half of the flows, and the check says so."""
        path = os.path.join(sw_module.HERE, "asym")
        os.makedirs(os.path.join(self.workdir, "asym"), exist_ok=True)
        for node in ("lb-a", "lb-b"):
            text = open(os.path.join(sw_module.HERE, "lasthop", f"{node}.ini")).read()
            text = text.replace("persistence = last-hop\n", "")
            with open(os.path.join(self.workdir, "asym", f"{node}.ini"), "w") as f:
                f.write(text)
        self.patch(sw_module, "HERE", self.workdir)
        self.sw.start_lbframe("asym")
        flows, summary = self.run_flows()
        self.assertEqual(summary["failed"], [])
        self.assertGreater(len(summary["asymmetric"]), 5, summary["by_firewall"])
        for flow in summary["asymmetric"]:
            self.assertNotEqual(flow["there"], flow["back"])
        self.assertFalse(os.path.exists(path))

    def test_reload_swaps_the_next_hops_atomically(self):
        """A reload that takes fw-b out of LB-A and LB-B while flows run:
        no flow fails (there is never a half-written table), and afterwards
        everything goes through fw-a."""
        self.sw.start_lbframe("hash")
        results, stop = [], threading.Event()

        def traffic():
            while not stop.is_set():
                results.extend(self.sw.flows(sw_module.sources(5), timeout=2.0))

        thread = threading.Thread(target=traffic)
        thread.start()
        try:
            time.sleep(0.5)
            for node in ("lb-a", "lb-b"):
                path = os.path.join(self.workdir, f"hash-{node}.ini")
                text = open(path).read()
                with open(path, "w") as f:
                    f.write("\n".join(line for line in text.splitlines()
                                      if not line.startswith("member fw-b")) + "\n")
                self.sw.procs[node].send_signal(signal.SIGHUP)
            self.sw.wait_live({"lb-a": {"fw-a"}, "lb-b": {"fw-a"}}, deadline=10)
            time.sleep(0.5)
        finally:
            stop.set()
            thread.join(60)
        self.assertGreater(len(results), 10)
        self.assertEqual([f for f in results if not f["ok"]], [])
        flows, summary = self.run_flows(20)
        self.assert_all_symmetric(summary, 20, both=False)
        self.assertEqual(summary["by_firewall"], {"fw-a": 20, "fw-b": 0})


class RulesetAcceptedTests(SynchronousTestCase):
    """The kernel accepts every shape of ruleset lbframe generates (IPv4 and
    IPv6, each scheduler, last-hop on own and shared links, nat, no live
    next hop): each is loaded for real into a fresh namespace's nftables."""

    def test_every_shape_loads(self):
        import json
        import subprocess

        from lbframe.protocols.routed import ruleset as rs
        from lbframe.protocols.routed.nat import NatPlan, parse_vip
        from lbframe.protocols.routed.traffic import parse_traffic
        from tests.system.netns import add_netns

        require_system()
        require(shutil.which("nft") is not None, "needs nft (nftables)")
        netns = add_netns(self)
        traffic = (parse_traffic("iface:cli:daddr=198.18.9.0/24+[2001:db8:9::]/48:proto=tcp+udp"
                                 ":dport=80+8000-8080"),
                   parse_traffic("iface:cli2:saddr=198.18.1.0/24"),
                   parse_traffic("iface:cli3"))
        hops = (rs.NextHop("fw-a", "198.18.2.2", 4, "fw-a", 1),
                rs.NextHop("fw-b", "198.18.2.6", 4, "fw-b", 2, live=False),
                rs.NextHop("fw-a", "2001:db8:2::2", 6, "fw-a", 3),
                rs.NextHop("fw-c", "198.18.2.9", 4, "lan", 4, mac="02:00:00:00:00:09"),
                rs.NextHop("fw-d", "198.18.2.10", 4, "lan", 5))
        buckets = ((4, ("fw-a", "fw-c") * 125 + ("fw-a",)), (6, ("fw-a",) * 251))
        plans = []
        for i, (scheduler, last_hop) in enumerate([("symmetric-hash", False),
                                                    ("symmetric-hash", True),
                                                    ("round-robin", True),
                                                    ("weighted", False)]):
            plans.append(rs.VirtualPlan(i, f"v{i}", traffic, scheduler, hops,
                                        hash_order="destination-source", seed=7,
                                        last_hop=last_hop, buckets=buckets))
        plans.append(rs.VirtualPlan(4, "dead", traffic[:1], "symmetric-hash",
                                    tuple(rs.NextHop(h.name, h.address, h.family, h.device,
                                                     h.slot, live=False) for h in hops)))
        nat_hops = (rs.NextHop("web1", "198.18.30.11", 4, "", 1),
                    rs.NextHop("web2", "2001:db8:30::12", 6, "", 2))
        for i, (scheduler, sticky) in enumerate([("round-robin", False), ("weighted", False),
                                                 ("source-hash", False), ("round-robin", True)]):
            plans.append(NatPlan(5 + i, f"nat{i}",
                                 (parse_vip("tcp:80:interface=198.18.20.1"),
                                  parse_vip(r"udp:53:interface=2001\:db8\:20\:\:1")),
                                 scheduler, nat_hops, (("web1", 8080), ("web2", 53)),
                                 sticky=sticky,
                                 buckets=((4, ("web1",) * 251), (6, ("web2",) * 251))))
        for payload in (rs.ruleset(plans), rs.ruleset(plans[:1]), rs.removal()):
            done = subprocess.run(["ip", "netns", "exec", netns, "nft", "-j", "-f", "-"],
                                  input=json.dumps(payload), capture_output=True, text=True,
                                  timeout=30)
            self.assertEqual(done.returncode, 0, done.stderr)
        listed = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "tables"],
                                capture_output=True, text=True, timeout=30).stdout
        self.assertNotIn("lbframe", listed)
