"""Review: with ``accept_proxy``, a client whose PROXY header has not arrived
yet belongs to its virtual server: a graceful stop or a reload counts it and
closes it, instead of leaving its socket open with no timer left to close it."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from lbframe.protocols import proxy_protocol
from tests.protocols.test_tcp import TCPSiteMixin


class PendingProxyHeaderTests(TCPSiteMixin, TestCase):
    @defer.inlineCallbacks
    def pending_client(self):
        vport, runtime, svc = self.serve_virtual(
            f"member a = 127.0.0.1:{self.echo_member()}",
            "accept_proxy = yes", real_clock=True)
        client = yield self.connect(vport)
        client.transport.write(proxy_protocol.build_v1(("203.0.113.9", 4000),
                                                       ("198.51.100.1", 443))[:10])
        yield self.wait_until(lambda: svc.virtual.total == 1)
        return client, svc

    @defer.inlineCallbacks
    def test_counted_while_its_header_is_read(self):
        client, svc = yield self.pending_client()
        self.assertEqual(svc.connection_count(), 1)

    @defer.inlineCallbacks
    def test_closed_by_close_all(self):
        # What a graceful stop does once stop_grace has passed (and stopService).
        client, svc = yield self.pending_client()
        svc.close_all("stop_grace passed")
        yield self.wait_until(lambda: client.lost.called)
        self.assertEqual(svc.connection_count(), 0)
        self.assertEqual(svc.virtual.refused, 0)
