"""Run-time state built from the frozen config: members, pools, virtual servers.

Member state has one owner: :class:`PoolState`. Monitors report results to
it, the data paths report failed connects to it (passive health, see
:mod:`lbframe.passive`), the admin API asks it for changes, connections are
counted through it, and it tells the pool's scheduler what changed. Nothing
else writes a member's state.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Callable

import attrs
from twisted.logger import Logger

from lbframe.config.model import Address, MemberSpec, Pool, Virtual
from lbframe.interfaces import IScheduler
from lbframe.passive import (FAILURE_LOG_INTERVAL, NO_PROBE, PROBE_READY, PROBE_SENT,
                             PassiveState, count_failure, down_reason, hold_back)

log = Logger(namespace="lbframe")

#: weight of a new response-time sample in the moving average
RESPONSE_TIME_ALPHA = 0.3
#: connections that may wait for a member of one pool (``queue_timeout``)
QUEUE_LIMIT = 4096
#: steps in which a slow-starting member's weight ramps up
SLOW_START_STEPS = 10


@attrs.define(eq=False)
class CheckState:
    """One monitor's view of one member: rise/fall counters and last result."""

    up: bool = True
    successes: int = 0
    failures: int = 0
    last_ok: bool | None = None
    last_reason: str = ""
    last_time: float | None = None
    last_duration: float | None = None
    checks_total: int = 0
    checks_failed: int = 0
    #: why it went down (with its fall count), for the member's down_reason
    down_why: str = ""


@attrs.define(eq=False)
class Member:
    """A member of a pool at run time.

    ``eligible`` is kept current by :class:`PoolState` so that a scheduler's
    ``pick`` reads one attribute instead of working state out each time.
    """

    name: str
    pool: str
    spec: MemberSpec
    #: the weight set in the config or by the admin
    weight: int
    #: the weight schedulers use: ``weight``, or less while slow-starting
    effective_weight: int = 0
    admin: str = "enabled"  # "enabled", "draining", "disabled"
    healthy: bool = True
    eligible: bool = True
    active: int = 0
    total: int = 0
    failures: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    #: the most connections open to it at once
    max_active: int = 0
    #: failed connects to it that were retried on another member
    retries: int = 0
    #: responses with a 5xx status from it (http)
    responses_5xx: int = 0
    response_time: float | None = None
    down_reason: str = ""
    #: when it entered its current state (wall clock, for "down 3m12s")
    since: float = attrs.field(factory=time.time)
    #: times it went down, and the seconds it spent down before its current
    #: state (HAProxy's "Dwn" and "Dwntme")
    downs: int = 0
    downtime: float = 0.0
    checks: dict[str, CheckState] = attrs.field(factory=dict)
    #: (family, sockaddr) to connect to, filled in by the first connect
    sockaddr: tuple | None = None
    #: when the current slow start began (clock seconds), or None
    slow_start_began: float | None = None
    slow_start_call: object = None
    #: True once a reload took the member out of its pool: connections that
    #: were on it finish, but its pool's scheduler no longer knows it
    removed: bool = False
    #: what real traffic says (lbframe.passive); ``healthy`` includes it
    passive: PassiveState = attrs.field(factory=PassiveState)

    @property
    def address(self) -> Address:
        return self.spec.address

    # Counters the data path reports without its pool (see PoolState's
    # connection_opened/connection_closed for those the pool must know).

    def relayed(self, bytes_in: int, bytes_out: int) -> None:
        """``bytes_in`` went from a client to this member, ``bytes_out``
        back (http counts an exchange's bytes when it ends, which may be
        after its connection was closed with ``connection_closed``)."""
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def misbehaved(self) -> None:
        """The member broke the protocol (a malformed response, bytes nobody
        asked for): counted in ``failures``, not for passive health (the
        caller logs it; ``PoolState.member_failed`` is for failures that are)."""
        self.failures += 1

    def remember_sockaddr(self, sockaddr: tuple) -> tuple:
        """Keep the (family, sockaddr) the first connect resolved; returns it."""
        self.sockaddr = sockaddr
        return sockaddr

    @property
    def priority(self) -> int:
        return self.spec.priority

    @property
    def maxconn(self) -> int | None:
        return self.spec.maxconn

    @property
    def backup(self) -> bool:
        return self.spec.backup

    @property
    def state(self) -> str:
        """``up``, ``down``, ``draining`` or ``disabled`` (the contract's words)."""
        if self.admin == "disabled":
            return "disabled"
        if not self.healthy:
            return "down"
        if self.admin == "draining":
            return "draining"
        return "up"

    @property
    def has_room(self) -> bool:
        return self.spec.maxconn is None or self.active < self.spec.maxconn

    def _compute_eligible(self) -> bool:
        if self.admin != "enabled" or self.weight <= 0:
            return False
        if self.healthy:
            return True
        # Passively down, its fail_timeout over: one probe may go, unless a
        # monitor says down too.
        return (self.passive.probe == PROBE_READY
                and all(c.up for c in self.checks.values()))


StateListener = Callable[[str, str, str, str, str], None]


@attrs.define(eq=False)
class PoolState:
    """The members of one pool and the one place their state changes."""

    spec: Pool
    scheduler: IScheduler
    #: the reactor's clock, for slow start; None in tests that need no time
    clock: object = None
    members: dict[str, Member] = attrs.field(factory=dict)
    #: called with (pool, member, old, new, reason) on every state change
    on_state_change: list[StateListener] = attrs.field(factory=list)
    #: connections waiting for a member with room (FIFO); each has ``wake()``
    queue: deque = attrs.field(factory=deque)
    #: connections open to its members now, and the most at once
    active: int = 0
    max_active: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def build(cls, spec: Pool, scheduler: IScheduler, clock=None) -> "PoolState":
        pool = cls(spec, scheduler, clock)
        for mspec in spec.members:
            pool.add_member(mspec)
        return pool

    def add_member(self, mspec: MemberSpec) -> Member:
        member = Member(mspec.name, self.spec.name, mspec, mspec.weight, mspec.weight)
        member.eligible = member._compute_eligible()
        self.members[mspec.name] = member
        self.scheduler.member_added(member)
        return member

    def remove_member(self, name: str) -> Member:
        member = self.members.pop(name)
        self._end_slow_start(member)
        member.passive.cancel_calls()
        self.scheduler.member_removed(member)
        member.removed = True
        return member

    # -- reload ------------------------------------------------------------

    def update_member(self, mspec: MemberSpec) -> Member:
        """A reload changed a member's weight, priority, maxconn or backup
        (not its address): the same :class:`Member` keeps its state, checks
        and counters, and the scheduler sees it anew. A weight set by the
        admin gives way to a weight changed in the file."""
        member = self.members[mspec.name]
        old_spec = member.spec
        self.scheduler.member_removed(member)
        member.spec = mspec
        if mspec.weight != old_spec.weight:
            member.weight = mspec.weight
        member.effective_weight = self._ramped_weight(member)
        member.eligible = member._compute_eligible()
        self.scheduler.member_added(member)
        if member.eligible and self.queue:
            self.wake_waiters()
        return member

    def replace_scheduler(self, scheduler: IScheduler) -> None:
        """A reload changed the scheduler or its options: ``scheduler`` (a
        new, empty one) takes over every member as it is."""
        self.scheduler = scheduler
        for member in self.members.values():
            scheduler.member_added(member)

    def forget_check(self, member: Member, monitor: str) -> None:
        """A reload took ``monitor`` off ``member``'s pool: its result no
        longer counts toward the member's health."""
        if member.checks.pop(monitor, None) is None:
            return
        self._health_changed(member, f"monitor {monitor} removed")

    # -- changes -------------------------------------------------------

    def _changed(self, member: Member, old_state: str, reason: str,
                 quiet: bool = False) -> None:
        was_eligible = member.eligible
        member.eligible = member._compute_eligible()
        if member.eligible and not was_eligible:
            self._begin_slow_start(member)
        elif not member.eligible and member.slow_start_began is not None:
            self._end_slow_start(member)
        self.scheduler.member_changed(member)
        if member.eligible and self.queue:
            self.wake_waiters()
        new_state = member.state
        if new_state != old_state:
            now = time.time()
            if old_state == "down":
                member.downtime += max(0.0, now - member.since)
            elif new_state == "down":
                member.downs += 1
            member.since = now
            self._log_change(member, old_state, new_state, reason, quiet)
            for listener in self.on_state_change:
                listener(self.name, member.name, old_state, new_state, reason)

    def count_up(self) -> tuple[int, int]:
        """``(members up, members)`` of the pool, backups included."""
        members = self.members.values()
        return sum(1 for m in members if m.state == "up"), len(self.members)

    def _log_change(self, member: Member, old: str, new: str, reason: str,
                    quiet: bool = False) -> None:
        """One line per state change, at the level an operator acts on:
        a member going down is a warning that says what is left; a pool
        left with no member up is an error; coming back is info. ``quiet``:
        the caller logs the member's change (the pool's lines still come)."""
        up, total = self.count_up()
        fields = dict(pool=self.name, member=member.name, state=new, old=old,
                      reason=reason, up=up, members=total, lbframe_event="member_state")
        text = "member {pool}/{member} {state}: {reason}; {up} of {members} up" if reason \
            else "member {pool}/{member} {state}; {up} of {members} up"
        if quiet:
            pass
        elif new == "down":
            log.warn(text, **fields)
        else:
            log.info(text, **fields)
        if up == 0 and old == "up":
            log.error("pool {pool}: no member up ({members} members; last: {member} "
                      "{state})", pool=self.name, member=member.name, state=new,
                      members=total, lbframe_event="pool_empty")
        elif up == 1 and new == "up" and old != "up":
            log.info("pool {pool}: a member is up again ({member})", pool=self.name,
                     member=member.name, lbframe_event="pool_usable")

    def set_admin(self, member: Member, admin: str, reason: str = "by admin",
                  quiet: bool = False) -> None:
        """``enabled``, ``draining`` or ``disabled``. ``quiet``: the caller
        logs the change itself (the admin API: one line per change)."""
        if admin not in ("enabled", "draining", "disabled"):
            raise ValueError(f"bad admin state {admin!r}")
        old = member.state
        member.admin = admin
        self._changed(member, old, reason, quiet)

    def set_weight(self, member: Member, weight: int) -> None:
        if weight < 0:
            raise ValueError("weight must be >= 0")
        old = member.state
        member.weight = weight
        member.effective_weight = self._ramped_weight(member)
        self._changed(member, old, "")

    def report_check(self, member: Member, monitor: str, ok: bool, reason: str,
                     *, rise: int, fall: int, now: float, duration: float | None = None) -> None:
        """Apply one monitor result with rise/fall; the member is healthy only
        while every one of its monitors is up."""
        cs = member.checks.setdefault(monitor, CheckState())
        cs.checks_total += 1
        if not ok:
            cs.checks_failed += 1
        cs.last_ok, cs.last_reason, cs.last_time = ok, reason, now
        cs.last_duration = duration
        if ok:
            cs.failures = 0
            cs.successes += 1
            if duration is not None:
                # A monitor's pass is not traffic: passive health ignores it.
                self._fold_response_time(member, duration)
            if cs.up or cs.successes < rise:
                return
            cs.up = True
            why = f"{reason} ({cs.successes}/{rise})" if reason else f"check passed ({cs.successes}/{rise})"
        else:
            cs.successes = 0
            cs.failures += 1
            if not cs.up or cs.failures < fall:
                return
            cs.up = False
            why = f"{reason} ({cs.failures}/{fall})"
            cs.down_why = why
        self._health_changed(member, why)

    def _health_changed(self, member: Member, reason: str) -> None:
        """Work ``healthy`` and ``down_reason`` out again from the monitors
        and passive health (a member is healthy only while neither says
        down), and tell the scheduler, the log and the listeners."""
        passive = member.passive
        down = [(name, c) for name, c in member.checks.items() if not c.up]
        old = member.state
        member.healthy = not down and not passive.down
        if member.healthy:
            member.down_reason = ""
        elif passive.down:
            member.down_reason = passive.reason
        else:
            name, check = down[0]
            member.down_reason = f"{name}: {check.down_why}"
        self._changed(member, old, reason)

    def record_response_time(self, member: Member, seconds: float) -> None:
        """The data path measured ``seconds`` to the member's answer (its
        first byte, a response head): a response-time sample, and for
        passive health a success."""
        passive = member.passive
        if passive.fails or passive.probe:
            self._passive_success(member)
        self._fold_response_time(member, seconds)

    def _fold_response_time(self, member: Member, seconds: float) -> None:
        """Fold a sample (a monitor's probe, a data path's answer) into the
        member's moving average, and tell the scheduler."""
        rt = member.response_time
        member.response_time = seconds if rt is None else rt + RESPONSE_TIME_ALPHA * (seconds - rt)
        if not member.removed:
            self.scheduler.member_changed(member)

    # -- slow start ------------------------------------------------------

    def _begin_slow_start(self, member: Member) -> None:
        """A member that comes back ramps its weight up over ``slow_start``
        instead of taking a full share at once (HAProxy's ``slowstart``)."""
        if not self.spec.slow_start or self.clock is None:
            return
        self._end_slow_start(member)
        member.slow_start_began = self.clock.seconds()
        member.effective_weight = self._ramped_weight(member)
        member.slow_start_call = self.clock.callLater(
            self.spec.slow_start / SLOW_START_STEPS, self._slow_start_step, member)

    def _slow_start_step(self, member: Member) -> None:
        member.slow_start_call = None
        member.effective_weight = self._ramped_weight(member)
        if member.effective_weight >= member.weight:
            member.slow_start_began = None
        else:
            member.slow_start_call = self.clock.callLater(
                self.spec.slow_start / SLOW_START_STEPS, self._slow_start_step, member)
        self.scheduler.member_changed(member)

    def _end_slow_start(self, member: Member) -> None:
        if member.slow_start_call is not None and member.slow_start_call.active():
            member.slow_start_call.cancel()
        member.slow_start_call = None
        member.slow_start_began = None
        member.effective_weight = member.weight

    def _ramped_weight(self, member: Member) -> int:
        if member.slow_start_began is None:
            return member.weight
        done = (self.clock.seconds() - member.slow_start_began) / self.spec.slow_start
        if done >= 1:
            return member.weight
        return max(1, math.ceil(member.weight * done)) if member.weight else 0

    def stop(self) -> None:
        """Cancel timers (slow start, passive health) when the pool goes away."""
        for member in self.members.values():
            self._end_slow_start(member)
            member.passive.cancel_calls()

    # -- passive health (lbframe.passive) ---------------------------------

    def member_failed(self, member: Member, reason: str, client: str | None = None,
                      counts: bool = True) -> None:
        """The data path could not use ``member``: a connect refused or
        timed out, or (http) no answer before the member closed or
        ``timeout_server`` passed. Call it before releasing the connection.

        Counted in ``member.failures``; with ``counts`` it also counts for
        passive health, where ``max_fails`` in a row take the member out
        for ``fail_timeout``. The failures themselves are logged at most
        once per member per :data:`FAILURE_LOG_INTERVAL` (then a summary);
        the state change gets its own line."""
        member.failures += 1
        passive = member.passive
        now = self.clock.seconds() if self.clock is not None else 0.0
        passive.last = reason
        if passive.down:
            if counts and passive.probe == PROBE_SENT:
                # The probe failed: out for another fail_timeout, quietly
                # (the state does not change; the failures metric counts it).
                passive.probe = NO_PROBE
                self._start_window(member)
            return
        spec = self.spec
        if (counts and self._passive_on()
                and count_failure(passive, now, spec.max_fails, spec.fail_timeout)
                and self._others_usable(member)):
            passive.down = True
            passive.reason = down_reason(passive.fails, reason)
            passive.fails = passive.unlogged = 0
            self._start_window(member)
            self._health_changed(member, passive.reason)
            return
        self._log_failure(member, reason, client, now)

    def _passive_on(self) -> bool:
        return self.clock is not None and self.spec.max_fails > 0

    def _others_usable(self, member: Member) -> bool:
        """Passive health never takes out a pool's last usable member (a
        pool of one above all): with nowhere else to go it would turn a
        blip into ``fail_timeout`` of certain refusals, and a client that
        can make a member time out (slow requests) could empty the pool.
        Scanned only when a member reaches ``max_fails``."""
        return any(m.eligible for m in self.members.values() if m is not member)

    def _start_window(self, member: Member) -> None:
        passive = member.passive
        call = passive.window_call
        if call is not None and call.active():
            call.cancel()
        passive.window_call = self.clock.callLater(self.spec.fail_timeout,
                                                   self._window_over, member)

    def _window_over(self, member: Member) -> None:
        """``fail_timeout`` after the member went (or stayed) down: let one
        connection probe it."""
        passive = member.passive
        passive.window_call = None
        if member.removed or not passive.down:
            return
        if not self._passive_on():
            # A reload turned it off.
            passive.down, passive.probe, passive.reason = False, NO_PROBE, ""
            self._health_changed(member, "passive health off")
            return
        passive.probe = PROBE_READY
        self._changed(member, member.state, "")

    def _probe_sent(self, member: Member) -> None:
        """The probe connection was taken: nobody else goes to the member
        until it ends."""
        member.passive.probe = PROBE_SENT
        self._changed(member, member.state, "")

    def _probe_ended(self, member: Member) -> None:
        """The probe connection ended with neither an answer nor a failure
        (the client left first): the next connection probes."""
        member.passive.probe = PROBE_READY
        if not member.removed:
            self._changed(member, member.state, "")

    def _passive_success(self, member: Member) -> None:
        passive = member.passive
        if not passive.down:
            passive.fails = 0
        elif passive.probe == PROBE_SENT:
            passive.down, passive.probe, passive.fails, passive.reason = False, NO_PROBE, 0, ""
            self._health_changed(member, "passive: answered again")
        # Down with no probe out: an older connection answered; the probe
        # after fail_timeout decides.

    def _log_failure(self, member: Member, reason: str, client: str | None,
                     now: float) -> None:
        """One line now, or (within FAILURE_LOG_INTERVAL of the last one)
        a count for the summary line at the interval's end."""
        passive = member.passive
        if self.clock is not None and hold_back(passive, now):
            if passive.flush_call is None:
                passive.flush_call = self.clock.callLater(
                    max(0.0, passive.quiet_until - now), self._flush_failures, member)
            return
        detail = ""
        if passive.fails and self._passive_on():
            if passive.fails < self.spec.max_fails:
                detail = f"; {passive.fails} of {self.spec.max_fails} before passive down"
            else:
                detail = "; kept in: the pool's last usable member"
        log.warn("member {pool}/{member}: {reason} (client {client}{detail})", pool=self.name,
                 member=member.name, reason=reason, client=client or "-", detail=detail,
                 lbframe_event="member_failure")

    def _flush_failures(self, member: Member) -> None:
        passive = member.passive
        passive.flush_call = None
        held, passive.unlogged = passive.unlogged, 0
        if not held or member.removed:
            return
        passive.quiet_until = self.clock.seconds() + FAILURE_LOG_INTERVAL
        log.warn("member {pool}/{member}: failures not logged in the last {interval:g}s: "
                 "{count} (last: {reason})", pool=self.name, member=member.name, count=held,
                 interval=FAILURE_LOG_INTERVAL, reason=passive.last,
                 lbframe_event="member_failure")

    # -- the queue (queue_timeout) ---------------------------------------

    def has_full_members(self, exclude=()) -> bool:
        """True when a member could serve but for its ``maxconn``: worth
        waiting for (only scanned when a pick found nobody)."""
        return any(m.eligible and not m.has_room and m not in exclude
                   for m in self.members.values())

    def enqueue(self, waiter) -> bool:
        """Queue ``waiter``; False when the queue is full."""
        if len(self.queue) >= QUEUE_LIMIT:
            return False
        self.queue.append(waiter)
        return True

    def dequeue(self, waiter) -> None:
        try:
            self.queue.remove(waiter)
        except ValueError:
            pass

    def wake_waiters(self) -> None:
        """Let waiting connections try again, oldest first, while members
        have room."""
        queue = self.queue
        while queue:
            waiter = queue.popleft()
            if not waiter.wake():
                # It found no room after all: it stays first in line.
                queue.appendleft(waiter)
                return

    # -- connections (hot path: keep lean) -------------------------------
    #
    # The data path (tcp, ssl, http) accounts a member's connections, bytes
    # and failures through these methods, member_failed and the Member's
    # relayed/misbehaved only: the pool owns its members' state, and its
    # scheduler and passive health are told as they change.

    def connection_opened(self, member: Member) -> None:
        """A connection (or an http request) to ``member`` starts."""
        member.active += 1
        member.total += 1
        if member.active > member.max_active:
            member.max_active = member.active
        self.active += 1
        if self.active > self.max_active:
            self.max_active = self.active
        self.scheduler.connection_taken(member)
        if member.passive.probe == PROBE_READY:
            self._probe_sent(member)

    def connection_closed(self, member: Member, bytes_in: int = 0, bytes_out: int = 0) -> None:
        """It ended, having relayed ``bytes_in`` from the client to
        ``member`` and ``bytes_out`` back."""
        member.active -= 1
        self.active -= 1
        if bytes_in or bytes_out:
            member.bytes_in += bytes_in
            member.bytes_out += bytes_out
        if not member.removed:
            self.scheduler.connection_released(member)
        if member.passive.probe == PROBE_SENT:
            self._probe_ended(member)
        if self.queue:
            self.wake_waiters()

    #: the words schedulers' tests use
    take = connection_opened
    release = connection_closed


#: why a virtual server refused a client (``refusals`` keys, ``/metrics``'s ``reason``):
#: no member up or free; its ``max_connections`` reached; its pool's queue
#: full; no member free before ``queue_timeout``; the sorry page sent (http);
#: a bad request or PROXY header (400s); ``max_connections_per_source``;
#: the member failed (after retries); no socket for the member's side
REFUSAL_REASONS = ("no_member", "maxconn", "queue_full", "queue_timeout", "sorry",
                   "bad_request", "source_limit", "member_failed", "resources")


@attrs.define(eq=False)
class VirtualState:
    """Counters of a virtual server."""

    spec: Virtual
    _active: int = attrs.field(default=0, alias="active")
    total: int = 0
    refused: int = 0
    #: http: requests received, and responses sent by status class
    #: (``"2xx"`` …; lbframe's own error and sorry pages included)
    requests: int = 0
    responses: dict = attrs.field(factory=lambda: {"1xx": 0, "2xx": 0, "3xx": 0,
                                                   "4xx": 0, "5xx": 0})
    #: the most client connections open at once
    max_active: int = 0
    #: bytes from clients / to clients (counted when a connection or request ends)
    bytes_in: int = 0
    bytes_out: int = 0
    #: refusals by reason (:data:`REFUSAL_REASONS`); they add up to ``refused``
    refusals: dict = attrs.field(factory=lambda: dict.fromkeys(REFUSAL_REASONS, 0))
    #: protocol udp: its flow and datagram counters (lbframe.protocols.udp.UDPCounters)
    udp: object = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def active(self) -> int:
        """Client connections open now (the data paths add and subtract)."""
        return self._active

    @active.setter
    def active(self, value: int) -> None:
        self._active = value
        if value > self.max_active:
            self.max_active = value

    def refuse(self, reason: str) -> None:
        """Count one refused client under ``reason`` (:data:`REFUSAL_REASONS`).
        ``no_member`` while ``max_connections`` is reached counts as ``maxconn``
        (the balancer's own test)."""
        limit = self.spec.max_connections
        if reason == "no_member" and limit is not None and self._active >= limit:
            reason = "maxconn"
        self.refused += 1
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
