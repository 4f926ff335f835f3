"""protocol = nat: the VIP grammar, the dnat rules, the config checks."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbframe.config import parse_site
from lbframe.errors import ConfigError
from lbframe.plugins import load_plugins
from lbframe.protocols.routed import ruleset as rs
from lbframe.protocols.routed.nat import NatProtocol, parse_vip
from lbframe.protocols.routed.program import Programmer
from lbframe.service import build_runtime
from tests.protocols.test_routed import FakeNft, FakeRouting, find, rules_of

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
