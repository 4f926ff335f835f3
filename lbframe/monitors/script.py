"""``type = script`` (F7d): the operator's own check; exit status 0 passes.

The command runs as ``/bin/sh -c COMMAND`` with ``LBFRAME_HOST``,
``LBFRAME_PORT``, ``LBFRAME_MEMBER`` and ``LBFRAME_POOL`` added to lbframe's
environment, through the reactor's process support (never blocking it).

Twisted's ``spawnProcess`` has no pre-exec hook, so the shell is started by a
small supervisor, :mod:`lbframe.monitors.script_leader`, run by this Python
interpreter with ``-I -S``. It puts the script in a process group of its own,
kills that group (SIGTERM, then SIGKILL after :attr:`ScriptMonitor.kill_grace`)
when the runner cancels the check at its timeout or when the shell exits and
leaves processes behind, and, as a child subreaper, reaps every process the
script started, so no check leaves a process or a zombie behind even under an
init that does not reap. ``setsid(1)`` from util-linux would start faster but
leaves the script's orphans to init; the supervisor costs a Python start-up
(tens of milliseconds) per check.

The reason is the last non-empty line the script wrote (stdout and stderr
together, of which only the last 4 KiB are kept), after ``exit N: `` or
``killed by signal N: `` when it fails.
"""

from __future__ import annotations

import os
import sys

from twisted.internet import defer, error, protocol
from zope.interface import implementer

from lbframe import hookimpl
from lbframe.errors import OptionError
from lbframe.interfaces import IMonitor
from lbframe.monitoring import BaseMonitor, CheckResult, check_port

LEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "script_leader.py")
#: bytes of output kept: the reason is taken from the end
OUTPUT_TAIL = 4096


def last_line(output: bytes) -> str:
    """The last non-empty line of ``output``, stripped."""
    for line in reversed(output.decode("utf-8", "replace").splitlines()):
        if line.strip():
            return line.strip()
    return ""


def describe_exit(reason, output: bytes) -> CheckResult:
    """The check's result from how the script ended and what it wrote."""
    line = last_line(output)
    status = reason.value
    if isinstance(status, error.ProcessDone) or getattr(status, "exitCode", None) == 0:
        return CheckResult(True, line)
    if getattr(status, "signal", None) is not None:
        words = f"killed by signal {status.signal}"
    else:
        words = f"exit {status.exitCode}"
    return CheckResult(False, f"{words}: {line}" if line else words)


class ScriptProcess(protocol.ProcessProtocol):
    """One run of the script; ``deferred`` fires with its CheckResult."""

    def __init__(self, reactor, grace: float):
        self.reactor = reactor
        self.grace = grace
        self.output = bytearray()
        self.deferred = defer.Deferred(self._cancel)
        #: fires (with None) when the supervisor has exited and its pipes are closed
        self.ended = defer.Deferred()
        self._last_resort = None

    def connectionMade(self):
        self.transport.closeStdin()  # a script reading stdin gets EOF, not a hang

    def childDataReceived(self, fd, data):
        self.output += data
        if len(self.output) > OUTPUT_TAIL:
            del self.output[:-OUTPUT_TAIL]

    def _cancel(self, _):
        """The runner's timeout: the supervisor kills the script's process group;
        should the supervisor itself not go, SIGKILL it."""
        try:
            self.transport.signalProcess("TERM")
        except error.ProcessExitedAlready:
            # Exited, but something it could not kill still holds our pipes.
            self.transport.loseConnection()
            return
        self._last_resort = self.reactor.callLater(2 * self.grace + 1, self._kill_supervisor)

    def _kill_supervisor(self):
        self._last_resort = None
        try:
            self.transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass
        self.transport.loseConnection()

    def processEnded(self, reason):
        if self._last_resort is not None and self._last_resort.active():
            self._last_resort.cancel()
        self._last_resort = None
        if not self.deferred.called:
            self.deferred.callback(describe_exit(reason, bytes(self.output)))
        self.ended.callback(None)


@implementer(IMonitor)
class ScriptMonitor(BaseMonitor):
    #: seconds between SIGTERM and SIGKILL for the script's processes
    kill_grace = 1.0

    def __init__(self, spec, options, reactor):
        for key in options:
            raise OptionError(key, f"unknown key {key!r} for monitor type script")
        self.spec = spec
        self.reactor = reactor
        #: checks whose processes have not ended yet
        self.running: set[ScriptProcess] = set()

    def environment(self, member) -> dict[str, str]:
        env = dict(os.environ)
        env.update(LBFRAME_HOST=member.address.host,
                   LBFRAME_PORT=str(check_port(self.spec, member)),
                   LBFRAME_MEMBER=member.name, LBFRAME_POOL=member.pool)
        return env

    def check(self, member):
        if not self.spec.command:  # the config parser requires it; built by hand, maybe not
            return defer.succeed(CheckResult(False, "no command configured"))
        proc = ScriptProcess(self.reactor, self.kill_grace)
        args = [sys.executable, "-I", "-S", LEADER, repr(float(self.kill_grace)),
                str(os.getpid()), self.spec.command]
        try:
            self.reactor.spawnProcess(proc, sys.executable, args, env=self.environment(member),
                                      usePTY=False)
        except OSError as e:
            return defer.succeed(CheckResult(False, f"cannot run command: {e}"))
        self.running.add(proc)
        proc.ended.addCallback(lambda _: self.running.discard(proc))
        return proc.deferred

    def idle(self) -> defer.Deferred:
        """Fires once every process this monitor started has ended and been reaped."""
        return defer.DeferredList([p.ended for p in self.running]).addCallback(lambda _: None)


@hookimpl
def lbframe_register_monitors(registry):
    registry.add("script", ScriptMonitor)
