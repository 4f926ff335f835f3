"""Tests of the two-choices scheduler, written with lbframe's plugin kit
(``lbframe.testing``). Run them with ``python -m twisted.trial lbframe_two_choices``."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from importlib.metadata import entry_points

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbframe.errors import OptionError
from lbframe.testing import FakePool, HTTPBackends, SchedulerContract, fetch, member, start_site
from lbframe_two_choices import TwoChoices


class TwoChoicesContract(SchedulerContract, SynchronousTestCase):
    """Everything every lbframe scheduler must do (the built-ins pass it too)."""

    factory = TwoChoices


class OneChoiceContract(SchedulerContract, SynchronousTestCase):
    factory = TwoChoices
    options = {"choices": "1", "seed": "3"}


class TwoChoicesTests(SynchronousTestCase):
    def pool(self, *members, **options):
        return FakePool(TwoChoices, *members, options={"seed": "1", **options})

    def test_prefers_the_less_loaded_of_two(self):
        pool = self.pool("a", "b")
        pool.set_connections("a", 5)
        self.assertEqual(pool.picks(10), ["b"] * 10)

    def test_spreads_connections_evenly(self):
        pool = self.pool("a", "b", "c", "d", "e")
        pool.serve(500)
        active = [m.active for m in pool.members.values()]
        self.assertLessEqual(max(active) - min(active), 3, active)

    def test_follows_weights(self):
        pool = self.pool(member("big", weight=3), member("small", weight=1))
        pool.serve(400)
        self.assertLess(abs(pool["big"].active / 400 - 0.75), 0.02, pool["big"].active)

    def test_one_choice_is_plain_random(self):
        pool = self.pool("a", "b", choices="1")
        pool.set_connections("a", 100)
        picks = pool.picks(200)
        self.assertLess(abs(picks.count("a") / 200 - 0.5), 0.1, picks.count("a"))

    def test_a_member_that_goes_down_gets_nothing(self):
        pool = self.pool("a", "b", "c")
        pool.set_state("b", "down")
        self.assertNotIn("b", pool.picks(50))
        pool.set_state("b", "up")
        self.assertIn("b", pool.picks(50))

    def test_keys_are_checked(self):
        e = self.assertRaises(OptionError, TwoChoices, None, {"choices": "many"})
        self.assertEqual((e.key, e.message), ("choices", "must be a whole number, not 'many'"))
        e = self.assertRaises(OptionError, TwoChoices, None, {"choices": "0"})
        self.assertEqual(e.message, "must be between 1 and 10, not 0")
        e = self.assertRaises(OptionError, TwoChoices, None, {"chioces": "2"})
        self.assertEqual((e.key, e.message), ("chioces", "unknown key 'chioces' for scheduler "
                                                         "two-choices (did you mean 'choices'?)"))


def installed() -> bool:
    """True when this package is installed (its entry point is visible)."""
    return any(ep.value == "lbframe_two_choices" for ep in entry_points(group="lbframe"))


def site_config(backends=None, extra: str = "") -> str:
    # Installed, lbframe finds the plugin through its entry point; from a
    # checkout, name the module in plugins = (the one-off way).
    plugins = "" if installed() else "[lbframe]\nplugins = lbframe_two_choices\n\n"
    members = backends.members() if backends else "member a = 127.0.0.1:1"
    return f"""{plugins}[virtual web]
listen = tcp:0:interface=127.0.0.1
pool = web

[pool web]
scheduler = two-choices
{extra}
{members}
"""


class CheckTests(SynchronousTestCase):
    def test_lbframe_check_points_at_the_bad_key(self):
        """A bad key of ours is reported by ``lbframe check`` with the file
        and line, like lbframe's own keys."""
        from lbframe.cli import main

        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        path = os.path.join(d, "site.ini")
        text = site_config(extra="choices = 0")
        with open(path, "w") as f:
            f.write(text)
        line = text.splitlines().index("choices = 0") + 1
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            rc = main(["check", path])
        self.assertEqual((rc, err.getvalue()),
                         (1, f"{path}:{line}: [pool web] choices: must be between 1 and 10, "
                             f"not 0\n"))


class SiteTests(TestCase):
    @defer.inlineCallbacks
    def test_serves_through_a_real_site(self):
        """A real site on 127.0.0.1 balancing over three backends."""
        backends = HTTPBackends.start("a", "b", "c")
        self.addCleanup(backends.stop)
        site = start_site(site_config(backends, "seed = 7"), self.mktemp())
        self.addCleanup(site.stop)
        registration = site.runtime.plugins.schedulers.get("two-choices")
        self.assertEqual(registration.plugin,
                         "two_choices" if installed() else "lbframe_two_choices")
        answers = []
        for _ in range(12):
            answers.append((yield fetch(site.port("web"))))
        self.assertEqual(set(answers), {b"a", b"b", b"c"})
        self.assertEqual(sum(m.total for m in site.pool("web").members.values()), 12)
