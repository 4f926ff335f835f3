"""``protocol = routed``: a virtual server that steers packets to next hops
instead of proxying connections (F9, F11: firewall load balancing, the
"sandwich"; see docs/sandwich.md).

lbframe is the control plane and Linux the data plane: the virtual server's
``listen`` names the packets it takes (an interface, optionally addresses,
protocols and ports: :mod:`.traffic`), its pool's members are next hops
(addresses on this node's links, written without a port), and lbframe
programs nftables (:mod:`.ruleset`, :mod:`.program`) and policy routing
(:mod:`.routing`) so that the kernel forwards each packet to the next hop
the scheduler (``symmetric-hash``, ``round-robin``, ``weighted``) or the
``last-hop`` persistence chose. No packet passes through Python; nothing is
translated (no NAT: only the next hop, i.e. the destination MAC, changes).

Health: the pool's monitors (``icmp`` to the firewall, or a probe through
it) take a dead next hop out of the kernel's map at once; it returns when
the monitor says so.
"""

from __future__ import annotations

from zope.interface import implementer

from lbframe.errors import OptionError
from lbframe.interfaces import IProtocol
from lbframe.protocols.routed import program as program_module
from lbframe.protocols.routed.listener import RoutedVirtualServer
from lbframe.protocols.routed.traffic import parse_traffic
from lbframe.schedulers.symmetric_hash import parse_seed

#: schedulers the kernel can run, with what it runs them with
SCHEDULERS = ("symmetric-hash", "round-robin", "weighted")
HASH_ORDERS = ("source-destination", "destination-source")
OPTIONS = ("hash_order",)


@implementer(IProtocol)
class RoutedProtocol:
    """Validates a ``protocol = routed`` virtual server and makes its listener."""

    def __init__(self, virtual, options, site=None, programmer=None, kernel_checks=None):
        for key in options or {}:
            if key not in OPTIONS:
                raise OptionError(key, f"unknown key {key!r} for protocol routed "
                                       f"(it takes {', '.join(OPTIONS)})")
        self.name = virtual.name
        self.listen = virtual.listen
        try:
            self.traffic = tuple(parse_traffic(item) for item in virtual.listen)
        except ValueError as exc:
            raise OptionError("listen", str(exc)) from None
        self.hash_order = (options or {}).get("hash_order", "source-destination")
        if self.hash_order not in HASH_ORDERS:
            raise OptionError("hash_order", f"hash_order is {' or '.join(HASH_ORDERS)}, "
                                            f"not {self.hash_order!r}")
        if virtual.sorry_pool is not None:
            raise OptionError("sorry", "protocol routed has no sorry pool: with no live next "
                                       "hop its packets are dropped (fail closed)")
        self.last_hop = False
        self.scheduler = "round-robin"
        self.seed = parse_seed({})
        if site is not None:
            pool = site.pools.get(virtual.pool)
            if pool is not None:
                if pool.scheduler not in SCHEDULERS:
                    raise OptionError("pool", f"pool {pool.name} uses scheduler {pool.scheduler}, "
                                              "which picks per connection in user space; protocol "
                                              f"routed runs {', '.join(SCHEDULERS)} in the kernel")
                self.scheduler = pool.scheduler
                self.seed = parse_seed(pool.options) if pool.scheduler == "symmetric-hash" \
                    else self.seed
                for m in pool.members:
                    if m.address.port != 0:
                        raise OptionError("pool", f"pool {pool.name}: member {m.name} = "
                                                  f"{m.address} has a port; the members of a "
                                                  "routed pool are next hops, write the address "
                                                  "alone")
            profile = site.persistence.get(virtual.persistence) if virtual.persistence else None
            if profile is not None:
                if profile.method != "last-hop":
                    raise OptionError("persistence", f"persistence {profile.name} uses method "
                                                     f"{profile.method}; protocol routed takes "
                                                     "last-hop only (kept in conntrack)")
                self.last_hop = True
        self.programmer = programmer
        self.kernel_checks = kernel_checks

    def make_service(self, balancer, reactor):
        programmer = self.programmer or program_module.shared(reactor)
        return RoutedVirtualServer(balancer, self, programmer, kernel_checks=self.kernel_checks)
