"""The heartbeat driver: two drivers wired back to back on one task.Clock."""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from lbframe.config.model import Redundancy
from lbframe.errors import OptionError
from lbframe.protocols import endpoints
from lbframe.redundancy import heartbeat
from lbframe.redundancy.heartbeat import CommandError, HeartbeatDriver
from tests.redundancy.test_vrrp_driver import FakeAddresses, FakeAnnouncer, Runtime


class Wire:
    """Carries each node's heartbeats to the other, unless cut."""

    def __init__(self):
        self.nodes = {}
        self.cut = False

    def transport(self, driver):
        wire = self

        class T:
            def send(self, data):
                if not wire.cut:
                    for other in wire.nodes.values():
                        if other is not driver and other._transport is not None:
                            other._line(data)

            def close(self):
                pass
        self.nodes[driver.node] = driver
        return T()


def node(name, wire, clock, priority=100, failback="manual", present=()):
    spec = Redundancy(driver="heartbeat", vips=("198.18.0.10/24",), interface="eth0",
                      peer="udp:198.18.0.2:694", priority=priority, interval=1.0,
                      dead_after=3.0, failback=failback)
    d = HeartbeatDriver(spec, {"node": name}, clock)
    d.addresses = FakeAddresses("eth0", present)
    d.addresses_factory = lambda i: d.addresses
    d.announcer_factory = lambda *a: FakeAnnouncer(*a)
    d.transport_factory = wire.transport
    d.attach(Runtime())
    return d


class PairTests(SynchronousTestCase):
    def setUp(self):
        self.clock, self.wire = task.Clock(), Wire()

    def pair(self, **kw):
        a = node("a", self.wire, self.clock, priority=200, **kw)
        b = node("b", self.wire, self.clock, priority=100, **kw)
        a.start()
        b.start()
        self.addCleanup(a.stop)
        self.addCleanup(b.stop)
        return a, b

    def run_for(self, seconds):
        self.clock.pump([0.1] * int(seconds * 10))

    def serving(self, d):
        return "198.18.0.10/24" in d.addresses.present

    def test_higher_priority_serves(self):
        a, b = self.pair()
        self.run_for(2)
        self.assertEqual((a.state, b.state), ("master", "backup"))
        self.assertTrue(self.serving(a))
        self.assertFalse(self.serving(b))
        self.assertEqual(a.runtime.plugins.hook.calls, [("init", "backup"), ("backup", "master")])

    def test_dead_peer_taken_over_after_dead_after(self):
        a, b = self.pair()
        self.run_for(2)
        a.stop()  # a stop tells the peer at once …
        self.assertEqual(b.state, "master")
        self.assertTrue(self.serving(b))

    def test_silent_peer(self):
        a, b = self.pair()
        self.run_for(2)
        self.wire.nodes.pop("a")
        a._transport = None  # … a crash does not: dead_after
        for call in (a._beat, a._dead):
            call.cancel()
        # the last heartbeat b heard was at most one interval ago
        self.run_for(1.9)
        self.assertEqual(b.state, "backup")
        self.run_for(1.2)
        self.assertEqual(b.state, "master")

    def test_manual_failback(self):
        a, b = self.pair()
        self.run_for(2)
        a.stop()
        self.assertEqual(b.state, "master")
        a.start()
        self.run_for(10)
        self.assertEqual((a.state, b.state), ("backup", "master"))  # no failback by itself
        self.assertEqual(a.takeover(), "master")
        self.run_for(1.5)
        self.assertEqual((a.state, b.state), ("master", "backup"))
        self.assertTrue(self.serving(a))
        self.assertFalse(self.serving(b))

    def test_release(self):
        a, b = self.pair()
        self.run_for(2)
        self.assertEqual(a.release(), "backup")
        self.run_for(0.1)
        self.assertEqual((a.state, b.state), ("backup", "master"))
        self.run_for(10)
        self.assertEqual((a.state, b.state), ("backup", "master"))  # held

    def test_release_refused_without_a_live_peer(self):
        a = node("a", self.wire, self.clock, priority=200)
        a.start()
        self.addCleanup(a.stop)
        self.run_for(4)
        self.assertEqual(a.state, "master")
        with self.assertRaisesRegex(CommandError, "nobody serving"):
            a.release()

    def test_auto_failback(self):
        a, b = self.pair(failback="auto")
        self.run_for(2)
        a.stop()
        a.start()
        self.run_for(1.5)
        self.assertEqual((a.state, b.state), ("master", "backup"))

    def test_split_brain_heals_to_the_later_takeover(self):
        a, b = self.pair()
        self.run_for(2)
        self.wire.cut = True
        self.run_for(4)
        self.assertEqual((a.state, b.state), ("master", "master"))  # both: the link is cut
        self.wire.cut = False
        self.run_for(1.5)
        # b took over later (a higher epoch): b keeps it, a yields
        self.assertEqual((a.state, b.state), ("backup", "master"))
        self.assertFalse(self.serving(a))

    def test_leftover_vip_removed(self):
        a = node("a", self.wire, self.clock, present={"198.18.0.10/24"})
        a.start()
        self.addCleanup(a.stop)
        self.assertIn(("remove", "198.18.0.10/24"), a.addresses.log)
        self.assertEqual(a.state, "backup")
        self.assertTrue(endpoints.is_nonlocal("198.18.0.10"))

    def test_status(self):
        a, b = self.pair()
        self.run_for(2)
        st = a.status()
        self.assertEqual((st["peer_alive"], st["peer_state"], st["peer_node"]),
                         (True, "backup", "b"))


class MessageTests(SynchronousTestCase):
    def test_round_trip(self):
        self.assertEqual(heartbeat.decode(heartbeat.encode("a", "master", 200, 7, False)),
                         ("a", "master", 200, 7, False))

    def test_refused(self):
        for line in (b"", b"LBHB1 a master 200 7", b"LBHB2 a master 200 7 0",
                     b"LBHB1 a boss 200 7 0", b"LBHB1 a master -1 7 0",
                     b"LBHB1 a/b master 1 7 0", b"LBHB1 a master 1 7 2", b"x" * 300,
                     b"LBHB1 \xff master 1 1 0"):
            with self.assertRaises((ValueError, UnicodeDecodeError)):
                heartbeat.decode(line)

    def test_garbage_counted_not_fatal(self):
        wire, clock = Wire(), task.Clock()
        a = node("a", wire, clock)
        a.start()
        self.addCleanup(a.stop)
        a._line(b"GET / HTTP/1.1")
        a._line(heartbeat.encode("a", "master", 1, 1, False))  # itself: misconfigured
        self.assertEqual(a.refused, 2)
        self.assertEqual(a.state, "backup")


class OptionTests(SynchronousTestCase):
    def spec(self, **kw):
        base = dict(driver="heartbeat", vips=("198.18.0.10/24",), interface="eth0",
                    peer="udp:198.18.0.2:694")
        base.update(kw)
        return Redundancy(**base)

    def test_unknown_key(self):
        with self.assertRaisesRegex(OptionError, "unknown key 'nod'"):
            HeartbeatDriver(self.spec(), {"nod": "a"}, task.Clock())

    def test_bad_node_name(self):
        with self.assertRaisesRegex(OptionError, "bad node name"):
            HeartbeatDriver(self.spec(), {"node": "a b"}, task.Clock())

    def test_peer_must_be_an_address(self):
        with self.assertRaises(OptionError):
            HeartbeatDriver(self.spec(peer="udp:peer.example:694"), {}, task.Clock())

    def test_serial_peer(self):
        d = HeartbeatDriver(self.spec(peer="/dev/ttyS0"), {"baudrate": "9600"}, task.Clock())
        self.assertTrue(d.serial)
        self.assertEqual(d.baudrate, 9600)

    def test_registered(self):
        from lbframe.plugins import load_plugins

        self.assertIs(load_plugins().redundancy_drivers.get("heartbeat").factory,
                      HeartbeatDriver)
