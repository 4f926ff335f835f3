"""The parent: the control plane of ``workers = N``.

:class:`ParentService` is a :class:`~lbframe.service.SiteService` (the
monitors, redundancy driver and admin API run here as with one process)
whose worker-served virtual servers get a :class:`HeldListener`: it binds
the sockets and never accepts on them. :class:`Workers` starts the worker
processes, hands them the sockets, keeps their member state in step with
the parent's, adds up their counters, answers their persistence lookups,
restarts one that dies and stops them all gracefully.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time

from twisted.application import service
from twisted.internet import defer, error, protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from lbframe.errors import ListenError
from lbframe.interfaces import IListener
from lbframe.protocols.endpoints import TCPBind, listening_socket, tcp_bind
from lbframe.protocols.listening import ListenOutcome
from lbframe.service import SiteService
from lbframe.workers import served_by_workers
from lbframe.workers.channel import Channel
from lbframe.workers.state import CounterSum, changed_rows, member_state, state_digest

log = Logger(namespace="lbframe")

#: how often the parent looks for member state to pass on (seconds)
STATE_INTERVAL = 0.1
#: how often the summed counters are written into the parent's objects
COUNTER_INTERVAL = 0.5
#: a worker that dies this soon after starting counts as a crash loop
EARLY_DEATH = 2.0
#: restart delays of a crash loop: first, then doubled up to the last
RESTART_DELAY = (0.2, 30.0)
#: a worker still running this long after stop_grace is killed
STOP_MARGIN = 5.0


# -- the sockets -------------------------------------------------------------

def bind_address(description: str) -> tuple[str, int, int, int]:
    """(host, port, family, backlog) of a tcp:, tcp6: or ssl: endpoint string."""
    kind = description.split(":", 1)[0].strip().lower()
    if kind == "ssl":
        from twisted.internet.endpoints import _parse

        args, kw = _parse(description)
        port = int(kw.get("port", args[1] if len(args) > 1 else 0))
        host = kw.get("interface", "") or "0.0.0.0"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return host, port, family, int(kw.get("backlog", 50))
    bind = tcp_bind(description)
    return bind.host, bind.port, bind.family, bind.backlog


def bind_socket(host: str, port: int, family: int, backlog: int) -> socket.socket:
    """A listening socket on ``host:port`` that nobody in this process
    accepts on: bound as a listener of one process would bind it
    (``SO_REUSEADDR``, ``IP_FREEBIND`` for a redundancy driver's VIP)."""
    return listening_socket(TCPBind(host, port, backlog, family))


@implementer(IListener)
class HeldListener(service.Service):
    """A worker-served virtual server, as the parent runs it: the bound
    sockets (handed to every worker), no accepting, no connection."""

    def __init__(self, name: str, listen, reactor, spare: dict | None = None):
        self.virtual = name
        self.listen = tuple(listen)
        self.reactor = reactor
        #: sockets a reload retired, by (host, port): a listener binding
        #: the same address takes one back, since the workers still hold
        #: it open (a new bind of that address would fail)
        self.spare = spare if spare is not None else {}
        #: (host, port) → socket, once bound
        self.sockets: dict[tuple[str, int], socket.socket] = {}
        self._outcome: ListenOutcome | None = None
        #: the ParentService (set by it), to tell a reload from a stop
        self.parent_service = None
        self.setName(f"virtual:{name}")

    def start_listening(self) -> defer.Deferred:
        if self._outcome is None:
            self._outcome = ListenOutcome(self._bind())
        return self._outcome.deferred()

    def _bind(self) -> defer.Deferred:
        bound = {}
        for description in self.listen:
            try:
                host, port, family, backlog = bind_address(description)
                kept = self.spare.pop((host, port), None)
                bound[(host, port)] = kept or bind_socket(host, port, family, backlog)
            except (OSError, ValueError) as e:
                for s in bound.values():
                    s.close()
                why = getattr(e, "strerror", None) or str(e)
                return defer.fail(ListenError(self.virtual, description, why))
        self.sockets = bound
        return defer.succeed(bound)

    def privilegedStartService(self) -> None:
        self.start_listening().addErrback(lambda f: None)
        super().privilegedStartService()

    def addresses(self) -> list:
        from twisted.internet.address import IPv4Address, IPv6Address

        out = []
        for s in self.sockets.values():
            host, port = s.getsockname()[:2]
            out.append((IPv6Address if s.family == socket.AF_INET6 else IPv4Address)(
                "TCP", host, port))
        return out

    def apply(self, balancer, protocol) -> None:
        """Nothing to hand over: the workers apply the reload themselves."""

    def stop_listening(self) -> defer.Deferred:
        """Retired by a reload: the sockets wait in :attr:`spare` until the
        workers have the reload (:meth:`Workers.reload` closes those not
        taken back). Stopped: they close."""
        parent = self.parent_service
        for key, s in self.sockets.items():
            if parent is not None and parent.running and not parent.stopping:
                self.spare[key] = s
            else:
                s.close()
        self.sockets = {}
        return defer.succeed(None)

    def connection_count(self) -> int:
        return 0

    def close_all(self, reason: str) -> None:
        pass

    def pause_accepting(self) -> None:
        pass

    def resume_accepting(self) -> None:
        pass


# -- the service ----------------------------------------------------------------

class ParentService(SiteService):
    """The site service of the parent of ``workers = N``."""

    def __init__(self, runtime, reactor, config_path=None, signals=False, on_hup=None,
                 command=None):
        self.workers = Workers(self, command=command)  # before the admin is made
        #: listening sockets a reload retired (see HeldListener.spare)
        self.spare: dict = {}
        self._workers_stopped: list | None = None
        super().__init__(runtime, reactor, config_path=config_path, signals=signals,
                         on_hup=on_hup)

    def make_admin(self, runtime):
        admin = super().make_admin(runtime)
        admin.context.workers = self.workers  # /api/status shows them
        return admin

    def make_listener(self, name, protocol, balancer):
        spec = balancer.virtual.spec  # the new one on a reload (self.runtime is still the old)
        if served_by_workers(spec):
            listener = HeldListener(name, spec.listen, self.reactor, self.spare)
            listener.parent_service = self
            return listener
        return super().make_listener(name, protocol, balancer)

    def held_sockets(self) -> list[tuple[str, int, socket.socket]]:
        return [(host, port, s) for listener in self.listeners.values()
                if isinstance(listener, HeldListener)
                for (host, port), s in listener.sockets.items()]

    def startService(self) -> None:
        super().startService()
        self.workers.start()

    def site_applied(self) -> None:
        # The parent's listeners may still be re-binding (a changed listen):
        # the workers hear of the reload once every socket is in place.
        pending = [d for d in self._rebinding.values()]
        waits: list[defer.Deferred] = []
        for d in pending:
            w: defer.Deferred = defer.Deferred()
            d.addBoth(lambda r, w=w: (w.callback(None), r)[1])
            waits.append(w)
        defer.gatherResults(waits).addCallback(lambda _: self.workers.reload())

    def stopService(self):
        """Stop every worker first (each drains its connections for up to
        ``stop_grace``), then the parent's own services."""
        if self._workers_stopped is not None:
            waiter: defer.Deferred = defer.Deferred()
            self._workers_stopped.append(waiter)
            return waiter
        if not self.running:
            return defer.succeed(None)
        self._workers_stopped = []
        self.stopping = True
        d = self.workers.stop(self.runtime.site.lbframe.stop_grace)
        d.addCallback(lambda _: SiteService.stopService(self))

        def done(result):
            waiters, self._workers_stopped = self._workers_stopped, None
            for w in waiters:
                w.callback(None)
            return result

        return d.addBoth(done)


# -- the workers ----------------------------------------------------------------

class WorkerSlot:
    """Worker number ``index``: its current process and channel."""

    def __init__(self, index: int):
        self.index = index
        self.process = None
        self.proto = None
        self.pid: int | None = None
        self.channel: Channel | None = None
        self.started = 0.0
        self.ready = False
        self.restarts = 0
        self.quick_deaths = 0
        self.restart_call = None
        #: fires when the current process has ended
        self.ended: defer.Deferred | None = None
        #: the member state last sent to it
        self.sent_state: dict = {}
        #: the digest of its member state table, as it last reported it
        self.state_digest: str | None = None

    def as_dict(self, digest: str | None = None) -> dict:
        return {"worker": self.index, "pid": self.pid, "ready": self.ready,
                "restarts": self.restarts,
                "in_step": self.state_digest is not None and self.state_digest == digest,
                "up_seconds": round(time.time() - self.started, 1) if self.pid else 0}


class _WorkerProcess(protocol.ProcessProtocol):
    def __init__(self, workers: "Workers", slot: WorkerSlot):
        self.workers, self.slot = workers, slot

    def processEnded(self, reason: Failure) -> None:
        self.workers.ended(self.slot, self, reason)


class Workers:
    """Starts, feeds, restarts and stops the worker processes of ``parent``."""

    def __init__(self, parent: ParentService, command=None):
        self.parent = parent
        #: argv of a worker, before its own arguments (tests may change it)
        self.command = list(command or [sys.executable, "-m", "lbframe.workers.child"])
        self.slots: list[WorkerSlot] = []
        self.counters = CounterSum()
        self.stopping = False
        self._state_call = None
        self._counter_call = None
        self._last_state: dict = {}
        self._lookups = 0

    @property
    def reactor(self):
        return self.parent.reactor

    @property
    def count(self) -> int:
        return self.parent.runtime.site.lbframe.workers

    def start(self) -> None:
        self.stopping = False
        self._last_state = member_state(self.parent.runtime)
        self.slots = [WorkerSlot(i) for i in range(1, self.count + 1)]
        for slot in self.slots:
            self.spawn(slot)
        self._state_call = self.reactor.callLater(STATE_INTERVAL, self._pass_state)
        self._counter_call = self.reactor.callLater(COUNTER_INTERVAL, self._write_counters)

    # -- one worker's life ---------------------------------------------------

    def spawn(self, slot: WorkerSlot) -> None:
        """Start worker ``slot``: a socketpair for its channel, then the
        process, with its end of the pair as descriptor 3."""
        slot.restart_call = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        path = os.path.abspath(self.parent.config_path)
        argv = self.command + ["--config", path, "--worker", str(slot.index), "--channel", "3"]
        proc = slot.proto = _WorkerProcess(self, slot)
        try:
            slot.process = self.reactor.spawnProcess(
                proc, argv[0], argv, env=worker_environment(),
                childFDs={0: "w", 1: 1, 2: 2, 3: theirs.fileno()})
        finally:
            theirs.close()
        slot.pid = slot.process.pid
        slot.started = time.time()
        slot.ready = False
        slot.state_digest = None
        slot.ended = defer.Deferred()
        channel = Channel(lambda m, fds, slot=slot: self.received(slot, m, fds))
        transport = self.reactor.adoptStreamConnection(
            ours.fileno(), socket.AF_UNIX, _OneProtocol(channel))
        ours.close()  # the transport holds its own duplicate
        del transport
        slot.channel = channel
        self.send_sockets(slot)
        slot.sent_state = member_state(self.parent.runtime)
        channel.send({"t": "state", "full": True, "rows": slot.sent_state})
        channel.send({"t": "start"})
        log.info("worker {worker} started (pid {pid})", worker=slot.index, pid=slot.pid,
                 lbframe_event="worker_started")

    def send_sockets(self, slot: WorkerSlot) -> None:
        held = self.parent.held_sockets()
        slot.channel.send({"t": "sockets", "fds": len(held),
                           "binds": [[host, port] for host, port, _ in held]},
                          fds=[s.fileno() for _, _, s in held])

    def ended(self, slot: WorkerSlot, proc, reason: Failure) -> None:
        if proc is not slot.proto:
            return  # an earlier process of the slot
        pid, lived = slot.pid, time.time() - slot.started
        if slot.channel is not None and slot.channel.transport is not None:
            slot.channel.transport.loseConnection()
        slot.channel, slot.process, slot.pid, slot.ready = None, None, None, False
        self.counters.retire(slot.index)
        ended, slot.ended = slot.ended, None
        if ended is not None:
            ended.callback(None)
        code = getattr(reason.value, "exitCode", None)
        signal_ = getattr(reason.value, "signal", None)
        if self.stopping or not self.parent.running or slot not in self.slots:
            log.info("worker {worker} (pid {pid}) stopped", worker=slot.index, pid=pid,
                     lbframe_event="worker_stopped")
            return
        how = f"signal {signal_}" if signal_ else f"status {code}"
        slot.quick_deaths = slot.quick_deaths + 1 if lived < EARLY_DEATH else 0
        first, most = RESTART_DELAY
        delay = min(most, first * (2 ** max(0, slot.quick_deaths - 1)))
        slot.restarts += 1
        log.error("worker {worker} (pid {pid}) died ({how}) after {lived:.1f}s; its connections "
                  "are lost; starting it again in {delay:g}s", worker=slot.index, pid=pid,
                  how=how, lived=lived, delay=delay, lbframe_event="worker_died")
        slot.restart_call = self.reactor.callLater(delay, self.spawn, slot)

    # -- messages from a worker -------------------------------------------------

    def received(self, slot: WorkerSlot, message: dict, fds) -> None:
        for fd in fds:
            os.close(fd)
        kind = message.get("t")
        if kind == "counters":
            self.counters.report(slot.index, message.get("values", {}))
            slot.state_digest = message.get("state")
        elif kind == "pget":
            self._persistence_get(slot, message)
        elif kind in ("pset", "ptouch", "pdel"):
            self._persistence_write(kind, message)
        elif kind == "ready":
            slot.ready = True
            log.info("worker {worker} (pid {pid}) serving", worker=slot.index, pid=slot.pid,
                     lbframe_event="worker_ready")
        elif kind == "want_state":
            slot.sent_state = member_state(self.parent.runtime)
            slot.channel.send({"t": "state", "full": True, "rows": slot.sent_state})
        elif kind == "log":
            level = LogLevel.levelWithName(message.get("level", "info"))
            log.emit(level, "worker {worker}: {text}", worker=slot.index,
                     text=message.get("text", ""), worker_event=message.get("event"),
                     lbframe_event=message.get("event") or "worker_log")
        elif kind == "reloaded":
            if not message.get("ok"):
                log.error("worker {worker} refused the reload; it runs the site it had",
                          worker=slot.index, lbframe_event="worker_reload_refused")

    def _store(self, message):
        profile = self.parent.runtime.profiles.get(message.get("p"))
        return None if profile is None else profile.store

    def _persistence_get(self, slot, message) -> None:
        store = self._store(message)
        value = None
        if store is not None and not store.asynchronous:
            value = store.get(message.get("k"))
        if slot.channel is not None:
            slot.channel.send({"t": "pval", "id": message.get("id"), "v": value})

    def _persistence_write(self, kind, message) -> None:
        store = self._store(message)
        if store is None or store.asynchronous:
            return
        key = message.get("k")
        if kind == "pset":
            store.set(key, message.get("v"))
        elif kind == "ptouch":
            store.touch(key)
        else:
            store.delete(key)

    # -- state down, counters up ------------------------------------------------------

    def _pass_state(self) -> None:
        self._state_call = None
        now = member_state(self.parent.runtime)
        rows = changed_rows(self._last_state, now)
        self._last_state = now
        if rows:
            for slot in self.slots:
                if slot.channel is not None:
                    slot.channel.send({"t": "state", "rows": rows})
        if not self.stopping:
            self._state_call = self.reactor.callLater(STATE_INTERVAL, self._pass_state)

    def _write_counters(self) -> None:
        self._counter_call = None
        self.counters.write(self.parent.runtime)
        if not self.stopping:
            self._counter_call = self.reactor.callLater(COUNTER_INTERVAL, self._write_counters)

    # -- reload and stop ------------------------------------------------------------

    def reload(self) -> None:
        """The parent applied a reload: every worker gets the sockets of now,
        then reads the file and applies it itself."""
        if self.stopping:
            return
        digest = _digest(self.parent.config_path)
        self._last_state = member_state(self.parent.runtime)
        for slot in list(self.slots):
            if slot.channel is not None:
                self.send_sockets(slot)
                slot.channel.send({"t": "reload", "digest": digest})
        spare, self.parent.spare = dict(self.parent.spare), self.parent.spare
        for key, sock in spare.items():  # no listener took them back: they are done
            if self.parent.spare.get(key) is sock:
                del self.parent.spare[key]
                sock.close()
        self._resize()

    def _resize(self) -> None:
        """``workers`` changed in the file: start or stop the difference."""
        want = self.count
        while len(self.slots) < want:
            slot = WorkerSlot(len(self.slots) + 1)
            self.slots.append(slot)
            self.spawn(slot)
        while len(self.slots) > want:
            slot = self.slots.pop()
            self._stop_slot(slot, self.parent.runtime.site.lbframe.stop_grace)

    def _stop_slot(self, slot: WorkerSlot, grace: float) -> defer.Deferred:
        if slot.restart_call is not None and slot.restart_call.active():
            slot.restart_call.cancel()
        slot.restart_call = None
        if slot.process is None:
            return defer.succeed(None)
        ended = slot.ended
        if slot.channel is not None and slot.channel.connected:
            slot.channel.send({"t": "stop"})
        else:
            _signal(slot.process, "TERM")
        process = slot.process
        kill = self.reactor.callLater(grace + STOP_MARGIN, _signal, process, "KILL")
        ended.addBoth(lambda r: (kill.active() and kill.cancel(), r)[1])
        return ended

    def stop(self, grace: float) -> defer.Deferred:
        """Stop every worker gracefully; fires when all have exited."""
        self.stopping = True
        for call in (self._state_call, self._counter_call):
            if call is not None and call.active():
                call.cancel()
        self._state_call = self._counter_call = None
        waits = [self._stop_slot(slot, grace) for slot in self.slots]
        d = defer.gatherResults(waits, consumeErrors=True)

        def done(result):
            self.counters.write(self.parent.runtime)
            return None

        return d.addBoth(done)

    def state_digest(self) -> str:
        """The digest of the parent's member state, as its workers should have it."""
        return state_digest(member_state(self.parent.runtime))

    def status(self) -> list[dict]:
        """One row per worker: pid, ready, restarts, whether its member state
        is the parent's (``in_step``) and how long it has run."""
        digest = self.state_digest()
        return [slot.as_dict(digest) for slot in self.slots]


class _OneProtocol(protocol.Factory):
    def __init__(self, proto):
        self.proto = proto

    def buildProtocol(self, addr):
        return self.proto


def _signal(process, name: str) -> None:
    try:
        process.signalProcess(name)
    except (error.ProcessExitedAlready, OSError):
        pass


def worker_environment() -> dict:
    """The parent's environment, with the directory lbframe was imported
    from first on ``PYTHONPATH``: a worker runs the parent's code, wherever
    its working directory is and whatever else is installed."""
    import lbframe

    env = os.environ.copy()
    home = os.path.dirname(os.path.dirname(os.path.abspath(lbframe.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([home] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p and p != home])
    return env


def _digest(path) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return ""
