"""Reload (SIGHUP) with http virtual servers: keep-alive clients and
in-flight requests go on, new members get traffic, certificates change
without closing the listening socket, a broken file changes nothing."""

from __future__ import annotations

import os

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from lbframe.service import SiteService
from lbframe.site import load, reload as reload_site
from tests.helpers import free_port
from tests.httpkit import HTTPSiteMixin
from tests.protocols.http.test_tls import https_get
from tests.tlskit import cert_pem, make_ca, make_cert, write, write_bundle


class HTTPReloadTests(HTTPSiteMixin, TestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "site.ini")
        self.vport = free_port()

    def write_site(self, members: dict, extra: str = "") -> None:
        lines = "\n".join(f"member {n} = 127.0.0.1:{p}" for n, p in members.items())
        with open(self.path, "w") as f:
            f.write(f"""
[virtual web]
listen = tcp:{self.vport}:interface=127.0.0.1
protocol = http
pool = p
{extra}

[pool p]
{lines}
""")

    def start(self) -> SiteService:
        svc = SiteService(load(self.path, reactor), reactor, config_path=self.path)
        svc.startService()
        self.addCleanup(svc.stopService)
        return svc

    @defer.inlineCallbacks
    def test_keepalive_client_survives_reloads_and_new_member_gets_traffic(self):
        aport, a = self.member("a")
        self.write_site({"a": aport})
        svc = self.start()
        client = yield self.connect(self.vport)
        client.transport.write(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
        yield client.wait_responses(1)

        bport, b = self.member("b")
        self.write_site({"a": aport, "b": bport})
        self.assertTrue(reload_site(svc))
        # The same client connection goes on, through the new balancer.
        for i in range(4):
            client.transport.write(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % (i + 2))
            yield client.wait_responses(i + 2)
        self.assertFalse(client.lost.called)
        self.assertEqual(len(a.requests) + len(b.requests), 5)
        self.assertGreaterEqual(len(b.requests), 2)

        with open(self.path, "w") as f:
            f.write("[virtual web]\nlisten = nonsense\n")
        self.assertFalse(reload_site(svc))
        client.transport.write(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
        responses = yield client.wait_responses(6)
        self.assertEqual(responses[-1].status, 200)

    @defer.inlineCallbacks
    def test_in_flight_request_finishes_on_its_old_member(self):
        aport, a = self.member("a", answer=lambda raw: b"")  # answers by hand
        self.write_site({"a": aport})
        svc = self.start()
        client = yield self.connect(self.vport)
        client.transport.write(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        yield self.wait_until(lambda: len(a.requests) == 1)
        bport, b = self.member("b")
        self.write_site({"b": bport})  # a is removed
        self.assertTrue(reload_site(svc))
        a.live[0].transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
        responses = yield client.wait_responses(1)
        self.assertEqual(responses[0].body, b"slow")
        client.transport.write(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
        responses = yield client.wait_responses(2)
        self.assertEqual(responses[1].header("x-member"), "b")

    @defer.inlineCallbacks
    def test_reload_changes_certificates_without_closing_the_socket(self):
        ca = make_ca()
        ca_file = write(os.path.join(self.dir, "ca.pem"), cert_pem(ca[1]))
        folder = os.path.join(self.dir, "certs")
        key, cert = make_cert(ca, "old.test")
        write_bundle(os.path.join(folder, "default.pem"), key, cert, ca)
        aport, a = self.member("a")
        self.write_site({"a": aport}, f"certificates = {folder}")
        svc = self.start()
        listener = svc.listeners["web"]
        got = yield threads.deferToThread(https_get, self.vport, None, ca_file)
        self.assertEqual(got["subject"], "old.test")

        key, cert = make_cert(ca, "new.test")
        write_bundle(os.path.join(folder, "default.pem"), key, cert, ca)
        self.assertTrue(reload_site(svc))
        self.assertIs(svc.listeners["web"], listener)
        got = yield threads.deferToThread(https_get, self.vport, None, ca_file)
        self.assertEqual(got["subject"], "new.test")

        # An expired certificate is refused at reload: the old one stays.
        key, cert = make_cert(ca, "expired.test", expired=True)
        write_bundle(os.path.join(folder, "default.pem"), key, cert, ca)
        self.assertFalse(reload_site(svc))
        got = yield threads.deferToThread(https_get, self.vport, None, ca_file)
        self.assertEqual(got["subject"], "new.test")

    @defer.inlineCallbacks
    def test_graceful_stop_lets_the_request_in_flight_finish(self):
        aport, a = self.member("a", answer=lambda raw: b"")
        self.write_site({"a": aport})
        svc = SiteService(load(self.path, reactor), reactor, config_path=self.path)
        svc.startService()
        idle = yield self.connect(self.vport)
        idle.transport.write(b"GET /done HTTP/1.1\r\nHost: h\r\n\r\n")
        yield self.wait_until(lambda: len(a.requests) == 1)
        a.live[0].transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        yield idle.wait_responses(1)
        busy = yield self.connect(self.vport)
        busy.transport.write(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        yield self.wait_until(lambda: len(a.requests) == 2)
        stopped = svc.stopService()
        yield idle.lost  # an idle keep-alive client is closed at once
        self.assertFalse(busy.lost.called)
        a.live[0].transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
        responses = yield busy.wait_responses(1)
        self.assertEqual(responses[0].body, b"slow")
        self.assertEqual(responses[0].header("connection"), "close")
        yield busy.lost
        yield stopped
