"""Policy routing for the next hops, through netlink (pyroute2), and the
start-up checks of the kernel settings a routed virtual server needs.

Each next hop gets one routing table (``ROUTE_TABLE_BASE + slot``) holding
a default route via the next hop, and one rule ``fwmark MARK lookup TABLE``
(priority ``RULE_PRIORITY_BASE + slot``). A packet the ruleset marked is
thus routed to its next hop, whatever the main table says. Nothing else in
the kernel's routing is touched.

Netlink calls are synchronous and take microseconds; they run in the
reactor thread.
"""

from __future__ import annotations

import os
import shutil
import socket

from lbframe.protocols.routed.ruleset import (RULE_PRIORITY_BASE, ROUTE_TABLE_BASE,
                                              mark_of)

_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_DEFAULT = {4: "0.0.0.0/0", 6: "::/0"}
CAP_NET_ADMIN = 12


def _iproute():
    from pyroute2 import IPRoute  # imported late: the config room never needs it
    return IPRoute()


def table_of(slot: int) -> int:
    return ROUTE_TABLE_BASE + slot


class Routing:
    """The routes and rules of the slots in use, installed and removed."""

    def __init__(self, iproute_factory=_iproute):
        self._factory = iproute_factory
        #: slot → (family, address, device) installed
        self.installed: dict[int, tuple[int, str, str]] = {}

    def resolve(self, address: str, family: int) -> tuple[str, str | None]:
        """The device a next hop is reached through (it must be on a link of
        this node: no gateway), and its MAC when the neighbour table knows it.
        ValueError with the reason otherwise."""
        with self._factory() as ipr:
            try:
                routes = ipr.route("get", dst=address, family=_AF[family])
            except Exception as exc:  # NetlinkError(code, message): unreachable, no route
                why = exc.args[1] if len(exc.args) == 2 else str(exc)
                raise ValueError(f"no route to {address} ({why})") from None
            if not routes:
                raise ValueError(f"no route to {address}")
            route = routes[0]
            gateway = route.get_attr("RTA_GATEWAY")
            if gateway:
                raise ValueError(f"{address} is not on a link of this node "
                                 f"(it is reached via the gateway {gateway})")
            if route.get("type") == 2:  # RTN_LOCAL
                raise ValueError(f"{address} is an address of this node")
            oif = route.get_attr("RTA_OIF")
            links = ipr.link("get", index=oif)
            device = links[0].get_attr("IFLA_IFNAME")
            mac = None
            for neigh in ipr.neigh("dump", ifindex=oif, family=_AF[family]):
                if neigh.get_attr("NDA_DST") == address and neigh.get_attr("NDA_LLADDR"):
                    mac = neigh.get_attr("NDA_LLADDR")
            return device, mac

    def install(self, slot: int, family: int, address: str, device: str) -> None:
        """The table and rule of ``slot`` (replacing what was there)."""
        with self._factory() as ipr:
            index = ipr.link_lookup(ifname=device)
            if not index:
                raise ValueError(f"no interface {device!r}")
            ipr.route("replace", dst=_DEFAULT[family], table=table_of(slot), gateway=address,
                      oif=index[0], family=_AF[family])
            fresh = self.installed.get(slot, (None,))[0] != family
            if fresh or not self._has_rule(ipr, slot, family):
                self._del_rule(ipr, slot, family)
                ipr.rule("add", table=table_of(slot), fwmark=mark_of(slot),
                         priority=RULE_PRIORITY_BASE + slot, family=_AF[family])
        self.installed[slot] = (family, address, device)

    def remove(self, slot: int) -> None:
        family = self.installed.pop(slot, (4,))[0]
        with self._factory() as ipr:
            self._del_rule(ipr, slot, family)
            try:
                ipr.route("del", dst=_DEFAULT[family], table=table_of(slot), family=_AF[family])
            except Exception:
                pass  # already gone (the link went away)

    def remove_all(self) -> None:
        for slot in list(self.installed):
            self.remove(slot)

    @staticmethod
    def _has_rule(ipr, slot: int, family: int) -> bool:
        return any(r.get_attr("FRA_PRIORITY") == RULE_PRIORITY_BASE + slot
                   and r.get_attr("FRA_FWMARK") == mark_of(slot)
                   for r in ipr.get_rules(family=_AF[family]))

    @staticmethod
    def _del_rule(ipr, slot: int, family: int) -> None:
        for rule in ipr.get_rules(family=_AF[family]):
            if rule.get_attr("FRA_PRIORITY") == RULE_PRIORITY_BASE + slot:
                try:
                    ipr.rule("del", priority=RULE_PRIORITY_BASE + slot, family=_AF[family])
                except Exception:
                    pass


# -- start-up checks ---------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def effective_caps() -> int:
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_privileges(euid: int | None = None, caps: int | None = None) -> str | None:
    """None, or why this process may not program the kernel."""
    euid = os.geteuid() if euid is None else euid
    caps = effective_caps() if caps is None else caps
    if euid == 0 or caps & (1 << CAP_NET_ADMIN):
        return None
    return ("programming nftables and policy routing needs root or CAP_NET_ADMIN "
            "(run lbframe as root; protocol routed keeps programming the kernel "
            "while it runs, so do not drop privileges)")


def check_nft(which=shutil.which) -> str | None:
    if which("nft") is None:
        return "the nft program (nftables) is not installed: apt-get install nftables"
    return None


def check_forwarding(families, read=_read) -> str | None:
    if 4 in families and read("/proc/sys/net/ipv4/ip_forward") != "1":
        return ("IPv4 forwarding is off, so the kernel would drop the packets to steer: "
                "sysctl -w net.ipv4.ip_forward=1")
    if 6 in families and read("/proc/sys/net/ipv6/conf/all/forwarding") != "1":
        return ("IPv6 forwarding is off, so the kernel would drop the packets to steer: "
                "sysctl -w net.ipv6.conf.all.forwarding=1")
    return None


def check_rp_filter(devices, read=_read) -> str | None:
    """Strict reverse-path filtering (1) on a next hop's link drops the flows
    that arrive through one firewall while the main table routes their
    source through another: the effective value is the larger of ``all``
    and the interface's own."""
    devices = sorted(set(devices))
    if len(devices) < 2:
        return None
    all_value = read("/proc/sys/net/ipv4/conf/all/rp_filter") or "0"
    for device in devices:
        value = read(f"/proc/sys/net/ipv4/conf/{device}/rp_filter") or "0"
        if max(int(all_value), int(value)) == 1:
            where = "all" if all_value == "1" else device
            return (f"strict rp_filter on {device} (net.ipv4.conf.{where}.rp_filter = 1) "
                    "drops flows whose packets arrive through one next hop while the "
                    "routes point through another: use loose mode, sysctl -w "
                    f"net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{device}.rp_filter=2")
    return None
