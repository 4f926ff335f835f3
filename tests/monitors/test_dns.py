"""type = dns: real queries against twisted.names servers on 127.0.0.1."""

from __future__ import annotations

import random

import dns.name
import dns.rdatatype

from twisted.internet import defer, reactor
from twisted.names import server
from twisted.names import dns as tdns
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbframe.config import Monitor, parse_site
from lbframe.errors import OptionError
from lbframe.monitoring import CheckResult, MonitorRunner
from lbframe.monitors.dns import DNSMonitor
from lbframe.runtime import PoolState
from lbframe.schedulers.round_robin import RoundRobin
from lbframe.testing import MonitorContract
from lbframe.config.model import Pool
from lbframe.testing import member as member_spec
from tests.monitors import dnskit


def monitor(port=None, name="www.example.test", **keys):
    options = {"name": name}
    options.update({k: keys.pop(k) for k in ("record",) if k in keys})
    spec = Monitor("dns", "dns", port=port, **{"timeout": 2.0, **keys})
    return DNSMonitor(spec, options, reactor)


def target(port: int):
    pool = PoolState.build(Pool("p", (member_spec("m", port),)), RoundRobin(None, {}))
    return pool.members["m"]


class DNSContract(MonitorContract, TestCase):
    factory = DNSMonitor
    options = {"name": "www.example.test"}
    type_name = "dns"


class CheckTests(TestCase):
    @defer.inlineCallbacks
    def check(self, port: int, **kw) -> CheckResult:
        result = yield monitor(**kw).check(target(port))
        return result

    @defer.inlineCallbacks
    def test_noerror_passes(self):
        port = dnskit.start_names(self, dnskit.zone())
        result = yield self.check(port)
        self.assertEqual(result, CheckResult(True))

    @defer.inlineCallbacks
    def test_expect_regex_on_the_answer(self):
        port = dnskit.start_names(self, dnskit.zone("192.0.2.10"))
        ok = yield self.check(port, expect=r"A 192\.0\.2\.10$")
        self.assertTrue(ok.ok, ok.reason)
        bad = yield self.check(port, expect=r"192\.0\.2\.99")
        self.assertFalse(bad.ok)
        self.assertIn("answer does not match expect", bad.reason)
        self.assertIn("192.0.2.10", bad.reason)

    @defer.inlineCallbacks
    def test_nxdomain(self):
        port = dnskit.start_names(self, dnskit.zone())
        result = yield self.check(port, name="nope.example.test")
        self.assertEqual(result, CheckResult(False, "NXDOMAIN"))

    @defer.inlineCallbacks
    def test_servfail(self):
        port = dnskit.start_names(self, dnskit.Failing())
        result = yield self.check(port)
        self.assertEqual(result, CheckResult(False, "SERVFAIL"))
        self.flushLoggedErrors(RuntimeError)  # twisted.names logs its backend's failure

    @defer.inlineCallbacks
    def test_record_type(self):
        port = dnskit.start_names(self, dnskit.zone())
        result = yield self.check(port, record="SOA", name="example.test",
                                  expect="ns.example.test")
        self.assertTrue(result.ok, result.reason)

    @defer.inlineCallbacks
    def test_truncated_reply_is_asked_again_over_tcp(self):
        # UDP: a front that truncates every reply; TCP: twisted.names itself.
        udp = dnskit.Truncating()
        factory = server.DNSServerFactory(authorities=[dnskit.zone("192.0.2.7")])
        factory.noisy = False
        port = dnskit.listen_both(self, udp, factory)
        result = yield self.check(port, expect=r"192\.0\.2\.7")
        self.assertTrue(result.ok, result.reason)
        self.assertEqual(udp.queries, 1)

    @defer.inlineCallbacks
    def test_truncated_reply_without_tcp_fails(self):
        port = dnskit.start_udp(self, dnskit.Truncating())
        result = yield self.check(port)
        self.assertEqual(result, CheckResult(False, "TCP fallback: connect refused"))

    @defer.inlineCallbacks
    def test_port_unreachable(self):
        from lbframe.testing import closed_port
        result = yield self.check(closed_port())
        self.assertEqual(result, CheckResult(False, "port unreachable (ICMP)"))

    @defer.inlineCallbacks
    def test_malformed_reply(self):
        port = dnskit.start_udp(self, dnskit.Garbage())
        result = yield self.check(port)
        self.assertFalse(result.ok)
        self.assertTrue(result.reason.startswith("malformed reply"), result.reason)

    @defer.inlineCallbacks
    def test_port_key_overrides_the_member_port(self):
        port = dnskit.start_names(self, dnskit.zone())
        spec = Monitor("dns", "dns", port=port, timeout=2.0)
        result = yield DNSMonitor(spec, {"name": "www.example.test"}, reactor).check(target(1))
        self.assertTrue(result.ok, result.reason)

    @defer.inlineCallbacks
    def test_silent_server_times_out_through_the_runner(self):
        silent = dnskit.Silent()
        port = dnskit.start_udp(self, silent)
        spec = Monitor("dns", "dns", timeout=0.4, interval=60.0, fall=1, rise=1)
        mon = DNSMonitor(spec, {"name": "www.example.test"}, reactor)
        pool = PoolState.build(Pool("p", (member_spec("m", port),)), RoundRobin(None, {}))
        runner = MonitorRunner(reactor, random.Random(0))
        check = runner.add(pool, pool.members["m"], spec, mon)
        check.running = True  # as once started, without the random first delay
        check.run()
        d = defer.Deferred()
        reactor.callLater(0.7, d.callback, None)
        yield d
        check.stop()
        m = pool.members["m"]
        self.assertEqual(m.checks["dns"].last_reason, "timeout after 0.4s")
        self.assertEqual(m.state, "down")
        self.assertEqual(silent.queries, 2)  # the query and its one resend


class OptionTests(SynchronousTestCase):
    def test_name_is_required(self):
        with self.assertRaises(OptionError) as caught:
            DNSMonitor(Monitor("d", "dns"), {}, reactor)
        self.assertIn("name", str(caught.exception))

    def test_bad_record_and_unknown_key(self):
        with self.assertRaises(OptionError) as caught:
            DNSMonitor(Monitor("d", "dns"), {"name": "a.test", "record": "BOGUS"}, reactor)
        self.assertIn("unknown record type 'BOGUS'", str(caught.exception))
        with self.assertRaises(OptionError):
            DNSMonitor(Monitor("d", "dns"), {"name": "a.test", "type": "A"}, reactor)

    def test_site_file(self):
        site = parse_site("""
[virtual dns]
listen = udp:5353:interface=127.0.0.1
protocol = udp
pool = p
[pool p]
member a = 127.0.0.1:53
monitor = ask
[monitor ask]
type = dns
name = www.example.test
record = AAAA
timeout = 2s
""", "site.ini")
        spec = site.monitors["ask"]
        self.assertEqual((spec.type, dict(spec.options)),
                         ("dns", {"name": "www.example.test", "record": "AAAA"}))
        mon = DNSMonitor(spec, dict(spec.options), reactor)
        self.assertEqual(tdns.QUERY_TYPES.get(mon.rdtype), "AAAA")


class JudgeProperties(SynchronousTestCase):
    """Whatever a member sends back, the verdict is a result or "not for
    us" — never an exception that would turn into a check error."""

    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600))
    def test_any_bytes(self, wire):
        import dns.message as message

        from lbframe.monitors.dns import _build_query, judge
        query = _build_query(dns.name.from_text("www.example.test"), dns.rdatatype.A)
        try:
            result = judge(query, query.id.to_bytes(2, "big") + wire, None)
        except message.Truncated:
            return
        self.assertTrue(result is None or isinstance(result, CheckResult))
