"""protocol = nat: the VIP grammar, the dnat rules, the config checks."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbframe.config import parse_site
from lbframe.errors import ConfigError
from lbframe.plugins import load_plugins
from lbframe.protocols.routed import ruleset as rs
from lbframe.protocols.routed.nat import NatPlan, NatProtocol, nat_rules, parse_vip
from lbframe.protocols.routed.program import Programmer
from lbframe.service import build_runtime
from tests.protocols.test_routed import FakeNft, FakeRouting, find, plan, rules_of

SITE = """
[virtual web]
listen = tcp:80:interface=198.18.20.1
protocol = nat
pool = web
{virtual_extra}

[pool web]
scheduler = {scheduler}
member web1 = 198.18.30.11:8080
member web2 = 198.18.30.12:8081 weight=2

[persistence sip]
method = source-ip
"""


def build(scheduler="round-robin", virtual_extra=""):
    site = parse_site(SITE.format(scheduler=scheduler, virtual_extra=virtual_extra),
                      "/tmp/site.ini")
    return build_runtime(site, load_plugins(entry_points=False), Clock())


class VipTests(SynchronousTestCase):
    def test_forms(self):
        vip = parse_vip("tcp:80:interface=198.18.20.1")
        self.assertEqual((vip.protocol, vip.address, vip.family, vip.port),
                         ("tcp", "198.18.20.1", 4, 80))
        self.assertEqual(parse_vip(r"udp:53:interface=2001\:db8\:\:1").family, 6)
        for bad, words in [("tcp:80", "must be an IP address"),
                           ("tcp:80:interface=0.0.0.0", "name the VIP"),
                           ("unix:/x", "protocol nat takes")]:
            with self.assertRaises(ValueError) as cm:
                parse_vip(bad)
            self.assertIn(words, str(cm.exception))


class NatRulesTests(SynchronousTestCase):
    def start(self, **kw):
        runtime = build(**kw)
        clock = Clock()
        nft = FakeNft()
        proto = runtime.protocols["web"]
        self.assertIsInstance(proto, NatProtocol)
        proto.programmer = Programmer(clock, nft=nft, routing=FakeRouting())
        proto.kernel_checks = lambda listener: None
        listener = proto.make_service(runtime.balancers["web"], clock)
        self.successResultOf(listener.start_listening())
        self.addCleanup(listener.stop_listening)
        return runtime, nft, proto.programmer

    def dnat(self, payload):
        return [r for r in rules_of(payload) if any("dnat" in e for e in r)]

    def targets(self, rule):
        return {tuple(t["concat"]) for _, t in next(find(rule, "dnat"))["addr"]["map"]["data"]["set"]}

    def test_round_robin_dnat_to_live_members(self):
        runtime, nft, programmer = self.start()
        self.assertEqual(programmer.routing.installed, {}, "nat needs no policy routing")
        rule = self.dnat(nft.applied[-1])[0]
        self.assertEqual(next(find(rule, "numgen"))["mode"], "inc")
        self.assertEqual(self.targets(rule), {("198.18.30.11", 8080), ("198.18.30.12", 8081)})
        pool = runtime.pools["web"]
        pool.set_admin(pool.members["web1"], "draining", "test")
        self.assertEqual(self.targets(self.dnat(nft.applied[-1])[0]), {("198.18.30.12", 8081)})
        pool.set_admin(pool.members["web2"], "disabled", "test")
        nat = [c["add"]["rule"]["expr"] for c in nft.applied[-1]["nftables"]
               if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == rs.NAT_CHAIN]
        self.assertEqual(nat[0][-1], {"drop": None})

    def test_weighted_and_sticky(self):
        _, nft, _ = self.start(scheduler="weighted")
        rule = self.dnat(nft.applied[-1])[0]
        pairs = next(find(rule, "dnat"))["addr"]["map"]["data"]["set"]
        share = sum(1 for _, t in pairs if t["concat"][0] == "198.18.30.12") / len(pairs)
        self.assertAlmostEqual(share, 2 / 3, places=1)
        _, nft, _ = self.start(virtual_extra="persistence = sip")
        jhash = next(find(self.dnat(nft.applied[-1])[0], "jhash"))
        self.assertEqual(jhash["expr"], {"payload": {"protocol": "ip", "field": "saddr"}})

    def test_counters_after_translation(self):
        _, nft, _ = self.start()
        count = [c["add"]["rule"]["expr"] for c in nft.applied[-1]["nftables"]
                 if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == rs.COUNT_CHAIN]
        self.assertEqual(len(count), 4)
        self.assertIn({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
                      count[0])


def chains_and_rules(payload):
    """([(chain, type, hook, priority)], {chain: [rule, ...]}) of a transaction."""
    chains, rules = [], {}
    for c in payload["nftables"]:
        add = c.get("add", {})
        if "chain" in add:
            ch = add["chain"]
            chains.append((ch["name"], ch["type"], ch["hook"], ch["prio"]))
        elif "rule" in add:
            rules.setdefault(add["rule"]["chain"], []).append(add["rule"]["expr"])
    return chains, rules


class PlanKindsTests(SynchronousTestCase):
    """ruleset() assembles what each kind of plan writes (``plan.rules()``):
    routed and nat plans in one table, and no knowledge of nat in ruleset."""

    def test_routed_and_nat_plans_share_one_table(self):
        routed = plan()
        nat = NatPlan(1, "web", (parse_vip("tcp:80:interface=198.18.1.1"),), "round-robin",
                      (rs.NextHop("web1", "198.18.30.11", 4, "", 3),), (("web1", 8080),))
        payload = rs.ruleset([routed, nat])
        chains, rules = chains_and_rules(payload)
        self.assertEqual(chains, [(rs.CHAIN, "filter", "prerouting", -150),
                                  (rs.NAT_CHAIN, "nat", "prerouting", -100),
                                  (rs.COUNT_CHAIN, "filter", "forward", 0)])
        dnat, count = nat_rules(nat, "v1_drop", rs.counter_name)
        self.assertEqual(rules, {rs.CHAIN: rs.virtual_rules(routed),
                                 rs.NAT_CHAIN: dnat, rs.COUNT_CHAIN: count})
        counters = {c["add"]["counter"]["name"] for c in payload["nftables"]
                    if "counter" in c.get("add", {})}
        self.assertEqual(counters, {"v0_drop", "v0_1_pkts", "v0_1_flows", "v0_2_pkts",
                                    "v0_2_flows", "v1_drop", "v1_3_pkts", "v1_3_flows"})

    def test_a_plan_kind_ruleset_never_heard_of(self):
        class Other:
            index, name, hops, routes = 9, "other", (), ()

            def rules(self):
                return {rs.COUNT_CHAIN: [[{"counter": "v9_drop"}]]}

        chains, rules = chains_and_rules(rs.ruleset([Other()]))
        self.assertEqual([c[0] for c in chains], [rs.CHAIN, rs.COUNT_CHAIN])
        self.assertEqual(rules, {rs.COUNT_CHAIN: [[{"counter": "v9_drop"}]]})


class NatConfigTests(SynchronousTestCase):
    def error(self, **kw):
        with self.assertRaises(ConfigError) as cm:
            build(**kw)
        return str(cm.exception)

    def test_refusals(self):
        self.assertIn("protocol nat runs round-robin, weighted, source-hash",
                      self.error(scheduler="least-connections"))
        self.assertIn("unknown key 'colour' for protocol nat",
                      self.error(virtual_extra="colour = red"))
        text = SITE.format(scheduler="round-robin", virtual_extra="persistence = c") + \
            "\n[persistence c]\nmethod = cookie-insert\ncookie = S\n"
        with self.assertRaises(ConfigError) as cm:
            build_runtime(parse_site(text, "/tmp/s.ini"), load_plugins(entry_points=False), Clock())
        self.assertIn("takes method source-ip", str(cm.exception))
