"""Supervisor of one ``type = script`` check; a program, not imported by lbframe.

Run as ``python -I -S script_leader.py GRACE PARENT_PID COMMAND``. It

- leaves lbframe's session (``setsid``), so a terminal's Ctrl-C or hang-up
  reaches lbframe, not the operator's script;
- runs ``/bin/sh -c COMMAND`` in a new process group of its own, with the
  signal dispositions a fresh program expects (Python ignores ``SIGPIPE``);
- is a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``): whatever the script
  leaves behind is reparented to it, not to init, and reaped here. Without
  this, an init that does not reap (a container whose PID 1 is lbframe or a
  plain program) collects zombies from every check;
- on SIGTERM (lbframe cancelling the check at its timeout), or when the
  shell exits while processes of the script remain, sends SIGTERM to the
  script's process group and to any orphan it adopted, then SIGKILL after
  GRACE seconds, and exits once all of them are reaped;
- exits as the shell did: the same exit code, or killed by the same signal.
  It also gets SIGTERM when lbframe itself dies (``PR_SET_PDEATHSIG``).

It imports only the standard library so that ``-I -S`` keeps its start-up
short; signals are taken synchronously with ``sigtimedwait``, so no state is
lost to a signal arriving at a bad moment.
"""

import ctypes
import os
import resource
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
WATCHED = {signal.SIGCHLD, signal.SIGTERM}


def _prctl(option, value):
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: no subreaper, orphans go to init as usual


def _children():
    """Our direct children (orphans we adopted), from /proc."""
    me, found = os.getpid(), []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rpartition(b")")[2].split()
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(name))
    return found


def _signal_all(group, sig):
    for kill, target in [(os.killpg, group)] + [(os.kill, pid) for pid in _children()]:
        try:
            kill(target, sig)
        except OSError:
            pass


def _run_shell(command):
    """In the forked child: own process group, default signals, exec the shell."""
    try:
        os.setpgid(0, 0)
        for sig in signal.valid_signals():  # ignored ones would survive exec
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass  # SIGKILL, SIGSTOP
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.execv("/bin/sh", ["sh", "-c", command])
    except BaseException as e:  # noqa: BLE001 - we must never return into the parent's code
        os.write(2, f"cannot run /bin/sh: {e}\n".encode())
    os._exit(127)


def supervise(leader, grace):
    """Reap until nothing is left; the shell's wait status (``None`` if it never ended)."""
    status = None
    deadline = None
    killed = False
    while True:
        while True:  # reap everything that has ended
            try:
                pid, wstatus = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return status
            if pid == 0:
                break
            if pid == leader:
                status = wstatus
        if status is not None and deadline is None:
            # The shell is done but left processes behind: they go too.
            _signal_all(leader, signal.SIGTERM)
            deadline = time.monotonic() + grace
        if deadline is None:
            info = signal.sigwaitinfo(WATCHED)
        else:
            left = deadline - time.monotonic()
            info = signal.sigtimedwait(WATCHED, left) if left > 0 else None
            if info is None:  # the grace is over
                if killed:
                    return status  # something survives SIGKILL (uninterruptible); give up
                _signal_all(leader, signal.SIGKILL)
                killed = True
                deadline = time.monotonic() + grace
                continue
        if info.si_signo == signal.SIGTERM and deadline is None:
            _signal_all(leader, signal.SIGTERM)
            deadline = time.monotonic() + grace


def _exit_like(status):
    """Leave the way the shell did, so that lbframe reads the shell's status."""
    if status is None:
        os.write(2, b"script did not exit after SIGKILL\n")
        os._exit(125)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if sig != signal.SIGKILL:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def main(argv):
    grace, parent, command = float(argv[1]), int(argv[2]), argv[3]
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(125)  # lbframe died before we could notice
    leader = os.fork()
    if leader == 0:
        _run_shell(command)
    try:
        os.setpgid(leader, leader)  # also done by the child: whichever runs first
    except OSError:
        pass
    _exit_like(supervise(leader, grace))


if __name__ == "__main__":
    main(sys.argv)
