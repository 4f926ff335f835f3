"""The timer wheel: entries expire no earlier than asked and at most one tick late."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbframe.protocols.timeouts import TimerWheel


class Entry:
    def __init__(self, clock, log, name):
        self.clock, self.log, self.name = clock, log, name

    def expired(self):
        self.log.append((self.name, self.clock.seconds()))


class TimerWheelTests(SynchronousTestCase):
    def test_expiry_and_cancel(self):
        clock, log = Clock(), []
        wheel = TimerWheel(clock, 0.5)
        a, b, c = (Entry(clock, log, n) for n in "abc")
        wheel.schedule(a, 2.0)
        tb = wheel.schedule(b, 1.0)
        wheel.schedule(c, 1.2)
        self.assertEqual(len(clock.getDelayedCalls()), 1)  # one reactor timer
        wheel.cancel(b, tb)
        clock.advance(1.4)
        self.assertEqual(log, [])
        clock.advance(0.1)
        self.assertEqual(log, [("c", 1.5)])
        clock.advance(0.5)
        self.assertEqual(log, [("c", 1.5), ("a", 2.0)])
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(len(wheel), 0)

    def test_entry_rescheduling_itself(self):
        clock, log = Clock(), []
        wheel = TimerWheel(clock, 1.0)

        class Again(Entry):
            def expired(self):
                super().expired()
                if len(self.log) < 3:
                    wheel.schedule(self, 2)

        wheel.schedule(Again(clock, log, "x"), 2)
        clock.pump([1] * 10)
        self.assertEqual(log, [("x", 2), ("x", 4), ("x", 6)])

    @given(st.lists(st.tuples(st.floats(0.0, 5.0), st.booleans()), max_size=40),
           st.sampled_from([0.05, 0.25, 1.0]))
    def test_never_early_at_most_one_tick_late(self, plan, resolution):
        clock, log = Clock(), []
        wheel = TimerWheel(clock, resolution)
        expected = {}
        for i, (delay, cancel) in enumerate(plan):
            clock.advance(resolution / 2)
            entry = Entry(clock, log, i)
            tick = wheel.schedule(entry, delay)
            if cancel:
                wheel.cancel(entry, tick)
            else:
                expected[i] = clock.seconds() + delay
        clock.pump([resolution / 2] * int(30 / resolution))
        fired = dict(log)
        self.assertEqual(sorted(fired), sorted(expected))
        for name, at in fired.items():
            self.assertGreaterEqual(at + 1e-6, expected[name])
            # one tick of rounding, plus the test clock's own step
            self.assertLessEqual(at, expected[name] + resolution * 1.5 + 1e-6)
