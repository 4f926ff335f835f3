"""What the VRRP driver does to the host: the raw socket, the addresses, ARP.

- :class:`AdvertSocket`: one raw IPv4 socket of protocol 112 bound to the
  interface (``SO_BINDTODEVICE``) and joined to 224.0.0.18 there; adverts
  leave with TTL 255, TOS 0xc0 (as keepalived's) and the interface's primary
  address as source (``IP_PKTINFO``), since a version 3 checksum covers the
  source and RFC 5798 §6.4.3 breaks priority ties on it.
- :class:`Addresses`: VIPs added and removed through netlink (pyroute2),
  never through ``ip`` subprocesses; an address that is already there (or
  already gone) is not an error.
- :func:`arp_announcement` and :class:`ARPAnnouncer`: gratuitous ARP
  (RFC 5227 §2.3 announcements) sent as real Ethernet frames on an
  ``AF_PACKET`` socket, so switches and neighbours learn the new owner.

Needs CAP_NET_RAW (the two raw sockets) and CAP_NET_ADMIN (addresses).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct

from twisted.logger import Logger
from zope.interface import implementer
from twisted.internet.interfaces import IReadDescriptor

from lbframe.redundancy.vrrp import packet

log = Logger(namespace="lbframe.redundancy.vrrp")

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
IP_TOS_INTERNETCONTROL = 0xC0
ETH_P_ARP = 0x0806
BROADCAST_MAC = b"\xff" * 6
#: the largest advert is 20 + 8 + 255 * 4 + 8 bytes; anything longer is cut and refused
RECV_LIMIT = 2048
#: datagrams read per wake-up, so a flood cannot starve the reactor
READS_PER_WAKEUP = 64


class InterfaceError(OSError):
    """The interface is missing or has no IPv4 address to send from."""


def mac_bytes(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def virtual_mac(vrid: int) -> str:
    """RFC 5798 §7.3: 00-00-5E-00-01-{VRID}."""
    return f"00:00:5e:00:01:{vrid:02x}"


class Addresses:
    """VIPs on one interface through netlink."""

    def __init__(self, interface: str):
        from pyroute2 import IPRoute  # imported late: `lbframe check` never needs it

        self.interface = interface
        self._ipr = IPRoute()
        found = self._ipr.link_lookup(ifname=interface)
        if not found:
            self._ipr.close()
            raise InterfaceError(f"no interface {interface!r}")
        self.index = found[0]

    def close(self) -> None:
        self._ipr.close()

    def mac(self) -> bytes:
        link = self._ipr.get_links(self.index)[0]
        return mac_bytes(link.get_attr("IFLA_ADDRESS") or "00:00:00:00:00:00")

    def ipv4(self) -> list[tuple[str, int]]:
        """The interface's IPv4 addresses as (address, prefix length), primary first."""
        out = []
        for msg in self._ipr.get_addr(family=socket.AF_INET, index=self.index):
            secondary = msg["flags"] & 0x01
            out.append((secondary, msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS"),
                        msg["prefixlen"]))
        return [(a, p) for _, a, p in sorted(out, key=lambda t: t[0])]

    def primary(self, exclude=()) -> str:
        """The address adverts are sent from: the first IPv4 address that is not a VIP."""
        excluded = {str(ipaddress.ip_interface(v).ip) for v in exclude}
        for address, _ in self.ipv4():
            if address not in excluded:
                return address
        raise InterfaceError(f"interface {self.interface!r} has no IPv4 address of its own "
                             "to send VRRP adverts from")

    def create_macvlan(self, name: str, mac: str) -> None:
        """A macvlan ``name`` on this interface with ``mac``, private mode, down
        (RFC 5798 §7.3's virtual MAC); one left by an earlier run is replaced."""
        self.delete_link(name)
        self._ipr.link("add", ifname=name, kind="macvlan", link=self.index,
                       macvlan_mode="private", address=mac)

    def delete_link(self, name: str) -> bool:
        found = self._ipr.link_lookup(ifname=name)
        if not found:
            return False
        self._ipr.link("del", index=found[0])
        return True

    def set_link(self, name: str, up: bool) -> None:
        found = self._ipr.link_lookup(ifname=name)
        if found:
            self._ipr.link("set", index=found[0], state="up" if up else "down")

    def has(self, vip: str) -> bool:
        ip = str(ipaddress.ip_interface(vip).ip)
        return any(a == ip for a, _ in self.ipv4())

    def add(self, vip: str) -> bool:
        """Add ``vip`` (CIDR); False when it was there already."""
        iface = ipaddress.ip_interface(vip)
        try:
            self._ipr.addr("add", index=self.index, address=str(iface.ip),
                           prefixlen=iface.network.prefixlen)
        except Exception as e:
            if getattr(e, "code", None) == errno.EEXIST:
                return False
            raise
        return True

    def remove(self, vip: str) -> bool:
        """Remove ``vip``; False when it was not there."""
        iface = ipaddress.ip_interface(vip)
        try:
            self._ipr.addr("del", index=self.index, address=str(iface.ip),
                           prefixlen=iface.network.prefixlen)
        except Exception as e:
            if getattr(e, "code", None) in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):
                return False
            raise
        return True


def set_sysctl(path: str, value: str) -> str | None:
    """Write ``value`` to ``/proc/sys/PATH``; the old value (None when absent)."""
    full = os.path.join("/proc/sys", path)
    try:
        with open(full) as f:
            old = f.read().strip()
        with open(full, "w") as f:
            f.write(value)
    except OSError:
        return None
    return old


def arp_announcement(mac: bytes, address: str) -> bytes:
    """A gratuitous ARP request as an Ethernet frame: sender and target
    protocol address both ``address``, target hardware address zero (RFC 5227 §2.3)."""
    ip = ipaddress.IPv4Address(address).packed
    eth = BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\0" * 6 + ip
    return eth + arp


class ARPAnnouncer:
    """Sends gratuitous ARP for VIPs on one interface: ``repeat`` frames each
    at once, and the same again ``delay`` seconds later (keepalived's
    ``garp_master_repeat`` and ``garp_master_delay``), since a switch or a
    host may miss the first burst while the link settles.

    One packet socket is opened on first use and kept: it is opened with
    protocol 0, so it receives nothing, and opening and closing one per
    burst would cost tens of milliseconds (the kernel waits for a network
    grace period when a packet socket with a protocol closes) — right when
    the new master should be announcing itself.
    """

    def __init__(self, interface: str, reactor, repeat: int = 5, delay: float = 5.0):
        self.interface = interface
        self.reactor = reactor
        self.repeat = repeat
        self.delay = delay
        self._later = []
        self._sock = None
        self.sent = 0

    def open(self) -> None:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)

    def announce(self, mac: bytes, addresses, again: bool = True) -> None:
        try:
            self.open()
            for address in addresses:
                frame = arp_announcement(mac, address)
                for _ in range(self.repeat):
                    self._sock.sendto(frame, (self.interface, ETH_P_ARP))
                    self.sent += 1
        except OSError as e:
            log.error("gratuitous ARP on {interface} failed: {error}",
                      interface=self.interface, error=e)
        if again and self.delay > 0:
            self._later = [c for c in self._later if c.active()]
            self._later.append(self.reactor.callLater(self.delay, self.announce, mac,
                                                      tuple(addresses), False))

    def cancel(self) -> None:
        """Forget the second bursts still to come and close the socket."""
        for call in self._later:
            if call.active():
                call.cancel()
        self._later = []
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@implementer(IReadDescriptor)
class AdvertSocket:
    """The raw protocol-112 socket, read by the reactor.

    ``deliver(advert, source)`` gets each advert that passes the checks of
    RFC 5798 §7.1 this layer can make (IP protocol, TTL 255, destination,
    length, version, type, checksum); the rest is counted in ``dropped`` by
    reason and logged once per reason and source.
    """

    def __init__(self, interface: str, index: int, source: str, reactor, deliver):
        self.interface = interface
        self.index = index
        self.source = source
        self.reactor = reactor
        self.deliver = deliver
        self.dropped: dict[str, int] = {}
        self._logged: set = set()
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, packet.PROTOCOL)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
            mreqn = struct.pack("4s4si", socket.inet_aton(packet.GROUP),
                                socket.inet_aton("0.0.0.0"), index)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, packet.TTL)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, packet.TTL)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, IP_TOS_INTERNETCONTROL)
            # the kernel's receive time of each advert (see VirtualRouter.receive)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def start(self) -> None:
        self.reactor.addReader(self)

    def close(self) -> None:
        if self.sock is None:
            return
        self.reactor.removeReader(self)
        self.sock.close()
        self.sock = None

    def send(self, data: bytes) -> None:
        pktinfo = struct.pack("i4s4s", self.index, socket.inet_aton(self.source), b"\0" * 4)
        try:
            self.sock.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)],
                              0, (packet.GROUP, 0))
        except OSError as e:
            self._drop("send failed", self.interface, e)

    # IReadDescriptor

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def logPrefix(self) -> str:
        return "vrrp"

    def connectionLost(self, reason) -> None:
        pass

    def doRead(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            if self.sock is None:
                return
            try:
                data, ancillary, _, _ = self.sock.recvmsg(RECV_LIMIT, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._drop("receive failed", self.interface, e)
                return
            received_at = None
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS \
                        and len(value) >= _TIMESPEC.size:
                    sec, nsec = _TIMESPEC.unpack_from(value)
                    received_at = sec + nsec / 1e9
            self.handle(data, received_at)

    def handle(self, data: bytes, received_at: float | None = None) -> None:
        """Check one IPv4 datagram from the socket and deliver its advert."""
        try:
            header, payload = packet.split_ipv4(data)
        except packet.PacketError as e:
            self._drop("bad IP header", "?", e)
            return
        if header.protocol != packet.PROTOCOL:
            return
        if header.source == self.source:
            return  # our own
        if header.ttl != packet.TTL:
            self._drop("TTL not 255", header.source, f"TTL {header.ttl}")
            return
        if header.destination != packet.GROUP:
            self._drop("not to 224.0.0.18", header.source, header.destination)
            return
        try:
            advert = packet.decode(payload, header.source, header.destination)
        except packet.PacketError as e:
            self._drop("bad advert", header.source, e)
            return
        self.deliver(advert, header.source, received_at)

    def _drop(self, reason: str, source: str, detail) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        key = (reason, source)
        if key not in self._logged and len(self._logged) < 1000:
            self._logged.add(key)
            log.warn("VRRP on {interface}: dropped a packet from {source}: {reason} ({detail})",
                     interface=self.interface, source=source, reason=reason, detail=str(detail))
