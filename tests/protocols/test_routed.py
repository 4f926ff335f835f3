"""protocol = routed: the listen grammar, the generated nftables JSON, the
listener's life with a fake kernel, the start-up checks and the config."""

from __future__ import annotations

import ipaddress
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from lbframe.config import parse_site
from lbframe.errors import ConfigError, ListenError
from lbframe.interfaces import IListener
from lbframe.plugins import load_plugins
from lbframe.protocols.routed import routing as checks
from lbframe.protocols.routed import ruleset as rs
from lbframe.protocols.routed.listener import RoutedVirtualServer
from lbframe.protocols.routed.program import Programmer
from lbframe.protocols.routed.protocol import RoutedProtocol
from lbframe.protocols.routed.traffic import parse_traffic
from lbframe.schedulers.symmetric_hash import BUCKETS, kernel_bucket
from lbframe.service import build_runtime

SITE = """
[virtual out]
listen = iface:a-cli:daddr=198.18.9.0/24
protocol = routed
pool = fws
{virtual_extra}

[pool fws]
scheduler = {scheduler}
member fw1 = 198.18.2.2
member fw2 = 198.18.2.6
{pool_extra}

[persistence lh]
method = last-hop
"""

LINKS = {"198.18.2.2": "a-fw1", "198.18.2.6": "a-fw2", "198.18.3.2": "b-fw1",
         "198.18.3.6": "b-fw2"}


def site_text(scheduler="symmetric-hash", virtual_extra="", pool_extra=""):
    return SITE.format(scheduler=scheduler, virtual_extra=virtual_extra, pool_extra=pool_extra)


class FakeRouting:
    """Policy routing in a dict; links from LINKS."""

    def __init__(self, links=LINKS):
        self.links = dict(links)
        self.installed: dict = {}
        self.log: list = []

    def resolve(self, address, family):
        if address not in self.links:
            raise ValueError(f"no route to {address}")
        return self.links[address], None

    def install(self, slot, family, address, device):
        self.installed[slot] = (family, address, device)
        self.log.append(("install", slot, address))

    def remove(self, slot):
        self.installed.pop(slot, None)
        self.log.append(("remove", slot))


class FakeNft:
    """Records each transaction; ``fail`` makes the next one fail."""

    def __init__(self):
        self.applied: list[dict] = []
        self.fail: str | None = None
        self.values: dict = {}

    def apply(self, payload):
        json.dumps(payload)  # it must be JSON
        if self.fail:
            return defer.fail(Exception(self.fail))
        self.applied.append(payload)
        return defer.succeed(b"")

    def counters(self):
        return defer.succeed(dict(self.values))


def rules_of(payload) -> list[list[dict]]:
    return [c["add"]["rule"]["expr"] for c in payload["nftables"]
            if "add" in c and "rule" in c["add"]]


def find(expr, key):
    """Every value under ``key`` anywhere in a JSON structure."""
    if isinstance(expr, dict):
        for k, v in expr.items():
            if k == key:
                yield v
            yield from find(v, key)
    elif isinstance(expr, list):
        for item in expr:
            yield from find(item, key)


def evaluate_mark(rule: list[dict], packet: dict) -> int | None:
    """Evaluate a stateless steering rule's ``meta mark set jhash … map``
    for ``packet`` ({"saddr", "daddr"}), as the kernel does."""
    for expr in rule:
        mangle = expr.get("mangle")
        if mangle and mangle["key"] == {"meta": {"key": "mark"}} and "map" in mangle["value"]:
            jh = mangle["value"]["map"]["key"]["jhash"]
            fields = [p["payload"]["field"] for p in jh["expr"]["concat"]]
            bucket = kernel_bucket(packet[fields[0]], packet[fields[1]], jh["seed"], jh["mod"])
            return dict(map(tuple, mangle["value"]["map"]["data"]["set"]))[bucket]
    return None


class ListenGrammarTests(SynchronousTestCase):
    def test_full_item(self):
        t = parse_traffic("iface:eth0:saddr=198.18.1.0/24+198.18.5.7:daddr=198.18.9.0/24"
                          ":proto=tcp+udp:dport=80+8000-8080")
        self.assertEqual(t.interface, "eth0")
        self.assertEqual(t.saddr, (ipaddress.ip_network("198.18.1.0/24"),
                                   ipaddress.ip_network("198.18.5.7/32")))
        self.assertEqual(t.daddr, (ipaddress.ip_network("198.18.9.0/24"),))
        self.assertEqual(parse_traffic("iface:e:daddr=[2001:db8::]/64").daddr,
                         (ipaddress.ip_network("2001:db8::/64"),))
        with self.assertRaises(ValueError):
            parse_traffic("iface:e:saddr=10.0.0.0/8:daddr=[2001:db8::]/64")
        self.assertEqual(t.protocols, (6, 17))
        self.assertEqual(t.dport, ((80, 80), (8000, 8080)))

    def test_errors_say_what_is_wrong(self):
        for text, words in [("tcp:80", "protocol routed takes iface:NAME"),
                            ("iface:eth0:dport=80", "ports need proto"),
                            ("iface:eth0:daddr=300.1.1.1", "is not an address"),
                            ("iface:eth0:proto=tcpx", "is not a protocol"),
                            ("iface:eth0:proto=tcp:dport=90-80", "low to high"),
                            ("iface:eth0:colour=red", "unknown option"),
                            ("iface:eth0:proto=tcp:proto=udp", "given twice"),
                            ("iface:this-name-is-too-long", "not an interface name")]:
            with self.assertRaises(ValueError) as cm:
                parse_traffic(text)
            self.assertIn(words, str(cm.exception), text)

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=60))
    def test_anything_parses_or_is_a_value_error(self, text):
        try:
            parse_traffic(text)
        except ValueError:
            pass


def plan(scheduler="symmetric-hash", last_hop=False, live=(True, True), order=None,
         hops_addresses=("198.18.2.2", "198.18.2.6"), seed=7, devices=("a-fw1", "a-fw2")):
    from lbframe.schedulers.symmetric_hash import bucket_table

    class M:
        def __init__(self, name, eligible):
            self.name, self.weight, self.eligible, self.backup = name, 1, eligible, False

    hops = tuple(rs.NextHop(f"fw{i + 1}", a, 4, devices[i], i + 1, live=live[i])
                 for i, a in enumerate(hops_addresses))
    table = tuple(m.name for m in bucket_table([M(h.name, h.live) for h in hops]))
    return rs.VirtualPlan(0, "out", (parse_traffic("iface:a-cli:daddr=198.18.9.0/24"),),
                          scheduler, hops, hash_order=order or "source-destination",
                          seed=seed, last_hop=last_hop, buckets=((4, table),) if table else ())


class RulesetTests(SynchronousTestCase):
    def test_the_table_is_replaced_in_one_transaction(self):
        commands = rs.ruleset([plan()])["nftables"]
        table = {"table": {"family": "inet", "name": "lbframe"}}
        self.assertEqual(commands[:3], [{"add": table}, {"delete": table}, {"add": table}])
        self.assertEqual(rs.removal()["nftables"], [{"add": table}, {"delete": table}])

    def test_hash_is_stateless_over_the_ordered_pair(self):
        rules = rules_of(rs.ruleset([plan()]))
        steer = rules[0]
        self.assertIn({"match": {"op": "==", "left": {"meta": {"key": "iifname"}},
                                 "right": "a-cli"}}, steer)
        jhash = next(find(steer, "jhash"))
        self.assertEqual([p["payload"]["field"] for p in jhash["expr"]["concat"]],
                         ["saddr", "daddr"])
        self.assertEqual((jhash["mod"], jhash["seed"]), (BUCKETS, 7))
        self.assertEqual(list(find(steer, "ct")), [], "HASH keeps no conntrack state")
        other = rules_of(rs.ruleset([plan(order="destination-source")]))[0]
        self.assertEqual([p["payload"]["field"] for p in next(find(other, "jhash"))["expr"]["concat"]],
                         ["daddr", "saddr"])

    def test_own_addresses_are_never_taken(self):
        steer = rules_of(rs.ruleset([plan()]))[0]
        self.assertIn({"match": {"op": "!=", "left": {"fib": {"result": "type", "flags": ["daddr"]}},
                                 "right": "local"}}, steer)

    def test_a_dead_next_hop_leaves_the_map(self):
        steer = rules_of(rs.ruleset([plan(live=(False, True))]))[0]
        marks = {m for _, m in next(find(steer, "map"))["data"]["set"]}
        self.assertEqual(marks, {rs.mark_of(2)})

    def test_no_live_next_hop_drops(self):
        rules = rules_of(rs.ruleset([plan(live=(False, False))]))
        self.assertEqual(len(rules), 1)
        self.assertEqual(rules[0][-2:], [{"counter": "v0_drop"}, {"drop": None}])

    def test_last_hop_learns_the_arriving_link_and_pins(self):
        rules = rules_of(rs.ruleset([plan(last_hop=True)]))
        learn = rules[:2]
        for rule, (device, slot) in zip(learn, [("a-fw1", 1), ("a-fw2", 2)]):
            self.assertIn({"match": {"op": "==", "left": {"meta": {"key": "iifname"}},
                                     "right": device}}, rule)
            self.assertIn({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}},
                          rule)
            self.assertEqual(rule[-1], {"mangle": {"key": {"ct": {"key": "mark"}},
                                                   "value": rs.mark_of(slot)}})
        pin, follow = rules[2], rules[3]
        self.assertIn({"match": {"op": "!=", "left": {"ct": {"key": "mark"}},
                                 "right": {"set": [rs.mark_of(1), rs.mark_of(2)]}}}, pin)
        self.assertEqual(follow[-1], {"mangle": {"key": {"meta": {"key": "mark"}},
                                                 "value": {"ct": {"key": "mark"}}}})

    def test_last_hop_on_a_shared_link_needs_the_neighbour_mac(self):
        p = plan(last_hop=True, devices=("lan", "lan"))
        p = rs.VirtualPlan(p.index, p.name, p.traffic, p.scheduler,
                           (rs.NextHop("fw1", "198.18.2.2", 4, "lan", 1, mac="02:00:00:00:00:01"),
                            rs.NextHop("fw2", "198.18.2.3", 4, "lan", 2)),
                           last_hop=True, buckets=p.buckets)
        rules = rules_of(rs.ruleset([p]))
        learn = [r for r in rules if r[-1].get("mangle", {}).get("value") == rs.mark_of(1)
                 and r[-1]["mangle"]["key"] == {"ct": {"key": "mark"}}]
        self.assertEqual(len(learn), 1)
        self.assertIn({"match": {"op": "==", "left": {"payload": {"protocol": "ether",
                                                                  "field": "saddr"}},
                                 "right": "02:00:00:00:00:01"}}, learn[0])

    def test_round_robin_and_weighted_use_numgen(self):
        for scheduler, mode in (("round-robin", "inc"), ("weighted", "random")):
            rules = rules_of(rs.ruleset([plan(scheduler=scheduler)]))
            self.assertEqual(next(find(rules[0], "numgen"))["mode"], mode)

    def test_counters_per_next_hop(self):
        payload = rs.ruleset([plan()])
        names = [c["add"]["counter"]["name"] for c in payload["nftables"]
                 if "counter" in c.get("add", {})]
        self.assertEqual(names, ["v0_drop", "v0_1_pkts", "v0_1_flows", "v0_2_pkts", "v0_2_flows"])
        used = {c for rule in rules_of(payload) for c in find(rule, "counter")}
        self.assertEqual(used, {"v0_1_pkts", "v0_1_flows", "v0_2_pkts", "v0_2_flows"})


class AgreementTests(SynchronousTestCase):
    """LB-A (outside, takes client → server packets) and LB-B (inside, takes
    server → client packets) pick the same firewall, by name, for every pair:
    their next hops' addresses differ, their rules read the pair in opposite
    orders, and the result is the same."""

    def test_both_nodes_pick_the_same_firewall_for_both_directions(self):
        a = plan(hops_addresses=("198.18.2.2", "198.18.2.6"), devices=("a-fw1", "a-fw2"))
        b = plan(hops_addresses=("198.18.3.2", "198.18.3.6"), devices=("b-fw1", "b-fw2"),
                 order="destination-source")
        rule_a, rule_b = rules_of(rs.ruleset([a]))[0], rules_of(rs.ruleset([b]))[0]
        by_mark_a = {h.mark: h.name for h in a.hops}
        by_mark_b = {h.mark: h.name for h in b.hops}
        seen = set()
        for i in range(500):
            client, server = f"198.18.{1 + i % 7}.{i % 250 + 1}", f"198.18.9.{i % 13 + 1}"
            there = by_mark_a[evaluate_mark(rule_a, {"saddr": client, "daddr": server})]
            back = by_mark_b[evaluate_mark(rule_b, {"saddr": server, "daddr": client})]
            self.assertEqual(there, back, (client, server))
            seen.add(there)
        self.assertEqual(seen, {"fw1", "fw2"})

    def test_spread_over_10000_pairs(self):
        p = plan()
        rule = rules_of(rs.ruleset([p]))[0]
        counts = {1: 0, 2: 0}
        for i in range(10000):
            client = str(ipaddress.ip_address("198.18.0.0") + i * 7919 % 131072)
            server = f"198.18.9.{i % 200 + 1}"
            counts[evaluate_mark(rule, {"saddr": client, "daddr": server}) - rs.MARK_BASE] += 1
        for n in counts.values():
            self.assertLess(abs(n / 10000 - 0.5), 0.03, counts)

    def test_a_changed_set_moves_only_the_lost_member_s_share(self):
        names = ("fw1", "fw2", "fw3")
        from lbframe.schedulers.symmetric_hash import bucket_table

        class M:
            def __init__(self, name, eligible=True):
                self.name, self.weight, self.eligible, self.backup = name, 1, eligible, False

        before = [m.name for m in bucket_table([M(n) for n in names])]
        after = [m.name for m in bucket_table([M(n, n != "fw3") for n in names])]
        moved = sum(1 for x, y in zip(before, after) if x != y and x != "fw3")
        self.assertLess(moved / BUCKETS, 0.1)


class ListenerTests(SynchronousTestCase):
    def make(self, text=None, routing=None, check=lambda listener: None):
        site = parse_site(text or site_text(), "/tmp/site.ini")
        plugins = load_plugins(entry_points=False)
        clock = Clock()
        runtime = build_runtime(site, plugins, clock)
        self.nft = FakeNft()
        self.routing = routing or FakeRouting()
        self.programmer = Programmer(clock, nft=self.nft, routing=self.routing)
        proto = runtime.protocols["out"]
        proto.programmer, proto.kernel_checks = self.programmer, check
        listener = proto.make_service(runtime.balancers["out"], clock)
        self.addCleanup(lambda: listener.listening and listener.stop_listening())
        return runtime, listener, clock

    def test_provides_ilistener(self):
        _, listener, _ = self.make()
        verifyObject(IListener, listener)
        self.assertIsInstance(listener, RoutedVirtualServer)

    def test_start_programs_routes_then_rules(self):
        runtime, listener, _ = self.make()
        self.successResultOf(listener.start_listening())
        self.assertEqual(len(self.nft.applied), 1)
        self.assertEqual(self.routing.installed, {1: (4, "198.18.2.2", "a-fw1"),
                                                  2: (4, "198.18.2.6", "a-fw2")})
        self.assertEqual(listener.addresses(), [])
        self.assertEqual(listener.connection_count(), 0)
        # A second call answers with the first one's outcome, programming nothing more.
        self.successResultOf(listener.start_listening())
        self.assertEqual(len(self.nft.applied), 1)

    def test_member_down_and_back_reprograms_at_once(self):
        runtime, listener, _ = self.make()
        self.successResultOf(listener.start_listening())
        pool = runtime.pools["fws"]
        pool.set_admin(pool.members["fw1"], "disabled", "test")
        steer = rules_of(self.nft.applied[-1])[0]
        self.assertEqual({m for _, m in next(find(steer, "map"))["data"]["set"]},
                         {rs.mark_of(2)})
        pool.set_admin(pool.members["fw1"], "enabled", "test")
        steer = rules_of(self.nft.applied[-1])[0]
        self.assertEqual({m for _, m in next(find(steer, "map"))["data"]["set"]},
                         {rs.mark_of(1), rs.mark_of(2)})
        self.assertEqual(len(self.nft.applied), 3)

    def test_stop_removes_the_table_and_the_routes(self):
        runtime, listener, _ = self.make()
        self.successResultOf(listener.start_listening())
        self.successResultOf(listener.stop_listening())
        self.assertEqual(self.nft.applied[-1], rs.removal())
        self.assertEqual(self.routing.installed, {})
        # After the stop, state changes program nothing.
        pool = runtime.pools["fws"]
        pool.set_admin(pool.members["fw1"], "disabled", "test")
        self.assertEqual(len(self.nft.applied), 2)

    def test_unreachable_next_hop_is_a_listen_error(self):
        routing = FakeRouting({"198.18.2.2": "a-fw1"})
        _, listener, _ = self.make(routing=routing)
        failure = self.failureResultOf(listener.start_listening(), ListenError)
        self.assertEqual(str(failure.value), "virtual out: cannot listen on "
                         "iface:a-cli:daddr=198.18.9.0/24: next hop fw2 (198.18.2.6): "
                         "no route to 198.18.2.6")
        self.assertEqual(self.nft.applied, [])

    def test_failed_check_is_a_listen_error(self):
        _, listener, _ = self.make(check=lambda listener: "IPv4 forwarding is off")
        failure = self.failureResultOf(listener.start_listening(), ListenError)
        self.assertEqual(str(failure.value), "virtual out: cannot listen on "
                         "iface:a-cli:daddr=198.18.9.0/24: IPv4 forwarding is off")
        self.failureResultOf(listener.start_listening(), ListenError)
        self.assertEqual(self.nft.applied, [])

    def test_twistd_exits_when_a_check_fails(self):
        _, listener, _ = self.make(check=lambda listener: "IPv4 forwarding is off")
        with self.assertRaises(SystemExit) as cm:
            listener.privilegedStartService()
        self.assertEqual(str(cm.exception), "lbframe: virtual out: cannot listen on "
                         "iface:a-cli:daddr=198.18.9.0/24: IPv4 forwarding is off")
        with self.assertRaises(SystemExit):
            listener.startService()
        self.assertFalse(listener.running)

    def test_nft_refusal_is_a_listen_error(self):
        _, listener, _ = self.make()
        self.nft.fail = "Error: Could not process rule"
        failure = self.failureResultOf(listener.start_listening(), ListenError)
        self.assertIn("nftables refused the ruleset: Error: Could not process rule",
                      str(failure.value))
        self.assertFalse(listener.listening)

    def test_reconcile_applies_a_change_the_state_listeners_missed(self):
        runtime, listener, clock = self.make()
        self.successResultOf(listener.start_listening())
        pool = runtime.pools["fws"]
        # A weight change fires no state listener; the reconcile loop sees it.
        pool.set_weight(pool.members["fw2"], 0)
        self.assertEqual(len(self.nft.applied), 1)
        clock.advance(1.0)
        self.assertEqual(len(self.nft.applied), 2)
        clock.advance(1.0)
        self.assertEqual(len(self.nft.applied), 2, "no change, nothing applied")

    def test_a_refused_change_is_retried_until_it_is_in(self):
        runtime, listener, clock = self.make()
        self.successResultOf(listener.start_listening())
        self.nft.fail = "Error: netlink: Resource busy"
        pool = runtime.pools["fws"]
        pool.set_admin(pool.members["fw1"], "disabled", "test")
        self.assertEqual(self.programmer.last_error, "Error: netlink: Resource busy")
        clock.advance(1.0)
        self.assertEqual(len(self.nft.applied), 1)
        self.nft.fail = None
        clock.advance(1.0)
        self.assertEqual(len(self.nft.applied), 2)
        self.assertIsNone(self.programmer.last_error)
        steer = rules_of(self.nft.applied[-1])[0]
        self.assertEqual({m for _, m in next(find(steer, "map"))["data"]["set"]}, {rs.mark_of(2)})

    def test_counters_carried_over_replacements(self):
        runtime, listener, clock = self.make()
        self.successResultOf(listener.start_listening())
        self.nft.values = {"v0_1_pkts": (10, 1000), "v0_1_flows": (2, 120)}
        clock.advance(2.0)
        self.assertEqual(listener.next_hop_counters()["fw1"],
                         {"packets": 10, "bytes": 1000, "flows": 2})
        pool = runtime.pools["fws"]
        pool.set_admin(pool.members["fw2"], "disabled", "test")  # replaces the table
        self.nft.values = {"v0_1_pkts": (5, 500)}
        clock.advance(2.0)
        self.assertEqual(listener.next_hop_counters()["fw1"],
                         {"packets": 15, "bytes": 1500, "flows": 2})

    def test_last_hop_profile_and_hash_order_reach_the_plan(self):
        text = site_text(virtual_extra="persistence = lh\nhash_order = destination-source",
                         pool_extra="hash_seed = 0x1234")
        _, listener, _ = self.make(text)
        self.successResultOf(listener.start_listening())
        p = self.programmer.applied[0]
        self.assertEqual((p.last_hop, p.hash_order, p.seed), (True, "destination-source", 0x1234))


class ConfigTests(SynchronousTestCase):
    def build(self, text):
        site = parse_site(text, "/tmp/site.ini")
        return build_runtime(site, load_plugins(entry_points=False), Clock())

    def error(self, text) -> str:
        with self.assertRaises(ConfigError) as cm:
            self.build(text)
        return str(cm.exception)

    def test_valid(self):
        runtime = self.build(site_text())
        self.assertIsInstance(runtime.protocols["out"], RoutedProtocol)

    def test_user_space_schedulers_are_refused(self):
        self.assertIn("scheduler least-connections, which picks per connection in user space",
                      self.error(site_text(scheduler="least-connections")))

    def test_bad_listen_points_at_listen(self):
        message = self.error(site_text().replace("iface:a-cli:daddr=198.18.9.0/24", "tcp:80"))
        self.assertIn("listen", message)
        self.assertIn("protocol routed takes iface:NAME", message)

    def test_unknown_key_and_bad_hash_order(self):
        self.assertIn("unknown key 'colour' for protocol routed",
                      self.error(site_text(virtual_extra="colour = red")))
        self.assertIn("hash_order is source-destination or destination-source",
                      self.error(site_text(virtual_extra="hash_order = up")))
        self.assertIn("hash_seed must be a number",
                      self.error(site_text(pool_extra="hash_seed = x")))

    def test_other_persistence_is_refused(self):
        text = site_text(virtual_extra="persistence = sip") + "\n[persistence sip]\nmethod = source-ip\n"
        self.assertIn("takes last-hop only", self.error(text))

    def test_member_with_a_port_is_refused(self):
        self.assertIn("has a port", self.error(site_text().replace("198.18.2.6", "198.18.2.6:80")))

    def test_portless_member_refused_for_tcp(self):
        text = "[virtual web]\nlisten = tcp:8080\npool = p\n[pool p]\nmember a = 192.0.2.1\n"
        self.assertIn("member a: bad address '192.0.2.1' (missing port: use HOST:PORT)",
                      self.error(text))
        text = "[virtual web]\nlisten = tcp:8080\npool = p\n[pool p]\nmember a = ::1:8080\n"
        self.assertIn("write IPv6 addresses in brackets", self.error(text))
        v6 = self.build(site_text().replace("198.18.2.6", "[2001:db8::6]"))
        self.assertEqual(v6.pools["fws"].members["fw2"].spec.address.host, "2001:db8::6")


class CheckTests(SynchronousTestCase):
    def test_forwarding(self):
        self.assertIn("sysctl -w net.ipv4.ip_forward=1",
                      checks.check_forwarding({4}, read=lambda path: "0"))
        self.assertIsNone(checks.check_forwarding({4}, read=lambda path: "1"))
        self.assertIn("net.ipv6.conf.all.forwarding=1",
                      checks.check_forwarding({6}, read=lambda path: "0"))

    def test_rp_filter(self):
        values = {"/proc/sys/net/ipv4/conf/all/rp_filter": "0",
                  "/proc/sys/net/ipv4/conf/a-fw1/rp_filter": "2",
                  "/proc/sys/net/ipv4/conf/a-fw2/rp_filter": "1"}
        why = checks.check_rp_filter(["a-fw1", "a-fw2"], read=values.get)
        self.assertIn("strict rp_filter on a-fw2", why)
        values["/proc/sys/net/ipv4/conf/a-fw2/rp_filter"] = "2"
        self.assertIsNone(checks.check_rp_filter(["a-fw1", "a-fw2"], read=values.get))
        values["/proc/sys/net/ipv4/conf/all/rp_filter"] = "1"
        values["/proc/sys/net/ipv4/conf/a-fw1/rp_filter"] = "0"
        self.assertIn("net.ipv4.conf.all.rp_filter = 1",
                      checks.check_rp_filter(["a-fw1", "a-fw2"], read=values.get))
        # One link: no other path, nothing to break.
        self.assertIsNone(checks.check_rp_filter(["a-fw1"], read=values.get))

    def test_privileges_and_nft(self):
        self.assertIn("needs root or CAP_NET_ADMIN", checks.check_privileges(euid=1000, caps=0))
        self.assertIsNone(checks.check_privileges(euid=1000, caps=1 << 12))
        self.assertIsNone(checks.check_privileges(euid=0, caps=0))
        self.assertIn("apt-get install nftables", checks.check_nft(which=lambda name: None))
        self.assertIsNone(checks.check_nft(which=lambda name: "/usr/sbin/nft"))


class StatusTests(SynchronousTestCase):
    """The next hops' nftables counters in /api/status, /metrics and the page."""

    def test_status_metrics_and_page(self):
        from lbframe.admin.metrics import make_registry, render_metrics
        from lbframe.admin.page import render_page
        from lbframe.admin.status import site_status
        from lbframe.protocols.routed import program

        maker = ListenerTests("test_provides_ilistener")
        runtime, listener, clock = maker.make()
        self.addCleanup(listener.stop_listening)
        self.patch(program, "_shared", {1: maker.programmer})
        self.successResultOf(listener.start_listening())
        maker.nft.values = {"v0_1_pkts": (30, 3000), "v0_1_flows": (3, 180),
                            "v0_2_pkts": (7, 700), "v0_drop": (0, 0)}
        clock.advance(2.0)
        status = site_status(runtime)["virtuals"]["out"]
        self.assertEqual(status["next_hops"], {
            "fw1": {"packets": 30, "bytes": 3000, "flows": 3},
            "fw2": {"packets": 7, "bytes": 700, "flows": 0}})
        self.assertEqual(status["dropped_packets"], 0)
        metrics = render_metrics(make_registry(lambda: runtime)).decode()
        self.assertIn('lbframe_next_hop_packets_total{member="fw1",virtual="out"} 30.0', metrics)
        self.assertIn('lbframe_next_hop_flows_total{member="fw1",virtual="out"} 3.0', metrics)
        page = render_page(site_status(runtime))
        if isinstance(page, bytes):
            page = page.decode()
        self.assertIn('data-next-hop="fw1"', page)


class BackupTests(SynchronousTestCase):
    def test_backup_next_hop_only_when_no_other_is_live(self):
        text = site_text(scheduler="round-robin").replace(
            "member fw2 = 198.18.2.6", "member fw2 = 198.18.2.6 backup")
        maker = ListenerTests("test_provides_ilistener")
        runtime, listener, _ = maker.make(text)
        self.addCleanup(listener.stop_listening)
        self.successResultOf(listener.start_listening())
        live = {h.name for h in maker.programmer.applied[0].hops if h.live}
        self.assertEqual(live, {"fw1"})
        pool = runtime.pools["fws"]
        pool.set_admin(pool.members["fw1"], "disabled", "test")
        live = {h.name for h in maker.programmer.applied[0].hops if h.live}
        self.assertEqual(live, {"fw2"})
