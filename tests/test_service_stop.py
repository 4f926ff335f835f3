"""Graceful stop: stop accepting, let connections finish within
``[lbframe] stop_grace``, then close what is left."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase

from lbframe.config.model import Global
from lbframe.site import reload as reload_site
from tests.helpers import free_port
from tests.examples.test_quickstart import run_twistd, wait_for_port
from tests.test_site import (BULK_SIZE, ReloadCase, SlowReader, bulk_digest, connect,
                               deferLater, refused, site)


class InProcessStopTests(ReloadCase):
    @defer.inlineCallbacks
    def test_transfer_in_flight_finishes(self):
        pa, _ = self.backend("a")
        vport = free_port()
        svc = self.start(site(vport, {"a": pa}, stop_grace="20s"))
        reader = SlowReader()
        yield connect(vport, reader)
        yield reader.read_until(1024 * 1024)

        stopped = svc.stopService()
        self.assertFalse(stopped.called, "stop waits for the connection")
        self.assertTrue(refused(vport), "no new connections once stopping")
        self.assertTrue(svc.stopping)
        self.assertFalse(reload_site(svc), "no reload while stopping")

        total = yield reader.read_all()
        self.assertEqual(total, BULK_SIZE)
        self.assertEqual(reader.hash.hexdigest(), bulk_digest())
        yield stopped
        self.assertFalse(svc.running)
        [event] = self.logged("stopping")
        self.assertEqual(event["count"], 1)
        self.assertEqual(self.logged("connections_closed"), [])

    @defer.inlineCallbacks
    def test_grace_ends_then_connections_close(self):
        pa, _ = self.backend("a")
        vport = free_port()
        svc = self.start(site(vport, {"a": pa}, stop_grace="300ms"))
        reader = SlowReader()  # reads 1 MiB, then never again
        yield connect(vport, reader)
        yield reader.read_until(1024 * 1024)
        began = reactor.seconds()
        yield svc.stopService()
        took = reactor.seconds() - began
        self.assertGreaterEqual(took, 0.25)
        self.assertLess(took, 5)
        [event] = self.logged("connections_closed")
        self.assertEqual(event["count"], 1)
        # The client sees its connection end, short of the whole transfer.
        reader.transport.resumeProducing()
        total = yield reader.closed
        self.assertLess(total, BULK_SIZE)

    @defer.inlineCallbacks
    def test_idle_site_stops_at_once(self):
        vport = free_port()
        svc = self.start(site(vport, {"a": 1}))
        self.assertEqual(svc.runtime.site.lbframe.stop_grace, 30)
        d = svc.stopService()
        self.assertTrue(d.called)
        yield d
        self.assertTrue(refused(vport))
        yield deferLater(0)

    def test_default_grace(self):
        self.assertEqual(Global().stop_grace, 30.0)


class SlowBackend(threading.Thread):
    """A blocking backend: on ``bulk``, sends ``size`` bytes of a pattern."""

    def __init__(self, size: int):
        super().__init__(daemon=True)
        self.size = size
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.digest = hashlib.sha256(self.pattern() * (size // 65536)).hexdigest()

    @staticmethod
    def pattern() -> bytes:
        return bytes(range(256)) * 256

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        with conn:
            if not conn.recv(64):
                return
            block = self.pattern()
            try:
                for _ in range(self.size // len(block)):
                    conn.sendall(block)
            except OSError:
                pass


class TwistdSigtermTests(SynchronousTestCase):
    """``kill -TERM`` on ``twistd -n lbframe`` with a transfer in flight."""

    def test_sigterm_lets_the_transfer_finish(self):
        size = 16 * 1024 * 1024
        backend = SlowBackend(size)
        backend.start()
        self.addCleanup(backend.sock.close)
        vport = free_port()
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        config = os.path.join(d, "site.ini")
        with open(config, "w") as f:
            f.write(site(vport, {"a": backend.port}, stop_grace="20s"))
        proc = run_twistd(self, config, os.path.join(d, "twistd.log"))
        wait_for_port(vport, proc)

        client = socket.create_connection(("127.0.0.1", vport), timeout=10)
        self.addCleanup(client.close)
        client.sendall(b"bulk\n")
        h = hashlib.sha256()
        got = 0
        while got < 1024 * 1024:
            data = client.recv(65536)
            self.assertTrue(data)
            h.update(data)
            got += len(data)

        proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 10
        while not refused(vport) and time.monotonic() < end:
            time.sleep(0.02)
        self.assertTrue(refused(vport), "stopped accepting")
        self.assertIsNone(proc.poll(), "still running while the transfer goes on")

        while True:
            data = client.recv(1024 * 1024)
            if not data:
                break
            h.update(data)
            got += len(data)
        self.assertEqual(got, size)
        self.assertEqual(h.hexdigest(), backend.digest)
        client.close()
        self.assertEqual(proc.wait(15), -signal.SIGTERM)
        with open(os.path.join(d, "twistd.log")) as f:
            text = f.read()
        # (the readiness probe may still count as one of them)
        self.assertRegex(text, r"stopping: [12] connections open, waiting up to 20s")
        self.assertIn("Server Shut Down.", text)
