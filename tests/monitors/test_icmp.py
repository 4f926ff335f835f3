"""``type = icmp``: packets (pure functions, fuzzed), reply matching on a fake
socket and a Clock, and real echo to 127.0.0.1 and ::1 when the process may
open an ICMP socket (see tests/system/test_icmp.py for a real network)."""

from __future__ import annotations

import errno
import random
import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from lbframe.config.model import Address, MemberSpec, Monitor
from lbframe.errors import OptionError
from lbframe.interfaces import IMonitor
from lbframe.monitoring import CheckResult
from lbframe.monitors import icmp
from lbframe.monitors.icmp import (
    NO_SOCKET, PAYLOAD_MAGIC, ICMPMonitor, Pinger, Pingers, open_icmp_socket,
)
from lbframe.monitors.icmp_packet import (
    Echo, Error, build_echo, build_error, build_ipv4_header, checksum, parse,
)
from lbframe.schedulers.round_robin import RoundRobin
from tests.helpers import pool_state
from tests.system.netns import require

V4, V6 = socket.AF_INET, socket.AF_INET6
HOST, PEER = "198.51.100.1", "198.51.100.2"


def ipv6_header(source: str, destination: str, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), socket.IPPROTO_ICMPV6, 64,
                       socket.inet_pton(V6, source), socket.inet_pton(V6, destination))


def member(host: str):
    return pool_state(RoundRobin(), MemberSpec("a", Address(host, 0))).members["a"]


def quote_v4(request: bytes, destination: str = PEER) -> bytes:
    """What a router quotes of our request: its IP header and the ICMP message."""
    return build_ipv4_header(HOST, destination, len(request)) + request


class PacketTests(SynchronousTestCase):
    def test_checksum_rfc1071_example(self):
        self.assertEqual(checksum(bytes.fromhex("0001f203f4f5f6f7")), 0x220D)

    def test_checksum_pads_odd_length(self):
        self.assertEqual(checksum(b"\x01"), 0xFEFF)

    def test_echo_request_v4_bytes(self):
        self.assertEqual(build_echo(V4, 0x1234, 1, b""), bytes.fromhex("0800e5ca12340001"))

    def test_echo_request_v6_leaves_checksum_to_kernel(self):
        self.assertEqual(build_echo(V6, 0x1234, 1, b"ab"), bytes.fromhex("800000001234000161 62"))

    def test_reply_with_and_without_ip_header(self):
        reply = build_echo(V4, 7, 9, b"token", reply=True)
        expected = Echo(True, 7, 9, b"token")
        self.assertEqual(parse(V4, reply), expected)
        self.assertEqual(parse(V4, build_ipv4_header(PEER, HOST, len(reply)) + reply,
                               ip_header=True), expected)

    def test_own_request_is_not_a_reply(self):
        self.assertEqual(parse(V4, build_echo(V4, 7, 9, b"x")), Echo(False, 7, 9, b"x"))

    def test_bad_checksum_ignored(self):
        reply = bytearray(build_echo(V4, 7, 9, b"token", reply=True))
        reply[-1] ^= 1
        self.assertIsNone(parse(V4, bytes(reply)))

    def test_ip_header_of_other_protocol_ignored(self):
        reply = build_echo(V4, 7, 9, b"", reply=True)
        udp = build_ipv4_header(PEER, HOST, len(reply), protocol=socket.IPPROTO_UDP) + reply
        self.assertIsNone(parse(V4, udp, ip_header=True))

    def test_v4_host_unreachable_quotes_our_request(self):
        request = build_echo(V4, 7, 9, PAYLOAD_MAGIC + b"12345678")
        message = parse(V4, build_error(V4, 3, 1, quote_v4(request)))
        self.assertEqual(message, Error(3, 1, Echo(False, 7, 9, PAYLOAD_MAGIC + b"12345678"), PEER))
        self.assertEqual(message.reason, "host unreachable")

    def test_v4_error_quoting_only_eight_bytes(self):
        request = build_echo(V4, 7, 9, b"cut off by the router")
        message = parse(V4, build_error(V4, 11, 0, quote_v4(request)[:28]))
        self.assertEqual(message, Error(11, 0, Echo(False, 7, 9, b""), PEER))
        self.assertEqual(message.reason, "TTL exceeded")

    def test_v4_error_about_udp_ignored(self):
        quoted = build_ipv4_header(HOST, PEER, 8, protocol=socket.IPPROTO_UDP) + b"\0" * 8
        self.assertIsNone(parse(V4, build_error(V4, 3, 3, quoted)))

    def test_v4_unreachable_words(self):
        request = build_echo(V4, 7, 9, b"")
        words = {code: parse(V4, build_error(V4, 3, code, quote_v4(request))).reason
                 for code in (0, 1, 3, 5, 13)}
        self.assertEqual(words, {0: "network unreachable", 1: "host unreachable",
                                 3: "port unreachable", 5: "destination unreachable (code 5)",
                                 13: "administratively prohibited"})

    def test_v6_errors(self):
        request = build_echo(V6, 7, 9, b"tok")
        quoted = ipv6_header("2001:db8::1", "2001:db8::2", request) + request
        words = {code: parse(V6, build_error(V6, 1, code, quoted)).reason for code in (0, 1, 3)}
        self.assertEqual(words, {0: "network unreachable", 1: "administratively prohibited",
                                 3: "host unreachable"})
        self.assertEqual(parse(V6, build_error(V6, 3, 0, quoted)),
                         Error(3, 0, Echo(False, 7, 9, b"tok"), "2001:db8::2"))

    def test_v6_neighbour_solicitation_ignored(self):
        self.assertIsNone(parse(V6, bytes([135, 0, 0, 0]) + b"\0" * 20))

    @given(family=st.sampled_from([V4, V6]), reply=st.booleans(),
           ident=st.integers(0, 0xFFFF), seq=st.integers(0, 0xFFFF),
           payload=st.binary(max_size=200), ip_header=st.booleans())
    def test_round_trip(self, family, reply, ident, seq, payload, ip_header):
        packet = build_echo(family, ident, seq, payload, reply=reply)
        if family == V4 and ip_header:
            packet = build_ipv4_header(PEER, HOST, len(packet)) + packet
        self.assertEqual(parse(family, packet, ip_header=family == V4 and ip_header),
                         Echo(reply, ident, seq, payload))

    @given(data=st.binary(min_size=0, max_size=120).map(lambda b: b + b"\0" * (len(b) % 2)))
    def test_checksum_of_checksummed_data_is_zero(self, data):
        self.assertEqual(checksum(data + struct.pack("!H", checksum(data))), 0)

    @settings(max_examples=500)
    @given(family=st.sampled_from([V4, V6]), data=st.binary(max_size=200), ip_header=st.booleans())
    def test_parser_never_raises(self, family, data, ip_header):
        self.assertIsInstance(parse(family, data, ip_header=ip_header), (Echo, Error, type(None)))

    @settings(max_examples=300)
    @given(family=st.sampled_from([V4, V6]), cut=st.integers(0, 120),
           flips=st.lists(st.tuples(st.integers(0, 119), st.integers(1, 255)), max_size=4))
    def test_parser_never_raises_on_damaged_errors(self, family, cut, flips):
        """Random bytes rarely look like an error quoting an echo; damage real ones."""
        if family == V4:
            packet = bytearray(build_error(V4, 3, 1, quote_v4(build_echo(V4, 1, 2, b"x" * 40))))
        else:
            request = build_echo(V6, 1, 2, b"x" * 40)
            packet = bytearray(build_error(V6, 1, 3, ipv6_header("::1", "::2", request) + request))
        for at, mask in flips:
            if at < len(packet):
                packet[at] ^= mask
        self.assertIsInstance(parse(family, bytes(packet[:cut])), (Echo, Error, type(None)))


class FakeICMPSocket:
    """Stands in for an ICMP socket: records what is sent; ``deliver`` feeds
    datagrams to the pinger through a real file descriptor."""

    def __init__(self):
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ours.setblocking(False)
        self.sent: list[tuple[bytes, tuple]] = []
        self.send_error: OSError | None = None
        self.closed = False

    def fileno(self):
        return self.ours.fileno()

    def sendto(self, data, address):
        if self.send_error is not None:
            raise self.send_error
        self.sent.append((data, address))
        return len(data)

    def recvfrom(self, size):
        return self.ours.recv(size), (PEER, 0)

    def close(self):
        self.closed = True
        self.ours.close()
        self.theirs.close()

    def deliver(self, data: bytes):
        self.theirs.send(data)


class PingerTests(SynchronousTestCase):
    """Matching replies to checks in flight, one shared socket, clean-up."""

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.sockets: list[FakeICMPSocket] = []
        self.kind = "raw"

    def open_socket(self, family, mode):
        self.sockets.append(FakeICMPSocket())
        self.addCleanup(self.sockets[-1].close)
        return self.sockets[-1], self.kind

    def pinger(self, family=V4) -> Pinger:
        return Pinger(self.reactor, family, "auto", self.open_socket, rng=random.Random(5))

    def sent(self, index=-1, family=V4) -> Echo:
        return parse(family, self.sockets[-1].sent[index][0])

    def reply(self, request: Echo, family=V4, ident=None, payload=None, ip_header=True) -> bytes:
        packet = build_echo(family, request.ident if ident is None else ident, request.seq,
                            request.payload if payload is None else payload, reply=True)
        if family == V4 and ip_header:
            packet = build_ipv4_header(PEER, HOST, len(packet)) + packet
        return packet

    def assert_closed(self, pinger):
        self.assertIsNone(pinger.sock)
        self.assertTrue(self.sockets[-1].closed)
        self.assertEqual(self.reactor.readers, set())

    def test_reply_matched_with_round_trip_time(self):
        pinger = self.pinger()
        d = pinger.ping((PEER, 0))
        self.assertIn(pinger, self.reactor.readers)
        request = self.sent()
        self.assertFalse(request.reply)
        self.assertEqual(request.ident, pinger.ident)
        self.assertTrue(request.payload.startswith(PAYLOAD_MAGIC))
        self.assertEqual(self.sockets[-1].sent[0][1], (PEER, 0))
        self.reactor.advance(0.0125)
        self.sockets[-1].deliver(self.reply(request))
        pinger.doRead()
        self.assertEqual(self.successResultOf(d), CheckResult(True, "echo reply in 12.500 ms"))
        self.assert_closed(pinger)

    def test_reply_with_another_token_ignored(self):
        pinger = self.pinger()
        d = pinger.ping((PEER, 0))
        request = self.sent()
        self.sockets[-1].deliver(self.reply(request, payload=PAYLOAD_MAGIC + b"notours!"))
        pinger.doRead()
        self.assertNoResult(d)
        self.sockets[-1].deliver(self.reply(request))
        pinger.doRead()
        self.assertTrue(self.successResultOf(d).ok)

    def test_raw_reply_with_another_identifier_ignored(self):
        pinger = self.pinger()
        d = pinger.ping((PEER, 0))
        self.sockets[-1].deliver(self.reply(self.sent(), ident=pinger.ident ^ 1))
        pinger.doRead()
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)

    def test_ping_socket_identifier_rewritten_by_kernel(self):
        """A SOCK_DGRAM ping socket: no IP header, the kernel's identifier."""
        self.kind = "dgram"
        pinger = self.pinger()
        d = pinger.ping((PEER, 0))
        self.sockets[-1].deliver(self.reply(self.sent(), ident=pinger.ident ^ 0x5555,
                                            ip_header=False))
        pinger.doRead()
        self.assertTrue(self.successResultOf(d).ok)

    def test_checks_in_flight_share_one_socket(self):
        pinger = self.pinger()
        first = pinger.ping((PEER, 0))
        second = pinger.ping(("198.51.100.3", 0))
        self.assertEqual(len(self.sockets), 1)
        one, two = self.sent(0), self.sent(1)
        self.assertNotEqual(one.seq, two.seq)
        self.reactor.advance(0.002)
        self.sockets[-1].deliver(self.reply(two))
        pinger.doRead()
        self.assertEqual(self.successResultOf(second), CheckResult(True, "echo reply in 2.000 ms"))
        self.assertNoResult(first)
        self.assertIsNotNone(pinger.sock)
        self.reactor.advance(0.001)
        self.sockets[-1].deliver(self.reply(one))
        pinger.doRead()
        self.assertEqual(self.successResultOf(first), CheckResult(True, "echo reply in 3.000 ms"))
        self.assert_closed(pinger)

    def test_one_wake_up_reads_every_waiting_reply(self):
        pinger = self.pinger()
        checks = [pinger.ping((PEER, 0)) for _ in range(3)]
        for i in range(3):
            self.sockets[-1].deliver(self.reply(self.sent(i)))
        pinger.doRead()
        self.assertEqual([self.successResultOf(d).ok for d in checks], [True] * 3)

    def test_cancel_forgets_the_check_and_closes_when_idle(self):
        pinger = self.pinger()
        d = pinger.ping((PEER, 0))
        request = self.sent()
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(pinger.pending, {})
        self.assert_closed(pinger)
        pinger.received(self.reply(request))  # a late reply is nobody's

    def test_cancel_keeps_socket_for_others(self):
        pinger = self.pinger()
        first = pinger.ping((PEER, 0))
        second = pinger.ping((PEER, 0))
        first.cancel()
        self.failureResultOf(first, defer.CancelledError)
        self.assertIsNotNone(pinger.sock)
        self.sockets[-1].deliver(self.reply(self.sent(1)))
        pinger.doRead()
        self.assertTrue(self.successResultOf(second).ok)
        self.assert_closed(pinger)

    def test_host_unreachable_matched(self):
        pinger = self.pinger()
        d = pinger.ping((PEER, 0))
        request = self.sockets[-1].sent[0][0]
        error = build_error(V4, 3, 1, quote_v4(request))
        self.sockets[-1].deliver(build_ipv4_header(HOST, HOST, len(error)) + error)
        pinger.doRead()
        self.assertEqual(self.successResultOf(d), CheckResult(False, "host unreachable"))
        self.assert_closed(pinger)

    def test_error_about_another_destination_ignored(self):
        pinger = self.pinger()
        d = pinger.ping((PEER, 0))
        error = build_error(V4, 3, 1, quote_v4(self.sockets[-1].sent[0][0], "198.51.100.7"))
        pinger.received(build_ipv4_header(HOST, HOST, len(error)) + error)
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)

    def test_ipv6(self):
        pinger = self.pinger(V6)
        sockaddr = ("2001:db8::2", 0, 0, 0)
        d = pinger.ping(sockaddr)
        request = self.sent(family=V6)
        self.assertEqual(self.sockets[-1].sent[0][0][0], 128)
        self.assertEqual(self.sockets[-1].sent[0][1], sockaddr)
        self.sockets[-1].deliver(self.reply(request, family=V6))
        pinger.doRead()
        self.assertTrue(self.successResultOf(d).ok)

    def test_send_error_is_the_reason(self):
        pinger = self.pinger()
        real_open = self.open_socket

        def broken(family, mode):
            sock, kind = real_open(family, mode)
            sock.send_error = OSError(errno.ENETUNREACH, "Network is unreachable")
            return sock, kind

        pinger.open_socket = broken
        self.assertEqual(self.successResultOf(pinger.ping((PEER, 0))),
                         CheckResult(False, "network unreachable"))
        self.assertEqual(pinger.pending, {})
        self.assert_closed(pinger)

    def test_send_refused_by_a_firewall_rule(self):
        real_open = self.open_socket

        def filtered(family, mode):
            sock, kind = real_open(family, mode)
            sock.send_error = PermissionError(errno.EPERM, "Operation not permitted")
            return sock, kind

        pinger = Pinger(self.reactor, V4, "auto", filtered)
        self.assertEqual(self.successResultOf(pinger.ping((PEER, 0))),
                         CheckResult(False, "send failed: Operation not permitted"))

    def test_socket_family_not_supported(self):
        def no_ipv6(family, mode):
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")

        pinger = Pinger(self.reactor, V6, "auto", no_ipv6)
        self.assertEqual(self.successResultOf(pinger.ping(("2001:db8::2", 0, 0, 0))),
                         CheckResult(False, "cannot open an ICMP socket: "
                                            "Address family not supported by protocol"))

    def test_no_socket_tells_the_operator_what_to_do(self):
        def refused(family, mode):
            raise PermissionError(errno.EPERM, "Operation not permitted")

        pinger = Pinger(self.reactor, V4, "auto", refused)
        self.assertEqual(self.successResultOf(pinger.ping((PEER, 0))),
                         CheckResult(False, NO_SOCKET))
        self.assertEqual(self.reactor.readers, set())

    def test_sequence_wraps_and_skips_checks_in_flight(self):
        pinger = self.pinger()
        pinger._next_seq = 0xFFFF
        pinger.ping((PEER, 0))
        pinger.ping((PEER, 0))
        pinger._next_seq = 0xFFFF
        pinger.ping((PEER, 0))
        self.assertEqual([self.sent(i).seq for i in range(3)], [0xFFFF, 0, 1])

    def test_connection_lost_fails_checks_in_flight(self):
        pinger = self.pinger()
        d = pinger.ping((PEER, 0))
        pinger.connectionLost(Failure(Exception("reactor stopping")))
        self.assertEqual(self.successResultOf(d), CheckResult(False, "ICMP socket closed"))
        self.assert_closed(pinger)

    def test_provides_read_descriptor(self):
        self.assertTrue(verifyObject(IReadDescriptor, self.pinger()))


class FakeSystemSocket:
    def __init__(self, family, type_, proto):
        self.args = (family, type_, proto)
        self.options = []

    def setblocking(self, flag):
        self.blocking = flag

    def setsockopt(self, *args):
        self.options.append(args)


class OpenSocketTests(SynchronousTestCase):
    def test_auto_falls_back_to_ping_socket(self):
        def make(family, type_, proto):
            if type_ == socket.SOCK_RAW:
                raise PermissionError(errno.EPERM, "Operation not permitted")
            return FakeSystemSocket(family, type_, proto)

        sock, kind = open_icmp_socket(V4, "auto", make)
        self.assertEqual((kind, sock.args), ("dgram", (V4, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)))
        self.assertEqual(sock.options, [])

    def test_raw_filter_passes_replies_and_errors_only(self):
        sock, kind = open_icmp_socket(V4, "auto", FakeSystemSocket)
        self.assertEqual(kind, "raw")
        [(level, name, value)] = sock.options
        blocked = struct.unpack("I", value)[0]
        self.assertEqual([t for t in range(32) if not blocked >> t & 1], [0, 3, 11])

    def test_raw_icmpv6_filter(self):
        sock, _ = open_icmp_socket(V6, "raw", FakeSystemSocket)
        [(level, name, value)] = sock.options
        words = struct.unpack("8I", value)
        passed = [t for t in range(256) if not words[t >> 5] >> (t & 31) & 1]
        self.assertEqual(passed, [1, 3, 129])

    def test_forced_mode_does_not_fall_back(self):
        def make(family, type_, proto):
            raise PermissionError(errno.EACCES, "Permission denied")

        self.assertRaises(PermissionError, open_icmp_socket, V4, "dgram", make)


class StubResolver:
    def __init__(self):
        self.receivers = {}

    def resolveHostName(self, receiver, host, *args, **kw):
        receiver.resolutionBegan(None)
        self.receivers[host] = receiver


class ICMPMonitorTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.sockets = []

        def open_socket(family, mode):
            self.sockets.append((family, mode, FakeICMPSocket()))
            self.addCleanup(self.sockets[-1][2].close)
            return self.sockets[-1][2], "raw"

        self.monitor = ICMPMonitor(Monitor("ping", "icmp"), {}, self.reactor,
                                   pingers=Pingers(self.reactor, open_socket))

    def test_options(self):
        with self.assertRaises(OptionError) as e:
            ICMPMonitor(Monitor("ping", "icmp"), {"socket": "cooked"}, self.reactor)
        self.assertEqual(e.exception.key, "socket")
        with self.assertRaises(OptionError) as e:
            ICMPMonitor(Monitor("ping", "icmp"), {"colour": "red"}, self.reactor)
        self.assertEqual(e.exception.key, "colour")
        self.assertEqual(ICMPMonitor(Monitor("p", "icmp"), {"socket": "dgram"}, self.reactor).mode,
                         "dgram")

    def test_provides_monitor(self):
        self.assertTrue(verifyObject(IMonitor, self.monitor))

    def test_literal_addresses_pick_the_family(self):
        d4 = self.monitor.check(member("198.51.100.2"))
        d6 = self.monitor.check(member("2001:db8::2"))
        self.assertEqual([(f, m) for f, m, _ in self.sockets], [(V4, "auto"), (V6, "auto")])
        self.assertEqual(self.sockets[0][2].sent[0][1], ("198.51.100.2", 0))
        self.assertEqual(self.sockets[1][2].sent[0][1][:2], ("2001:db8::2", 0))
        for d in (d4, d6):
            d.cancel()
            self.failureResultOf(d, defer.CancelledError)

    def test_host_name_resolved_first(self):
        resolver = self.reactor.nameResolver = StubResolver()
        d = self.monitor.check(member("db1.example"))
        self.assertEqual(self.sockets, [])
        from twisted.internet.address import IPv4Address

        resolver.receivers["db1.example"].addressResolved(IPv4Address("TCP", "198.51.100.2", 0))
        resolver.receivers["db1.example"].resolutionComplete()
        self.assertEqual(self.sockets[0][2].sent[0][1], ("198.51.100.2", 0))
        d.cancel()  # forwarded to the ping
        self.failureResultOf(d, defer.CancelledError)
        self.assertTrue(self.sockets[0][2].closed)

    def test_unknown_host_name(self):
        resolver = self.reactor.nameResolver = StubResolver()
        d = self.monitor.check(member("nowhere.invalid"))
        resolver.receivers["nowhere.invalid"].resolutionComplete()
        self.assertEqual(self.successResultOf(d),
                         CheckResult(False, "cannot resolve nowhere.invalid"))

    def test_cancel_while_resolving(self):
        resolver = self.reactor.nameResolver = StubResolver()
        d = self.monitor.check(member("slow.example"))
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        resolver.receivers["slow.example"].resolutionComplete()  # late: ignored
        self.assertEqual(self.sockets, [])

    def test_registered(self):
        added = []

        class Registry:
            def add(self, name, factory):
                added.append((name, factory))

        icmp.lbframe_register_monitors(Registry())
        self.assertEqual(added, [("icmp", ICMPMonitor)])


def can_ping(family) -> bool:
    try:
        sock, _ = open_icmp_socket(family, "auto")
    except OSError:
        return False
    sock.close()
    return True


class LoopbackTests(TestCase):
    """Real echo requests to this host's loopback addresses."""

    def setUp(self):
        require(can_ping(V4), "cannot open an ICMP socket (not root, ping_group_range)")

    def check(self, host, **kw):
        return ICMPMonitor(Monitor("ping", "icmp"), {}, reactor, **kw).check(member(host))

    @defer.inlineCallbacks
    def test_ipv4_loopback(self):
        result = yield self.check("127.0.0.1")
        self.assertTrue(result.ok)
        self.assertRegex(result.reason, r"^echo reply in \d+\.\d{3} ms$")

    @defer.inlineCallbacks
    def test_ipv6_loopback(self):
        if not can_ping(V6) or not socket.has_ipv6:
            raise self.skipTest("no IPv6")
        result = yield self.check("::1")
        self.assertTrue(result.ok)
        self.assertRegex(result.reason, r"^echo reply in \d+\.\d{3} ms$")

    @defer.inlineCallbacks
    def test_concurrent_checks_share_one_socket(self):
        opened = []

        def counting(family, mode):
            opened.append(family)
            return open_icmp_socket(family, mode)

        pingers = Pingers(reactor, counting)
        results = yield defer.gatherResults([self.check("127.0.0.1", pingers=pingers)
                                             for _ in range(8)])
        self.assertEqual([r.ok for r in results], [True] * 8)
        self.assertEqual(opened, [V4])
        self.assertIsNone(pingers.get(V4, "auto").sock)
