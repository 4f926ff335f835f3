"""The nftables ruleset of the routed virtual servers, as libnftables JSON.

Pure functions of a plan (what :mod:`lbframe.protocols.routed.program`
works out from the pools and the kernel): no I/O here, so tests can check
the generated JSON rule by rule.

One table of lbframe's own (``inet lbframe``) holds everything, and every
change replaces it whole in one transaction (``add table; delete table;
add table …`` in a single ``nft -j -f -``): the kernel swaps the old rules
for the new ones atomically, so no packet ever sees half a ruleset.

Per virtual server and address family, in one ``prerouting`` chain at
mangle priority (before the routing decision):

1. ``last-hop`` persistence: a flow whose first packet arrives from a next
   hop's link gets that next hop's mark in its conntrack entry
   (``ct state new ct mark set M``);
2. steering of the packets the virtual server takes (``listen``):

   - stateless HASH (``symmetric-hash`` without ``last-hop``): every packet
     gets ``meta mark set jhash <outside> . <inside> mod 251 seed S map
     {bucket: mark}``; both LB nodes compute the same bucket;
   - pinned (``last-hop``, or ``round-robin``/``weighted``): a flow without
     a live next hop's mark in its conntrack entry gets one (the
     scheduler's pick: the hash, ``numgen inc`` or ``numgen random``), then
     ``meta mark set ct mark``;
   - no live next hop: the packets are dropped (fail closed: never around
     the firewalls);
3. per next hop, counters of packets and of new flows steered to it.

The packet mark selects the next hop's routing table (policy routing, see
:mod:`lbframe.protocols.routed.routing`).

Each kind of plan writes its own rules: a plan has ``index``, ``name``,
``hops`` (its counters), ``routes`` (the next hops needing policy routing)
and ``rules()`` (chain name → its rules, in order; the chain's hook is in
:data:`CHAINS`). :func:`ruleset` only assembles them, so it knows no plan
kind but its own :class:`VirtualPlan` (``protocol = nat``'s ``NatPlan``
lives in :mod:`lbframe.protocols.routed.nat`, which imports this module).
"""

from __future__ import annotations

import attrs

from lbframe.protocols.routed.traffic import Traffic

TABLE = "lbframe"
FAMILY = "inet"
CHAIN = "prerouting"
#: protocol nat: the dnat rules, and the per-member counters after translation
NAT_CHAIN = "nat_pre"
COUNT_CHAIN = "counting"
#: marks are MARK_BASE + slot (slot 1..255); "LB" in the high half
MARK_BASE = 0x4C420000
#: routing tables and rule priorities: BASE + slot
ROUTE_TABLE_BASE = 4200
RULE_PRIORITY_BASE = 4200
MAX_SLOTS = 255
#: the base chains of lbframe's table: name → (type, hook, priority). The
#: routed steering chain is always there; the others when a plan uses them.
CHAINS = {CHAIN: ("filter", "prerouting", -150),
          NAT_CHAIN: ("nat", "prerouting", -100),
          COUNT_CHAIN: ("filter", "forward", 0)}
_NFPROTO = {4: "ipv4", 6: "ipv6"}
_IP = {4: "ip", 6: "ip6"}


def mark_of(slot: int) -> int:
    return MARK_BASE + slot


@attrs.frozen
class NextHop:
    """A pool member resolved on this node: its link and its slot."""

    name: str
    address: str
    family: int
    device: str
    slot: int
    live: bool = True
    #: the neighbour's MAC, needed by last-hop when several next hops share a link
    mac: str | None = None

    @property
    def mark(self) -> int:
        return mark_of(self.slot)


@attrs.frozen
class VirtualPlan:
    """What one routed virtual server asks of the kernel."""

    index: int
    name: str
    traffic: tuple[Traffic, ...]
    scheduler: str  # "symmetric-hash", "round-robin", "weighted"
    hops: tuple[NextHop, ...]
    hash_order: str = "source-destination"
    seed: int = 0
    last_hop: bool = False
    #: family → bucket → member name (symmetric-hash and weighted)
    buckets: tuple[tuple[int, tuple[str, ...]], ...] = ()

    @property
    def routes(self) -> tuple[NextHop, ...]:
        """The next hops that need policy routing."""
        return self.hops

    @property
    def stateless(self) -> bool:
        return self.scheduler == "symmetric-hash" and not self.last_hop

    def buckets_of(self, family: int) -> tuple[str, ...]:
        return dict(self.buckets).get(family, ())

    def rules(self) -> dict[str, list[list[dict]]]:
        """Chain name → this plan's rules in it."""
        return {CHAIN: virtual_rules(self)}


def counter_name(plan: VirtualPlan, hop: NextHop, what: str) -> str:
    """``v<index>_<slot>_<what>``: what is ``pkts`` or ``flows``."""
    return f"v{plan.index}_{hop.slot}_{what}"


def drop_counter_name(plan: VirtualPlan) -> str:
    return f"v{plan.index}_drop"


# -- expressions -------------------------------------------------------------

def _match(left, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> dict:
    return {"payload": {"protocol": protocol, "field": field}}


def _set(items) -> dict | object:
    items = list(items)
    return items[0] if len(items) == 1 else {"set": items}


def _net(net) -> object:
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _ports(ranges) -> list:
    return [low if low == high else {"range": [low, high]} for low, high in ranges]


def traffic_match(traffic: Traffic, family: int) -> list[dict] | None:
    """The match expressions of one ``listen`` item for one family, or None
    when the item takes no packet of that family."""
    if family not in traffic.families:
        return None
    ip = _IP[family]
    exprs = [_match(_meta("iifname"), traffic.interface),
             _match(_meta("nfproto"), _NFPROTO[family]),
             # never the node's own packets (pings to it, its admin port)
             _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local", "!=")]
    for field, nets in (("saddr", traffic.saddr), ("daddr", traffic.daddr)):
        nets = [n for n in nets if n.version == family]
        if nets:
            exprs.append(_match(_payload(ip, field), _set(_net(n) for n in nets)))
    if traffic.protocols:
        exprs.append(_match(_meta("l4proto"), _set(traffic.protocols)))
    for field, ranges in (("sport", traffic.sport), ("dport", traffic.dport)):
        if ranges:
            exprs.append(_match(_payload("th", field), _set(_ports(ranges))))
    return exprs


def hash_key(plan: VirtualPlan, family: int) -> dict:
    """``jhash <outside> . <inside> mod N seed S``: the ordered pair, read as
    (source, destination) or (destination, source) per ``hash_order``."""
    ip = _IP[family]
    fields = ("saddr", "daddr") if plan.hash_order == "source-destination" else ("daddr", "saddr")
    buckets = plan.buckets_of(family)
    return {"jhash": {"mod": len(buckets), "seed": plan.seed, "offset": 0,
                      "expr": {"concat": [_payload(ip, f) for f in fields]}}}


def choice(plan: VirtualPlan, family: int, live: list[NextHop]) -> dict:
    """The expression whose value is the chosen next hop's mark."""
    marks = {h.name: h.mark for h in live}
    if plan.scheduler == "round-robin":
        key = {"numgen": {"mode": "inc", "mod": len(live), "offset": 0}}
        pairs = [[i, h.mark] for i, h in enumerate(live)]
    else:
        buckets = plan.buckets_of(family)
        if plan.scheduler == "weighted":
            key = {"numgen": {"mode": "random", "mod": len(buckets), "offset": 0}}
        else:
            key = hash_key(plan, family)
        pairs = [[i, marks[name]] for i, name in enumerate(buckets)]
    return {"map": {"key": key, "data": {"set": pairs}}}


def _mangle(key: dict, value) -> dict:
    return {"mangle": {"key": key, "value": value}}


def virtual_rules(plan: VirtualPlan) -> list[list[dict]]:
    """The rules (lists of expressions) of one virtual server, in order."""
    rules: list[list[dict]] = []
    if plan.last_hop:
        shared = {h.device for h in plan.hops
                  if sum(1 for o in plan.hops if o.device == h.device) > 1}
        for hop in plan.hops:
            learn = [_match(_meta("iifname"), hop.device),
                     _match(_meta("nfproto"), _NFPROTO[hop.family])]
            if hop.device in shared:
                if hop.mac is None:
                    continue  # cannot tell this neighbour from the others yet
                learn.append(_match(_payload("ether", "saddr"), hop.mac))
            learn += [_match({"ct": {"key": "state"}}, "new", "in"),
                      _mangle({"ct": {"key": "mark"}}, hop.mark)]
            rules.append(learn)
    for family in (4, 6):
        hops = [h for h in plan.hops if h.family == family]
        if not hops:
            continue
        live = [h for h in hops if h.live]
        if plan.scheduler != "round-robin" and not plan.buckets_of(family):
            live = []
        for traffic in plan.traffic:
            base = traffic_match(traffic, family)
            if base is None:
                continue
            if not live:
                rules.append(base + [{"counter": drop_counter_name(plan)}, {"drop": None}])
                continue
            if plan.stateless:
                rules.append(base + [_mangle(_meta("mark"), choice(plan, family, live))])
            else:
                live_marks = _set(h.mark for h in live)
                if not isinstance(live_marks, dict):
                    live_marks = {"set": [live_marks]}
                rules.append(base + [_match({"ct": {"key": "mark"}}, live_marks, "!="),
                                     _mangle({"ct": {"key": "mark"}}, choice(plan, family, live))])
                rules.append(base + [_mangle(_meta("mark"), {"ct": {"key": "mark"}})])
            for hop in live:
                marked = _match(_meta("mark"), hop.mark)
                rules.append(base + [marked, {"counter": counter_name(plan, hop, "pkts")}])
                rules.append(base + [_match({"ct": {"key": "state"}}, "new", "in"), marked,
                                     {"counter": counter_name(plan, hop, "flows")}])
    return rules


def counter_names(plan: VirtualPlan) -> list[str]:
    names = [drop_counter_name(plan)]
    for hop in plan.hops:
        names += [counter_name(plan, hop, "pkts"), counter_name(plan, hop, "flows")]
    return names


def _table() -> dict:
    return {"table": {"family": FAMILY, "name": TABLE}}


def ruleset(plans) -> dict:
    """The whole transaction that replaces lbframe's table with ``plans``'s
    rules (each plan, routed or nat, writes its own: ``plan.rules()``)."""
    commands = [{"add": _table()}, {"delete": _table()}, {"add": _table()}]
    for plan in plans:
        for name in counter_names(plan):
            commands.append({"add": {"counter": {"family": FAMILY, "table": TABLE,
                                                 "name": name}}})
    # chain name → its rules, in the order the chains are first used
    rules: dict[str, list] = {CHAIN: []}
    for plan in plans:
        for name, chain_rules in plan.rules().items():
            rules.setdefault(name, []).extend(chain_rules)
    for name in rules:
        kind, hook, prio = CHAINS[name]
        commands.append({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": name,
                                           "type": kind, "hook": hook, "prio": prio,
                                           "policy": "accept"}}})
    for name, chain_rules in rules.items():
        for expr in chain_rules:
            commands.append({"add": {"rule": {"family": FAMILY, "table": TABLE,
                                              "chain": name, "expr": expr}}})
    return {"nftables": commands}


def removal() -> dict:
    """The transaction that removes lbframe's table (whether it exists or not)."""
    return {"nftables": [{"add": _table()}, {"delete": _table()}]}
