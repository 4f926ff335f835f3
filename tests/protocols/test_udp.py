"""protocol = udp: flows, the reply path, idle expiry, the table bound,
schedulers and persistence, member failures, reload, the IListener duties."""

from __future__ import annotations

import gc
import os
import socket
import tempfile
import tracemalloc

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from lbframe.config import parse_site
from lbframe.errors import ListenError, OptionError
from lbframe.interfaces import IListener
from lbframe.plugins import load_plugins
from lbframe.protocols.udp import UDPProtocol, UDPVirtualServer, udp_bind
from lbframe.service import build_runtime
from tests.helpers import WaitMixin
from tests.protocols.udpkit import start_client, start_member, start_site, vip_of


def site_text(members: dict[str, int], extra: str = "", pool_extra: str = "",
              listen: str = "udp:0:interface=127.0.0.1") -> str:
    lines = "\n".join(f"member {n} = 127.0.0.1:{p}" for n, p in members.items())
    return f"""
[virtual dns]
listen = {listen}
protocol = udp
pool = p
{extra}

[pool p]
{lines}
{pool_extra}
"""


class FlowTests(WaitMixin, TestCase):
    def two_members(self):
        a, pa = start_member(self, "a")
        b, pb = start_member(self, "b")
        return (a, b), {"a": pa, "b": pb}

    @defer.inlineCallbacks
    def test_flows_stick_and_replies_come_from_the_vip(self):
        (a, b), ports = self.two_members()
        svc = start_site(self, site_text(ports))
        vip = vip_of(svc)
        clients = [start_client(self)[0] for _ in range(6)]
        first = {}
        for round_ in range(3):
            for i, client in enumerate(clients):
                data, source = yield client.ask(b"q%d-%d" % (i, round_), vip)
                self.assertEqual(source, vip)  # the reply leaves from the VIP socket
                name, _, echoed = data.partition(b":")
                self.assertEqual(echoed, b"q%d-%d" % (i, round_))
                first.setdefault(i, name)
                self.assertEqual(name, first[i], "a flow moved to another member")
        # round robin over 6 flows: 3 each
        self.assertEqual(sorted(first.values()).count(b"a"), 3)
        self.assertEqual(svc.listeners["dns"].connection_count(), 6)
        # members saw lbframe's address, one source port per flow
        self.assertEqual(len({addr for _, addr in a.seen} | {addr for _, addr in b.seen}), 6)
        self.assertTrue(all(addr[0] == "127.0.0.1" for _, addr in a.seen + b.seen))
        udp = svc.runtime.virtuals["dns"].udp
        self.assertEqual((udp.datagrams_in, udp.datagrams_out, udp.flows), (18, 18, 6))

    @defer.inlineCallbacks
    def test_ipv6(self):
        from twisted.internet import reactor as r
        member, port = start_member(self, "six", interface="::1")
        svc = start_site(self, f"""
[virtual dns]
listen = udp:0:interface=\\:\\:1
protocol = udp
pool = p

[pool p]
member six = [::1]:{port}
""")
        vip = vip_of(svc)
        self.assertEqual(vip[0], "::1")
        from tests.protocols.udpkit import Client
        client = Client()
        listening = r.listenUDP(0, client, interface="::1")
        self.addCleanup(listening.stopListening)
        data, source = yield client.ask(b"v6", vip)
        self.assertEqual(data, b"six:v6")
        self.assertEqual(source[:2], vip)

    @defer.inlineCallbacks
    def test_datagram_mode_balances_each_datagram(self):
        (a, b), ports = self.two_members()
        svc = start_site(self, site_text(ports, "udp_mode = datagram"))
        vip = vip_of(svc)
        client, _ = start_client(self)
        names = []
        for i in range(6):
            data, source = yield client.ask(b"q%d" % i, vip)
            self.assertEqual(source, vip)
            names.append(data.split(b":")[0])
        self.assertEqual(names, [b"a", b"b"] * 3)
        # each answered datagram closed its socket toward the member
        yield self.wait_until(lambda: svc.listeners["dns"].connection_count() == 0)
        pool = svc.runtime.pools["p"]
        self.assertEqual([m.active for m in pool.members.values()], [0, 0])
        self.assertEqual([m.total for m in pool.members.values()], [3, 3])

    @defer.inlineCallbacks
    def test_largest_datagram_and_malformed_ones_do_not_disturb_other_flows(self):
        (a, b), ports = self.two_members()
        svc = start_site(self, site_text(ports))
        vip = vip_of(svc)
        good, _ = start_client(self)
        bad, _ = start_client(self)
        data, _ = yield good.ask(b"before", vip)
        member = data.split(b":")[0]
        big = os.urandom(65507 - 2)  # the largest IPv4 UDP payload, with "a:" added
        reply, source = yield bad.ask(big, vip)
        self.assertEqual(reply[2:], big)
        for junk in (b"", b"\x00" * 3, b"\xff" * 1200):  # lbframe does not parse them
            reply, _ = yield bad.ask(junk, vip)
            self.assertEqual(reply[2:], junk)
        reply, _ = yield bad.ask(b"after junk", vip)
        self.assertTrue(reply.endswith(b"after junk"))
        data, source = yield good.ask(b"after", vip)
        self.assertEqual((data, source), (member + b":after", vip))

    @defer.inlineCallbacks
    def test_port_unreachable_counts_as_a_member_failure(self):
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
        closed.close()
        a, pa = start_member(self, "a")
        svc = start_site(self, site_text({"dead": dead_port, "a": pa},
                                         pool_extra="max_fails = 2\nfail_timeout = 30s"))
        vip = vip_of(svc)
        pool = svc.runtime.pools["p"]
        dead = pool.members["dead"]
        answered = 0
        for i in range(8):
            client, _ = start_client(self)
            try:
                yield client.ask(b"q", vip, timeout=0.3)
                answered += 1
            except defer.TimeoutError:
                pass
        yield self.wait_until(lambda: dead.state == "down")
        self.assertIn("port unreachable (ICMP)", dead.down_reason)
        self.assertGreaterEqual(dead.failures, 2)
        self.assertGreaterEqual(svc.runtime.virtuals["dns"].udp.unreachable, 2)
        # once it is out, every new flow is answered
        for i in range(4):
            client, _ = start_client(self)
            data, _ = yield client.ask(b"q", vip)
            self.assertEqual(data, b"a:q")

    @defer.inlineCallbacks
    def test_drained_member_keeps_its_flows_and_gets_no_new_ones(self):
        (a, b), ports = self.two_members()
        svc = start_site(self, site_text(ports))
        vip = vip_of(svc)
        pool = svc.runtime.pools["p"]
        c1, _ = start_client(self)
        c2, _ = start_client(self)
        d1, _ = yield c1.ask(b"x", vip)
        d2, _ = yield c2.ask(b"x", vip)
        on_a = c1 if d1.startswith(b"a:") else c2
        pool.set_admin(pool.members["a"], "draining")
        data, _ = yield on_a.ask(b"still", vip)
        self.assertEqual(data, b"a:still")
        for _ in range(4):
            client, _ = start_client(self)
            data, _ = yield client.ask(b"new", vip)
            self.assertEqual(data, b"b:new")
        pool.set_admin(pool.members["a"], "disabled")
        data, _ = yield on_a.ask(b"disabled", vip)
        self.assertEqual(data, b"a:disabled")  # not cut, as tcp connections are not

    @defer.inlineCallbacks
    def test_member_down_by_its_monitor_moves_new_flows_only(self):
        (a, b), ports = self.two_members()
        svc = start_site(self, site_text(ports))
        vip = vip_of(svc)
        pool = svc.runtime.pools["p"]
        old, _ = start_client(self)
        data, _ = yield old.ask(b"x", vip)
        name = data.split(b":")[0].decode()
        other = "b" if name == "a" else "a"
        pool.report_check(pool.members[name], "dns", False, "NXDOMAIN", rise=1, fall=1,
                          now=reactor.seconds())
        self.assertEqual(pool.members[name].state, "down")
        data, _ = yield old.ask(b"y", vip)
        self.assertEqual(data, f"{name}:y".encode())
        for _ in range(3):
            client, _ = start_client(self)
            data, _ = yield client.ask(b"n", vip)
            self.assertEqual(data, f"{other}:n".encode())

    @defer.inlineCallbacks
    def test_no_member_drops_the_datagram_and_counts_a_refusal(self):
        a, pa = start_member(self, "a")
        svc = start_site(self, site_text({"a": pa}))
        pool = svc.runtime.pools["p"]
        pool.set_admin(pool.members["a"], "disabled")
        client, _ = start_client(self)
        with self.assertRaises(defer.TimeoutError):
            yield client.ask(b"q", vip_of(svc), timeout=0.2)
        virtual = svc.runtime.virtuals["dns"]
        self.assertEqual((virtual.refused, virtual.udp.dropped), (1, 1))
        self.assertEqual(svc.listeners["dns"].connection_count(), 0)

    @defer.inlineCallbacks
    def test_reload_keeps_live_flows(self):
        (a, b), ports = self.two_members()
        c, pc = start_member(self, "c")
        folder = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(folder))
        path = os.path.join(folder, "site.ini")
        port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        port.bind(("127.0.0.1", 0))
        vport = port.getsockname()[1]
        port.close()
        listen = f"udp:{vport}:interface=127.0.0.1"
        with open(path, "w") as f:  # the stop at the end does not wait for the flows
            f.write("[lbframe]\nstop_grace = 0.1s\n" + site_text(ports, listen=listen))
        from lbframe.site import make_service, reload
        svc = make_service(path, reactor)
        svc.startService()
        self.addCleanup(svc.stopService)
        vip = ("127.0.0.1", vport)
        clients = [start_client(self)[0] for _ in range(2)]
        before = []
        for client in clients:
            data, _ = yield client.ask(b"x", vip)
            before.append(data.split(b":")[0])
        listener = svc.listeners["dns"]
        with open(path, "w") as f:  # a only: c replaces b; max_flows changes
            f.write("[lbframe]\nstop_grace = 0.1s\n"
                    + site_text({"a": ports["a"], "c": pc}, "max_flows = 500", listen=listen))
        self.assertTrue(reload(svc))
        self.assertIs(svc.listeners["dns"], listener)
        self.assertEqual(listener.max_flows, 500)
        for client, name in zip(clients, before):
            data, _ = yield client.ask(b"y", vip)
            self.assertEqual(data.split(b":")[0], name)  # b's flow too: it finishes on b
        seen = set()
        for _ in range(4):
            client, _ = start_client(self)
            data, _ = yield client.ask(b"n", vip)
            seen.add(data.split(b":")[0])
        self.assertEqual(seen, {b"a", b"c"})

    @defer.inlineCallbacks
    def test_access_log_line_per_flow(self):
        (a, b), ports = self.two_members()
        folder = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(folder))
        logpath = os.path.join(folder, "access.log")
        svc = start_site(self, f"[lbframe]\naccess_log = {logpath}\n"
                               + site_text(ports, "timeout_client = 0.2s"))
        vip = vip_of(svc)
        client, cport = start_client(self)
        yield client.ask(b"one", vip)
        yield client.ask(b"two", vip)
        yield self.wait_until(lambda: svc.listeners["dns"].connection_count() == 0)
        with open(logpath) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 1, lines)
        line = lines[0]
        for part in (f"client=127.0.0.1:{cport}", "virtual=dns", "pool=p", "bytes_in=6",
                     "bytes_out=10", "datagrams_in=2", "datagrams_out=2",
                     'outcome="idle timeout after 0.2s"'):
            self.assertIn(part, line)

    @defer.inlineCallbacks
    def test_status_and_metrics_show_the_flow_counters(self):
        from lbframe.admin.metrics import make_registry, render_metrics
        from lbframe.admin.status import site_status
        (a, b), ports = self.two_members()
        svc = start_site(self, site_text(ports))
        client, _ = start_client(self)
        yield client.ask(b"abc", vip_of(svc))
        status = site_status(svc.runtime)["virtuals"]["dns"]
        self.assertEqual(status["connections_active"], 1)
        self.assertEqual(status["udp"]["datagrams_in"], 1)
        self.assertEqual(status["udp"]["bytes_out"], 5)
        self.assertEqual(status["udp"]["max_flows"], 10000)
        text = render_metrics(make_registry(lambda: svc.runtime)).decode()
        self.assertIn('lbframe_udp_datagrams_total{direction="in",virtual="dns"} 1.0', text)
        self.assertIn('lbframe_udp_bytes_total{direction="out",virtual="dns"} 5.0', text)
        self.assertIn('lbframe_udp_flows{virtual="dns"} 1.0', text)


class SchedulerTests(WaitMixin, TestCase):
    """Every built-in scheduler, and source-ip persistence, over UDP."""

    SCHEDULERS = {
        "round-robin": "", "weighted": "", "least-connections": "", "response-time": "",
        "priority": "", "source-hash": "", "composite": "",
    }

    @defer.inlineCallbacks
    def run_scheduler(self, name: str, extra: str = ""):
        members = {n: start_member(self, n) for n in "abc"}
        ports = {n: p for n, (_, p) in members.items()}
        svc = start_site(self, site_text(ports, pool_extra=f"scheduler = {name}\n{extra}"))
        vip = vip_of(svc)
        pool = svc.runtime.pools["p"]
        got = []
        for i in range(9):
            client, _ = start_client(self)
            data, source = yield client.ask(b"q%d" % i, vip)
            self.assertEqual(source, vip)
            got.append(data.split(b":")[0].decode())
            # each flow is counted as a connection of its member while it lives
        self.assertEqual(sum(m.active for m in pool.members.values()), 9)
        self.assertEqual(sorted(got), sorted(n for n, m in pool.members.items()
                                             for _ in range(m.total)))
        return got

    @defer.inlineCallbacks
    def test_every_builtin_scheduler(self):
        from lbframe.testing import builtin_factories
        names = set(builtin_factories("schedulers"))
        self.assertLessEqual(set(self.SCHEDULERS), names)
        for name in sorted(names):
            got = yield self.run_scheduler(name, self.SCHEDULERS.get(name, ""))
            if name in ("round-robin", "weighted", "least-connections"):
                self.assertEqual(sorted(got), sorted("abc" * 3), name)
            if name == "source-hash":
                self.assertEqual(len(set(got)), 1, got)  # one client host: one member
            yield self.cleanups_now()

    def cleanups_now(self):
        """Run (and forget) the cleanups so far: stop the site and members."""
        cleanups, self._cleanups = self._cleanups, []
        ds = []
        while cleanups:
            f, args, kw = cleanups.pop()
            ds.append(defer.maybeDeferred(f, *args, **kw))
        return defer.gatherResults(ds)

    @defer.inlineCallbacks
    def test_source_ip_persistence(self):
        members = {n: start_member(self, n) for n in "ab"}
        ports = {n: p for n, (_, p) in members.items()}
        svc = start_site(self, site_text(ports, "persistence = sticky\ntimeout_client = 0.1s")
                         + "\n[persistence sticky]\nmethod = source-ip\n")
        vip = vip_of(svc)
        got = set()
        for i in range(4):  # new client ports, flows expire between: persistence decides
            client, _ = start_client(self)
            data, _ = yield client.ask(b"q", vip)
            got.add(data.split(b":")[0])
            yield self.wait_until(lambda: svc.listeners["dns"].connection_count() == 0)
        self.assertEqual(len(got), 1)


class ClockTests(SynchronousTestCase):
    """Idle expiry and the table bound, on a Clock, driven directly."""

    def setUp(self):
        self.member = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.member.bind(("127.0.0.1", 0))
        self.addCleanup(self.member.close)
        self.clock = task.Clock()

    def server(self, extra: str = "") -> UDPVirtualServer:
        port = self.member.getsockname()[1]
        site = parse_site(site_text({"a": port}, extra), "site.ini")
        runtime = build_runtime(site, load_plugins(entry_points=False), self.clock)
        srv = UDPVirtualServer(runtime.balancers["dns"], runtime.protocols["dns"], reactor,
                               clock=self.clock, gate=_Gate())
        self.successResultOf(srv.start_listening())
        self.addCleanup(srv.stop_listening)
        srv.runtime = runtime
        return srv

    def test_idle_flows_expire_after_timeout_client(self):
        srv = self.server("timeout_client = 10s")
        vip = srv.vips[0]
        srv.new_flow(vip, ("192.0.2.1", 1000), memoryview(b"x"))
        self.clock.advance(5)
        srv.new_flow(vip, ("192.0.2.2", 1000), memoryview(b"x"))
        self.assertEqual(srv.connection_count(), 2)
        self.clock.advance(5.5)  # the first is 10.5 s idle, the second 5.5 s
        self.assertEqual(list(vip.flows), [("192.0.2.2", 1000)])
        self.clock.advance(5)
        self.assertEqual(srv.connection_count(), 0)
        self.assertEqual(srv.counters.expired, 2)
        member = srv.runtime.pools["p"].members["a"]
        self.assertEqual((member.active, member.total), (0, 2))
        self.assertEqual(self.clock.getDelayedCalls(), [])  # no timer while the table is empty

    def test_traffic_keeps_a_flow_alive(self):
        srv = self.server("timeout_client = 10s")
        vip = srv.vips[0]
        addr = ("192.0.2.1", 1000)
        srv.new_flow(vip, addr, memoryview(b"x"))
        for _ in range(5):
            self.clock.advance(4)
            flow = vip.flows[addr]
            flow.last = srv.now  # what a datagram either way does
        self.assertEqual(srv.connection_count(), 1)
        self.clock.advance(11.5)
        self.assertEqual(srv.connection_count(), 0)

    def client(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        self.addCleanup(sock.close)
        return sock

    def test_an_active_flow_ahead_does_not_shield_idle_ones(self):
        """The table is in least-recently-used order: a flow that keeps
        sending moves to the back, so the idle flow behind it expires."""
        srv = self.server("timeout_client = 10s")
        vip = srv.vips[0]
        address = vip.sock.getsockname()
        busy, idle = self.client(), self.client()
        busy.sendto(b"1", address)
        idle.sendto(b"1", address)
        vip.doRead()
        self.assertEqual(list(vip.flows), [busy.getsockname(), idle.getsockname()])
        for _ in range(6):
            self.clock.advance(3)
            busy.sendto(b"again", address)
            vip.doRead()
        self.assertEqual(list(vip.flows), [busy.getsockname()])
        self.assertEqual(vip.flows[busy.getsockname()].dgrams_in, 7)

    def test_datagrams_wait_for_a_remote_persistence_store(self):
        srv = self.server()
        vip = srv.vips[0]
        store_read = defer.Deferred()
        real = srv.balancer

        class RemoteStore:
            """The balancer, with a persistence store that answers later."""
            virtual = real.virtual

            def prepare(self, context):
                return store_read

            def choose(self, *args, **kw):
                return real.choose(*args, **kw)

        srv.balancer = RemoteStore()
        srv.new_flow(vip, ("192.0.2.1", 1), memoryview(b"first"))
        flow = vip.flows[("192.0.2.1", 1)]
        srv.hold(flow, memoryview(b"second"))
        self.assertIsNone(flow.sock)
        self.assertEqual(srv.connection_count(), 1)
        store_read.callback(None)
        self.member.settimeout(1)
        self.assertEqual([self.member.recv(100), self.member.recv(100)], [b"first", b"second"])
        self.assertEqual(flow.member.name, "a")

    def test_table_bound_under_100000_one_datagram_flows(self):
        srv = self.server("max_flows = 500")
        vip = srv.vips[0]
        fds_before = len(os.listdir("/proc/self/fd"))

        def flood(start, count):
            for i in range(start, start + count):
                srv.new_flow(vip, (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 5353),
                             memoryview(b"q"))

        flood(0, 5000)
        gc.collect()
        tracemalloc.start()
        try:
            flood(5000, 10000)
            gc.collect()
            early, _ = tracemalloc.get_traced_memory()
            flood(15000, 85000)
            gc.collect()
            late, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual(srv.connection_count(), 500)
        self.assertEqual(srv.counters.evicted, 100000 - 500)
        self.assertEqual(srv.counters.flows, 500)
        self.assertLess(abs(late - early), 64 * 1024, (early, late))
        self.assertLessEqual(len(os.listdir("/proc/self/fd")), fds_before + 500 + 2)
        # the least recently used went first: the newest 500 are left
        self.assertEqual(next(iter(vip.flows))[0], f"10.1.{(99500 >> 8) & 255}.{99500 & 255}")

    def test_paused_listener_starts_no_flow_but_keeps_live_ones(self):
        srv = self.server()
        vip = srv.vips[0]
        srv.new_flow(vip, ("192.0.2.1", 1), memoryview(b"x"))
        srv.pause_accepting()
        srv.new_flow(vip, ("192.0.2.2", 1), memoryview(b"x"))
        self.assertEqual(list(vip.flows), [("192.0.2.1", 1)])
        self.assertEqual(srv.counters.dropped, 1)
        srv.resume_accepting()
        srv.new_flow(vip, ("192.0.2.2", 1), memoryview(b"x"))
        self.assertEqual(srv.connection_count(), 2)


class _Gate:
    """An accept gate that only counts."""

    def __init__(self):
        self.open = 0

    def opened(self):
        self.open += 1

    def closed(self):
        self.open -= 1

    def add(self, listener):
        pass

    def remove(self, listener):
        pass

    def configure(self, limit):
        pass

    def exhausted(self, error):
        pass


class ListenerTests(WaitMixin, TestCase):
    """The IListener duties (the contract tests of lbframe.testing were not
    on main when this was written)."""

    def make(self, extra: str = "", listen: str = "udp:0:interface=127.0.0.1"):
        a, pa = start_member(self, "a")
        site = parse_site(site_text({"a": pa}, extra, listen=listen), "site.ini")
        runtime = build_runtime(site, load_plugins(entry_points=False), reactor)
        return runtime, runtime.protocols["dns"].make_service(runtime.balancers["dns"], reactor)

    def test_provides_ilistener(self):
        _, srv = self.make()
        self.assertTrue(verifyObject(IListener, srv))

    @defer.inlineCallbacks
    def test_start_listening_twice_and_addresses(self):
        _, srv = self.make()
        self.assertEqual(srv.addresses(), [])
        yield srv.start_listening()
        yield srv.start_listening()
        self.addCleanup(srv.stop_listening)
        [address] = srv.addresses()
        self.assertEqual(address.host, "127.0.0.1")
        self.assertNotEqual(address.port, 0)

    @defer.inlineCallbacks
    def test_bind_failure_is_a_listen_error_and_leaves_nothing_bound(self):
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        taken.bind(("127.0.0.1", 0))
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        free = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        free.bind(("127.0.0.1", 0))
        free_port = free.getsockname()[1]
        free.close()
        _, srv = self.make(listen=f"udp:{free_port}:interface=127.0.0.1, "
                                  f"udp:{port}:interface=127.0.0.1")
        with self.assertRaises(ListenError) as caught:
            yield srv.start_listening()
        self.assertIn(f"udp:{port}:interface=127.0.0.1", str(caught.exception))
        self.assertIn("virtual dns", str(caught.exception))
        with self.assertRaises(ListenError):  # the same outcome again
            yield srv.start_listening()
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", free_port))  # the first endpoint was released
        probe.close()

    @defer.inlineCallbacks
    def test_stop_listening_keeps_flows_and_frees_the_address(self):
        """After stop_listening a flow goes on through a socket of its own
        (bound to the VIP address, connected to its client); new clients
        find nothing, or the replacement listener that binds the address."""
        runtime, srv = self.make()
        srv.startService()
        self.addCleanup(srv.stopService)
        vip = srv.addresses()[0]
        address = (vip.host, vip.port)
        old, _ = start_client(self)
        yield old.ask(b"x", address)
        d = srv.stop_listening()
        self.assertIsInstance(d, defer.Deferred)
        yield d
        self.assertEqual((srv.connection_count(), srv.addresses()), (1, []))
        data, source = yield old.ask(b"still", address)
        self.assertEqual((data, source), (b"a:still", address))
        stranger, _ = start_client(self)
        with self.assertRaises(defer.TimeoutError):
            yield stranger.ask(b"new", address, timeout=0.3)
        # a replacement binds the same address at once and takes new clients
        site = parse_site(site_text({"a": runtime.pools["p"].members["a"].address.port},
                                    listen=f"udp:{vip.port}:interface=127.0.0.1"), "site.ini")
        new_rt = build_runtime(site, load_plugins(entry_points=False), reactor)
        replacement = new_rt.protocols["dns"].make_service(new_rt.balancers["dns"], reactor)
        replacement.startService()
        self.addCleanup(replacement.stopService)
        yield replacement.start_listening()
        data, _ = yield stranger.ask(b"new", address)
        self.assertEqual(data, b"a:new")
        self.assertEqual(replacement.connection_count(), 1)
        data, _ = yield old.ask(b"old", address)  # still the retired flow's
        self.assertEqual(data, b"a:old")
        self.assertEqual((srv.connection_count(), replacement.connection_count()), (1, 1))
        self.assertEqual(srv.retired[next(iter(srv.retired))].dgrams_in, 3)
        srv.close_all("test")
        self.assertEqual((srv.connection_count(), runtime.virtuals["dns"].active), (0, 0))

    @defer.inlineCallbacks
    def test_close_all(self):
        runtime, srv = self.make()
        srv.startService()
        self.addCleanup(srv.stopService)
        vip = srv.addresses()[0]
        for _ in range(3):
            client, _ = start_client(self)
            yield client.ask(b"x", (vip.host, vip.port))
        self.assertEqual(srv.connection_count(), 3)
        srv.close_all("test")
        self.assertEqual(srv.connection_count(), 0)
        self.assertEqual(runtime.virtuals["dns"].active, 0)

    def test_apply_takes_the_new_settings(self):
        runtime, srv = self.make()
        site = parse_site(site_text({"a": 1}, "udp_mode = datagram\nmax_flows = 7"), "site.ini")
        new = build_runtime(site, load_plugins(entry_points=False), reactor)
        srv.apply(new.balancers["dns"], new.protocols["dns"])
        self.assertIs(srv.balancer, new.balancers["dns"])
        self.assertEqual((srv.max_flows, srv.datagram_mode), (7, True))


class OptionTests(SynchronousTestCase):
    def virtual(self, extra: str = ""):
        return parse_site(site_text({"a": 53}, extra), "site.ini").virtuals["dns"]

    def test_defaults(self):
        proto = UDPProtocol(self.virtual(), {})
        self.assertEqual((proto.mode, proto.max_flows, proto.source, proto.timeout),
                         ("flow", 10000, "lbframe", 30.0))

    def test_bad_values_are_clear_errors(self):
        for options, words in (({"udp_mode": "stream"}, "flow or datagram"),
                               ({"max_flows": "0"}, "at least 1"),
                               ({"max_flows": "many"}, "at least 1"),
                               ({"source": "vip"}, "lbframe or client"),
                               ({"nope": "1"}, "unknown key 'nope'")):
            with self.assertRaises(OptionError) as caught:
                UDPProtocol(self.virtual(), options)
            self.assertIn(words, str(caught.exception))

    def test_accept_proxy_is_refused(self):
        with self.assertRaises(OptionError) as caught:
            UDPProtocol(self.virtual("accept_proxy = yes"), {})
        self.assertEqual(caught.exception.key, "accept_proxy")

    def test_udp_bind(self):
        bind = udp_bind("udp:5353:interface=\\:\\:1")
        self.assertEqual((bind.host, bind.port, bind.family), ("::1", 5353, socket.AF_INET6))
        self.assertEqual(udp_bind("udp:53").host, "0.0.0.0")
        with self.assertRaises(OptionError):
            udp_bind("tcp:53")

    def test_site_check_refuses_bad_keys(self):
        from lbframe.errors import ConfigError
        site = parse_site(site_text({"a": 53}, "udp_mode = both"), "site.ini")
        with self.assertRaises((ConfigError, OptionError)):
            build_runtime(site, load_plugins(entry_points=False), reactor)


class BindProperties(SynchronousTestCase):
    from hypothesis import given
    from hypothesis import strategies as st

    @given(st.integers(0, 65535), st.ip_addresses(v=4).map(str))
    def test_port_and_interface(self, port, host):
        bind = udp_bind(f"udp:{port}:interface={host}")
        self.assertEqual((bind.host, bind.port, bind.family), (host, port, socket.AF_INET))

    @given(st.text(max_size=30))
    def test_anything_else_is_an_option_error_or_a_bind(self, text):
        try:
            bind = udp_bind("udp:" + text)
        except OptionError as e:
            self.assertEqual(e.key, "listen")
            return
        self.assertTrue(0 <= bind.port <= 65535)
