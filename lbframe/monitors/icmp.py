"""``type = icmp`` (F7a): the member answers an ICMP (or ICMPv6) echo request.

This proves L3 reachability only: the host's kernel answers pings even when
every service on it is dead.

One socket per address family serves every check in flight in this process
(a :class:`Pinger`, registered with the reactor as a reader — no thread, no
socket per check). It is opened when a check needs it and closed when no
check is in flight, so an idle lbframe does not read every ICMP packet the
host receives.

Which socket: a raw socket when the process may open one (root or
``CAP_NET_RAW``), else an unprivileged ``SOCK_DGRAM`` ping socket when
``net.ipv4.ping_group_range`` includes the process's group. The kernel
rewrites the identifier of a ping socket's requests, so replies are matched
on the sequence number plus a random token in the payload (and, on raw
sockets, on the identifier too). Only raw sockets see ICMP errors such as
destination unreachable; a ping socket's checks just time out.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import random
import socket
import struct

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor, IResolutionReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from lbframe import hookimpl
from lbframe.errors import OptionError
from lbframe.interfaces import IMonitor
from lbframe.monitoring import BaseMonitor, CheckResult
from lbframe.monitors.icmp_packet import (
    DEST_UNREACHABLE_V4, ECHO_REPLY_V4, TIME_EXCEEDED_V4, Echo, Error, build_echo, parse,
)

#: starts every payload so that captures and the members' logs show who pings (F7g)
PAYLOAD_MAGIC = b"lbframe "
MODES = ("auto", "raw", "dgram")
NO_SOCKET = ("cannot open an ICMP socket: run as root, grant CAP_NET_RAW, or allow "
             "this group in net.ipv4.ping_group_range")

# Linux socket options that keep raw sockets from waking us for every ICMP
# packet the host sees (our own echo requests on loopback, neighbour discovery).
_SOL_RAW, _ICMP_FILTER = 255, 1
_ICMP6_FILTER = 1


def open_icmp_socket(family: int, mode: str,
                     make_socket=socket.socket) -> tuple[socket.socket, str]:
    """A non-blocking ICMP socket and the kind it is (``raw`` or ``dgram``).

    ``auto`` tries raw first. Raises :class:`OSError` when none can be opened.
    """
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    kinds = ("raw", "dgram") if mode == "auto" else (mode,)
    error: OSError | None = None
    for kind in kinds:
        try:
            sock = make_socket(family, socket.SOCK_RAW if kind == "raw" else socket.SOCK_DGRAM,
                                 proto)
        except PermissionError as e:
            error = e
            continue
        sock.setblocking(False)
        if kind == "raw":
            _install_filter(sock, family)
        return sock, kind
    assert error is not None
    raise error


def _install_filter(sock: socket.socket, family: int) -> None:
    """Let only echo replies and the errors we match reach a raw socket (best effort)."""
    try:
        if family == socket.AF_INET6:
            blocked = [0xFFFFFFFF] * 8  # a set bit blocks that type
            for type_ in (1, 3, 129):  # unreachable, time exceeded, echo reply
                blocked[type_ >> 5] &= ~(1 << (type_ & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("8I", *blocked))
        else:
            passed = (1 << ECHO_REPLY_V4) | (1 << DEST_UNREACHABLE_V4) | (1 << TIME_EXCEEDED_V4)
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("I", ~passed & 0xFFFFFFFF))
    except OSError:
        pass  # not Linux: parse() ignores what we do not want anyway


def describe_open_error(err: OSError) -> str:
    """Operator-facing words for an ICMP socket that cannot be opened."""
    if isinstance(err, PermissionError):
        return NO_SOCKET
    return f"cannot open an ICMP socket: {err.strerror or err}"


def describe_send_error(err: OSError) -> str:
    """Operator-facing words for an echo request the kernel refused to send
    (no route, a local firewall rule, a broadcast address)."""
    words = {errno.ENETUNREACH: "network unreachable", errno.EHOSTUNREACH: "host unreachable"}
    return words.get(err.errno, f"send failed: {err.strerror or err}")


@attrs.define(eq=False)
class _Pending:
    seq: int
    payload: bytes
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address
    deferred: defer.Deferred
    sent: float


def _address(text: str):
    return ipaddress.ip_address(text.split("%", 1)[0])


@implementer(IReadDescriptor)
class Pinger:
    """One ICMP socket of one address family, shared by all checks in flight."""

    #: datagrams read per wake-up before yielding to the rest of the reactor
    max_reads = 64

    def __init__(self, reactor, family: int, mode: str = "auto", open_socket=open_icmp_socket,
                 rng: random.Random | None = None):
        self.reactor = reactor
        self.family = family
        self.mode = mode
        self.open_socket = open_socket
        rng = rng or random.Random()
        #: our identifier on raw sockets (a ping socket's kernel sets its own)
        self.ident = rng.getrandbits(16)
        self._next_seq = rng.getrandbits(16)
        self.sock: socket.socket | None = None
        self.kind: str | None = None
        self.pending: dict[int, _Pending] = {}

    # -- checks ---------------------------------------------------------

    def ping(self, sockaddr: tuple) -> defer.Deferred:
        """Send one echo request to ``sockaddr``; fires with a CheckResult on the
        matching reply or error. Cancelling it forgets the request."""
        if self.sock is None:
            try:
                self.sock, self.kind = self.open_socket(self.family, self.mode)
            except OSError as e:
                return defer.succeed(CheckResult(False, describe_open_error(e)))
            self.reactor.addReader(self)
        if len(self.pending) >= 0x10000:
            return defer.succeed(CheckResult(False, "too many ICMP checks in flight"))
        seq = self._take_seq()
        entry = _Pending(seq, PAYLOAD_MAGIC + os.urandom(8), _address(sockaddr[0]), None,
                         self.reactor.seconds())
        entry.deferred = defer.Deferred(lambda d: self._forget(entry))
        self.pending[seq] = entry
        try:
            self.sock.sendto(build_echo(self.family, self.ident, seq, entry.payload), sockaddr)
        except OSError as e:
            self._forget(entry)
            return defer.succeed(CheckResult(False, describe_send_error(e)))
        return entry.deferred

    def _take_seq(self) -> int:
        while True:
            seq = self._next_seq
            self._next_seq = (seq + 1) & 0xFFFF
            if seq not in self.pending:
                return seq

    def _forget(self, entry: _Pending) -> None:
        if self.pending.get(entry.seq) is entry:
            del self.pending[entry.seq]
        if not self.pending:
            self._close()

    def _finish(self, entry: _Pending, result: CheckResult) -> None:
        self._forget(entry)
        entry.deferred.callback(result)

    def _close(self) -> None:
        if self.sock is not None:
            self.reactor.removeReader(self)
            self.sock.close()
            self.sock = None

    # -- IReadDescriptor ------------------------------------------------

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def logPrefix(self) -> str:
        return "icmp"

    def doRead(self):
        for _ in range(self.max_reads):
            if self.sock is None:
                return None
            try:
                data, _ = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                continue  # a pending socket error; the datagrams behind it still count
            self.received(data)
        return None

    def connectionLost(self, reason: Failure) -> None:
        """The reactor is shutting down (or dropped us): fail what is in flight."""
        entries = list(self.pending.values())
        self.pending.clear()
        self._close()
        for entry in entries:
            entry.deferred.callback(CheckResult(False, "ICMP socket closed"))

    # -- matching -------------------------------------------------------

    def received(self, data: bytes) -> None:
        """Match one datagram from the socket to a check in flight."""
        ip_header = self.family == socket.AF_INET and self.kind == "raw"
        message = parse(self.family, data, ip_header=ip_header)
        if isinstance(message, Echo) and message.reply:
            entry = self._match(message)
            if entry is not None and message.payload.startswith(entry.payload):
                rtt = max(0.0, self.reactor.seconds() - entry.sent)
                self._finish(entry, CheckResult(True, f"echo reply in {rtt * 1000:.3f} ms"))
        elif isinstance(message, Error):
            entry = self._match(message.original)
            quoted = message.original.payload[:len(entry.payload)] if entry else b""
            if (entry is not None and entry.payload.startswith(quoted)
                    and _address(message.destination) == entry.destination):
                self._finish(entry, CheckResult(False, message.reason))

    def _match(self, echo: Echo) -> _Pending | None:
        entry = self.pending.get(echo.seq)
        if entry is None or (self.kind == "raw" and echo.ident != self.ident):
            return None
        return entry


class Pingers:
    """The :class:`Pinger` of each (family, mode), created when first asked for."""

    def __init__(self, reactor, open_socket=open_icmp_socket):
        self.reactor = reactor
        self.open_socket = open_socket
        self._pingers: dict[tuple[int, str], Pinger] = {}

    def get(self, family: int, mode: str) -> Pinger:
        key = (family, mode)
        if key not in self._pingers:
            self._pingers[key] = Pinger(self.reactor, family, mode, self.open_socket)
        return self._pingers[key]


#: reactor -> its Pingers; a process has one reactor, tests pass their own Pingers
_shared: dict = {}


def shared_pingers(reactor) -> Pingers:
    """The process-wide :class:`Pingers` of ``reactor`` (sockets are still only
    open while checks are in flight)."""
    if reactor not in _shared:
        _shared[reactor] = Pingers(reactor)
    return _shared[reactor]


def literal_sockaddr(host: str) -> tuple[int, tuple] | None:
    """``(family, sockaddr)`` for an address literal (IPv6 scope ids kept), else ``None``."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    info = socket.getaddrinfo(host, 0, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)
    return family, info[0][4]


@implementer(IResolutionReceiver)
class _FirstAddress:
    """Receives a host name's addresses; fires with the first one (or ``None``)."""

    def __init__(self):
        self.address = None
        self.deferred = defer.Deferred()

    def resolutionBegan(self, resolution):
        pass

    def addressResolved(self, address):
        if self.address is None:
            self.address = address

    def resolutionComplete(self):
        if not self.deferred.called:
            self.deferred.callback(self.address)


@implementer(IMonitor)
class ICMPMonitor(BaseMonitor):
    """Options: ``socket = auto | raw | dgram`` (default ``auto``)."""

    def __init__(self, spec, options, reactor, pingers: Pingers | None = None):
        options = dict(options)
        self.mode = options.pop("socket", "auto")
        if self.mode not in MODES:
            raise OptionError("socket", f"must be one of {', '.join(MODES)}, not {self.mode!r}")
        for key in options:
            raise OptionError(key, f"unknown key {key!r} for monitor type icmp")
        self.spec = spec
        self.reactor = reactor
        self.pingers = pingers

    def check(self, member):
        host = member.address.host
        target = literal_sockaddr(host)
        if target is not None:
            return self._ping(target)
        receiver = _FirstAddress()
        self.reactor.nameResolver.resolveHostName(receiver, host)

        def resolved(address):
            if address is None:
                return CheckResult(False, f"cannot resolve {host}")
            return self._ping(literal_sockaddr(address.host))

        # Cancelling while we resolve just stops waiting (a Deferred without a
        # canceller eats the late result); once the echo is sent, Deferred
        # chaining forwards the cancel to the ping.
        outer = defer.Deferred()
        receiver.deferred.chainDeferred(outer)
        return outer.addCallback(resolved)

    def _ping(self, target):
        family, sockaddr = target
        pingers = self.pingers or shared_pingers(self.reactor)
        return pingers.get(family, self.mode).ping(sockaddr)


@hookimpl
def lbframe_register_monitors(registry):
    registry.add("icmp", ICMPMonitor)
