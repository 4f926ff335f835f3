"""Run-time state built from the frozen config: members, pools, virtual servers.

Member state has one owner: :class:`PoolState`. Monitors report results to
it, the admin API asks it for changes, connections are counted through it,
and it tells the pool's scheduler what changed. Nothing else writes a
member's state.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Callable

import attrs
from twisted.logger import Logger

from lbframe.config.model import Address, MemberSpec, Pool, Virtual
from lbframe.interfaces import IScheduler

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
    response_time: float | None = None
    down_reason: str = ""
    checks: dict[str, CheckState] = attrs.field(factory=dict)
    #: (family, sockaddr) to connect to, filled in by the first connect
    sockaddr: tuple | None = None
    #: when the current slow start began (clock seconds), or None
    slow_start_began: float | None = None
    slow_start_call: object = None
    #: True once a reload took the member out of its pool: connections that
    #: were on it finish, but its pool's scheduler no longer knows it
    removed: bool = False

    @property
    def address(self) -> Address:
        return self.spec.address

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
        return self.healthy and self.admin == "enabled" and self.weight > 0


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
        healthy = all(c.up for c in member.checks.values())
        if healthy != member.healthy:
            old = member.state
            member.healthy = healthy
            if healthy:
                member.down_reason = ""
            self._changed(member, old, f"monitor {monitor} removed")

    # -- changes -------------------------------------------------------

    def _changed(self, member: Member, old_state: str, reason: str) -> None:
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
            if reason:
                log.info("member {pool}/{member} {state}: {reason}", pool=self.name,
                         member=member.name, state=new_state, reason=reason,
                         old=old_state, lbframe_event="member_state")
            else:
                log.info("member {pool}/{member} {state}", pool=self.name,
                         member=member.name, state=new_state, old=old_state,
                         lbframe_event="member_state")
            for listener in self.on_state_change:
                listener(self.name, member.name, old_state, new_state, reason)

    def set_admin(self, member: Member, admin: str, reason: str = "by admin") -> None:
        """``enabled``, ``draining`` or ``disabled``."""
        if admin not in ("enabled", "draining", "disabled"):
            raise ValueError(f"bad admin state {admin!r}")
        old = member.state
        member.admin = admin
        self._changed(member, old, reason)

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
                self.record_response_time(member, duration)
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
        healthy = all(c.up for c in member.checks.values())
        if healthy != member.healthy:
            old = member.state
            member.healthy = healthy
            member.down_reason = "" if healthy else f"{monitor}: {why}"
            self._changed(member, old, why)

    def record_response_time(self, member: Member, seconds: float) -> None:
        """Fold a sample (a monitor's probe, a connect, a first response byte)
        into the member's moving average, and tell the scheduler."""
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
        """Cancel timers (slow start) when the pool goes away."""
        for member in self.members.values():
            self._end_slow_start(member)

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

    def take(self, member: Member) -> None:
        member.active += 1
        member.total += 1
        self.scheduler.connection_taken(member)

    def release(self, member: Member) -> None:
        member.active -= 1
        if not member.removed:
            self.scheduler.connection_released(member)
        if self.queue:
            self.wake_waiters()


@attrs.define(eq=False)
class VirtualState:
    """Counters of a virtual server."""

    spec: Virtual
    active: int = 0
    total: int = 0
    refused: int = 0
    #: http: requests received, and responses sent by status class
    #: (``"2xx"`` …; lbframe's own error and sorry pages included)
    requests: int = 0
    responses: dict = attrs.field(factory=lambda: {"1xx": 0, "2xx": 0, "3xx": 0,
                                                   "4xx": 0, "5xx": 0})

    @property
    def name(self) -> str:
        return self.spec.name
