"""A whole site with ``driver = vrrp`` (host faked): its http, tcp and udp
listeners bind a VIP this host does not have, under twistd's order
(privilegedStartService binds before any startService), and the driver
finds the site's pools and plugin hook through the service tree."""

from __future__ import annotations

import os
import textwrap

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from lbframe import hookimpl
from lbframe.protocols import endpoints
from lbframe.tap import load
from tests.helpers import free_port
from tests.redundancy.test_vrrp_driver import FakeAddresses, FakeAnnouncer, FakeSocket

VIP = "198.18.255.253"  # on no interface of this host


class SiteTests(TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.http_port, self.tcp_port, self.udp_port = free_port(), free_port(), free_port()
        path = os.path.join(self.dir, "site.ini")
        with open(path, "w") as f:
            f.write(textwrap.dedent(f"""\
                [virtual web]
                listen = tcp:{self.http_port}:interface={VIP}
                protocol = http
                pool = web

                [virtual raw]
                listen = tcp:{self.tcp_port}:interface={VIP}
                protocol = tcp
                pool = web

                [virtual dns]
                listen = udp:{self.udp_port}:interface={VIP}
                protocol = udp
                pool = web

                [pool web]
                member a = 127.0.0.1:9

                [redundancy]
                driver = vrrp
                interface = eth0
                vrid = 51
                vips = {VIP}/24
                track_pools = web
                """))
        self.path = path

    def test_listeners_bind_the_vip_and_driver_sees_the_site(self):
        from lbframe.service import SiteService

        runtime = load(self.path, reactor)
        driver = runtime.redundancy
        fakes = {}
        driver.addresses_factory = lambda i: fakes.setdefault("a", FakeAddresses(i))
        driver.socket_factory = lambda *a: fakes.setdefault("s", FakeSocket(*a))
        driver.announcer_factory = lambda *a: FakeAnnouncer(*a)
        calls = []

        class Recorder:
            @hookimpl
            def lbframe_redundancy_state_changed(self, old, new):
                calls.append((old, new))
        runtime.plugins.manager.register(Recorder(), name="recorder")
        svc = SiteService(runtime, reactor)
        svc.privilegedStartService()  # twistd: every listener binds here
        svc.startService()
        try:
            self.assertEqual(driver.state, "backup")
            self.assertEqual(calls, [("init", "backup")])
            self.assertEqual(driver.tracking_down, ())  # found pool "web" through the tree
            self.assertTrue(endpoints.is_nonlocal(VIP))
            # both listeners really listen on the VIP
            import subprocess
            ss = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
            self.assertIn(f"{VIP}:{self.http_port}", ss)
            self.assertIn(f"{VIP}:{self.tcp_port}", ss)
            udp = subprocess.run(["ss", "-lunH"], capture_output=True, text=True).stdout
            self.assertIn(f"{VIP}:{self.udp_port}", udp)
        finally:
            d = defer.maybeDeferred(svc.stopService)

        def stopped(_):
            self.assertEqual(driver.state, "init")
            self.assertFalse(endpoints.is_nonlocal(VIP))
        return d.addCallback(stopped)
