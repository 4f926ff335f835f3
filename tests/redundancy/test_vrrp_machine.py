"""The RFC 5798 §6.4 state machine on task.Clock: every timer and transition."""

from __future__ import annotations

from twisted.internet import task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from lbframe.redundancy.vrrp.machine import (
    BACKUP, INIT, MASTER, VirtualRouter, master_down_interval, skew_time)
from lbframe.redundancy.vrrp.packet import Advert

ME, PEER, LOWER = "198.18.0.2", "198.18.0.3", "198.18.0.1"
VIPS = ("198.18.0.10",)


class Recorder:
    def __init__(self):
        self.sent, self.events, self.changes = [], [], []

    def send(self, advert):
        self.sent.append(advert)

    def take(self, router):
        self.events.append("take")

    def release(self, router):
        self.events.append("release")

    def changed(self, router, old, new):
        self.changes.append((old, new))


def router(priority=100, interval=1.0, version=3, preempt=True, preempt_delay=0.0):
    clock, rec = task.Clock(), Recorder()
    r = VirtualRouter(51, priority, VIPS, interval, ME, clock, send=rec.send, take=rec.take,
                      release=rec.release, changed=rec.changed, version=version,
                      preempt=preempt, preempt_delay=preempt_delay)
    return r, clock, rec


def advert(priority, interval=1.0, version=3, vrid=51, addresses=VIPS):
    return Advert(vrid, priority, interval, addresses, version)


class TimingTests(SynchronousTestCase):
    def test_rfc_formulas(self):
        # RFC 5798 §6.1: Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256
        self.assertAlmostEqual(skew_time(100, 1.0), 156 / 256)
        self.assertAlmostEqual(master_down_interval(100, 1.0), 3 + 156 / 256)
        self.assertAlmostEqual(master_down_interval(100, 0.1), 0.3 + 15.6 / 256)
        self.assertAlmostEqual(master_down_interval(254, 1.0), 3 + 2 / 256)
        # RFC 3768 (v2): Skew_Time = (256 - Priority) / 256, whatever the interval
        self.assertAlmostEqual(skew_time(100, 5.0, version=2), 156 / 256)
        self.assertAlmostEqual(master_down_interval(100, 5.0, version=2), 15 + 156 / 256)


class BackupTests(SynchronousTestCase):
    def test_start_as_backup_then_master_after_master_down_interval(self):
        r, clock, rec = router(priority=100)
        r.start()
        self.assertEqual(r.state, BACKUP)
        self.assertEqual(rec.changes, [(INIT, BACKUP)])
        clock.advance(3 + 156 / 256 - 0.001)
        self.assertEqual(r.state, BACKUP)
        self.assertEqual(rec.sent, [])
        clock.advance(0.002)
        self.assertEqual(r.state, MASTER)
        self.assertEqual(rec.events, ["take"])
        self.assertEqual(rec.sent, [advert(100)])

    def test_adverts_from_a_higher_master_keep_it_backup(self):
        r, clock, rec = router(priority=100)
        r.start()
        for _ in range(10):
            clock.advance(1.0)
            r.receive(advert(200), PEER)
        self.assertEqual(r.state, BACKUP)
        self.assertEqual(r.master, PEER)
        clock.advance(3.6)
        self.assertEqual(r.state, BACKUP)
        clock.advance(0.01)
        self.assertEqual(r.state, MASTER)

    def test_timer_counts_from_the_kernel_receive_time(self):
        r, clock, rec = router(priority=100)
        r.start()
        clock.advance(1)
        r.receive(advert(200), PEER, received_at=clock.seconds() - 0.2)  # read 200 ms late
        clock.advance(3 + 156 / 256 - 0.2 - 0.001)
        self.assertEqual(r.state, BACKUP)
        clock.advance(0.002)
        self.assertEqual(r.state, MASTER)

    def test_receive_time_correction_is_bounded(self):
        r, clock, rec = router(priority=100)
        r.start()
        clock.advance(1)
        r.receive(advert(200), PEER, received_at=clock.seconds() - 100)  # a clock step
        clock.advance(3 - 0.001)
        self.assertEqual(r.state, BACKUP)  # at most Skew_Time early

    def test_learns_master_adver_interval_v3(self):
        r, clock, rec = router(priority=100, interval=1.0)
        r.start()
        r.receive(advert(200, interval=0.1), PEER)
        self.assertAlmostEqual(r.master_down_interval, 0.3 + 15.6 / 256)
        clock.advance(0.36)
        self.assertEqual(r.state, BACKUP)
        clock.advance(0.01)
        self.assertEqual(r.state, MASTER)
        # back to its own interval as master
        self.assertEqual(rec.sent[-1].interval, 1.0)

    def test_priority_zero_means_skew_time(self):
        r, clock, rec = router(priority=100)
        r.start()
        r.receive(advert(200), PEER)
        clock.advance(0.5)
        r.receive(advert(0), PEER)
        clock.advance(156 / 256 - 0.001)
        self.assertEqual(r.state, BACKUP)
        clock.advance(0.002)
        self.assertEqual(r.state, MASTER)

    def test_preempt_lower_master_ignored_and_taken_over(self):
        r, clock, rec = router(priority=150)
        r.start()
        for _ in range(3):
            clock.advance(1.0)
            r.receive(advert(100), PEER)
        self.assertEqual(r.state, BACKUP)
        clock.advance(1.0)
        r.receive(advert(100), PEER)
        # adverts of a lower master were discarded: timer from start ran out
        self.assertEqual(r.state, MASTER)

    def test_no_preempt_keeps_lower_master(self):
        r, clock, rec = router(priority=150, preempt=False)
        r.start()
        for _ in range(20):
            clock.advance(1.0)
            r.receive(advert(100), PEER)
        self.assertEqual(r.state, BACKUP)

    def test_preempt_delay(self):
        r, clock, rec = router(priority=150, preempt_delay=10)
        r.start()
        for _ in range(9):
            clock.advance(1.0)
            r.receive(advert(100), PEER)
        self.assertEqual(r.state, BACKUP)
        for _ in range(5):
            clock.advance(1.0)
            r.receive(advert(100), PEER)
        self.assertEqual(r.state, MASTER)

    def test_other_vrid_ignored(self):
        r, clock, rec = router(priority=100)
        r.start()
        for _ in range(5):
            clock.advance(1.0)
            r.receive(advert(200, vrid=52), PEER)
        self.assertEqual(r.state, MASTER)
        self.assertEqual(r.received, 0)

    def test_v2_mismatched_interval_discarded_and_logged_once(self):
        r, clock, rec = router(priority=100, version=2)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        r.start()
        for _ in range(5):
            clock.advance(1.0)
            r.receive(advert(200, interval=2.0, version=2), PEER)
        self.assertEqual(r.state, MASTER)
        self.assertEqual(len(events), 1)
        self.assertIn("every 2.0s", formatEvent(events[0]))


class OwnerTests(SynchronousTestCase):
    def test_owner_is_master_at_once(self):
        r, clock, rec = router(priority=255)
        r.start()
        self.assertEqual(r.state, MASTER)
        self.assertEqual(rec.sent[0].priority, 255)


class MasterTests(SynchronousTestCase):
    def master(self, **kw):
        r, clock, rec = router(**kw)
        r.start()
        clock.advance(4)
        self.assertEqual(r.state, MASTER)
        rec.sent.clear()
        return r, clock, rec

    def test_adverts_every_interval(self):
        r, clock, rec = self.master(interval=0.1)
        for _ in range(10):
            clock.advance(0.1)
        self.assertEqual(len(rec.sent), 10)
        self.assertTrue(all(a.priority == 100 and a.interval == 0.1 for a in rec.sent))

    def test_higher_priority_takes_over(self):
        r, clock, rec = self.master()
        r.receive(advert(101), PEER)
        self.assertEqual(r.state, BACKUP)
        self.assertEqual(rec.events, ["take", "release"])
        clock.advance(2)
        self.assertEqual(rec.sent, [])  # a backup is silent

    def test_equal_priority_larger_address_wins(self):
        r, clock, rec = self.master()
        r.receive(advert(100), LOWER)
        self.assertEqual(r.state, MASTER)
        r.receive(advert(100), PEER)
        self.assertEqual(r.state, BACKUP)

    def test_lower_priority_ignored(self):
        r, clock, rec = self.master()
        r.receive(advert(50), PEER)
        self.assertEqual(r.state, MASTER)

    def test_priority_zero_answered_at_once(self):
        r, clock, rec = self.master()
        clock.advance(0.5)
        r.receive(advert(0), PEER)
        self.assertEqual(len(rec.sent), 1)
        clock.advance(0.9)  # the Adver_Timer was reset by that advert
        self.assertEqual(len(rec.sent), 1)
        clock.advance(0.2)
        self.assertEqual(len(rec.sent), 2)

    def test_shutdown_sends_priority_zero_and_releases(self):
        r, clock, rec = self.master()
        r.shutdown()
        self.assertEqual(r.state, INIT)
        self.assertEqual(rec.sent, [advert(0)])
        self.assertEqual(rec.events, ["take", "release"])
        clock.advance(10)
        self.assertEqual(len(rec.sent), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_own_adverts_ignored(self):
        r, clock, rec = self.master()
        r.receive(advert(200), ME)
        self.assertEqual(r.state, MASTER)


class TrackingTests(SynchronousTestCase):
    def test_lowered_priority_is_advertised_at_once(self):
        r, clock, rec = router(priority=150)
        r.start()
        clock.advance(4)
        rec.sent.clear()
        r.set_priority(90)
        self.assertEqual(rec.sent, [advert(90)])
        # a backup at 100 now preempts this master
        r.receive(advert(100), PEER)
        self.assertEqual(r.state, BACKUP)

    def test_fault_gives_up_master_and_never_takes_over(self):
        r, clock, rec = router(priority=150)
        r.start()
        clock.advance(4)
        rec.sent.clear()
        r.set_priority(0)
        self.assertEqual(r.state, BACKUP)
        self.assertTrue(r.fault)
        self.assertEqual(rec.sent, [advert(0, addresses=VIPS)])
        self.assertEqual(rec.events, ["take", "release"])
        clock.advance(100)
        self.assertEqual(r.state, BACKUP)
        r.set_priority(150)  # the pool is back
        self.assertFalse(r.fault)
        clock.advance(4)
        self.assertEqual(r.state, MASTER)
