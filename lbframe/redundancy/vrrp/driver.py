"""``driver = vrrp``: this node is one VRRP router (RFC 5798, or RFC 3768 with
``version = 2``) for one or more virtual router IDs on ``interface``.

The ``[redundancy]`` keys of the contract (``vips``, ``interface``, ``vrid``,
``priority``, ``advert_interval``, ``preempt``, ``version``) define the first
group. The driver's own keys:

- ``preempt_delay``: no preemption for this long after start (default 0);
- ``track_pools``: pools whose health this node's priority follows;
- ``track_weight``: when a tracked pool has no member up, the priority drops
  by this much; 0 (the default) gives up master altogether (a *fault*);
- ``garp_repeat`` / ``garp_delay``: gratuitous ARP frames per VIP per burst
  (5) and the delay of the second burst (5s), as keepalived's defaults;
- ``vrid.N.vips``, ``vrid.N.priority``, ``vrid.N.preempt``: a further
  group ``N`` on the same interface (an active/active pair has two groups,
  each node master of one).

The driver's ``state`` is ``master`` while it is master of any group
(it then serves that group's VIPs), ``backup`` while it is backup of every
group, ``init`` before start and after stop.

The state hook and the tracked pools come from the running site: the
driver's service is a child of :class:`lbframe.service.SiteService`, whose
``runtime`` holds the plugin manager and the pools (looked up each time, so
a reload that carries the driver over sees the new pools).
"""

from __future__ import annotations

import ipaddress
import re

from twisted.internet import task
from twisted.logger import Logger
from zope.interface import implementer

from lbframe import hookimpl
from lbframe.config.values import parse_bool, parse_duration, parse_int, parse_list
from lbframe.errors import OptionError
from lbframe.interfaces import IRedundancyDriver
from lbframe.redundancy.driver_service import DriverService
from lbframe.protocols import endpoints
from lbframe.redundancy.vrrp.machine import BACKUP, INIT, MASTER, OWNER, VirtualRouter

log = Logger(namespace="lbframe.redundancy.vrrp")

KNOWN = ("preempt_delay", "track_pools", "track_weight", "garp_repeat", "garp_delay",
         "use_vmac")
_GROUP_KEY = re.compile(r"^vrid\.(\d+)\.(vips|priority|preempt)$")


def _option(options, key, convert, default):
    if key not in options:
        return default
    try:
        return convert(options[key])
    except ValueError as e:
        raise OptionError(key, str(e)) from None


def _ipv4_vips(key: str, vips) -> tuple[str, ...]:
    out = []
    for vip in vips:
        try:
            iface = ipaddress.ip_interface(vip)
        except ValueError:
            raise OptionError(key, f"bad VIP {vip!r} (use CIDR form, e.g. 192.0.2.10/24)") from None
        if iface.version != 4:
            raise OptionError(key, f"VIP {vip}: the vrrp driver carries IPv4 VIPs only")
        out.append(str(iface))
    if not out:
        raise OptionError(key, "at least one VIP")
    if len(out) > 255:
        raise OptionError(key, "at most 255 VIPs per VRID")
    return tuple(out)


class GroupSpec:
    """One VRID's settings."""

    def __init__(self, vrid, vips, priority, preempt):
        self.vrid, self.vips, self.priority, self.preempt = vrid, vips, priority, preempt


def parse_groups(redundancy, options) -> list[GroupSpec]:
    first = GroupSpec(redundancy.vrid, _ipv4_vips("vips", redundancy.vips),
                      redundancy.priority, redundancy.preempt)
    extra: dict[int, dict] = {}
    for key, value in options.items():
        m = _GROUP_KEY.match(key)
        if m is None:
            continue
        vrid = int(m.group(1))
        if not 1 <= vrid <= 255:
            raise OptionError(key, f"VRID {vrid} out of 1-255")
        if vrid == first.vrid:
            raise OptionError(key, f"VRID {vrid} is the [redundancy] section's own vrid")
        extra.setdefault(vrid, {})[m.group(2)] = (key, value)
    groups = [first]
    for vrid, keys in sorted(extra.items()):
        if "vips" not in keys:
            raise OptionError(next(iter(keys.values()))[0], f"vrid.{vrid}.vips is required")
        vkey, vtext = keys["vips"]
        vips = _ipv4_vips(vkey, parse_list(vtext))
        priority, preempt = redundancy.priority, redundancy.preempt
        if "priority" in keys:
            pkey, ptext = keys["priority"]
            priority = _option({pkey: ptext}, pkey, lambda t: parse_int(t, 1, 255), priority)
        if "preempt" in keys:
            bkey, btext = keys["preempt"]
            preempt = _option({bkey: btext}, bkey, parse_bool, preempt)
        groups.append(GroupSpec(vrid, vips, priority, preempt))
    seen: dict[str, int] = {}
    for group in groups:
        for vip in group.vips:
            ip = vip.split("/")[0]
            if ip in seen:
                raise OptionError("vips", f"VIP {ip} is in VRID {seen[ip]} and VRID {group.vrid}")
            seen[ip] = group.vrid
    return groups


class _Vmac:
    """A group's virtual MAC interface and what sends from it."""

    def __init__(self, name, mac, addresses, sender, announcer):
        self.name, self.mac, self.addresses = name, mac, addresses
        self.sender, self.announcer = sender, announcer


@implementer(IRedundancyDriver)
class VRRPDriver:
    """The vrrp redundancy driver (see the module doc)."""

    #: hooks for tests: how the host is reached
    addresses_factory = None
    socket_factory = None
    announcer_factory = None
    #: ``sysctl(path, value) -> old value``; tests replace it
    sysctl = None

    def __init__(self, redundancy, options=None, reactor=None):
        options = dict(options or {})
        for key in options:
            if key not in KNOWN and not _GROUP_KEY.match(key):
                raise OptionError(key, f"unknown key {key!r} for redundancy driver vrrp")
        if redundancy.vrid is None:
            raise OptionError("vrid", "required for driver vrrp")
        if not redundancy.interface:
            raise OptionError("interface", "required for driver vrrp")
        self.spec = redundancy
        self.interface = redundancy.interface
        self.version = redundancy.version
        self.advert_interval = redundancy.advert_interval
        self.groups = parse_groups(redundancy, options)
        self.preempt_delay = _option(options, "preempt_delay", parse_duration, 0.0)
        self.track_pools = _option(options, "track_pools", parse_list, ())
        self.track_weight = _option(options, "track_weight", lambda t: parse_int(t, 0, 254), 0)
        self.garp_repeat = _option(options, "garp_repeat", lambda t: parse_int(t, 1, 100), 5)
        self.garp_delay = _option(options, "garp_delay", parse_duration, 5.0)
        self.use_vmac = _option(options, "use_vmac", parse_bool, False)
        if self.preempt_delay < 0 or self.garp_delay < 0:
            raise OptionError("preempt_delay", "must not be negative")
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.state = INIT
        self.routers: dict[int, VirtualRouter] = {}
        self.primary = None
        self._addresses = None
        self._socket = None
        self._announcer = None
        self._mac = None
        self._tracker = None
        self._vmacs: dict[int, _Vmac] = {}
        self._sysctls: list[tuple[str, str]] = []
        self.tracking_down: tuple[str, ...] = ()
        self._missing_logged: set[str] = set()
        #: the runtime to take pools and the plugin manager from; set by
        #: :meth:`attach` or found through the service's parent
        self.runtime = None
        self.service = DriverService(self)
        self.vip_hosts = {vip.split("/")[0] for g in self.groups for vip in g.vips}

    # wiring -----------------------------------------------------------------

    def attach(self, runtime) -> None:
        self.runtime = runtime

    def _runtime(self):
        if self.runtime is not None:
            return self.runtime
        return getattr(self.service.parent, "runtime", None)

    # life cycle ---------------------------------------------------------------

    def start(self) -> None:
        """Take part in the group; on a missing privilege or interface, log
        why and stay ``init`` (the node then never owns a VIP, so it cannot
        serve one, and /api/status shows it)."""
        endpoints.allow_nonlocal(self, self.vip_hosts)
        try:
            self._start()
        except OSError as e:
            log.error("VRRP on {interface} cannot start: {error}. It needs CAP_NET_RAW and "
                      "CAP_NET_ADMIN: run as root without twistd --uid, or under systemd "
                      "with User= and AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN "
                      "(docs/redundancy.md)", interface=self.interface, error=e)
            self.stop()
            endpoints.allow_nonlocal(self, self.vip_hosts)  # listeners still bind

    def _start(self) -> None:
        from lbframe.redundancy.vrrp import net

        make_addresses = self.addresses_factory or net.Addresses
        make_socket = self.socket_factory or net.AdvertSocket
        make_announcer = self.announcer_factory or net.ARPAnnouncer
        self._addresses = make_addresses(self.interface)
        all_vips = [vip for g in self.groups for vip in g.vips]
        self.primary = self._addresses.primary(exclude=all_vips)
        self._mac = self._addresses.mac()
        # A VIP on the interface now is one our own crash left behind (unless
        # we are its owner): remove it before entering backup, as keepalived
        # does, so that the pair has two owners for as short as possible.
        for group in self.groups:
            if group.priority == OWNER:
                continue
            for vip in group.vips:
                if self._addresses.remove(vip):
                    log.warn("VRRP VRID {vrid}: removed {vip} from {interface}, left there "
                             "by an earlier run", vrid=group.vrid, vip=vip,
                             interface=self.interface)
        self._announcer = make_announcer(self.interface, self.reactor, self.garp_repeat,
                                         self.garp_delay)
        getattr(self._announcer, "open", lambda: None)()  # now, so a missing privilege shows
        self._socket = make_socket(self.interface, self._addresses.index, self.primary,
                                   self.reactor, self._deliver)
        if self.use_vmac:
            self._start_vmacs(make_addresses, make_socket, make_announcer)
        for group in self.groups:
            self.routers[group.vrid] = VirtualRouter(
                group.vrid, group.priority, tuple(v.split("/")[0] for v in group.vips),
                self.advert_interval, self.primary, self.reactor,
                send=self._sender(group.vrid),
                take=self._take, release=self._release, changed=self._changed,
                version=self.version, preempt=group.preempt, preempt_delay=self.preempt_delay)
        self._socket.start()
        self._track()
        for router in self.routers.values():
            router.start()
        if self.track_pools:
            self._tracker = task.LoopingCall(self._track)
            self._tracker.clock = self.reactor
            self._tracker.start(min(self.advert_interval, 1.0), now=False)

    def stop(self) -> None:
        """A graceful stop: each master sends priority 0 (the backup takes over
        after its Skew_Time) and releases its VIPs."""
        if self._tracker is not None and self._tracker.running:
            self._tracker.stop()
        self._tracker = None
        for router in self.routers.values():
            router.shutdown()
        if self._announcer is not None:
            self._announcer.cancel()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._stop_vmacs()
        if self._addresses is not None:
            self._addresses.close()
            self._addresses = None
        self.routers = {}
        endpoints.forget_nonlocal(self)

    # the routers' callbacks -----------------------------------------------

    def _sender(self, vrid):
        from lbframe.redundancy.vrrp import packet

        def send(advert):
            vmac = self._vmacs.get(vrid)
            sock = vmac.sender if vmac is not None else self._socket
            if sock is not None:
                sock.send(packet.encode(advert, self.primary))
        return send

    def _group(self, vrid):
        return next(g for g in self.groups if g.vrid == vrid)

    def _take(self, router) -> None:
        vips = self._group(router.vrid).vips
        vmac = self._vmacs.get(router.vrid)
        addresses = vmac.addresses if vmac is not None else self._addresses
        for vip in vips:
            try:
                addresses.add(vip)
            except Exception as e:
                log.error("VRRP VRID {vrid}: cannot add {vip} to {interface}: {error}",
                          vrid=router.vrid, vip=vip, interface=addresses.interface, error=e)
        announcer, mac = (vmac.announcer, vmac.mac) if vmac is not None else \
            (self._announcer, self._mac)
        announcer.announce(mac, [v.split("/")[0] for v in vips])

    def _release(self, router) -> None:
        vmac = self._vmacs.get(router.vrid)
        addresses = vmac.addresses if vmac is not None else self._addresses
        for vip in self._group(router.vrid).vips:
            try:
                addresses.remove(vip)
            except Exception as e:
                log.error("VRRP VRID {vrid}: cannot remove {vip} from {interface}: {error}",
                          vrid=router.vrid, vip=vip, interface=addresses.interface, error=e)

    # virtual MAC (use_vmac) -------------------------------------------------

    def _start_vmacs(self, make_addresses, make_socket, make_announcer) -> None:
        """One macvlan per group, ``vrrp.VRID`` with 00:00:5e:00:01:VRID
        (RFC 5798 §7.3), as keepalived's ``use_vmac``: the VIPs live on it,
        adverts and gratuitous ARP leave from it. It is up on every node of
        the group, since a macvlan hands a frame whose source is its own MAC
        (the peer's adverts) to itself only, not to ``interface``: adverts
        are read from it too. ``arp_ignore = 1`` on ``interface`` (restored
        on stop) keeps the real MAC from answering ARP for the VIPs, and
        ``arp_announce = 2`` from asking with a VIP as the sender address."""
        from lbframe.redundancy.vrrp import net

        sysctl = self.sysctl or net.set_sysctl
        # the real MAC must not answer ARP for a VIP (arp_ignore) nor ask with a
        # VIP as sender (arp_announce), or neighbours learn it for the VIP
        for key, value in (("arp_ignore", "1"), ("arp_announce", "2")):
            path = f"net/ipv4/conf/{self.interface}/{key}"
            old = sysctl(path, value)
            if old is not None:
                self._sysctls.append((path, old))
        for group in self.groups:
            name, mac = f"vrrp.{group.vrid}", net.virtual_mac(group.vrid)
            self._addresses.create_macvlan(name, mac)
            # no IPv6 link-local traffic from a MAC two nodes share
            sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1")
            self._addresses.set_link(name, True)
            addresses = make_addresses(name)
            sender = make_socket(name, addresses.index, self.primary, self.reactor,
                                 self._deliver)
            sender.start()
            announcer = make_announcer(name, self.reactor, self.garp_repeat, self.garp_delay)
            self._vmacs[group.vrid] = _Vmac(name, net.mac_bytes(mac), addresses, sender,
                                            announcer)

    def _stop_vmacs(self) -> None:
        from lbframe.redundancy.vrrp import net

        for vmac in self._vmacs.values():
            vmac.announcer.cancel()
            vmac.sender.close()
            vmac.addresses.close()
            if self._addresses is not None:
                try:
                    self._addresses.delete_link(vmac.name)
                except Exception as e:
                    log.error("VRRP: cannot delete {name}: {error}", name=vmac.name, error=e)
        self._vmacs = {}
        for path, value in self._sysctls:
            (self.sysctl or net.set_sysctl)(path, value)
        self._sysctls = []

    def _changed(self, router, old, new) -> None:
        log.warn("VRRP VRID {vrid} on {interface}: {old} -> {new} (priority {priority}"
                 "{fault}, master {master})", vrid=router.vrid, interface=self.interface,
                 old=old, new=new, priority=router.priority,
                 fault=", fault: " + ", ".join(self.tracking_down) if router.fault else "",
                 master=router.master or "unknown", lbframe_event="redundancy_state")
        states = [r.state for r in self.routers.values()]
        if MASTER in states:
            overall = MASTER
        elif states and all(s == BACKUP for s in states):
            overall = BACKUP
        elif BACKUP in states:
            overall = BACKUP
        else:
            overall = INIT
        previous, self.state = self.state, overall
        if previous != overall:
            runtime = self._runtime()
            hook = getattr(getattr(runtime, "plugins", None), "hook", None)
            if hook is not None:
                try:
                    hook.lbframe_redundancy_state_changed(old=previous, new=overall)
                except Exception:
                    log.failure("lbframe_redundancy_state_changed hook failed")

    def _deliver(self, advert, source, received_at=None) -> None:
        if advert.version != self.version:
            self._socket._drop(f"version {advert.version}", source, "configured "
                               f"version {self.version}")
            return
        router = self.routers.get(advert.vrid)
        if router is None:
            return  # another VRID: not ours (RFC 5798 §7.1)
        # the kernel stamps with the wall clock; the reactor's clock is the wall
        # clock too (a task.Clock in tests, where nothing is stamped)
        router.receive(advert, source, received_at)

    # tracking -----------------------------------------------------------------

    def _track(self) -> None:
        if not self.track_pools:
            return
        runtime = self._runtime()
        pools = getattr(runtime, "pools", None) or {}
        down = []
        for name in self.track_pools:
            pool = pools.get(name)
            if pool is None:
                down.append(f"{name} (no such pool)")
                if name not in self._missing_logged:
                    self._missing_logged.add(name)
                    log.error("VRRP: track_pools names {pool}, which this site has no "
                              "[pool] for: this node gives up master until it has",
                              pool=name)
            elif not any(m.state == "up" for m in pool.members.values()):
                down.append(name)
        if tuple(down) != self.tracking_down:
            if down:
                log.warn("VRRP: tracked pool(s) {pools} have no member up", pools=", ".join(down))
            elif self.tracking_down:
                log.warn("VRRP: tracked pools up again")
        self.tracking_down = tuple(down)
        for group in self.groups:
            router = self.routers.get(group.vrid)
            if router is None:
                continue
            if not down:
                router.set_priority(group.priority)
            elif self.track_weight == 0:
                router.set_priority(0)
            else:
                router.set_priority(max(1, group.priority - self.track_weight))

    # status ---------------------------------------------------------------------

    def status(self) -> dict:
        """Extra keys for ``/api/status``'s ``redundancy``."""
        out = {"interface": self.interface, "version": self.version,
               "primary": self.primary,
               "groups": {str(vrid): r.status() for vrid, r in self.routers.items()}}
        if self.track_pools:
            out["tracking_down"] = list(self.tracking_down)
        if self._socket is not None:
            out["dropped"] = dict(self._socket.dropped)
        return out


@hookimpl
def lbframe_register_redundancy_drivers(registry):
    registry.add("vrrp", VRRPDriver)
