"""A worker process: ``python -m lbframe.workers.child --config site.ini
--worker N --channel FD`` (started by the parent, never by hand).

It builds the site from the same file as the parent, with no monitor,
redundancy driver or admin API of its own (:class:`WorkerService`), and
serves the tcp, http and ssl virtual servers on the sockets the parent
passes (:mod:`lbframe.workers.inherited`). The parent's messages:

``sockets``  the listening sockets (descriptors attached) and their addresses
``state``    member rows to apply (``full``: the whole table)
``start``    start serving
``reload``   read the file again and apply it (:func:`lbframe.site.reload_in_thread`)
``pval``     the answer to a persistence lookup
``stop``     drain (``stop_grace``) and exit

It sends ``ready``, ``counters`` (every :data:`COUNTER_INTERVAL`), ``log``
(its log lines, which the parent logs as its own, tagged with the worker),
``reloaded``, ``want_state`` and the persistence requests. When the
channel closes (the parent is gone) it drains and exits, as an nginx
worker does when its master dies.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger, LogLevel, formatEvent, globalLogBeginner
from zope.interface import implementer

from lbframe.interfaces import IListener
from lbframe.monitoring import MonitorRunner
from lbframe.service import SiteService
from lbframe.workers import inherited, served_by_workers
from lbframe.workers.channel import Channel
from lbframe.workers.state import apply_member_state, counters, member_state, state_digest

log = Logger(namespace="lbframe")

COUNTER_INTERVAL = 0.25
#: how long a persistence lookup waits for the parent before the scheduler decides
LOOKUP_DEADLINE = 1.0


class _NoChecks(MonitorRunner):
    """The parent runs the checks; a reload's :func:`lbframe.site.apply` adds none here."""

    def add(self, pool, member, spec, monitor):
        return None


class _NoAdmin(service.Service):
    def set_runtime(self, runtime) -> None:
        pass

    def set_token(self, token) -> None:
        pass


@implementer(IListener)
class _NotHere(service.Service):
    """A virtual server the parent serves itself (routed, nat, udp)."""

    def start_listening(self):
        return defer.succeed(None)

    def addresses(self):
        return []

    def apply(self, balancer, protocol):
        pass

    def stop_listening(self):
        return defer.succeed(None)

    def connection_count(self):
        return 0

    def close_all(self, reason):
        pass

    def pause_accepting(self):
        pass

    def resume_accepting(self):
        pass


class WorkerService(SiteService):
    """The site service of a worker: listeners only."""

    def __init__(self, runtime, reactor, config_path=None):
        super().__init__(runtime, reactor, config_path=config_path)
        for child in (self.monitor_runner, self.redundancy_service, self.admin):
            if child is not None and child.parent is self:
                child.disownServiceParent()
        self.monitor_runner = _NoChecks(reactor)
        self.channel: Channel | None = None
        self.after_reload = None

    def make_admin(self, runtime):
        return _NoAdmin()

    def make_listener(self, name, protocol, balancer):
        if served_by_workers(balancer.virtual.spec):
            return super().make_listener(name, protocol, balancer)
        return _NotHere()

    def replace_child(self, old, new) -> bool:
        return False  # no redundancy driver nor admin server in a worker

    def site_applied(self) -> None:
        if self.after_reload is not None:
            self.after_reload()


class ParentStore:
    """A worker's view of a ``store = memory`` table, which the parent holds
    (so that every worker sees what any of them learned): reads ask the
    parent and wait (up to :data:`LOOKUP_DEADLINE`, then None: the
    scheduler decides); writes are sent and not waited for."""

    asynchronous = True

    def __init__(self, worker: "Worker", profile: str, local):
        self.worker, self.profile, self.local = worker, profile, local

    def __len__(self):
        return 0

    def get(self, key):
        return self.worker.ask({"t": "pget", "p": self.profile, "k": key})

    def set(self, key, member_name):
        self.worker.send({"t": "pset", "p": self.profile, "k": key, "v": member_name})

    def touch(self, key):
        self.worker.send({"t": "ptouch", "p": self.profile, "k": key})

    def delete(self, key):
        self.worker.send({"t": "pdel", "p": self.profile, "k": key})


class Worker:
    """The worker's side of the channel."""

    def __init__(self, svc: WorkerService, reactor, index: int):
        self.svc, self.reactor, self.index = svc, reactor, index
        self.channel = Channel(self.received, self.lost)
        self.waiting: dict[int, tuple] = {}
        self._next_id = 0
        self._counter_call = None
        self.stopping = False
        #: digest of the member state table as this worker has it (None: to compute)
        self._digest: str | None = None
        svc.after_reload = self.wrap_stores
        self.wrap_stores()

    def send(self, message: dict) -> None:
        self.channel.send(message)

    def ask(self, message: dict) -> defer.Deferred:
        self._next_id += 1
        ident = message["id"] = self._next_id
        d: defer.Deferred = defer.Deferred()
        timeout = self.reactor.callLater(LOOKUP_DEADLINE, self._no_answer, ident)
        self.waiting[ident] = (d, timeout)
        self.send(message)
        return d

    def _no_answer(self, ident: int) -> None:
        d, _ = self.waiting.pop(ident, (None, None))
        if d is not None:
            log.warn("persistence lookup: no answer from the parent in {s:g}s; the scheduler "
                     "decides", s=LOOKUP_DEADLINE, lbframe_event="worker_lookup_late")
            d.callback(None)

    def wrap_stores(self) -> None:
        """Every stateful profile on a local (memory) store reads and writes
        the parent's table instead (after each reload too: it may have built
        new stores)."""
        runtime = self.svc.runtime
        for name, profile in runtime.profiles.items():
            store = profile.store
            if isinstance(store, ParentStore) or store.asynchronous or profile.method.stateless:
                continue
            wrapped = ParentStore(self, name, store)
            profile.store = wrapped
            runtime.persistence_stores[name] = wrapped

    # -- messages from the parent ---------------------------------------------------

    def received(self, message: dict, fds) -> None:
        kind = message.get("t")
        if kind == "sockets":
            binds = message.get("binds", [])
            for (host, port), fd in zip(binds, fds):
                inherited.adopt(host, port, socket.socket(fileno=fd))
            for fd in fds[len(binds):]:
                os.close(fd)
            inherited.keep_only(tuple(b) for b in binds)
            return
        for fd in fds:
            os.close(fd)
        if kind == "state":
            apply_member_state(self.svc.runtime, message.get("rows", {}))
            self._digest = None
        elif kind == "pval":
            d, timeout = self.waiting.pop(message.get("id"), (None, None))
            if d is not None:
                timeout.cancel()
                d.callback(message.get("v"))
        elif kind == "start":
            self.start()
        elif kind == "reload":
            self.reload(message.get("digest", ""))
        elif kind == "stop":
            self.stop()

    #: the process's exit status (main returns it)
    exit_code = 0

    def start(self) -> None:
        svc = self.svc
        try:
            svc.privilegedStartService()
            svc.startService()
        except SystemExit as e:  # a listener could not listen: its one line
            log.error("cannot serve: {error}", error=str(e), lbframe_event="listener_failed")
            self.exit_code = 1
            self.reactor.callLater(0, self.reactor.stop)
            return
        self.send({"t": "ready"})
        self._counter_call = self.reactor.callLater(COUNTER_INTERVAL, self._counters)

    def _counters(self) -> None:
        if self._digest is None:
            self._digest = state_digest(member_state(self.svc.runtime))
        self.send({"t": "counters", "values": counters(self.svc.runtime),
                   "state": self._digest})
        self._counter_call = self.reactor.callLater(COUNTER_INTERVAL, self._counters)

    def reload(self, digest: str) -> None:
        from lbframe.site import reload_in_thread
        from lbframe.workers.parent import _digest

        if digest and _digest(self.svc.config_path) != digest:
            log.warn("the site file changed again since the parent read it; this worker "
                     "applies what it reads now (the parent will follow on its next reload)",
                     lbframe_event="worker_reload_skew")

        def done(ok):
            self.send({"t": "reloaded", "ok": bool(ok)})
            self.send({"t": "want_state"})

        reload_in_thread(self.svc).addCallback(done)

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        d = defer.maybeDeferred(self.svc.stopService) if self.svc.running else defer.succeed(None)

        def done(_):
            if self._counter_call is not None and self._counter_call.active():
                self._counter_call.cancel()
            if self.channel.connected:
                self.send({"t": "counters", "values": counters(self.svc.runtime)})
            self.reactor.callLater(0, self.reactor.stop)

        d.addBoth(done)

    def lost(self, reason) -> None:
        if not self.stopping:
            log.warn("the parent is gone: draining and exiting",
                     lbframe_event="worker_orphaned")
        self.stop()


def _forward_logs(worker_ref: list):
    """A log observer sending this process's lbframe lines (info and up) to the parent."""

    def observe(event):
        worker = worker_ref[0] if worker_ref else None
        level = event.get("log_level")
        if worker is None or level is None or level < LogLevel.info:
            return
        if event.get("log_namespace") != "lbframe" and level < LogLevel.warn:
            return
        try:
            text = formatEvent(event)
            if event.get("log_failure") is not None:
                text += "\n" + event["log_failure"].getTraceback()
            worker.send({"t": "log", "level": level.name, "text": text,
                         "event": event.get("lbframe_event")})
        except Exception:
            pass

    return observe


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lbframe.workers.child")
    parser.add_argument("--config", required=True)
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--channel", type=int, required=True)
    args = parser.parse_args(argv)

    # Ctrl-C reaches the whole process group: the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from twisted.internet import reactor

    from lbframe.site import load, settle_heap

    worker_ref: list = []
    globalLogBeginner.beginLoggingTo([_forward_logs(worker_ref)], redirectStandardIO=False)
    try:
        runtime = load(args.config, reactor)
    except Exception as e:
        sys.stderr.write(f"lbframe worker {args.worker}: {e}\n")
        return 1
    svc = WorkerService(runtime, reactor, config_path=args.config)
    worker = Worker(svc, reactor, args.worker)
    worker_ref.append(worker)
    reactor.adoptStreamConnection(args.channel, socket.AF_UNIX, _Factory(worker.channel))
    os.close(args.channel)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(worker.stop))
    settle_heap()
    reactor.run(installSignalHandlers=False)
    return worker.exit_code


class _Factory:
    def __init__(self, proto):
        self.proto = proto

    def buildProtocol(self, addr):
        return self.proto

    def doStart(self):
        pass

    def doStop(self):
        pass


if __name__ == "__main__":
    sys.exit(main())
