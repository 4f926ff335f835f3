"""The one place that programs the kernel for every routed virtual server
of this process: it turns their pools into a plan, the plan into nftables
JSON and routes, and applies changes one at a time.

- Changes are coalesced: while one apply runs, further requests set a flag
  and one more apply follows, built from the state at that moment.
- Order of an apply: routes and rules of new next hops first (so a mark the
  new ruleset sets always has its table), then the ruleset (one atomic
  ``nft -j -f -`` transaction), then the routes of next hops no longer used.
- The nftables counters die with the table it replaces, so they are read
  just before each replacement and carried (packets in the few
  milliseconds between the read and the swap are not counted), and read
  again every :data:`COUNTER_INTERVAL` seconds for the status.
- Every :data:`RECONCILE_INTERVAL` seconds the plan is worked out again and
  applied if it differs (a link that came back, a weight set by the admin):
  member up/down is applied at once through the pool's state listeners.
"""

from __future__ import annotations

import json
import shutil

import attrs
from twisted.internet import defer, error, protocol, task
from twisted.logger import Logger

from lbframe.protocols.routed import ruleset as rs
from lbframe.protocols.routed.routing import Routing

log = Logger(namespace="lbframe.routed")

RECONCILE_INTERVAL = 1.0
COUNTER_INTERVAL = 2.0
#: seconds nft may take before it is killed
NFT_TIMEOUT = 10.0
#: bytes of nft output kept (errors are short)
NFT_OUTPUT_LIMIT = 1 << 20


class NftError(Exception):
    pass


class _NftProcess(protocol.ProcessProtocol):
    def __init__(self, data: bytes, done: defer.Deferred):
        self.data, self.done = data, done
        self.out, self.err = bytearray(), bytearray()

    def connectionMade(self):
        self.transport.write(self.data)
        self.transport.closeStdin()

    def outReceived(self, data):
        if len(self.out) < NFT_OUTPUT_LIMIT:
            self.out += data

    def errReceived(self, data):
        if len(self.err) < NFT_OUTPUT_LIMIT:
            self.err += data

    def processEnded(self, reason):
        code = reason.value.exitCode if isinstance(reason.value, (error.ProcessDone,
                                                                 error.ProcessTerminated)) else 1
        if not self.done.called:
            self.done.callback((code, bytes(self.out), bytes(self.err)))


class Nft:
    """Runs ``nft -j -f -`` (JSON on stdin) without blocking the reactor.

    Why the ``nft`` program and not libnftables through Debian's
    ``python3-nftables``: that binding is built for the system Python, not
    for lbframe's interpreter or virtualenv, and it loads the same library
    the program does; the program's JSON input is the same API, its exit
    status and messages are clear, and a hung call can be killed."""

    def __init__(self, reactor, program: str | None = None):
        self.reactor = reactor
        self.program = program or shutil.which("nft") or "nft"

    def run(self, payload: dict | None, *args: str) -> defer.Deferred:
        """Fires with nft's stdout (bytes); fails with NftError(stderr)."""
        done = defer.Deferred()
        data = json.dumps(payload).encode() if payload is not None else b""
        argv = [self.program, "-j", *(args or ("-f", "-"))]
        proc = self.reactor.spawnProcess(_NftProcess(data, done), self.program, argv,
                                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        timer = self.reactor.callLater(NFT_TIMEOUT, self._kill, proc, done)

        def finished(result):
            if timer.active():
                timer.cancel()
            code, out, err = result
            if code != 0:
                raise NftError(err.decode(errors="replace").strip() or f"nft exited {code}")
            return out

        return done.addCallback(finished)

    def _kill(self, proc, done):
        try:
            proc.signalProcess("KILL")
        except Exception:
            pass
        if not done.called:
            done.callback((1, b"", f"nft did not answer in {NFT_TIMEOUT:g}s".encode()))

    def apply(self, payload: dict) -> defer.Deferred:
        return self.run(payload)

    def counters(self) -> defer.Deferred:
        """name → (packets, bytes) of lbframe's table; {} when it is absent."""
        d = self.run(None, "list", "counters", "table", rs.FAMILY, rs.TABLE)

        def parse(out):
            found = {}
            for item in json.loads(out or b"{}").get("nftables", []):
                c = item.get("counter")
                if c and c.get("table") == rs.TABLE:
                    found[c["name"]] = (c.get("packets", 0), c.get("bytes", 0))
            return found

        d.addCallback(parse)
        d.addErrback(lambda f: {})
        return d


@attrs.define
class HopCounters:
    packets: int = 0
    bytes: int = 0
    flows: int = 0


class Programmer:
    """Shared by the routed listeners of one process (see :func:`shared`)."""

    def __init__(self, reactor, nft=None, routing=None):
        self.reactor = reactor
        self.nft = nft if nft is not None else Nft(reactor)
        self.routing = routing if routing is not None else Routing()
        self.listeners: list = []
        #: (family, address, device) → slot, kept while in use
        self.slots: dict[tuple, int] = {}
        self.applied: tuple | None = None
        self._running: defer.Deferred | None = None
        self._again = False
        self._waiters: list[defer.Deferred] = []
        #: counter name → (virtual, member, what) of the table now in the kernel
        self._names: dict[str, tuple[str, str, str]] = {}
        #: (virtual, member) → counts carried over replaced tables
        self.carried: dict[tuple[str, str], HopCounters] = {}
        #: (virtual, member) → carried + the live table's counters, for the status
        self.counters: dict[tuple[str, str], HopCounters] = {}
        self.dropped: dict[str, int] = {}
        self._loop = None
        self._counter_loop = None
        #: the last apply's error, logged once
        self.last_error: str | None = None

    # -- listeners -----------------------------------------------------------

    def add(self, listener) -> defer.Deferred:
        if listener not in self.listeners:
            self.listeners.append(listener)
        self._start_loops()
        return self.request()

    def remove(self, listener) -> defer.Deferred:
        if listener in self.listeners:
            self.listeners.remove(listener)
        if not self.listeners:
            self._stop_loops()
        return self.request()

    def _start_loops(self):
        if self._loop is None:
            self._loop = task.LoopingCall(self._reconcile)
            self._loop.clock = self.reactor
            self._loop.start(RECONCILE_INTERVAL, now=False).addErrback(
                lambda f: log.failure("routed: reconcile loop", f))
            self._counter_loop = task.LoopingCall(self.refresh_counters)
            self._counter_loop.clock = self.reactor
            self._counter_loop.start(COUNTER_INTERVAL, now=False).addErrback(
                lambda f: log.failure("routed: counter loop", f))

    def _stop_loops(self):
        for loop in (self._loop, self._counter_loop):
            if loop is not None and loop.running:
                loop.stop()
        self._loop = self._counter_loop = None

    def _reconcile(self):
        if self._running is None and self.plans() != self.applied:
            self.request().addErrback(lambda f: None)  # logged in _run

    # -- planning ------------------------------------------------------------

    def _slot(self, key: tuple, used: set) -> int:
        slot = self.slots.get(key)
        if slot is None:
            taken = set(self.slots.values())
            slot = next(s for s in range(1, rs.MAX_SLOTS + 1) if s not in taken)
            self.slots[key] = slot
        used.add(key)
        return slot

    def plans(self) -> tuple:
        """The plan of every listener now, with slots allocated."""
        used: set = set()
        plans = []
        for index, listener in enumerate(self.listeners):
            plan = listener.plan(index, lambda key: self._slot(key, used))
            if plan is not None:
                plans.append(plan)
        for key in [k for k in self.slots if k not in used]:
            del self.slots[key]
        return tuple(plans)

    # -- applying ------------------------------------------------------------

    def request(self) -> defer.Deferred:
        """Apply the current plans soon; fires once they are in the kernel
        (fails with NftError/ValueError when they could not be applied)."""
        d = defer.Deferred()
        self._waiters.append(d)
        if self._running is None:
            self._run()
        else:
            self._again = True
        return d

    def _run(self):
        self._again = False
        waiters, self._waiters = self._waiters, []
        self._running = defer.maybeDeferred(self._apply)

        def done(result):
            self._running = None
            self.last_error = None
            for w in waiters:
                w.callback(None)
            if self._again or self._waiters:
                self._run()

        def failed(f):
            self._running = None
            # The reconcile loop retries every second: say each new error once.
            if f.getErrorMessage() != self.last_error:
                self.last_error = f.getErrorMessage()
                log.error("routed: could not program the kernel: {error}",
                          error=f.getErrorMessage(), lbframe_event="routed_failed")
            for w in waiters:
                w.errback(f)
            if self._again or self._waiters:
                self._run()

        self._running.addCallbacks(done, failed)

    @defer.inlineCallbacks
    def _apply(self):
        plans = self.plans()
        hops = {h.slot: h for plan in plans for h in plan.routes}
        for slot, hop in hops.items():
            if self.routing.installed.get(slot) != (hop.family, hop.address, hop.device):
                self.routing.install(slot, hop.family, hop.address, hop.device)
        current = yield self.nft.counters() if self._names else defer.succeed({})
        self._fold(current)
        payload = rs.ruleset(plans) if plans else rs.removal()
        yield self.nft.apply(payload)
        self._names = self._names_of(plans)
        self.applied = plans
        for slot in [s for s in self.routing.installed if s not in hops]:
            self.routing.remove(slot)
        self._account({})
        if plans:
            log.info("routed: kernel programmed: {summary}", summary=self.summary(plans),
                     lbframe_event="routed_programmed")
        else:
            log.info("routed: nftables table {table} removed", table=rs.TABLE,
                     lbframe_event="routed_removed")

    @staticmethod
    def summary(plans) -> str:
        parts = []
        for plan in plans:
            live = [h.name for h in plan.hops if h.live]
            parts.append(f"{plan.name} → {', '.join(live) or 'none (dropping)'}")
        return "; ".join(parts)

    @staticmethod
    def _names_of(plans) -> dict:
        names = {}
        for plan in plans:
            names[rs.drop_counter_name(plan)] = (plan.name, "", "drop")
            for hop in plan.hops:
                for what in ("pkts", "flows"):
                    names[rs.counter_name(plan, hop, what)] = (plan.name, hop.name, what)
        return names

    def _fold(self, current: dict) -> None:
        """Carry the counters of the table about to be replaced."""
        for name, (packets, nbytes) in current.items():
            owner = self._names.get(name)
            if owner is None:
                continue
            vname, member, what = owner
            if what == "drop":
                self.dropped[vname] = self.dropped.get(vname, 0) + packets
                continue
            c = self.carried.setdefault((vname, member), HopCounters())
            if what == "pkts":
                c.packets += packets
                c.bytes += nbytes
            else:
                c.flows += packets

    def _account(self, current: dict) -> None:
        totals = {key: attrs.evolve(c) for key, c in self.carried.items()}
        for name, (packets, nbytes) in current.items():
            owner = self._names.get(name)
            if owner is None or owner[2] == "drop":
                continue
            c = totals.setdefault(owner[:2], HopCounters())
            if owner[2] == "pkts":
                c.packets += packets
                c.bytes += nbytes
            else:
                c.flows += packets
        self.counters = totals

    def refresh_counters(self) -> defer.Deferred:
        if not self._names or self._running is not None:
            return defer.succeed(None)
        return self.nft.counters().addCallback(self._account)

    def flush(self) -> defer.Deferred:
        """Fires once nothing is being applied."""
        if self._running is None and not self._waiters:
            return defer.succeed(None)
        return self.request()


_shared: dict[int, Programmer] = {}


def shared(reactor) -> Programmer:
    """The programmer of this process (one per reactor)."""
    programmer = _shared.get(id(reactor))
    if programmer is None:
        programmer = _shared[id(reactor)] = Programmer(reactor)
    return programmer


def next_hop_status(virtual: str) -> dict:
    """For the admin API: the next hops of routed virtual server ``virtual``
    (member name → packets, bytes and new flows steered to it, from the
    nftables counters, refreshed every COUNTER_INTERVAL seconds) and the
    packets dropped for want of a live next hop."""
    hops: dict = {}
    dropped = 0
    for programmer in _shared.values():
        for (vname, member), c in programmer.counters.items():
            if vname == virtual:
                hops[member] = {"packets": c.packets, "bytes": c.bytes, "flows": c.flows}
        dropped += programmer.dropped.get(virtual, 0)
    return {"next_hops": hops, "dropped_packets": dropped}
