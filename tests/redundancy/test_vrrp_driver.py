"""The vrrp driver with the host faked: keys, leftover VIPs, groups, tracking,
the state hook, graceful stop, the receive checks, ARP frames, IP_FREEBIND."""

from __future__ import annotations

import errno
import socket
import struct

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from lbframe.config.model import Redundancy
from lbframe.errors import OptionError
from lbframe.protocols import endpoints
from lbframe.redundancy.vrrp import net, packet
from lbframe.redundancy.vrrp.driver import VRRPDriver
from lbframe.redundancy.vrrp.packet import Advert

PRIMARY, PEER = "198.18.0.1", "198.18.0.2"
MAC = bytes.fromhex("020000000001")


class FakeAddresses:
    def __init__(self, interface, present=()):
        self.interface, self.index = interface, 7
        self.present = set(present)
        self.log = []

    def primary(self, exclude=()):
        return PRIMARY

    def mac(self):
        return MAC

    def add(self, vip):
        self.log.append(("add", vip))
        self.present.add(vip)

    def remove(self, vip):
        self.log.append(("remove", vip))
        if vip in self.present:
            self.present.discard(vip)
            return True
        return False

    def close(self):
        pass

    # virtual MAC
    def create_macvlan(self, name, mac):
        self.log.append(("macvlan", name, mac))

    def delete_link(self, name):
        self.log.append(("delete", name))

    def set_link(self, name, up):
        self.log.append(("up" if up else "down", name))


class FakeSocket:
    def __init__(self, interface, index, source, reactor, deliver):
        self.source, self.deliver = source, deliver
        self.sent, self.dropped, self.closed = [], {}, False

    def start(self):
        pass

    def close(self):
        self.closed = True

    def send(self, data):
        self.sent.append(packet.decode(data, self.source))

    def _drop(self, reason, source, detail):
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class FakeAnnouncer:
    def __init__(self, interface, reactor, repeat, delay):
        self.announced = []

    def announce(self, mac, addresses):
        self.announced.append((mac, tuple(addresses)))

    def cancel(self):
        pass


class Hook:
    def __init__(self):
        self.calls = []

    def lbframe_redundancy_state_changed(self, old, new):
        self.calls.append((old, new))


class Member:
    def __init__(self, state):
        self.state = state


class Pool:
    def __init__(self, *states):
        self.members = {str(i): Member(s) for i, s in enumerate(states)}


class Runtime:
    def __init__(self, pools=None):
        self.plugins = type("P", (), {})()
        self.plugins.hook = Hook()
        self.pools = pools or {}


def make(options=None, present=(), pools=None, **kw):
    spec = Redundancy(driver="vrrp", vips=kw.pop("vips", ("198.18.0.10/24",)),
                      interface="eth0", vrid=kw.pop("vrid", 51), **kw)
    clock = task.Clock()
    d = VRRPDriver(spec, options or {}, clock)
    fakes = {}
    d.addresses_factory = lambda i: fakes.setdefault("addresses", FakeAddresses(i, present))
    d.socket_factory = lambda *a: fakes.setdefault("socket", FakeSocket(*a))
    d.announcer_factory = lambda *a: fakes.setdefault("announcer", FakeAnnouncer(*a))
    runtime = Runtime(pools)
    d.attach(runtime)
    return d, clock, fakes, runtime


class OptionTests(SynchronousTestCase):
    def test_unknown_key(self):
        with self.assertRaisesRegex(OptionError, "unknown key 'preemt_delay'"):
            make({"preemt_delay": "1s"})

    def test_ipv6_vip_refused_clearly(self):
        with self.assertRaisesRegex(OptionError, "IPv4 VIPs only"):
            make(vips=("2001:db8::10/64",))

    def test_groups(self):
        d, *_ = make({"vrid.52.vips": "198.18.0.11/24", "vrid.52.priority": "50"}, priority=200)
        self.assertEqual([(g.vrid, g.vips, g.priority) for g in d.groups],
                         [(51, ("198.18.0.10/24",), 200), (52, ("198.18.0.11/24",), 50)])

    def test_group_errors(self):
        for options, message in (({"vrid.52.priority": "50"}, "vrid.52.vips is required"),
                                 ({"vrid.51.vips": "198.18.0.11/24"}, "own vrid"),
                                 ({"vrid.52.vips": "198.18.0.10/24"}, "in VRID 51 and VRID 52"),
                                 ({"vrid.300.vips": "198.18.0.11/24"}, "out of 1-255"),
                                 ({"vrid.52.vips": "198.18.0.11/24",
                                   "vrid.52.priority": "0"}, "1")):
            with self.assertRaisesRegex(OptionError, message):
                make(options)

    def test_bad_values(self):
        for options in ({"track_weight": "300"}, {"preempt_delay": "soon"},
                        {"garp_repeat": "0"}):
            with self.assertRaises(OptionError):
                make(options)

    def test_registered_as_builtin(self):
        from lbframe.plugins import load_plugins

        self.assertIs(load_plugins().redundancy_drivers.get("vrrp").factory, VRRPDriver)


class LifecycleTests(SynchronousTestCase):
    def test_leftover_vip_removed_before_backup(self):
        d, clock, fakes, runtime = make(present={"198.18.0.10/24"})
        d.start()
        self.assertEqual(fakes["addresses"].log, [("remove", "198.18.0.10/24")])
        self.assertEqual(d.state, "backup")
        self.assertEqual(runtime.plugins.hook.calls, [("init", "backup")])

    def test_owner_keeps_its_address(self):
        d, clock, fakes, runtime = make(present={"198.18.0.10/24"}, priority=255)
        d.start()
        self.assertNotIn(("remove", "198.18.0.10/24"), fakes["addresses"].log)
        self.assertEqual(d.state, "master")

    def test_master_adds_announces_and_advertises(self):
        d, clock, fakes, runtime = make(priority=150)
        d.start()
        clock.advance(3 + 106 / 256 + 0.001)
        self.assertEqual(d.state, "master")
        self.assertEqual(fakes["addresses"].present, {"198.18.0.10/24"})
        self.assertEqual(fakes["announcer"].announced, [(MAC, ("198.18.0.10",))])
        self.assertEqual(fakes["socket"].sent, [Advert(51, 150, 1.0, ("198.18.0.10",), 3)])
        self.assertEqual(runtime.plugins.hook.calls, [("init", "backup"), ("backup", "master")])
        status = d.status()
        self.assertEqual(status["groups"]["51"]["state"], "master")
        self.assertEqual(status["primary"], PRIMARY)

    def test_cannot_start_stays_init_and_says_why(self):
        d, clock, fakes, runtime = make()

        def refused(interface):
            raise PermissionError(1, "Operation not permitted")
        d.addresses_factory = refused
        events = []
        from twisted.logger import formatEvent, globalLogPublisher
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        d.start()
        self.assertEqual(d.state, "init")
        text = " ".join(formatEvent(e) for e in events)
        self.assertIn("CAP_NET_ADMIN", text)
        self.assertTrue(endpoints.is_nonlocal("198.18.0.10"))  # listeners still bind
        d.stop()

    def test_graceful_stop(self):
        d, clock, fakes, runtime = make()
        d.start()
        clock.advance(4)
        self.assertTrue(endpoints.is_nonlocal("198.18.0.10"))
        d.stop()
        self.assertEqual(fakes["socket"].sent[-1].priority, 0)
        self.assertEqual(fakes["addresses"].present, set())
        self.assertTrue(fakes["socket"].closed)
        self.assertEqual(d.state, "init")
        self.assertFalse(endpoints.is_nonlocal("198.18.0.10"))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_two_groups_active_active(self):
        d, clock, fakes, runtime = make({"vrid.52.vips": "198.18.0.11/24",
                                         "vrid.52.priority": "50"}, priority=200)
        d.start()
        for _ in range(5):
            clock.advance(1)
            fakes["socket"].deliver(Advert(52, 100, 1.0, ("198.18.0.11",)), PEER)
            fakes["socket"].deliver(Advert(99, 250, 1.0, ("198.18.0.99",)), PEER)  # not ours
        self.assertEqual(d.routers[51].state, "master")
        self.assertEqual(d.routers[52].state, "backup")
        self.assertEqual(d.state, "master")
        self.assertEqual(fakes["addresses"].present, {"198.18.0.10/24"})

    def test_other_version_dropped(self):
        d, clock, fakes, runtime = make()
        d.start()
        for _ in range(5):
            clock.advance(1)
            fakes["socket"].deliver(Advert(51, 200, 1.0, ("198.18.0.10",), 2), PEER)
        self.assertEqual(d.state, "master")
        self.assertEqual(fakes["socket"].dropped, {"version 2": 5})


class VirtualMACTests(SynchronousTestCase):
    def test_vips_adverts_and_arp_on_the_vmac(self):
        d, clock, fakes, runtime = make({"use_vmac": "yes"})
        per_if, sysctls, sockets, announcers = {}, {}, [], []
        d.addresses_factory = lambda i: per_if.setdefault(i, FakeAddresses(i))
        d.socket_factory = lambda *a: sockets.append(FakeSocket(*a)) or sockets[-1]
        d.announcer_factory = lambda *a: announcers.append(FakeAnnouncer(*a)) or announcers[-1]
        d.sysctl = lambda path, value: sysctls.setdefault(path, []).append(value) or "0"
        d.start()
        base, vmac = per_if["eth0"], per_if["vrrp.51"]
        self.assertIn(("macvlan", "vrrp.51", "00:00:5e:00:01:33"), base.log)
        self.assertIn(("up", "vrrp.51"), base.log)
        self.assertEqual(sysctls["net/ipv4/conf/eth0/arp_ignore"], ["1"])
        self.assertEqual(sysctls["net/ipv4/conf/eth0/arp_announce"], ["2"])
        self.assertEqual(sysctls["net/ipv6/conf/vrrp.51/disable_ipv6"], ["1"])
        clock.advance(4)
        self.assertEqual(d.state, "master")
        self.assertEqual(vmac.present, {"198.18.0.10/24"})  # on the vmac, not the base
        self.assertNotIn(("add", "198.18.0.10/24"), base.log)
        base_sock, vmac_sock = sockets
        self.assertEqual(base_sock.sent, [])
        self.assertEqual(vmac_sock.sent[0].priority, 100)
        self.assertEqual(announcers[1].announced, [(bytes.fromhex("00005e000133"),
                                                     ("198.18.0.10",))])
        d.stop()
        self.assertEqual(vmac_sock.sent[-1].priority, 0)
        self.assertIn(("delete", "vrrp.51"), base.log)
        self.assertEqual(sysctls["net/ipv4/conf/eth0/arp_ignore"], ["1", "0"])  # restored


class TrackingTests(SynchronousTestCase):
    def test_fault_gives_up_master(self):
        pools = {"web": Pool("up", "down")}
        d, clock, fakes, runtime = make({"track_pools": "web"}, pools=pools, priority=200)
        d.start()
        clock.advance(4)
        self.assertEqual(d.state, "master")
        for m in pools["web"].members.values():
            m.state = "down"
        clock.advance(1)
        self.assertEqual(d.state, "backup")
        self.assertEqual(fakes["addresses"].present, set())
        self.assertIn(Advert(51, 0, 1.0, ("198.18.0.10",)), fakes["socket"].sent)
        self.assertEqual(d.status()["tracking_down"], ["web"])
        clock.advance(30)
        self.assertEqual(d.state, "backup")  # a fault never takes over
        pools["web"].members["0"].state = "up"
        clock.pump([0.1] * 50)
        self.assertEqual(d.state, "master")

    def test_weight_lowers_priority(self):
        pools = {"web": Pool("down")}
        d, clock, fakes, runtime = make({"track_pools": "web", "track_weight": "150"},
                                        pools=pools, priority=200)
        d.start()
        clock.advance(5)
        self.assertEqual(fakes["socket"].sent[-1].priority, 50)

    def test_unknown_pool_counts_as_down(self):
        d, clock, fakes, runtime = make({"track_pools": "nope"}, pools={})
        d.start()
        clock.advance(10)
        self.assertEqual(d.state, "backup")
        self.assertEqual(d.tracking_down, ("nope (no such pool)",))


def datagram(ttl=255, destination="224.0.0.18", source=PEER, payload=None):
    payload = payload or packet.encode(Advert(51, 100, 1.0, ("198.18.0.10",)), source)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(payload), 0, 0, ttl, 112, 0,
                         socket.inet_aton(source), socket.inet_aton(destination))
    return header + payload


class ReceiveChecksTests(SynchronousTestCase):
    def setUp(self):
        self.got = []
        s = net.AdvertSocket.__new__(net.AdvertSocket)
        s.interface, s.source, s.dropped, s._logged = "eth0", PRIMARY, {}, set()
        s.deliver = lambda advert, source, at=None: self.got.append((advert, source))
        self.sock = s

    def test_good_advert_delivered(self):
        self.sock.handle(datagram())
        self.assertEqual(self.got, [(Advert(51, 100, 1.0, ("198.18.0.10",)), PEER)])

    def test_ttl_must_be_255(self):
        self.sock.handle(datagram(ttl=254))
        self.assertEqual(self.got, [])
        self.assertEqual(self.sock.dropped, {"TTL not 255": 1})

    def test_destination_and_checksum(self):
        self.sock.handle(datagram(destination="224.0.0.19"))
        payload = bytearray(packet.encode(Advert(51, 100, 1.0, ("198.18.0.10",)), PEER))
        payload[3] ^= 1
        self.sock.handle(datagram(payload=bytes(payload)))
        self.sock.handle(b"\x45\x00")
        self.assertEqual(self.got, [])
        self.assertEqual(self.sock.dropped, {"not to 224.0.0.18": 1, "bad advert": 1,
                                             "bad IP header": 1})

    def test_own_adverts_ignored(self):
        self.sock.handle(datagram(source=PRIMARY))
        self.assertEqual(self.got, [])


class ARPTests(SynchronousTestCase):
    def test_announcement_frame(self):
        frame = net.arp_announcement(MAC, "198.18.0.10")
        self.assertEqual(len(frame), 42)
        self.assertEqual(frame[:6], b"\xff" * 6)
        self.assertEqual(frame[6:12], MAC)
        self.assertEqual(frame[12:14], b"\x08\x06")
        htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
        self.assertEqual((htype, ptype, hlen, plen, op), (1, 0x0800, 6, 4, 1))
        self.assertEqual(frame[22:28], MAC)
        self.assertEqual(frame[28:32], socket.inet_aton("198.18.0.10"))
        self.assertEqual(frame[32:38], b"\0" * 6)
        self.assertEqual(frame[38:42], socket.inet_aton("198.18.0.10"))

    def test_virtual_mac(self):
        self.assertEqual(net.virtual_mac(51), "00:00:5e:00:01:33")


class _Owner:
    """Stands for a driver (the registry holds owners weakly)."""


class FreebindTests(SynchronousTestCase):
    """A VIP the host does not have binds only while a driver allows it."""

    ADDRESS = "198.18.255.254"  # on no interface of this host

    def bind(self):
        bind = endpoints.TCPBind(self.ADDRESS, 0, 5, socket.AF_INET)
        return endpoints.listening_socket(bind)

    def test_without_allow_fails(self):
        with self.assertRaises(OSError) as e:
            self.bind().close()
        self.assertEqual(e.exception.errno, errno.EADDRNOTAVAIL)

    def test_allowed_vip_binds(self):
        owner = _Owner()
        endpoints.allow_nonlocal(owner, {self.ADDRESS})
        self.addCleanup(endpoints.forget_nonlocal, owner)
        sock = self.bind()
        self.addCleanup(sock.close)
        self.assertEqual(sock.getsockname()[0], self.ADDRESS)

    def test_gated_port_binds_allowed_vip(self):
        from twisted.internet import protocol, reactor

        from lbframe.protocols.accept import AcceptGate, GatedPort

        owner = _Owner()
        endpoints.allow_nonlocal(owner, {self.ADDRESS})
        self.addCleanup(endpoints.forget_nonlocal, owner)
        port = GatedPort(0, protocol.Factory(), 5, self.ADDRESS, reactor, AcceptGate(reactor))
        port.startListening()
        self.addCleanup(port.stopListening)
        self.assertEqual(port.getHost().host, self.ADDRESS)
