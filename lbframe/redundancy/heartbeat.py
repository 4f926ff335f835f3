"""``driver = heartbeat``: the seed's shared IP with a heartbeat (F8b).

Two nodes send each other one line every ``interval`` — over UDP unicast
(``peer = udp:HOST:PORT``) or a serial cable (``peer = /dev/ttyS0``) — and
the node that owns the shared IP (``vips``) is ``master``. When the peer's
heartbeat has been missing for ``dead_after`` the backup takes the IP over
(netlink, then gratuitous ARP, as :mod:`lbframe.redundancy.vrrp` does).
Failback is **manual** by default: a recovered node stays backup until an
operator runs ``lbframe takeover`` on it (or ``lbframe release`` on the
master, or the admin API's ``POST /api/redundancy/takeover|release``), so
the IP moves once, when someone chose to. ``failback = auto`` lets the node
with the higher ``priority`` take the IP back as soon as it hears the peer.

The heartbeat line (ASCII, at most :data:`MAX_LINE` bytes)::

    LBHB1 NODE STATE PRIORITY EPOCH HOLD

``EPOCH`` counts takeovers: a node that becomes master takes one more than
the largest it has seen, so when both claim master (after a cut link heals)
the later takeover wins (then the higher priority, then the larger node
name). ``HOLD`` is 1 on a node an operator released: it does not take the IP
from a live peer. Anything else on the line is refused and counted.

Keys beside the contract's (``peer``, ``interval``, ``dead_after``,
``failback``, ``priority``, ``vips``, ``interface``): ``listen`` (UDP
``HOST:PORT`` to receive on; default every address, the peer's port),
``node`` (this node's name in the heartbeat; default the host name),
``baudrate`` (serial, default 19200), ``garp_repeat``, ``garp_delay``.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from twisted.internet import protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from zope.interface import implementer

from lbframe import hookimpl
from lbframe.config.values import parse_address, parse_duration, parse_int
from lbframe.errors import OptionError
from lbframe.interfaces import IRedundancyDriver
from lbframe.redundancy.driver_service import DriverService
from lbframe.protocols import endpoints

log = Logger(namespace="lbframe.redundancy.heartbeat")

MAGIC = "LBHB1"
MAX_LINE = 200
INIT, BACKUP, MASTER = "init", "backup", "master"
KNOWN = ("listen", "node", "baudrate", "garp_repeat", "garp_delay")
_NODE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class CommandError(Exception):
    """A takeover or release that cannot be done now (the message says why)."""


def encode(node: str, state: str, priority: int, epoch: int, hold: bool) -> bytes:
    return f"{MAGIC} {node} {state} {priority} {epoch} {int(hold)}".encode("ascii")


def decode(line: bytes) -> tuple[str, str, int, int, bool]:
    """(node, state, priority, epoch, hold); raises ValueError."""
    if len(line) > MAX_LINE:
        raise ValueError("too long")
    words = line.decode("ascii").strip().split(" ")
    if len(words) != 6 or words[0] != MAGIC:
        raise ValueError("not a heartbeat")
    _, node, state, priority, epoch, hold = words
    if not _NODE.match(node) or state not in (MASTER, BACKUP) or hold not in ("0", "1"):
        raise ValueError("bad field")
    if not priority.isdigit() or not epoch.isdigit() or len(epoch) > 18:
        raise ValueError("bad number")
    return node, state, int(priority), int(epoch), hold == "1"


class _UDP(protocol.DatagramProtocol):
    def __init__(self, driver):
        self.driver = driver

    def datagramReceived(self, data, addr):
        if addr[0] != self.driver.peer_host:
            self.driver._refuse(f"from {addr[0]}, not the peer")
            return
        self.driver._line(data)


class _Serial(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(self, driver):
        self.driver = driver

    def lineReceived(self, line):
        self.driver._line(line.rstrip(b"\r"))

    def lineLengthExceeded(self, line):
        self.driver._refuse("line too long")
        self.clearLineBuffer()


@implementer(IRedundancyDriver)
class HeartbeatDriver:
    """The heartbeat redundancy driver (see the module doc)."""

    addresses_factory = None
    announcer_factory = None
    #: tests replace the transport: ``transport_factory(driver) -> obj with send(bytes), close()``
    transport_factory = None

    def __init__(self, redundancy, options=None, reactor=None):
        options = dict(options or {})
        for key in options:
            if key not in KNOWN:
                raise OptionError(key, f"unknown key {key!r} for redundancy driver heartbeat")
        for key in ("peer", "interface"):
            if not getattr(redundancy, key):
                raise OptionError(key, "required for driver heartbeat")
        if not redundancy.vips:
            raise OptionError("vips", "required for driver heartbeat")
        for vip in redundancy.vips:
            if ipaddress.ip_interface(vip).version != 4:
                raise OptionError("vips", f"VIP {vip}: the heartbeat driver carries IPv4 VIPs only")
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.spec = redundancy
        self.interface = redundancy.interface
        self.vips = tuple(redundancy.vips)
        self.priority = redundancy.priority
        self.interval = redundancy.interval
        self.dead_after = redundancy.dead_after
        self.auto_failback = redundancy.failback == "auto"
        self.peer = redundancy.peer
        self.serial = not self.peer.startswith("udp:")
        try:
            if not self.serial:
                address = parse_address(self.peer[len("udp:"):])
                self.peer_host, self.peer_port = address.host, address.port
                ipaddress.ip_address(self.peer_host)
                listen = parse_address(options.get("listen", f"0.0.0.0:{self.peer_port}"))
                self.listen_host, self.listen_port = listen.host, listen.port
            self.node = options.get("node") or socket.gethostname().split(".")[0][:64]
            if not _NODE.match(self.node):
                raise OptionError("node", f"bad node name {self.node!r} (letters, digits, . _ -)")
            self.baudrate = parse_int(options.get("baudrate", "19200"), 50, 4_000_000)
            self.garp_repeat = parse_int(options.get("garp_repeat", "5"), 1, 100)
            self.garp_delay = parse_duration(options.get("garp_delay", "5s"))
        except ValueError as e:
            raise OptionError("peer", str(e)) from None
        self.state = INIT
        self.epoch = 0
        self.hold = False
        self.peer_state = None  # (node, state, priority, epoch, hold) last heard
        self.peer_alive = False
        self.refused = 0
        self.received = 0
        self.sent = 0
        self.runtime = None
        self._transport = None
        self._addresses = None
        self._announcer = None
        self._beat = None
        self._dead = None
        self._logged: set = set()
        self.service = DriverService(self)
        self.vip_hosts = {v.split("/")[0] for v in self.vips}

    # life cycle -----------------------------------------------------------------

    def attach(self, runtime) -> None:
        self.runtime = runtime

    def _runtime(self):
        return self.runtime or getattr(self.service.parent, "runtime", None)

    def start(self) -> None:
        from lbframe.redundancy.vrrp import net

        endpoints.allow_nonlocal(self, self.vip_hosts)
        try:
            self._addresses = (self.addresses_factory or net.Addresses)(self.interface)
            self._mac = self._addresses.mac()
            for vip in self.vips:  # a crash of ours left it: remove before backup
                if self._addresses.remove(vip):
                    log.warn("heartbeat: removed {vip} from {interface}, left there by an "
                             "earlier run", vip=vip, interface=self.interface)
            self._announcer = (self.announcer_factory or net.ARPAnnouncer)(
                self.interface, self.reactor, self.garp_repeat, self.garp_delay)
            getattr(self._announcer, "open", lambda: None)()
            self._transport = (self.transport_factory or _open_transport)(self)
        except OSError as e:
            log.error("heartbeat on {interface} cannot start: {error} (it needs "
                      "CAP_NET_ADMIN and CAP_NET_RAW, see docs/redundancy.md)",
                      interface=self.interface, error=e)
            self.stop()
            endpoints.allow_nonlocal(self, self.vip_hosts)
            return
        self._set_state(BACKUP, "started")
        self.hold = False
        self._send()
        self._beat = self.reactor.callLater(self.interval, self._tick)
        self._arm_dead()

    def stop(self) -> None:
        """Release the shared IP and tell the peer at once (a heartbeat with
        HOLD set), so a live backup takes over without waiting for dead_after."""
        for call in (self._beat, self._dead):
            if call is not None and call.active():
                call.cancel()
        self._beat = self._dead = None
        if self.state == MASTER:
            self._release_vips()
        self._set_state(INIT, "stopped", quiet=True)
        if self._transport is not None:
            self._send()
            self._transport.close()
            self._transport = None
        if self._announcer is not None:
            self._announcer.cancel()
        if self._addresses is not None:
            self._addresses.close()
            self._addresses = None
        self.peer_alive = False
        endpoints.forget_nonlocal(self)

    # the heartbeat ----------------------------------------------------------------

    def _tick(self) -> None:
        self._beat = self.reactor.callLater(self.interval, self._tick)
        self._send()

    def _send(self) -> None:
        if self._transport is None:
            return
        state = self.state if self.state in (MASTER, BACKUP) else BACKUP
        hold = self.hold or self.state == INIT
        try:
            self._transport.send(encode(self.node, state, self.priority, self.epoch, hold))
            self.sent += 1
        except OSError as e:
            self._log_once(("send", str(e)), "heartbeat: cannot send to {peer}: {error}",
                           peer=self.peer, error=e)

    def _arm_dead(self) -> None:
        if self._dead is not None and self._dead.active():
            self._dead.reset(self.dead_after)
        else:
            self._dead = self.reactor.callLater(self.dead_after, self._peer_dead)

    def _peer_dead(self) -> None:
        self._dead = None
        was_alive, self.peer_alive = self.peer_alive, False
        if self.state == BACKUP:
            self._become_master(f"no heartbeat from the peer for {self.dead_after:g}s")
        elif was_alive:
            log.warn("heartbeat: the peer {peer} went silent", peer=self.peer)

    def _refuse(self, why: str) -> None:
        self.refused += 1
        self._log_once(("refused", why), "heartbeat: refused a message ({why})", why=why)

    def _line(self, data: bytes) -> None:
        try:
            peer = decode(data)
        except (ValueError, UnicodeDecodeError) as e:
            self._refuse(str(e))
            return
        if peer[0] == self.node:
            self._refuse(f"the peer calls itself {self.node!r} too: give each node its own `node`")
            return
        if self.state == INIT:
            return
        self.received += 1
        if not self.peer_alive:
            log.warn("heartbeat: hearing the peer {node} ({state})", node=peer[0], state=peer[1])
        self.peer_alive = True
        self.peer_state = peer
        self._arm_dead()
        self._decide(*peer)

    def _decide(self, node, state, priority, epoch, hold) -> None:
        """What the peer's heartbeat means for us (see the module doc)."""
        self.epoch = max(self.epoch, epoch) if self.state != MASTER else self.epoch
        if state == MASTER and self.state == MASTER:
            if (epoch, priority, node) > (self.epoch, self.priority, self.node):
                self._become_backup(f"{node} is master since a later takeover")
            # else: we win; the peer yields on our next heartbeat
        elif state == MASTER:
            if self.auto_failback and not self.hold and self.priority > priority:
                self._become_master(f"failback = auto and {node} has priority {priority}")
        elif self.state == BACKUP:  # nobody serves
            if self.hold and not hold:
                return
            if hold and not self.hold:
                self._become_master(f"{node} was released")
            elif (self.priority, self.node) > (priority, node):
                self._become_master(f"{node} is backup too and has the lower priority")

    # transitions ------------------------------------------------------------------

    def _become_master(self, why: str) -> None:
        self.epoch = max(self.epoch, self.peer_state[3] if self.peer_state else 0) + 1
        self._set_state(MASTER, why)
        for vip in self.vips:
            try:
                self._addresses.add(vip)
            except Exception as e:
                log.error("heartbeat: cannot add {vip} to {interface}: {error}", vip=vip,
                          interface=self.interface, error=e)
        self._announcer.announce(self._mac, [v.split("/")[0] for v in self.vips])
        self._send()

    def _become_backup(self, why: str) -> None:
        self._release_vips()
        self._set_state(BACKUP, why)
        self._send()

    def _release_vips(self) -> None:
        for vip in self.vips:
            try:
                self._addresses.remove(vip)
            except Exception as e:
                log.error("heartbeat: cannot remove {vip} from {interface}: {error}", vip=vip,
                          interface=self.interface, error=e)

    def _set_state(self, new: str, why: str, quiet: bool = False) -> None:
        old, self.state = self.state, new
        if old == new:
            return
        if not quiet:
            log.warn("heartbeat on {interface}: {old} -> {new} ({why})",
                     interface=self.interface, old=old, new=new, why=why,
                     lbframe_event="redundancy_state")
        hook = getattr(getattr(self._runtime(), "plugins", None), "hook", None)
        if hook is not None:
            try:
                hook.lbframe_redundancy_state_changed(old=old, new=new)
            except Exception:
                log.failure("lbframe_redundancy_state_changed hook failed")

    def _log_once(self, key, fmt, **kw) -> None:
        if key not in self._logged and len(self._logged) < 1000:
            self._logged.add(key)
            log.warn(fmt, **kw)

    # manual failback ----------------------------------------------------------

    def takeover(self) -> str:
        """Become master now (``lbframe takeover``); the peer yields on our heartbeat."""
        if self.state == INIT:
            raise CommandError("the heartbeat driver is not running")
        self.hold = False
        if self.state == MASTER:
            return "already master"
        self._become_master("takeover by admin")
        return "master"

    def release(self) -> str:
        """Hand the shared IP to the live peer (``lbframe release``)."""
        if self.state == INIT:
            raise CommandError("the heartbeat driver is not running")
        if self.state != MASTER:
            self.hold = True
            return "backup (held: will not take over from a live peer)"
        if not self.peer_alive:
            raise CommandError("the peer is not heard: releasing would leave nobody serving")
        self.hold = True
        self._become_backup("released by admin")
        return "backup"

    def status(self) -> dict:
        peer = self.peer_state
        return {"interface": self.interface, "vips": [v.split("/")[0] for v in self.vips],
                "peer": self.peer, "peer_alive": self.peer_alive,
                "peer_state": peer[1] if peer and self.peer_alive else None,
                "peer_node": peer[0] if peer else None, "epoch": self.epoch,
                "hold": self.hold, "failback": "auto" if self.auto_failback else "manual",
                "sent": self.sent, "received": self.received, "refused": self.refused}


class _UDPTransport:
    def __init__(self, driver):
        self.driver = driver
        self.port = driver.reactor.listenUDP(driver.listen_port, _UDP(driver),
                                             interface=driver.listen_host)

    def send(self, data: bytes) -> None:
        self.port.write(data, (self.driver.peer_host, self.driver.peer_port))

    def close(self) -> None:
        self.port.stopListening()


class _SerialTransport:
    def __init__(self, driver):
        try:
            from twisted.internet.serialport import SerialPort
        except ImportError as e:  # pyserial missing
            raise OSError(f"a serial heartbeat needs pyserial (pip install pyserial): {e}") from None
        self.proto = _Serial(driver)
        self.port = SerialPort(self.proto, driver.peer, driver.reactor, baudrate=driver.baudrate)

    def send(self, data: bytes) -> None:
        self.proto.sendLine(data)

    def close(self) -> None:
        self.port.loseConnection()


def _open_transport(driver):
    return (_SerialTransport if driver.serial else _UDPTransport)(driver)


@hookimpl
def lbframe_register_redundancy_drivers(registry):
    registry.add("heartbeat", HeartbeatDriver)
