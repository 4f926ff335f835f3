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

import ipaddress

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbframe import hookimpl
from lbframe.errors import ListenError, OptionError
from lbframe.interfaces import IListener, IProtocol
from lbframe.protocols.routed import program as program_module
from lbframe.protocols.routed import routing as checks
from lbframe.protocols.routed.nat import NatProtocol
from lbframe.protocols.routed.ruleset import NextHop, VirtualPlan
from lbframe.protocols.routed.traffic import parse_traffic
from lbframe.schedulers.symmetric_hash import BUCKETS, bucket_table, parse_seed

log = Logger(namespace="lbframe.routed")

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


def live_member(member, members) -> bool:
    """Eligible, and not a ``backup`` while a member that is not is eligible."""
    if not member.eligible or member.weight <= 0:
        return False
    return not member.backup or not any(m.eligible and not m.backup and m.weight > 0
                                        for m in members)


def default_kernel_checks(listener) -> str | None:
    """The start-up checks, first failure's words (None when all pass)."""
    families = {h[1] for h in listener.resolved.values()} or {4}
    return (checks.check_nft() or checks.check_privileges()
            or checks.check_forwarding(families)
            or checks.check_rp_filter([h[2] for h in listener.resolved.values()]))


@implementer(IListener)
class RoutedVirtualServer(service.Service):
    """The running routed virtual server: its share of the kernel's rules."""

    def __init__(self, balancer, protocol: RoutedProtocol, programmer, kernel_checks=None):
        self.balancer = balancer
        self.protocol = protocol
        self.programmer = programmer
        self.kernel_checks = kernel_checks or default_kernel_checks
        self.name = f"virtual {protocol.name}"
        #: member name → (address, family, device, mac), from the last resolution
        self.resolved: dict[str, tuple] = {}
        self._started: defer.Deferred | None = None
        self._outcome = None
        self.listening = False
        self._watch(balancer)

    # -- pool state ------------------------------------------------------------

    def _watch(self, balancer) -> None:
        listeners = balancer.pool.on_state_change
        if self._state_changed not in listeners:
            listeners.append(self._state_changed)

    def _state_changed(self, pool, member, old, new, reason) -> None:
        if self.listening and self.balancer.pool.name == pool:
            self.programmer.request().addErrback(lambda f: None)  # logged by the programmer

    def _resolve(self, strict: bool) -> None:
        """Find each member's link; with ``strict``, the first failure is a ListenError."""
        for member in self.balancer.pool.members.values():
            address = member.spec.address.host
            family = ipaddress.ip_address(address).version
            try:
                device, mac = self.programmer.routing.resolve(address, family)
            except ValueError as exc:
                if strict:
                    raise ListenError(self.protocol.name, self.endpoint,
                                      f"next hop {member.name} ({address}): {exc}") from None
                continue
            self.resolved[member.name] = (address, family, device, mac)

    def plan(self, index: int, slot_of) -> VirtualPlan | None:
        if not self.listening:
            return None
        self._resolve(strict=False)
        pool = self.balancer.pool
        members = [m for m in pool.members.values() if m.name in self.resolved]
        devices = [self.resolved[m.name][2] for m in members]
        hops = []
        for member in members:
            address, family, device, mac = self.resolved[member.name]
            if devices.count(device) < 2:
                mac = None  # the link names the next hop; its MAC may come and go
            slot = slot_of((family, address, device))
            hops.append(NextHop(member.name, address, family, device, slot,
                                live=live_member(member, members), mac=mac))
        proto = self.protocol
        buckets = ()
        if proto.scheduler != "round-robin":
            buckets = tuple(
                (family, tuple(m.name for m in bucket_table(
                    [m for m in members if self.resolved[m.name][1] == family], BUCKETS)))
                for family in (4, 6) if any(self.resolved[m.name][1] == family for m in members))
        return VirtualPlan(index, proto.name, proto.traffic, proto.scheduler, tuple(hops),
                           hash_order=proto.hash_order, seed=proto.seed,
                           last_hop=proto.last_hop, buckets=buckets)

    # -- IListener -------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The ``listen`` items, for messages."""
        return ", ".join(self.protocol.listen)

    def start_listening(self) -> defer.Deferred:
        if self._started is None:
            self._started = self._start().addBoth(self._remember)
        return self._started_again()

    def _start(self) -> defer.Deferred:
        try:
            self._resolve(strict=True)
            why = self.kernel_checks(self)
            if why is not None:
                raise ListenError(self.protocol.name, self.endpoint, why)
        except ListenError as exc:
            return defer.fail(exc)
        self.listening = True
        d = self.programmer.add(self)

        def failed(f):
            self.listening = False
            self.programmer.remove(self).addErrback(lambda _: None)
            raise ListenError(self.protocol.name, self.endpoint,
                              f"nftables refused the ruleset: {f.getErrorMessage()}")

        return d.addErrback(failed)

    def _remember(self, result) -> None:
        """The outcome of the first start, kept for every later call."""
        self._outcome = result
        return None

    def _started_again(self) -> defer.Deferred:
        """A new Deferred with the first start's outcome (each caller its own)."""
        d = defer.Deferred()

        def relay(_):
            if isinstance(self._outcome, Failure):
                d.errback(self._outcome)
            else:
                d.callback(None)

        self._started.addCallback(relay)
        return d

    def _exit_if_refused(self) -> None:
        """A check that failed at once stops twistd as a failed bind does
        (SystemExit: twistd prints the message and exits 1, no traceback)."""
        if isinstance(self._outcome, Failure):
            raise SystemExit(f"lbframe: {self._outcome.getErrorMessage()}")

    def privilegedStartService(self):
        service.Service.privilegedStartService(self)
        self.start_listening().addErrback(lambda f: None)
        self._exit_if_refused()

    def startService(self):
        if isinstance(self._outcome, Failure):
            self._exit_if_refused()
        d = self.start_listening()
        # nft answers later: a refusal then is logged (the rules stay out).
        d.addErrback(lambda f: log.error("{error}", error=f.getErrorMessage(),
                                         lbframe_event="listener_failed"))
        self._exit_if_refused()
        service.Service.startService(self)

    def stopService(self):
        service.Service.stopService(self)
        return self.stop_listening()

    def addresses(self):
        return []

    def apply(self, balancer, protocol) -> None:
        self.set_balancer(balancer)
        self.set_protocol(protocol)

    def set_balancer(self, balancer) -> None:
        self.balancer = balancer
        self._watch(balancer)
        self.resolved.clear()
        if self.listening:
            self.programmer.request().addErrback(lambda f: None)

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol
        if self.listening:
            self.programmer.request().addErrback(lambda f: None)

    def stop_listening(self) -> defer.Deferred:
        if not self.listening:
            return defer.succeed(None)
        self.listening = False
        listeners = self.balancer.pool.on_state_change
        if self._state_changed in listeners:
            listeners.remove(self._state_changed)
        d = self.programmer.remove(self)
        d.addErrback(lambda f: log.error("virtual {virtual}: removing its rules: {error}",
                                         virtual=self.protocol.name, error=f.getErrorMessage()))
        return d

    def connection_count(self) -> int:
        """0: the flows are the kernel's (conntrack); nothing of lbframe's
        waits for them, and they go on when lbframe stops."""
        return 0

    def close_all(self, reason: str) -> None:
        pass

    def pause_accepting(self) -> None:
        pass

    def resume_accepting(self) -> None:
        pass

    def next_hop_counters(self) -> dict:
        """member name → {packets, bytes, flows} steered to it (nftables counters)."""
        out = {}
        for (vname, member), c in self.programmer.counters.items():
            if vname == self.protocol.name:
                out[member] = {"packets": c.packets, "bytes": c.bytes, "flows": c.flows}
        return out


@hookimpl
def lbframe_register_protocols(registry):
    registry.add("routed", RoutedProtocol)
    registry.add("nat", NatProtocol)
