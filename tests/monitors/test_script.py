"""``type = script``: real processes on the real reactor.

Reasons are asserted exactly; cancelled checks are checked to leave no
process and no zombie behind, looking at /proc.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from lbframe.config.model import Address, MemberSpec, Monitor
from lbframe.errors import OptionError
from lbframe.interfaces import IMonitor
from lbframe.monitoring import CheckResult, MonitorRunner
from lbframe.monitors import script
from lbframe.monitors.script import ScriptMonitor, last_line
from lbframe.schedulers.round_robin import RoundRobin
from tests.helpers import pool_state


def member(host="127.0.0.1", port=5432, name="db1", pool="replicas"):
    return pool_state(RoundRobin(), MemberSpec(name, Address(host, port)), name=pool).members[name]


def gone(pid: int) -> bool:
    """No such process, not even a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return not os.path.exists(f"/proc/{pid}")
    return False


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


class ScriptResultTests(TestCase):
    timeout = 20

    def run_script(self, command, **spec):
        monitor = ScriptMonitor(Monitor("check", "script", command=command, **spec), {}, reactor)
        return monitor.check(member())

    @defer.inlineCallbacks
    def test_exit_zero_passes(self):
        self.assertEqual((yield self.run_script("exit 0")), CheckResult(True, ""))

    @defer.inlineCallbacks
    def test_pass_reason_is_last_non_empty_line(self):
        result = yield self.run_script("echo one; echo; echo '  replica in sync  '; echo")
        self.assertEqual(result, CheckResult(True, "replica in sync"))

    @defer.inlineCallbacks
    def test_failure_reason_is_exit_status_and_last_line(self):
        result = yield self.run_script(
            "echo checking replica; echo 'db replica lag 30s' >&2; exit 2")
        self.assertEqual(result, CheckResult(False, "exit 2: db replica lag 30s"))

    @defer.inlineCallbacks
    def test_failure_without_output(self):
        self.assertEqual((yield self.run_script("exit 3")), CheckResult(False, "exit 3"))

    @defer.inlineCallbacks
    def test_killed_by_signal(self):
        self.assertEqual((yield self.run_script("kill -9 $$")),
                         CheckResult(False, "killed by signal 9"))
        self.assertEqual((yield self.run_script("echo dying; kill -TERM $$")),
                         CheckResult(False, "killed by signal 15: dying"))

    @defer.inlineCallbacks
    def test_environment(self):
        result = yield self.run_script(
            'test -n "$PATH" && echo "$LBFRAME_HOST|$LBFRAME_PORT|$LBFRAME_MEMBER|$LBFRAME_POOL"')
        self.assertEqual(result, CheckResult(True, "127.0.0.1|5432|db1|replicas"))

    @defer.inlineCallbacks
    def test_port_override_in_environment(self):
        """F7e: ``port`` is what the script is told to check."""
        result = yield self.run_script('echo "$LBFRAME_PORT"', port=9200)
        self.assertEqual(result, CheckResult(True, "9200"))

    @defer.inlineCallbacks
    def test_command_not_found(self):
        command = "lbframe-no-such-check --fast"
        shell = subprocess.run(["sh", "-c", command], executable="/bin/sh", capture_output=True,
                               text=True)
        self.assertEqual(shell.returncode, 127)
        result = yield self.run_script(command)
        self.assertEqual(result, CheckResult(False, f"exit 127: {shell.stderr.strip()}"))

    @defer.inlineCallbacks
    def test_stdin_is_closed(self):
        self.assertEqual((yield self.run_script("cat; echo eof")), CheckResult(True, "eof"))

    @defer.inlineCallbacks
    def test_script_gets_default_signal_dispositions(self):
        """Python ignores SIGPIPE (and lbframe may ignore more); a script must
        not inherit that (``yes | head`` would spin on EPIPE), nor a blocked
        signal. Only signals 1-31: glibc's posix_spawn leaves its own internal
        signals 32 and 33 ignored."""
        result = yield self.run_script("grep -E '^Sig(Blk|Ign)' /proc/self/status | tr '\\n' ' '")
        fields = dict(zip(*[iter(result.reason.replace(":", " ").split())] * 2))
        self.assertEqual(int(fields["SigBlk"], 16), 0, result)
        self.assertEqual(int(fields["SigIgn"], 16) & 0x7FFFFFFF, 0, result)

    @defer.inlineCallbacks
    def test_output_is_bounded_to_its_tail(self):
        result = yield self.run_script(
            "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo 'final word'; exit 1")
        self.assertEqual(result, CheckResult(False, "exit 1: final word"))
        result = yield self.run_script("head -c 100000 /dev/zero | tr '\\0' y; exit 1")
        self.assertEqual(result, CheckResult(False, "exit 1: " + "y" * script.OUTPUT_TAIL))


class ProcessGroupTests(TestCase):
    """Cancel (the runner's timeout) kills everything the script started."""

    timeout = 30

    def setUp(self):
        self.pidfile = self.mktemp()
        self.monitor = ScriptMonitor(Monitor("check", "script", command="true"), {}, reactor)
        self.addCleanup(lambda: self.monitor.idle())

    def start(self, command):
        self.monitor.spec = Monitor("check", "script", command=command)
        return self.monitor.check(member())

    @defer.inlineCallbacks
    def wait_for_pid(self):
        for _ in range(1000):
            if os.path.exists(self.pidfile):
                with open(self.pidfile) as f:
                    text = f.read()
                if text.endswith("\n"):
                    return int(text)
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.fail("the script never wrote its pid")

    @defer.inlineCallbacks
    def test_cancel_kills_the_process_group(self):
        d = self.start(f"sleep 100 & echo $! > {self.pidfile}; wait")
        child = yield self.wait_for_pid()
        [proc] = self.monitor.running
        supervisor = proc.transport.pid
        group = os.getpgid(child)
        self.assertNotEqual(group, os.getpgrp())
        self.assertNotEqual(os.getsid(child), os.getsid(0))
        started = time.monotonic()
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        yield self.monitor.idle()
        self.assertLess(time.monotonic() - started, self.monitor.kill_grace)  # SIGTERM sufficed
        self.assertTrue(gone(child), "the script's child survived")
        self.assertTrue(group_gone(group), "the script's process group survived")
        self.assertTrue(gone(group), "the shell survived or is a zombie")
        self.assertTrue(gone(supervisor), "the supervisor was not reaped")
        self.assertEqual(self.monitor.running, set())

    @defer.inlineCallbacks
    def test_processes_ignoring_sigterm_get_sigkill(self):
        self.monitor.kill_grace = 0.3
        d = self.start(f"trap '' TERM; sleep 100 & echo $! > {self.pidfile}; wait; wait")
        child = yield self.wait_for_pid()
        group = os.getpgid(child)
        started = time.monotonic()
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        yield self.monitor.idle()
        self.assertGreaterEqual(time.monotonic() - started, 0.3)
        self.assertTrue(gone(child))
        self.assertTrue(group_gone(group))

    @defer.inlineCallbacks
    def test_leftovers_are_killed_when_the_script_exits(self):
        result = yield self.start(f"sleep 100 & echo $! > {self.pidfile}; echo started")
        self.assertEqual(result, CheckResult(True, "started"))
        child = yield self.wait_for_pid()
        self.assertTrue(gone(child))

    @defer.inlineCallbacks
    def test_orphans_that_left_the_group_are_reaped(self):
        """A daemon started with setsid leaves the process group; once the
        shell is gone it is the supervisor's child (subreaper) and goes too."""
        if shutil.which("setsid") is None:
            raise self.skipTest("setsid (util-linux) not installed")
        result = yield self.start(
            f"setsid sh -c 'echo $$ > {self.pidfile}; exec sleep 100' & sleep 0.2; echo spawned")
        self.assertEqual(result, CheckResult(True, "spawned"))
        child = yield self.wait_for_pid()
        self.assertTrue(gone(child))

    @defer.inlineCallbacks
    def test_runner_timeout_cancels_the_script(self):
        """End to end: the runner reports its timeout, the script is killed."""
        spec = Monitor("check", "script", command=f"echo $$ > {self.pidfile}; exec sleep 100",
                       interval=60, timeout=0.5, fall=1)
        self.monitor.spec = spec
        pool = pool_state(RoundRobin(), MemberSpec("db1", Address("127.0.0.1", 5432)))
        down = defer.Deferred()
        pool.on_state_change.append(lambda *change: down.called or down.callback(change))

        class AtOnce(random.Random):
            def uniform(self, a, b):
                return a

        runner = MonitorRunner(reactor, AtOnce())
        runner.add(pool, pool.members["db1"], spec, self.monitor)
        runner.startService()
        self.addCleanup(runner.stopService)
        change = yield down
        self.assertEqual(change, ("web", "db1", "up", "down", "timeout after 0.5s (1/1)"))
        shell = yield self.wait_for_pid()
        yield self.monitor.idle()
        self.assertTrue(gone(shell))


class ScriptUnitTests(SynchronousTestCase):
    def test_last_line(self):
        self.assertEqual(last_line(b"a\nb  \n\n  \n"), "b")
        self.assertEqual(last_line(b""), "")
        self.assertEqual(last_line(b"bad \xff byte\r\n"), "bad \ufffd byte")

    def test_unknown_option(self):
        with self.assertRaises(OptionError) as e:
            ScriptMonitor(Monitor("c", "script", command="true"), {"shell": "bash"}, reactor)
        self.assertEqual(e.exception.key, "shell")

    def test_without_command(self):
        monitor = ScriptMonitor(Monitor("c", "script"), {}, reactor)
        self.assertEqual(self.successResultOf(monitor.check(member())),
                         CheckResult(False, "no command configured"))

    def test_provides_monitor(self):
        self.assertTrue(verifyObject(IMonitor, ScriptMonitor(Monitor("c", "script", command="true"),
                                                             {}, reactor)))

    def test_registered(self):
        added = []

        class Registry:
            def add(self, name, factory):
                added.append((name, factory))

        script.lbframe_register_monitors(Registry())
        self.assertEqual(added, [("script", ScriptMonitor)])

    def test_supervisor_is_a_plain_program(self):
        """The supervisor runs with ``-I -S``: it must not import lbframe."""
        with open(script.LEADER) as f:
            source = f.read()
        self.assertNotIn("lbframe", "\n".join(l for l in source.splitlines()
                                              if l.startswith(("import", "from"))))
