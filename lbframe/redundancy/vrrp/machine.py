"""One virtual router's state machine, exactly as RFC 5798 §6.4 draws it.

It knows nothing of sockets or addresses on interfaces: it is driven by
:meth:`VirtualRouter.start`, :meth:`~VirtualRouter.shutdown`,
:meth:`~VirtualRouter.receive` and the clock (any ``IReactorTime``, so the
tests run it on ``task.Clock``), and acts through four callbacks:

- ``send(advert)``: send an advertisement now;
- ``take(router)``: add the virtual addresses and announce them (entering master);
- ``release(router)``: remove them (leaving master);
- ``changed(router, old, new)``: the state changed.

Timers follow the RFC names: ``Skew_Time``, ``Master_Down_Interval``,
``Master_Adver_Interval`` (learnt from the master's adverts in version 3),
the ``Adver_Timer`` of a master and the ``Master_Down_Timer`` of a backup.

Two keepalived behaviours are added where the RFC is silent: ``preempt_delay``
(no preemption for that long after start, so a node that just booted does not
take over before its own pools are checked) and a *fault* (a tracked pool is
down and ``track_weight`` is 0): the router stays backup, sends priority 0 if
it was master, and does not take over when the master goes away.
"""

from __future__ import annotations

import ipaddress
from typing import Callable

from twisted.logger import Logger

from lbframe.redundancy.vrrp.packet import Advert

log = Logger(namespace="lbframe.redundancy.vrrp")

INIT, BACKUP, MASTER = "init", "backup", "master"
OWNER = 255


def skew_time(priority: int, master_adver_interval: float, version: int = 3) -> float:
    """RFC 5798 §6.1: ``((256 - Priority) * Master_Adver_Interval) / 256``;
    RFC 3768 §6.1 (version 2): ``(256 - Priority) / 256`` seconds."""
    if version == 2:
        return (256 - priority) / 256
    return (256 - priority) * master_adver_interval / 256


def master_down_interval(priority: int, master_adver_interval: float, version: int = 3) -> float:
    """``(3 * Master_Adver_Interval) + Skew_Time`` (both versions)."""
    return 3 * master_adver_interval + skew_time(priority, master_adver_interval, version)


class VirtualRouter:
    """One VRID on one interface."""

    def __init__(self, vrid: int, priority: int, addresses: tuple[str, ...],
                 advert_interval: float, primary: str, clock, *,
                 send: Callable[[Advert], None], take: Callable, release: Callable,
                 changed: Callable, version: int = 3, preempt: bool = True,
                 preempt_delay: float = 0.0):
        self.vrid = vrid
        self.configured_priority = priority
        self.priority = priority
        self.addresses = tuple(addresses)
        self.advert_interval = advert_interval
        self.master_adver_interval = advert_interval
        self.primary = primary
        self.clock = clock
        self.version = version
        self.preempt = preempt
        self.preempt_delay = preempt_delay
        self._send, self._take, self._release, self._changed = send, take, release, changed
        self.state = INIT
        self.fault = False
        self.master = None  # the current master's address, as last heard
        self._started_at = None
        self._adver_timer = None
        self._down_timer = None
        self._logged: set = set()
        #: counters for /api/status
        self.received = 0
        self.sent = 0
        self.transitions = 0

    # timing -----------------------------------------------------------------

    @property
    def skew_time(self) -> float:
        return skew_time(self.priority, self.master_adver_interval, self.version)

    @property
    def master_down_interval(self) -> float:
        return master_down_interval(self.priority, self.master_adver_interval, self.version)

    def _preempting(self) -> bool:
        if not self.preempt:
            return False
        if self.preempt_delay and self._started_at is not None:
            return self.clock.seconds() - self._started_at >= self.preempt_delay
        return True

    # events -----------------------------------------------------------------

    def start(self) -> None:
        """The Startup event of the Initialize state."""
        if self.state != INIT:
            return
        self._started_at = self.clock.seconds()
        if self.priority == OWNER and not self.fault:
            self._become_master()
        else:
            self.master_adver_interval = self.advert_interval
            self._become_backup()

    def shutdown(self) -> None:
        """The Shutdown event: a master sends priority 0 so the backup takes over
        after its Skew_Time instead of its Master_Down_Interval."""
        if self.state == MASTER:
            self._cancel_adver()
            self._advertise(priority=0)
            self._release(self)
        self._cancel_down()
        self._set_state(INIT)

    def receive(self, advert: Advert, source: str, received_at: float | None = None) -> None:
        """An advertisement for this VRID that passed the packet checks.

        ``received_at``: when the kernel received it (the clock's time base);
        a backup's Master_Down_Timer counts from then, not from when a busy
        process got round to reading it. The correction is at most Skew_Time,
        so a step of the wall clock cannot start a takeover much early."""
        if advert.vrid != self.vrid or self.state == INIT:
            return
        if source == self.primary:
            return  # our own, looped back
        self.received += 1
        self._check_mismatch(advert, source)
        if self.version == 2 and advert.interval != self.advert_interval:
            return  # RFC 3768 §7.1: discarded (and logged once above)
        if self.state == BACKUP:
            late = 0.0
            if received_at is not None:
                late = min(max(0.0, self.clock.seconds() - received_at), self.skew_time)
            if advert.priority == 0:
                self.master = None
                self._arm_down(self.skew_time - late)
            elif not self._preempting() or advert.priority >= self.priority:
                self.master = source
                if self.version == 3:
                    self.master_adver_interval = advert.interval
                self._arm_down(self.master_down_interval - late)
            # else: a lower-priority master and we preempt: let the timer run out
        elif self.state == MASTER:
            if advert.priority == 0:
                self._advertise()
                self._arm_adver()
            elif advert.priority > self.priority or (
                    advert.priority == self.priority and _higher(source, self.primary)):
                self._cancel_adver()
                self.master = source
                if self.version == 3:
                    self.master_adver_interval = advert.interval
                self._release(self)
                self._become_backup()

    def set_priority(self, priority: int) -> None:
        """Tracking changed the priority; 0 means fault (see the module doc)."""
        if priority == self.priority and (priority == 0) == self.fault:
            return
        if self.configured_priority == OWNER:
            return  # an address owner is always the owner
        fault = priority <= 0
        was_fault, self.fault = self.fault, fault
        self.priority = max(1, min(254, priority)) if not fault else self.configured_priority
        if fault:
            if self.state == MASTER:
                self._cancel_adver()
                self._advertise(priority=0)
                self._release(self)
                self._become_backup()
            else:
                self._cancel_down()
        elif self.state == MASTER:
            self._advertise()  # let the backups see the new priority at once
            self._arm_adver()
        elif self.state == BACKUP and (was_fault or self._down_timer is None):
            self._arm_down(self.master_down_interval)

    # transitions ------------------------------------------------------------

    def _become_master(self) -> None:
        self._cancel_down()
        self.master = self.primary
        self._set_state(MASTER)
        self._advertise()
        self._take(self)
        self._arm_adver()

    def _become_backup(self) -> None:
        self._set_state(BACKUP)
        if self.fault:
            self._cancel_down()
        else:
            self._arm_down(self.master_down_interval)

    def _set_state(self, new: str) -> None:
        old, self.state = self.state, new
        if old != new:
            self.transitions += 1
            self._changed(self, old, new)

    # timers -----------------------------------------------------------------

    def _arm_adver(self) -> None:
        self._cancel_adver()
        self._adver_timer = self.clock.callLater(self.advert_interval, self._adver_fired)

    def _adver_fired(self) -> None:
        self._adver_timer = None
        if self.state == MASTER:
            self._advertise()
            self._arm_adver()

    def _arm_down(self, delay: float) -> None:
        if self.fault:
            return
        self._cancel_down()
        self._down_timer = self.clock.callLater(delay, self._down_fired)

    def _down_fired(self) -> None:
        self._down_timer = None
        if self.state == BACKUP and not self.fault:
            self.master_adver_interval = self.advert_interval
            self._become_master()

    def _cancel_adver(self) -> None:
        if self._adver_timer is not None and self._adver_timer.active():
            self._adver_timer.cancel()
        self._adver_timer = None

    def _cancel_down(self) -> None:
        if self._down_timer is not None and self._down_timer.active():
            self._down_timer.cancel()
        self._down_timer = None

    # helpers ----------------------------------------------------------------

    def _advertise(self, priority: int | None = None) -> None:
        self.sent += 1
        self._send(Advert(self.vrid, self.priority if priority is None else priority,
                          self.advert_interval, self.addresses, self.version))

    def _check_mismatch(self, advert: Advert, source: str) -> None:
        """RFC 5798 §7.1: a mismatched address list or interval MAY be logged;
        we log each distinct one once, so a misconfigured peer cannot flood the log."""
        if self.priority != OWNER and set(advert.addresses) != set(self.addresses):
            self._log_once(("addresses", source, advert.addresses),
                           "VRRP VRID {vrid}: {source} advertises {theirs}, "
                           "this node has {ours}", theirs=", ".join(advert.addresses),
                           ours=", ".join(self.addresses), source=source)
        if advert.interval != self.advert_interval:
            self._log_once(("interval", source, advert.interval),
                           "VRRP VRID {vrid}: {source} advertises every {theirs}s, "
                           "this node every {ours}s"
                           + (" (version 2: its adverts are discarded)" if self.version == 2
                              else ""),
                           theirs=advert.interval, ours=self.advert_interval, source=source)
        if advert.version != self.version:
            self._log_once(("version", source, advert.version),
                           "VRRP VRID {vrid}: {source} speaks version {theirs}, "
                           "this node {ours}", theirs=advert.version, ours=self.version,
                           source=source)

    def _log_once(self, key, fmt: str, **kw) -> None:
        if key in self._logged or len(self._logged) > 1000:
            return
        self._logged.add(key)
        log.warn(fmt, vrid=self.vrid, **kw)

    def status(self) -> dict:
        return {"state": self.state, "priority": self.priority, "fault": self.fault,
                "master": self.master, "vips": list(self.addresses),
                "advert_interval": self.advert_interval,
                "master_down_interval": round(self.master_down_interval, 4),
                "received": self.received, "sent": self.sent,
                "transitions": self.transitions}


def _higher(a: str, b: str) -> bool:
    """RFC 5798 §6.4.3: on equal priority the larger primary address wins."""
    return ipaddress.ip_address(a) > ipaddress.ip_address(b)
