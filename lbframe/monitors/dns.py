"""``type = dns`` (F7e): ask the member a real DNS question (keepalived's
``DNS_CHECK``).

The check sends one query for ``name`` (record type ``record``, default
``A``; not ``type``, which is the monitor's own type) over UDP to the
member's address and port (or ``port``) and passes when the answer is
NOERROR — and, with ``expect``, when the answer section's text matches the
regex. A reply with the TC (truncated) bit is asked again over TCP, as a
resolver would. The reason says what came back: ``NXDOMAIN``,
``SERVFAIL``, ``REFUSED``, ``port unreachable (ICMP)``, ``malformed reply``;
the runner says ``timeout after 2s`` when nothing came in time.

Queries and replies are built and parsed by dnspython (the real wire
format, name compression, EDNS), not by a packer of our own: a monitor that
misreads answers would take good members out. UDP loss is covered by one
resend halfway through the timeout; each check uses a fresh socket (a new
source port and query id), so a late reply to an older check cannot pass
a new one.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import struct

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

from lbframe import hookimpl
from lbframe.errors import OptionError, describe_connect_error, reject_unknown_options
from lbframe.interfaces import IMonitor
from lbframe.monitoring import BaseMonitor, CheckResult, check_port
from lbframe.monitors.tcp import client_endpoint

#: a DNS message over TCP is at most this long (its 2-byte length prefix)
MAX_TCP_MESSAGE = 65535
#: the largest UDP reply we read (EDNS payload we advertise)
UDP_PAYLOAD = 4096


def _build_query(name: dns.name.Name, rdtype) -> dns.message.Message:
    # EDNS with a 4 KiB payload like resolvers; RD off: we ask the member
    # itself (an authoritative server, or a resolver answering from cache).
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=UDP_PAYLOAD)
    query.flags &= ~dns.flags.RD
    return query


def judge(query: dns.message.Message, wire: bytes, expect) -> CheckResult | None:
    """The check's verdict on one reply, or None when ``wire`` is not a
    reply to ``query`` (another id or question: wait for the right one)."""
    try:
        reply = dns.message.from_wire(wire)
    except dns.message.Truncated:
        raise
    except (dns.exception.DNSException, ValueError, struct.error) as e:
        return CheckResult(False, f"malformed reply: {e}")
    if not query.is_response(reply):
        return None
    if reply.flags & dns.flags.TC:
        raise dns.message.Truncated()
    rcode = reply.rcode()
    if rcode != dns.rcode.NOERROR:
        return CheckResult(False, dns.rcode.to_text(rcode))
    if expect is not None:
        text = "\n".join(rrset.to_text() for rrset in reply.answer)
        if expect.search(text) is None:
            shown = text.replace("\n", "; ")[:120] or "no answer"
            return CheckResult(False, f"answer does not match expect: {shown}")
    return CheckResult(True)


@implementer(IReadDescriptor)
class _UDPAsk:
    """One query over a connected UDP socket of our own, read through the
    reactor's ``addReader``. (Twisted's UDP ``Port`` closes itself when an
    ICMP error leaves the socket with an error and nothing to read, without
    telling its protocol; here that error is the answer "port unreachable".)
    """

    def __init__(self, check: "_Check", sock: socket.socket):
        self.check = check
        self.sock = sock
        self.fd = sock.fileno()

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "lbframe.monitor.dns"

    def doRead(self):
        for _ in range(8):  # bounded: stray datagrams cannot keep us here
            try:
                data = self.sock.recv(UDP_PAYLOAD)
            except BlockingIOError:
                return None
            except OSError as e:
                self.check.udp_error(e.errno)
                return None
            self.check.udp_reply(data)
            if self.check.done or self.check.udp is not self:
                return None  # answered, or gone on to TCP
        return None

    def connectionLost(self, reason):
        if self.check.done:
            return
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.check.udp_error(err or errno.EIO)


class _TCPAsk(protocol.Protocol):
    """The same query over TCP, after a truncated UDP reply."""

    def __init__(self, check: "_Check"):
        self.check = check
        self.buffer = b""

    def connectionMade(self):
        wire = self.check.wire
        self.transport.write(struct.pack("!H", len(wire)) + wire)

    def dataReceived(self, data):
        self.buffer += data
        if len(self.buffer) < 2:
            return
        (length,) = struct.unpack("!H", self.buffer[:2])
        if len(self.buffer) < 2 + length:
            return
        wire = self.buffer[2:2 + length]
        try:
            result = judge(self.check.query, wire, self.check.expect)
        except dns.message.Truncated:
            result = CheckResult(False, "truncated reply over TCP")
        if result is None:
            result = CheckResult(False, "TCP reply does not answer the query")
        self.check.finish(result)

    def connectionLost(self, reason=None):
        self.check.finish(CheckResult(False, "TCP fallback: closed before a full reply"))


class _Check:
    """One check in flight: its socket(s), resend timer and Deferred."""

    def __init__(self, monitor: "DNSMonitor", host: str, port: int):
        self.monitor = monitor
        self.reactor = monitor.reactor
        self.host, self.port = host, port
        self.query = _build_query(monitor.name, monitor.rdtype)
        self.wire = self.query.to_wire()
        self.expect = monitor.expect
        self.deferred = defer.Deferred(lambda _: self.cleanup())
        self.udp = None
        self.tcp = None
        self.tcp_connecting = None
        self.resend = None
        self.done = False

    def start(self) -> defer.Deferred:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect((self.host, self.port))
        except OSError as e:
            self.finish(CheckResult(False, f"cannot ask over UDP: {e.strerror or e}"))
            return self.deferred
        self.udp = _UDPAsk(self, sock)
        self.reactor.addReader(self.udp)
        self._send()
        if not self.done:
            self.resend = self.reactor.callLater(self.monitor.spec.timeout / 2, self._send)
        return self.deferred

    def _send(self) -> None:
        self.resend = None
        if self.udp is None or self.done:
            return
        try:
            self.udp.sock.send(self.wire)
        except BlockingIOError:
            pass  # the resend (or the timeout) decides
        except OSError as e:
            self.udp_error(e.errno)

    def udp_error(self, err: int) -> None:
        if err == errno.ECONNREFUSED:
            self.finish(CheckResult(False, "port unreachable (ICMP)"))
        else:
            self.finish(CheckResult(False, f"UDP error: {os.strerror(err).lower()}"))

    def udp_reply(self, data: bytes) -> None:
        if self.done:
            return
        try:
            result = judge(self.query, data, self.expect)
        except dns.message.Truncated:
            self._close_udp()
            self._ask_tcp()
            return
        if result is not None:
            self.finish(result)

    def _ask_tcp(self) -> None:
        endpoint = client_endpoint(self.reactor, self.host, self.port, self.monitor.spec.timeout)
        factory = protocol.Factory.forProtocol(lambda: _TCPAsk(self))
        factory.noisy = False
        self.tcp_connecting = d = endpoint.connect(factory)

        def connected(proto):
            self.tcp_connecting = None
            self.tcp = proto
            if self.done:
                proto.transport.abortConnection()

        def failed(failure):
            self.tcp_connecting = None
            if not failure.check(defer.CancelledError):
                self.finish(CheckResult(False, "TCP fallback: " + describe_connect_error(failure)))

        d.addCallbacks(connected, failed)

    def finish(self, result: CheckResult) -> None:
        if self.done:
            return
        self.done = True
        self.cleanup()
        self.deferred.callback(result)

    def _close_udp(self) -> None:
        if self.resend is not None and self.resend.active():
            self.resend.cancel()
        self.resend = None
        udp, self.udp = self.udp, None
        if udp is not None:
            self.reactor.removeReader(udp)
            udp.sock.close()

    def cleanup(self) -> None:
        """Close whatever is open (the check ended, or the runner cancelled it)."""
        self.done = True
        self._close_udp()
        if self.tcp_connecting is not None:
            self.tcp_connecting.cancel()
        if self.tcp is not None and self.tcp.transport is not None:
            self.tcp.transport.abortConnection()
            self.tcp = None


@implementer(IMonitor)
class DNSMonitor(BaseMonitor):
    KEYS = ("name", "record")

    def __init__(self, spec, options, reactor):
        reject_unknown_options(options, "monitor type dns", self.KEYS)
        if "name" not in options:
            raise OptionError("name", "required for type dns: the name to ask about, "
                                      "e.g. name = www.example.com")
        try:
            self.name = dns.name.from_text(options["name"])
        except dns.exception.DNSException as e:
            raise OptionError("name", f"bad DNS name {options['name']!r}: {e}") from None
        record = options.get("record", "A")
        try:
            self.rdtype = dns.rdatatype.from_text(record.upper())
        except dns.exception.DNSException:
            raise OptionError("record", f"unknown record type {record!r} "
                                        "(use A, AAAA, MX, NS, SOA, TXT, ...)") from None
        self.expect = re.compile(spec.expect) if spec.expect else None
        self.spec = spec
        self.reactor = reactor

    def check(self, member):
        # Nothing outlives a check (cancel closes its sockets): BaseMonitor's idle.
        return _Check(self, member.address.host, check_port(self.spec, member)).start()


@hookimpl
def lbframe_register_monitors(registry):
    registry.add("dns", DNSMonitor)
