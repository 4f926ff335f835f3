"""The listener of a routed virtual server (``protocol = routed``, and the
base of ``protocol = nat``'s): no socket, its share of the kernel's rules.

It resolves each pool member to its link (:mod:`.routing`), turns the pool
into a plan (:mod:`.ruleset`) when the shared programmer (:mod:`.program`)
asks for one, and asks the programmer to apply again when a member's state
changes. It imports neither the protocol classes nor :mod:`.nat`: they
import it.
"""

from __future__ import annotations

import ipaddress

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbframe.errors import ListenError
from lbframe.interfaces import IListener
from lbframe.protocols.routed import routing as checks
from lbframe.protocols.routed.ruleset import NextHop, VirtualPlan
from lbframe.schedulers.symmetric_hash import BUCKETS, bucket_table

log = Logger(namespace="lbframe.routed")


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

    def __init__(self, balancer, protocol, programmer, kernel_checks=None):
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
