"""``protocol = udp``: UDP load balancing with a flow table (docs/udp.md).

How it works, and why (nginx's ``stream`` UDP proxy and LVS do the same):

- **One socket per VIP.** Datagrams from every client arrive on it and the
  replies leave from it, so clients see the answer come from the address
  and port they asked.
- **A flow per client address** (``udp_mode = flow``, the default): the
  first datagram from ``host:port`` is balanced (persistence, the pool's
  scheduler, the sorry pool) and gets its own UDP socket *connected* to the
  chosen member. The kernel then delivers that member's replies — and only
  its replies — on that socket, so a reply is matched to its client without
  looking inside it, and an ICMP port-unreachable from the member comes back
  as ``ECONNREFUSED`` on it (a member failure for passive health).
  Later datagrams from the same client go the same way while the flow lives.
- ``udp_mode = datagram``: every datagram is balanced on its own (DNS,
  syslog, RADIUS: one-shot protocols where a client's port carries
  unrelated questions). The socket toward a member is shared by the
  client's datagrams that went to that member and closed as soon as each
  of them was answered (nginx's ``proxy_responses 1``), or when idle.
- **Idle expiry** (``timeout_client``, 30 s by default for udp): a flow with
  no datagram either way for that long ends. The table is an
  ``OrderedDict`` in least-recently-used order, so a sweep every
  ``timeout/8`` (at most 1 s) only looks at the flows that expire.
- **A bounded table** (``max_flows``, default 10 000 per virtual server):
  a new flow beyond it evicts the least recently used one. A flood of
  one-datagram flows therefore costs at most ``max_flows`` sockets, and
  memory stays flat; each flow holds one descriptor and is counted by the
  process's accept gate (``[lbframe] max_connections``).
- **Stopping** (a reload that changes ``listen``, a stop) closes the VIP
  socket, and live flows go on: each gets a socket bound to the VIP address
  and connected to its client (the kernel prefers it to an unconnected
  socket for that client's datagrams), so replies still leave from the VIP
  and a replacement listener can bind the address at once.
- ``source = client`` (transparent mode, Linux ``IP_TRANSPARENT``): the
  socket toward the member is bound to the client's own address and port,
  so members see who asks. Their replies must be routed back through
  lbframe (see docs/udp.md); needs CAP_NET_ADMIN.

The hot path reads into one preallocated 64 KiB buffer and forwards a
``memoryview`` slice of it: no allocation per datagram.
"""

from __future__ import annotations

import collections
import errno
import socket
from _socket import socket as raw_socket

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from lbframe import hookimpl
from lbframe.accesslog import access_log_for, access_log_setting
from lbframe.balancer import Balancer, RequestContext
from lbframe.config.values import split_endpoint
from lbframe.errors import ListenError, OptionError, reject_unknown_options
from lbframe.interfaces import IListener, IProtocol
from lbframe.protocols.accept import EXHAUSTION, AcceptGate
from lbframe.protocols.endpoints import set_freebind, sockaddr_of
from lbframe.protocols.engine import RelayEngine
from lbframe.protocols.listening import ListenOutcome, reported_elsewhere

log = Logger(namespace="lbframe.udp")

#: the largest UDP payload (IPv6 without jumbograms: 65 535 − 8); the buffer holds it
MAX_DATAGRAM = 65536
#: datagrams read per readable event of one socket (then others get a turn)
READ_BATCH = 64
#: default ``max_flows``
DEFAULT_MAX_FLOWS = 10000
#: default ``timeout_client`` for protocol udp (the config's 60 s is for tcp)
DEFAULT_TIMEOUT = 30.0
#: datagrams a flow holds while a remote persistence store is read
PENDING_LIMIT = 16
MODES = ("flow", "datagram")
SOURCES = ("lbframe", "client")
#: Linux <linux/in.h>, <linux/in6.h>: not in the socket module
IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IPV6_TRANSPARENT = 75

_DGRAM_NONBLOCK = socket.SOCK_DGRAM | socket.SOCK_NONBLOCK


@attrs.define(eq=False)
class UDPCounters:
    """A udp virtual server's own counters (``/api/status`` ``udp``,
    ``/metrics`` ``lbframe_udp_*``); kept on its :class:`VirtualState`
    so that a reload carries them."""

    datagrams_in: int = 0
    datagrams_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    #: datagrams not forwarded: no member, paused, send failed
    dropped: int = 0
    #: flows ended by max_flows (least recently used first)
    evicted: int = 0
    #: flows ended by timeout_client
    expired: int = 0
    #: ICMP port unreachable (ECONNREFUSED) seen from members
    unreachable: int = 0
    #: live flows (the table's size)
    flows: int = 0
    #: the max_flows in force
    max_flows: int = 0

    def as_dict(self) -> dict:
        return attrs.asdict(self)


# -- configuration ------------------------------------------------------------

@attrs.frozen
class UDPBind:
    host: str
    port: int
    family: int
    #: the endpoint as written, for messages
    text: str

    def __str__(self) -> str:
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def udp_bind(description: str) -> UDPBind:
    """The address to bind for a ``udp:PORT[:interface=IP]`` endpoint."""
    try:
        kind, args, kw = split_endpoint(description.strip())
    except ValueError as e:
        raise OptionError("listen", f"bad endpoint {description!r}: {e}") from None
    if kind != "udp":
        raise OptionError("listen", f"endpoint {description!r}: protocol udp listens on "
                                    "udp: endpoints")
    port_text = args[0] if args else kw.get("port", "")
    try:
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise OptionError("listen", f"endpoint {description!r}: bad port {port_text!r}") from None
    host = kw.get("interface", "0.0.0.0")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return UDPBind(host, port, family, description)


def _positive_int(key: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise OptionError(key, f"expected a whole number of at least 1, got {text!r}")
    return value


def _choice(key: str, text: str, choices: tuple[str, ...]) -> str:
    word = text.strip().lower()
    if word not in choices:
        raise OptionError(key, f"expected {' or '.join(choices)}, got {text!r}")
    return word


# -- flows ----------------------------------------------------------------------

@implementer(IReadDescriptor)
class Flow:
    """One client (flow mode), or one client and member (datagram mode):
    the connected socket toward the member and the flow's counters."""

    __slots__ = ("server", "vip", "addr", "key", "sock", "fd", "decision", "member",
                 "context", "started", "last", "dgrams_in", "dgrams_out", "bytes_in",
                 "bytes_out", "pending", "answered", "sent_at", "closed", "table",
                 "waiting", "per_datagram")

    def __init__(self, server: "UDPVirtualServer", vip: "_VIPSocket", addr, key, context):
        self.server = server
        self.vip = vip
        self.addr = addr
        self.key = key
        self.table = vip.flows
        self.context = context
        self.sock = None
        self.fd = -1
        self.decision = None
        self.member = None
        self.started = self.last = server.now
        self.dgrams_in = self.dgrams_out = self.bytes_in = self.bytes_out = 0
        #: datagram mode: datagrams sent and not answered yet
        self.pending = 0
        self.answered = False
        #: when the first unanswered datagram was sent (a response-time sample)
        self.sent_at = None
        self.closed = False
        #: datagrams held while a remote persistence store is read, or None
        self.waiting = None
        #: datagram mode: the member's connection count is taken per datagram
        self.per_datagram = server.datagram_mode

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "lbframe.udp.flow"

    def doRead(self):
        """The member answered: send each reply from the VIP socket."""
        server = self.server
        recv_into = self.sock.recv_into
        buf, view = server.buf, server.view
        sendto = self.vip.sock.sendto
        addr = self.addr
        counters = server.counters
        for _ in range(READ_BATCH):
            try:
                n = recv_into(buf)
            except BlockingIOError:
                break
            except OSError as e:
                server.member_error(self, e.errno)
                return None
            try:
                sendto(view[:n], addr)
            except OSError:
                counters.dropped += 1
                continue
            self.dgrams_out += 1
            self.bytes_out += n
            counters.datagrams_out += 1
            counters.bytes_out += n
            if self.sent_at is not None:
                server.first_reply(self)
            if self.pending:
                server.answered(self)
                if self.closed:
                    return None
        self.last = server.now
        self.table.move_to_end(self.key)
        return None

    def connectionLost(self, reason):
        """An error is pending on the socket with nothing to read: an ICMP
        error from the member (port unreachable → ECONNREFUSED)."""
        if self.closed or self.sock is None:
            return
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.server.member_error(self, err or errno.EIO)


@implementer(IReadDescriptor)
class _VIPSocket:
    """One bound VIP socket: reads client datagrams in batches and keeps the
    flows of the clients that sent to it (least recently used first)."""

    def __init__(self, server: "UDPVirtualServer", bind: UDPBind, sock: socket.socket):
        self.server = server
        self.bind = bind
        self.sock = sock
        self.fd = sock.fileno()
        self.flows: collections.OrderedDict = collections.OrderedDict()
        self.reading = False

    #: a VIP socket of a running listener (see _ReplySocket)
    retired = False

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return f"lbframe.udp.{self.server.virtual.name}"

    def doRead(self):
        server = self.server
        recvfrom_into = self.sock.recvfrom_into
        buf, view = server.buf, server.view
        flows = self.flows
        get = flows.get
        move = flows.move_to_end
        counters = server.counters
        datagram_mode = server.datagram_mode
        for _ in range(READ_BATCH):
            try:
                n, addr = recvfrom_into(buf)
            except BlockingIOError:
                return None
            except OSError:
                # ICMP errors toward clients surface here (ECONNREFUSED after
                # a reply to a client that left): nothing to do with the VIP.
                continue
            counters.datagrams_in += 1
            counters.bytes_in += n
            if datagram_mode:
                server.datagram(self, addr, view[:n])
                continue
            flow = get(addr)
            if flow is None:
                server.new_flow(self, addr, view[:n])
                continue
            if flow.sock is None:  # still deciding (remote persistence store)
                server.hold(flow, view[:n])
                continue
            try:
                flow.sock.send(view[:n])
            except OSError as e:
                server.send_failed(flow, e.errno)
                continue
            flow.dgrams_in += 1
            flow.bytes_in += n
            if flow.sent_at is None and not flow.answered:
                flow.sent_at = server.clock.seconds()
            flow.last = server.now
            move(addr)
        return None

    def connectionLost(self, reason):
        """An error pending with nothing to read (the kernel reports ICMP
        errors on an unconnected socket only with IP_RECVERR, so this is
        not expected): read it, which clears it, so that epoll does not
        report it again and again."""
        try:
            self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError:
            pass


@implementer(IReadDescriptor)
class _ReplySocket:
    """A flow of a listener that stopped listening: a socket bound to the
    VIP address and connected to the flow's client. Replies leave from it;
    what the client still sends arrives on it and goes on to the member."""

    retired = True

    def __init__(self, server: "UDPVirtualServer", flow: Flow, sock):
        self.server = server
        self.flow = flow
        self.sock = sock
        self.fd = sock.fileno()
        self.bind = flow.vip.bind

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "lbframe.udp.retired"

    def doRead(self):
        server, flow = self.server, self.flow
        buf, view = server.buf, server.view
        counters = server.counters
        for _ in range(READ_BATCH):
            try:
                n = self.sock.recv_into(buf)
            except BlockingIOError:
                return None
            except OSError:
                # ICMP from the client (it left): nothing more will come back.
                server.end_flow(flow, "client unreachable")
                return None
            counters.datagrams_in += 1
            counters.bytes_in += n
            if flow.sock is None:
                server.hold(flow, view[:n])
                continue
            try:
                flow.sock.send(view[:n])
            except OSError as e:
                server.send_failed(flow, e.errno)
                if flow.closed:
                    return None
                continue
            flow.dgrams_in += 1
            flow.bytes_in += n
            flow.last = server.now
            flow.table.move_to_end(flow.key)
        return None

    def connectionLost(self, reason):
        if not self.flow.closed:
            self.server.end_flow(self.flow, "client unreachable")


# -- the listener --------------------------------------------------------------

@implementer(IListener)
class UDPVirtualServer(service.Service):
    """A udp virtual server's listener: its VIP sockets and flow table."""

    def __init__(self, balancer: Balancer, protocol: "UDPProtocol", reactor, clock=None,
                 io=None, gate: AcceptGate | None = None):
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.io = io if io is not None else RelayEngine.for_reactor(reactor)
        self.gate = gate if gate is not None else AcceptGate.for_reactor(reactor)
        self.binds = protocol.binds
        self.vips: list[_VIPSocket] = []
        self.buf = bytearray(MAX_DATAGRAM)
        self.view = memoryview(self.buf)
        self.now = self.clock.seconds()
        self._sweep_call = None
        self._outcome: ListenOutcome | None = None
        self.engine_held = False
        #: flows of VIP sockets closed by stop_listening (each with its own
        #: reply socket), least recently used first
        self.retired: collections.OrderedDict = collections.OrderedDict()
        self.accepting = True
        self.access_log = None
        self.balancer = balancer
        self.virtual = balancer.virtual
        self._take_protocol(protocol)
        self._take_counters()
        self.setName(f"virtual:{self.virtual.name}")

    def _take_counters(self) -> None:
        counters = self.virtual.udp
        if counters is None:
            counters = self.virtual.udp = UDPCounters()
        self.counters = counters
        counters.max_flows = self.max_flows

    def _take_protocol(self, protocol: "UDPProtocol") -> None:
        self.protocol = protocol
        self.max_flows = protocol.max_flows
        self.datagram_mode = protocol.mode == "datagram"
        self.transparent = protocol.source == "client"
        self.timeout = protocol.timeout
        self.step = max(0.01, min(1.0, self.timeout / 8))
        self.max_connections = protocol.max_connections
        self.access_log_setting = protocol.access_log

    # -- IListener ------------------------------------------------------------

    def start_listening(self) -> defer.Deferred:
        """Bind every endpoint (once: later calls get the first outcome)."""
        if self._outcome is None:
            self._outcome = ListenOutcome(self._bind())
        return self._outcome.deferred()

    def _bind(self) -> defer.Deferred:
        vips = []
        for bind in self.binds:
            try:
                sock = socket.socket(bind.family, socket.SOCK_DGRAM)
            except OSError as e:
                self._close_vips(vips)
                return defer.fail(ListenError(self.virtual.name, bind.text, e.strerror))
            try:
                # As nginx does for UDP: a retiring listener's flows keep
                # sockets bound to this address (connected to their clients,
                # see stop_listening) while a replacement binds it again.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                set_freebind(sock, bind.host)  # a VIP this node may own later
                if bind.family == socket.AF_INET6 and bind.host == "::":
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind((bind.host, bind.port))
                sock.setblocking(False)
            except OSError as e:
                sock.close()
                self._close_vips(vips)
                return defer.fail(ListenError(self.virtual.name, bind.text, e.strerror))
            vips.append(_VIPSocket(self, bind, sock))
        self.vips = vips
        return defer.succeed(vips)

    @staticmethod
    def _close_vips(vips) -> None:
        for vip in vips:
            vip.sock.close()

    def addresses(self):
        from twisted.internet.address import IPv4Address, IPv6Address
        out = []
        for vip in self.vips:
            host, port = vip.sock.getsockname()[:2]
            kind = IPv6Address if vip.bind.family == socket.AF_INET6 else IPv4Address
            out.append(kind("UDP", host, port))
        return out

    def apply(self, balancer: Balancer, protocol: "UDPProtocol") -> None:
        """A reload kept our endpoints: new flows use ``balancer``; live
        flows keep their member and socket; the protocol's settings
        (``max_flows``, ``udp_mode``, ``timeout_client``, the access log)
        apply from now on."""
        self.balancer = balancer
        self.virtual = balancer.virtual
        self._take_protocol(protocol)
        self._take_counters()
        self.gate.configure(self.max_connections)
        setting = self.access_log_setting
        self.access_log = access_log_for(*setting) if setting is not None else None

    def stop_listening(self) -> defer.Deferred:
        """Close the VIP sockets; live flows go on (until idle, or
        ``close_all``).

        A flow's replies leave from its VIP address, so before the VIP
        socket closes each flow gets a socket of its own bound to that
        address and *connected to its client*: the kernel delivers that
        client's datagrams to it (a connected socket is preferred to an
        unconnected one) and the member's replies go out from the VIP
        address as before. Everyone else's datagrams find no socket (or a
        replacement listener, which may bind the address at once)."""
        self._outcome = None
        self.gate.remove(self)
        vips, self.vips = self.vips, []
        for vip in vips:
            if vip.reading:
                self.io.removeReader(vip)
                vip.reading = False
        for vip in vips:
            address = vip.sock.getsockname()
            for flow in list(vip.flows.values()):
                self._retire_flow(flow, address)
            vip.sock.close()
        return defer.succeed(None)

    def _retire_flow(self, flow: Flow, address) -> None:
        try:
            sock = raw_socket(flow.vip.bind.family, _DGRAM_NONBLOCK)
        except OSError as e:
            self.end_flow(flow, f"listener stopped (no socket for its replies: {e.strerror})")
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.connect(flow.addr)
        except OSError as e:
            sock.close()
            self.end_flow(flow, f"listener stopped (no socket for its replies: {e.strerror})")
            return
        del flow.table[flow.key]
        reply = _ReplySocket(self, flow, sock)
        flow.vip = reply
        flow.table, flow.key = self.retired, flow
        self.retired[flow] = flow
        self.io.addReader(reply)

    def connection_count(self) -> int:
        return sum(len(vip.flows) for vip in self.vips) + len(self.retired)

    def close_all(self, reason: str) -> None:
        for table in [vip.flows for vip in self.vips] + [self.retired]:
            for flow in list(table.values()):
                self.end_flow(flow, reason)

    def pause_accepting(self) -> None:
        """The accept gate is shut (``max_connections``, no descriptors):
        datagrams that would start a flow are dropped; live flows go on."""
        self.accepting = False

    def resume_accepting(self) -> None:
        self.accepting = True

    # -- twistd service ------------------------------------------------------------

    def privilegedStartService(self) -> None:
        # Bind (and open the access log) before twistd drops root (ports
        # below 1024). A failure is the site service's to report.
        self.start_listening().addErrback(reported_elsewhere)
        if self.access_log_setting is not None:
            access_log_for(*self.access_log_setting)
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        if self.access_log_setting is not None:
            self.access_log = access_log_for(*self.access_log_setting)
        self.gate.configure(self.max_connections)
        self.start_listening().addCallbacks(self._reading, reported_elsewhere)

    def _reading(self, _) -> None:
        """Bound: read every VIP socket."""
        if not self.running or not self.vips or self.vips[0].reading:
            return
        if not self.engine_held:
            self.engine_held = True  # once per listener: the engine is shared
            self.io.acquire()
        for vip in self.vips:
            self.io.addReader(vip)
            vip.reading = True
        self.gate.add(self)
        log.info("virtual {virtual} listening on udp {where}", virtual=self.virtual.name,
                 where=", ".join(f"{a.host}:{a.port}" for a in self.addresses()))

    def stopService(self):
        closed = self.stop_listening()
        self.close_all("stopping")
        if self.engine_held:
            self.engine_held = False
            self.io.release()
        if self._sweep_call is not None and self._sweep_call.active():
            self._sweep_call.cancel()
        self._sweep_call = None
        super().stopService()
        return closed

    # -- new flows ------------------------------------------------------------

    def _context(self, addr) -> RequestContext:
        return RequestContext(addr[0], addr[1], self.virtual.name)

    def new_flow(self, vip: _VIPSocket, addr, data: memoryview) -> None:
        """Flow mode: the first datagram from ``addr``."""
        if not self.accepting:
            self.counters.dropped += 1
            return
        if self._sweep_call is None:
            self.now = self.clock.seconds()
        context = self._context(addr)
        flow = Flow(self, vip, addr, addr, context)
        d = self.balancer.prepare(context)
        if d is not None:
            # A remote persistence store: hold this flow's datagrams meanwhile.
            self._admit(flow)
            flow.waiting = [bytes(data)]
            d.addCallback(lambda _: self._decided_later(flow))
            return
        decision = self.balancer.choose(context, (), may_wait=False)
        if decision is None:
            self._refuse(flow, "no member available", len(data))
            return
        self._admit(flow)
        if self._open(flow, decision):
            self._send(flow, data)

    def hold(self, flow: Flow, data: memoryview) -> None:
        if len(flow.waiting) < PENDING_LIMIT:
            flow.waiting.append(bytes(data))
        else:
            self.counters.dropped += 1

    def _decided_later(self, flow: Flow) -> None:
        if flow.closed:
            return
        waiting, flow.waiting = flow.waiting, None
        decision = self.balancer.choose(flow.context, (), may_wait=False)
        if decision is None:
            self.counters.dropped += len(waiting)
            self.virtual.refuse("no_member")
            self.end_flow(flow, "no member available")
            return
        if self._open(flow, decision):
            for data in waiting:
                self._send(flow, data)

    def datagram(self, vip: _VIPSocket, addr, data: memoryview) -> None:
        """Datagram mode: balance this datagram on its own."""
        context = self._context(addr)
        d = self.balancer.prepare(context)
        if d is not None:
            held = bytes(data)
            d.addCallback(lambda _: self._datagram_decide(vip, addr, context, held))
            return
        self._datagram_decide(vip, addr, context, data)

    def _datagram_decide(self, vip: _VIPSocket, addr, context, data) -> None:
        if vip not in self.vips:
            return  # the listener stopped meanwhile
        if self._sweep_call is None:
            self.now = self.clock.seconds()
        decision = self.balancer.choose(context, (), may_wait=False)
        if decision is None:
            self.virtual.refuse("no_member")
            self.counters.dropped += 1
            self._log_refusal(context, "no member available", len(data))
            return
        key = (addr, decision.member.name, decision.pool.name)
        flow = vip.flows.get(key)
        if flow is None or flow.closed:
            if not self.accepting:
                self.counters.dropped += 1
                return
            flow = Flow(self, vip, addr, key, context)
            self._admit(flow)
            if not self._open(flow, decision, take=False):
                return
        else:
            vip.flows.move_to_end(key)
        self.virtual.total += 1
        decision.pool.connection_opened(decision.member)
        flow.pending += 1
        self._send(flow, data)

    def _admit(self, flow: Flow) -> None:
        """Put ``flow`` in its table (evicting the least recently used flow
        when the table is full) and count it."""
        while self.connection_count() >= self.max_flows:
            self._evict_one(flow.vip)
        flow.vip.flows[flow.key] = flow
        self.counters.flows += 1
        self.virtual.active += 1
        self.gate.opened()
        if self._sweep_call is None:
            self._arm_sweep()

    def _evict_one(self, vip: _VIPSocket) -> None:
        table = vip.flows if vip.flows else max((v.flows for v in self.vips), key=len)
        _, oldest = next(iter(table.items()))
        self.counters.evicted += 1
        self.end_flow(oldest, "evicted: max_flows reached")

    def _open(self, flow: Flow, decision, take: bool = True) -> bool:
        """Open the flow's socket toward ``decision.member``; False (and the
        flow ended) when that fails."""
        member, pool = decision.member, decision.pool
        addr = member.sockaddr
        if addr is None:
            addr = member.remember_sockaddr(sockaddr_of(member.spec.address))
        family, sockaddr = addr
        try:
            sock = raw_socket(family, _DGRAM_NONBLOCK)
        except OSError as e:
            if e.errno in EXHAUSTION:
                self.gate.exhausted(e)
            self.counters.dropped += 1
            self.virtual.refuse("resources")
            self.end_flow(flow, f"cannot open a socket to a member: {e.strerror}")
            return False
        try:
            if self.transparent:
                self._bind_transparent(sock, family, flow.addr)
            sock.connect(sockaddr)
        except OSError as e:
            sock.close()
            self.counters.dropped += 1
            self.virtual.refuse("member_failed")
            self.end_flow(flow, f"cannot reach member {pool.name}/{member.name}: "
                                f"{e.strerror or e}")
            return False
        flow.sock = sock
        flow.fd = sock.fileno()
        flow.decision = decision
        flow.member = member
        if take:
            self.virtual.total += 1
            pool.connection_opened(member)
        self.io.addReader(flow)
        return True

    @staticmethod
    def _bind_transparent(sock, family: int, client) -> None:
        """``source = client``: the member sees the client's address and
        port (Linux IP_TRANSPARENT; needs CAP_NET_ADMIN)."""
        if family == socket.AF_INET6:
            if ":" not in client[0]:
                raise OSError(errno.EAFNOSUPPORT, "an IPv4 client toward an IPv6 member")
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        else:
            if ":" in client[0]:
                raise OSError(errno.EAFNOSUPPORT, "an IPv6 client toward an IPv4 member")
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        # Datagram mode may hold several sockets for one client, one per member.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(client)

    def _send(self, flow: Flow, data) -> None:
        try:
            flow.sock.send(data)
        except OSError as e:
            self.send_failed(flow, e.errno)
            return
        n = len(data)
        flow.dgrams_in += 1
        flow.bytes_in += n
        if flow.sent_at is None and not flow.answered:
            flow.sent_at = self.clock.seconds()

    def _refuse(self, flow: Flow, reason: str, size: int) -> None:
        self.virtual.refuse("no_member")
        self.counters.dropped += 1
        self._log_refusal(flow.context, reason, size)

    def _log_refusal(self, context, reason: str, size: int) -> None:
        if self.access_log is None:
            return
        self.access_log.write({
            "client": f"{context.client_host}:{context.client_port}",
            "virtual": self.virtual.name, "pool": None, "member": None,
            "bytes_in": size, "bytes_out": 0, "datagrams_in": 1, "datagrams_out": 0,
            "total_ms": 0.0, "outcome": reason,
        })

    # -- replies and errors ------------------------------------------------------

    def first_reply(self, flow: Flow) -> None:
        """The member's first reply: a response-time sample (and a passive
        health success), once per flow so that busy flows cost nothing."""
        decision = flow.decision
        flow.answered = True
        if decision is not None:
            decision.pool.record_response_time(decision.member,
                                               self.clock.seconds() - flow.sent_at)
        flow.sent_at = None

    def answered(self, flow: Flow) -> None:
        """Datagram mode: one datagram was answered; the socket closes when
        every datagram sent on it was."""
        flow.pending -= 1
        decision = flow.decision
        decision.pool.connection_closed(decision.member)
        if flow.pending == 0:
            self.end_flow(flow, "answered")

    def send_failed(self, flow: Flow, err: int) -> None:
        """A datagram toward the member was not sent: dropped (a full socket
        buffer, a datagram the route cannot carry), or the member's ICMP
        port unreachable came back on this send."""
        self.counters.dropped += 1
        if err == errno.ECONNREFUSED:
            self.member_error(flow, err)

    def member_error(self, flow: Flow, err: int) -> None:
        """An error on the flow's socket toward the member. ECONNREFUSED is
        the member's ICMP port unreachable: a member failure for passive
        health (nothing listens there). The flow ends; the client's next
        datagram is balanced again."""
        if flow.closed:
            return
        decision = flow.decision
        if err == errno.ECONNREFUSED:
            reason = "port unreachable (ICMP)"
            self.counters.unreachable += 1
            if decision is not None:
                decision.pool.member_failed(decision.member, reason, flow.context.client_host)
        else:
            reason = f"member socket error: {errno.errorcode.get(err, err)}"
        self.end_flow(flow, reason)

    # -- ending flows -----------------------------------------------------------

    def end_flow(self, flow: Flow, reason: str) -> None:
        if flow.closed:
            return
        flow.closed = True
        table = flow.table
        if table.get(flow.key) is flow:
            del table[flow.key]
            self.counters.flows -= 1
            self.virtual.active -= 1
            self.gate.closed()
        sock = flow.sock
        if sock is not None:
            self.io.forget(flow)  # closing the socket takes it out of epoll
            sock.close()
            flow.fd = -1
        reply = flow.vip
        if reply.retired:
            self.io.forget(reply)
            reply.sock.close()
        decision = flow.decision
        if decision is not None:
            member = decision.member
            pool = decision.pool
            if flow.per_datagram:
                # each datagram was a connection of the member until answered
                for _ in range(flow.pending):
                    pool.connection_closed(member)
                flow.pending = 0
                member.relayed(flow.bytes_in, flow.bytes_out)
            else:
                pool.connection_closed(member, flow.bytes_in, flow.bytes_out)
        self.virtual.bytes_in += flow.bytes_in
        self.virtual.bytes_out += flow.bytes_out
        if self.access_log is not None:
            self._log_flow(flow, reason)

    def _log_flow(self, flow: Flow, reason: str) -> None:
        decision, context = flow.decision, flow.context
        self.access_log.write({
            "client": f"{context.client_host}:{context.client_port}",
            "virtual": self.virtual.name,
            "pool": decision.pool.name if decision is not None else None,
            "member": decision.member.name if decision is not None else None,
            "bytes_in": flow.bytes_in, "bytes_out": flow.bytes_out,
            "datagrams_in": flow.dgrams_in, "datagrams_out": flow.dgrams_out,
            "total_ms": (self.clock.seconds() - flow.started) * 1000.0,
            "outcome": reason,
        })

    # -- idle expiry -----------------------------------------------------------

    def _arm_sweep(self) -> None:
        self._sweep_call = self.clock.callLater(self.step, self._sweep)

    def _sweep(self) -> None:
        """Every ``step``: refresh the coarse clock, end the flows idle for
        ``timeout_client`` (the oldest first: the table is in LRU order)."""
        self._sweep_call = None
        self.now = now = self.clock.seconds()
        cutoff = now - self.timeout
        live = 0
        for table in [vip.flows for vip in self.vips] + [self.retired]:
            expired = []
            for flow in table.values():
                if flow.last > cutoff:
                    break
                expired.append(flow)
            for flow in expired:
                self.counters.expired += 1
                self.end_flow(flow, f"idle timeout after {self.timeout:g}s")
            live += len(table)
        if live:
            self._arm_sweep()


@implementer(IProtocol)
class UDPProtocol:
    """Validates a ``protocol = udp`` virtual server and makes its listener."""

    KEYS = ("udp_mode", "max_flows", "source")

    def __init__(self, virtual, options, site=None):
        reject_unknown_options(options, "protocol udp", self.KEYS)
        if virtual.accept_proxy:
            raise OptionError("accept_proxy", "protocol udp has no PROXY header to read "
                                              "(it is a TCP stream preamble)")
        self.binds = [udp_bind(d) for d in virtual.listen]
        self.mode = _choice("udp_mode", options.get("udp_mode", "flow"), MODES)
        self.max_flows = _positive_int("max_flows", options.get("max_flows",
                                                                  str(DEFAULT_MAX_FLOWS)))
        self.source = _choice("source", options.get("source", "lbframe"), SOURCES)
        self.timeout = virtual.timeout_client
        self.access_log = access_log_setting(site)
        self.max_connections = site.lbframe.max_connections if site is not None else None

    def make_service(self, balancer, reactor):
        return UDPVirtualServer(balancer, self, reactor)


@hookimpl
def lbframe_register_protocols(registry):
    registry.add("udp", UDPProtocol)
