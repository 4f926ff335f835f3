"""``protocol = nat``: L4 load balancing by the kernel's NAT (F4 L4, F9).

The virtual server's ``listen`` is the VIP and port (``tcp:80:interface=VIP``,
``udp:53:interface=VIP``); its members are ``ADDRESS:PORT``. lbframe puts
one ``dnat`` rule per listen item in its nftables table (chain ``nat_pre``,
hook prerouting, priority dstnat): the first packet of each connection gets
its destination rewritten to the chosen member, and conntrack rewrites the
rest of the connection both ways — replies leave lbframe with the VIP as
their source. Members see the client's real address, so their route back to
the clients must go through lbframe (their default gateway, the seed's
"flat routed" and "NAT" cases; see docs/routed.md for bounce-back).

Why nftables DNAT and not IPVS: it is the same table, the same transaction
and the same tooling (``nft``) as the routed sandwich; it needs no
``ip_vs`` module and no second netlink API; and conntrack already keeps
every connection on its member, so a member leaving the map drains (its
connections finish, new ones go elsewhere). IPVS would add per-connection
schedulers (least-connections) that nftables lacks; we do not offer those.

Schedulers: ``round-robin`` (``numgen inc``), ``weighted`` (``numgen
random`` over a weighted bucket table) and ``source-hash`` (``jhash ip
saddr``: a client keeps its member while the set of members does not
change); ``persistence`` with method ``source-ip`` does the same as
``source-hash``. The nftables counters of new connections and packets per
member show in the status.
"""

from __future__ import annotations

import ipaddress

from lbframe.config.values import split_endpoint
from lbframe.errors import ListenError, OptionError
from lbframe.protocols.routed import program
from lbframe.protocols.routed import routing as checks
from lbframe.protocols.routed.listener import RoutedVirtualServer, live_member
from lbframe.protocols.routed.ruleset import (COUNT_CHAIN, NAT_CHAIN, NextHop, counter_name,
                                              drop_counter_name)
from lbframe.schedulers.symmetric_hash import BUCKETS, DEFAULT_SEED, bucket_table

import attrs

SCHEDULERS = ("round-robin", "weighted", "source-hash")
_POSITIONAL = {"tcp": ("port", "interface", "backlog"), "tcp6": ("port", "backlog", "interface"),
               "udp": ("port", "interface")}


@attrs.frozen
class Vip:
    protocol: str  # "tcp" or "udp"
    address: str
    family: int
    port: int


def parse_vip(text: str) -> Vip:
    """``tcp:PORT:interface=VIP``, ``tcp6:…`` or ``udp:PORT:interface=VIP``."""
    kind, args, kw = split_endpoint(text)
    if kind not in _POSITIONAL:
        raise ValueError(f"bad listen {text!r}: protocol nat takes tcp:PORT:interface=VIP "
                         "or udp:PORT:interface=VIP")
    named = dict(zip(_POSITIONAL[kind], args))
    named.update(kw)
    host = named.get("interface", "")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad listen {text!r}: the VIP (interface=) must be an IP "
                         "address: the kernel translates packets sent to it") from None
    if address.is_unspecified:
        raise ValueError(f"bad listen {text!r}: name the VIP, not {host}")
    port = int(named.get("port", "0") or 0)
    if not 1 <= port <= 65535:
        raise ValueError(f"bad listen {text!r}: the port must be 1-65535")
    return Vip("udp" if kind == "udp" else "tcp", str(address), address.version, port)


@attrs.frozen
class NatPlan:
    """What one nat virtual server asks of the kernel."""

    index: int
    name: str
    vips: tuple[Vip, ...]
    scheduler: str
    #: every member, as a NextHop (``slot`` numbers its counters; ``device`` unused)
    hops: tuple[NextHop, ...]
    ports: tuple[tuple[str, int], ...]  # member name → port
    sticky: bool = False
    seed: int = DEFAULT_SEED
    buckets: tuple[tuple[int, tuple[str, ...]], ...] = ()

    #: no policy routing: replies find their way by conntrack
    routes: tuple = ()

    def buckets_of(self, family: int) -> tuple[str, ...]:
        return dict(self.buckets).get(family, ())

    def rules(self) -> dict[str, list]:
        """Chain name → this plan's rules in it: the dnat rules, and the
        per-member counters after translation (both chains even when empty)."""
        dnat, count = nat_rules(self, drop_counter_name(self), counter_name)
        return {NAT_CHAIN: dnat, COUNT_CHAIN: count}


def _match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def _payload(protocol, field):
    return {"payload": {"protocol": protocol, "field": field}}


_IP = {4: "ip", 6: "ip6"}


def nat_rules(plan: NatPlan, drop_counter: str, counter_name) -> tuple[list, list]:
    """(rules of the nat chain, rules of the counting chain)."""
    ports = dict(plan.ports)
    dnat, count = [], []
    for vip in plan.vips:
        ip = _IP[vip.family]
        base = [_match(_payload(ip, "daddr"), vip.address),
                _match({"meta": {"key": "l4proto"}}, vip.protocol),
                _match(_payload("th", "dport"), vip.port)]
        live = [h for h in plan.hops if h.live and h.family == vip.family]
        target = {h.name: {"concat": [h.address, ports[h.name]]} for h in live}
        buckets = plan.buckets_of(vip.family)
        if not live or (plan.scheduler != "round-robin" or plan.sticky) and not buckets:
            dnat.append(base + [{"counter": drop_counter}, {"drop": None}])
            continue
        if plan.sticky or plan.scheduler == "source-hash":
            key = {"jhash": {"mod": len(buckets), "seed": plan.seed, "offset": 0,
                             "expr": _payload(ip, "saddr")}}
            pairs = [[i, target[n]] for i, n in enumerate(buckets)]
        elif plan.scheduler == "weighted":
            key = {"numgen": {"mode": "random", "mod": len(buckets), "offset": 0}}
            pairs = [[i, target[n]] for i, n in enumerate(buckets)]
        else:
            key = {"numgen": {"mode": "inc", "mod": len(live), "offset": 0}}
            pairs = [[i, target[h.name]] for i, h in enumerate(live)]
        dnat.append(base + [{"dnat": {"family": ip, "addr": {"map": {
            "key": key, "data": {"set": pairs}}}}}])
        for hop in plan.hops:
            if hop.family != vip.family:
                continue
            member = [_match(_payload(ip, "daddr"), hop.address),
                      _match({"meta": {"key": "l4proto"}}, vip.protocol),
                      _match(_payload("th", "dport"), ports[hop.name]),
                      _match({"ct": {"key": "status"}}, "dnat", "in")]
            count.append(member + [{"counter": counter_name(plan, hop, "pkts")}])
            count.append(member + [_match({"ct": {"key": "state"}}, "new", "in"),
                                   {"counter": counter_name(plan, hop, "flows")}])
    return dnat, count


def make_plan(listener, index: int) -> NatPlan:
    proto = listener.protocol
    members = list(listener.balancer.pool.members.values())
    hops = tuple(NextHop(m.name, m.spec.address.host,
                         ipaddress.ip_address(m.spec.address.host).version,
                         "", i + 1, live=live_member(m, members))
                 for i, m in enumerate(members))
    buckets = ()
    if proto.scheduler != "round-robin" or proto.sticky:
        buckets = tuple(
            (family, tuple(m.name for m in bucket_table(
                [m for m, h in zip(members, hops) if h.family == family], BUCKETS)))
            for family in (4, 6) if any(h.family == family for h in hops))
        buckets = tuple((f, b) for f, b in buckets if b)
    return NatPlan(index, proto.name, proto.vips, proto.scheduler, hops,
                   tuple((m.name, m.spec.address.port) for m in members),
                   sticky=proto.sticky, buckets=buckets)


class NatProtocol:
    """Validates a ``protocol = nat`` virtual server and makes its listener."""

    def __init__(self, virtual, options, site=None, programmer=None, kernel_checks=None):
        for key in options or {}:
            raise OptionError(key, f"unknown key {key!r} for protocol nat")
        self.name = virtual.name
        self.listen = virtual.listen
        try:
            self.vips = tuple(parse_vip(item) for item in virtual.listen)
        except ValueError as exc:
            raise OptionError("listen", str(exc)) from None
        if virtual.sorry_pool is not None:
            raise OptionError("sorry", "protocol nat has no sorry pool: with no live member "
                                       "the VIP's new connections are dropped")
        self.scheduler = "round-robin"
        self.sticky = False
        if site is not None:
            pool = site.pools.get(virtual.pool)
            if pool is not None:
                if pool.scheduler not in SCHEDULERS:
                    raise OptionError("pool", f"pool {pool.name} uses scheduler {pool.scheduler}, "
                                              "which picks per connection in user space; protocol "
                                              f"nat runs {', '.join(SCHEDULERS)} in the kernel")
                self.scheduler = pool.scheduler
                for m in pool.members:
                    try:
                        ipaddress.ip_address(m.address.host)
                    except ValueError:
                        raise OptionError("pool", f"pool {pool.name}: member {m.name} must be an "
                                                  "IP address (the kernel does not resolve "
                                                  "names)") from None
                    if m.address.port == 0:
                        raise OptionError("pool", f"pool {pool.name}: member {m.name} needs a "
                                                  "port (ADDRESS:PORT)")
            profile = site.persistence.get(virtual.persistence) if virtual.persistence else None
            if profile is not None:
                if profile.method != "source-ip" or profile.mask not in (None, 32):
                    raise OptionError("persistence", f"persistence {profile.name}: protocol nat "
                                                     "takes method source-ip without mask (a "
                                                     "hash of the client address, in the kernel)")
                self.sticky = True
        self.programmer = programmer
        self.kernel_checks = kernel_checks

    def make_service(self, balancer, reactor):
        programmer = self.programmer or program.shared(reactor)
        return NatVirtualServer(balancer, self, programmer,
                                kernel_checks=self.kernel_checks or nat_kernel_checks)


class NatVirtualServer(RoutedVirtualServer):
    """The running nat virtual server: its dnat rules in lbframe's table."""

    def _resolve(self, strict: bool) -> None:
        pass

    def plan(self, index, slot_of):
        return make_plan(self, index) if self.listening else None


def nat_kernel_checks(listener) -> str | None:
    families = {v.family for v in listener.protocol.vips}
    return (checks.check_nft() or checks.check_privileges()
            or checks.check_forwarding(families))


__all__ = ["NatProtocol", "NatPlan", "parse_vip", "ListenError"]
