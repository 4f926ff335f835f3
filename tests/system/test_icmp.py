"""``type = icmp`` through a real veth pair into a namespace of the test's own.

The monitor runs in the test process (the real reactor, the real runner and
its timeout), in the test's own network namespace; every address it pings is
first checked with ``ip route get`` to go into the test's veth. The
namespace has no default route, so its replies cannot leave the pair either.
One address answers (the namespace's end of the veth), one does not (in the
same subnet, assigned to nobody, so ARP or neighbour discovery never
resolves it).

The unprivileged ``SOCK_DGRAM`` ping socket is tried inside the namespace
(``ip netns exec``), where ``net.ipv4.ping_group_range`` can be set without
touching the host's.
"""

from __future__ import annotations

import json
import os
import random
import sys
import textwrap

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbframe.config.model import Address, MemberSpec, Monitor
from lbframe.monitoring import MonitorRunner
from lbframe.monitors.icmp import NO_SOCKET, ICMPMonitor, shared_pingers
from lbframe.schedulers.round_robin import RoundRobin
from tests.helpers import pool_state
from tests.system import netns
from tests.system.netns import assert_routes_via, ns_exec, require_system, veth_namespace

ECHO_REPLY = r"^echo reply in \d+\.\d{3} ms$"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _FirstCheckAtOnce(random.Random):
    """The runner spreads first checks over the interval; a test wants them now."""

    def uniform(self, a, b):
        return a


class ICMPThroughVethTests(TestCase):
    timeout = 60

    def setUp(self):
        require_system()
        self.topo = veth_namespace(self)
        t = self.topo
        for address in (t.peer4, t.silent4, t.peer6, t.silent6):
            assert_routes_via(self, address, t.host_if)

    def first_results(self, spec, **hosts):
        """Run the monitor under the real runner until each member has one
        result; ``{member: (ok, reason)}``."""
        pool = pool_state(RoundRobin(), *(MemberSpec(name, Address(host, 0))
                                          for name, host in hosts.items()))
        results, done = {}, defer.Deferred()

        class Recorder:
            """Stands in for the pool: notes each member's first result."""

            def report_check(self, member, monitor, ok, reason, **kw):
                results.setdefault(member.name, (ok, reason))
                pool.report_check(member, monitor, ok, reason, **kw)
                if len(results) == len(hosts) and not done.called:
                    # after the runner has finished with this result
                    reactor.callLater(0, done.callback, results)

        runner = MonitorRunner(reactor, _FirstCheckAtOnce())
        monitor = ICMPMonitor(spec, {}, reactor)
        for member in pool.members.values():
            runner.add(Recorder(), member, spec, monitor)
        runner.startService()
        self.addCleanup(runner.stopService)
        return done

    def assert_idle(self):
        """No check left in flight, the shared sockets closed."""
        for pinger in shared_pingers(reactor)._pingers.values():
            self.assertEqual(pinger.pending, {})
            self.assertIsNone(pinger.sock)

    @defer.inlineCallbacks
    def test_ipv4_reply_and_timeout(self):
        spec = Monitor("ping", "icmp", interval=30, timeout=1)
        results = yield self.first_results(spec, up=self.topo.peer4, silent=self.topo.silent4)
        self.assertTrue(results["up"][0], results)
        self.assertRegex(results["up"][1], ECHO_REPLY)
        self.assertEqual(results["silent"], (False, "timeout after 1s"))
        self.assert_idle()

    @defer.inlineCallbacks
    def test_ipv6_reply_and_timeout(self):
        spec = Monitor("ping", "icmp", interval=30, timeout=1)
        results = yield self.first_results(spec, up=self.topo.peer6, silent=self.topo.silent6)
        self.assertTrue(results["up"][0], results)
        self.assertRegex(results["up"][1], ECHO_REPLY)
        self.assertEqual(results["silent"], (False, "timeout after 1s"))
        self.assert_idle()

    @defer.inlineCallbacks
    def test_arp_failure_is_host_unreachable(self):
        """When ARP gives up before the timeout, the kernel's ICMP host
        unreachable is matched to the check. ARP is made to give up after one
        probe of 100 ms on the test's own veth end."""
        neigh = f"/proc/sys/net/ipv4/neigh/{self.topo.host_if}"
        for key, value in (("mcast_solicit", "1"), ("retrans_time_ms", "100")):
            with open(f"{neigh}/{key}", "w") as f:
                f.write(value)
        spec = Monitor("ping", "icmp", interval=30, timeout=5)
        results = yield self.first_results(spec, silent=self.topo.silent4)
        self.assertEqual(results["silent"], (False, "host unreachable"))
        self.assert_idle()

    def test_unprivileged_ping_socket(self):
        """``socket = dgram`` works when ping_group_range allows our group and
        gives the operator the way out when it does not."""
        program = textwrap.dedent("""
            import json, sys
            from twisted.internet import defer, task
            from lbframe.config.model import Address, MemberSpec, Monitor
            from lbframe.monitors.icmp import ICMPMonitor
            from lbframe.schedulers.round_robin import RoundRobin
            from tests.helpers import pool_state

            async def main(reactor):
                monitor = ICMPMonitor(Monitor("p", "icmp"), {"socket": "dgram"}, reactor)
                specs = [MemberSpec(host, Address(host, 0)) for host in sys.argv[1:]]
                out = {}
                for member in pool_state(RoundRobin(), *specs).members.values():
                    try:
                        result = await monitor.check(member).addTimeout(5, reactor)
                        out[member.name] = [result.ok, result.reason]
                    except defer.TimeoutError:
                        out[member.name] = [False, "timeout"]
                print(json.dumps(out))

            task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
        """)
        env = dict(os.environ, PYTHONPATH=ROOT)
        hosts = [self.topo.peer4, "127.0.0.1", self.topo.peer6]

        def run(group_range):
            script = (f"echo '{group_range}' > /proc/sys/net/ipv4/ping_group_range && "
                      f'exec "$0" "$@"')
            done = ns_exec(self.topo.netns, "sh", "-c", script, sys.executable, "-c", program,
                           *hosts, env=env, cwd=ROOT)
            self.assertEqual(done.returncode, 0, done.stderr)
            return json.loads(done.stdout)

        refused = run("1 0")
        self.assertEqual(refused, {h: [False, NO_SOCKET] for h in hosts})
        allowed = run("0 0")
        for host in hosts:
            self.assertTrue(allowed[host][0], allowed)
            self.assertRegex(allowed[host][1], ECHO_REPLY)


class RequireTests(SynchronousTestCase):
    """Without root or ``ip`` system tests skip; CI makes that a failure."""

    def test_skip_or_fail(self):
        from unittest import SkipTest

        self.patch(netns.os, "environ", {})
        self.assertRaises(SkipTest, netns.require, False, "needs root")
        netns.require(True, "needs root")
        self.patch(netns.os, "environ", {netns.ENV: "required"})
        with self.assertRaises(AssertionError) as e:
            netns.require(False, "needs root")
        self.assertEqual(str(e.exception), "needs root (LBFRAME_SYSTEM_TESTS=required)")
