"""The Redis store against a real ``redis-server`` on 127.0.0.1 (a free port).

Skipped when ``redis-server`` is not installed, unless
``LBFRAME_SYSTEM_TESTS=required`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface.verify import verifyObject

from lbframe.config import parse_site
from lbframe.errors import ConfigError
from lbframe.interfaces import IPersistenceStore
from lbframe.plugins import load_plugins
from lbframe.service import SiteService, build_runtime

import lbframe
import lbframe_redis

REDIS_SERVER = shutil.which("redis-server")
SRC = os.path.dirname(os.path.dirname(os.path.abspath(lbframe_redis.__file__)))
TWISTD = [sys.executable, "-c", "import sys; sys.argv[0] = 'twistd'; "
                                "from twisted.scripts.twistd import run; run()"]


def require_redis():
    if REDIS_SERVER is None:
        if os.environ.get("LBFRAME_SYSTEM_TESTS") == "required":
            raise AssertionError("redis-server is not installed (apt-get install redis-server)")
        raise SkipTest("redis-server is not installed")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for_port(port: int, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {deadline}s")


class RedisServer:
    """A throwaway ``redis-server`` on 127.0.0.1: no disk, no persistence."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def command(self, *args) -> bytes:
        """One command over a plain socket, for checking from outside."""
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            a = str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"".join(parts))
            return s.recv(65536)


class Named(protocol.Protocol):
    """A member that says its name and closes."""

    def connectionMade(self):
        self.transport.write(self.factory.name.encode())
        self.transport.loseConnection()


class Reader(protocol.Protocol):
    def __init__(self):
        self.data = b""
        self.done = defer.Deferred()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback(self.data.decode())


@defer.inlineCallbacks
def ask(port: int, source: str = "127.0.0.1"):
    """Connect to ``port`` from ``source``; the member's name."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5, bindAddress=(source, 0))
    reader = yield connectProtocol(endpoint, Reader())
    name = yield reader.done
    return name


class RedisTestCase(TestCase):
    timeout = 60

    def setUp(self):
        require_redis()
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.plugins = load_plugins(["lbframe_redis"], entry_points=False)

    def members(self, *names) -> list[int]:
        ports = []
        for name in names:
            factory = protocol.Factory.forProtocol(Named)
            factory.name = name
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            ports.append(port.getHost().port)
        return ports

    def site_text(self, vport: int, member_ports, extra_profile: str = "",
                  method: str = "source-ip") -> str:
        members = "".join(f"member {n} = 127.0.0.1:{p}\n"
                          for n, p in zip("abc", member_ports))
        return f"""
[lbframe]
plugins = lbframe_redis

[virtual v]
listen = tcp:{vport}:interface=127.0.0.1
pool = p
persistence = shared

[persistence shared]
method = {method}
store = redis://127.0.0.1:{self.redis.port}/3
redis_timeout = 300ms
redis_retry = 300ms
{extra_profile}

[pool p]
{members}"""

    def start_site(self, text: str):
        runtime = build_runtime(parse_site(text), self.plugins, reactor)
        svc = SiteService(runtime, reactor)
        svc.startService()
        self.addCleanup(svc.stopService)
        for store in runtime.persistence_stores.values():
            self.addCleanup(store.close)
        return runtime


class StoreTests(RedisTestCase):
    def store(self, timeout="30m", **options):
        lines = "".join(f"{k} = {v}\n" for k, v in options.items())
        runtime = build_runtime(parse_site(self.site_text(free_port(), [1]) +
                                           f"\n[persistence t]\nmethod = source-ip\n"
                                           f"timeout = {timeout}\n"
                                           f"store = redis://127.0.0.1:{self.redis.port}/2\n"
                                           + lines), self.plugins, reactor)
        store = runtime.persistence_stores["t"]
        self.addCleanup(store.close)
        self.addCleanup(runtime.persistence_stores["shared"].close)
        return store

    def test_provides_the_interface(self):
        self.assertTrue(verifyObject(IPersistenceStore, self.store()))

    @defer.inlineCallbacks
    def test_set_get_expiry_refresh_delete(self):
        store = self.store(timeout="1m")
        self.assertTrue(store.asynchronous)
        self.assertIsNone((yield store.get("k1")))
        yield store.set("k1", "m1")
        self.assertEqual((yield store.get("k1")), "m1")
        key = b"lbframe:persist:t:k1"
        self.assertIn(b"m1", self.redis.command("SELECT", 2) + self.redis_get(2, key))
        ttl = self.redis_ttl(2, key)
        self.assertTrue(55 <= ttl <= 60, ttl)
        self.redis_expire(2, key, 5)
        self.assertEqual((yield store.get("k1")), "m1")  # a read refreshes the expiry
        self.assertTrue(self.redis_ttl(2, key) > 50)
        yield store.delete("k1")
        self.assertIsNone((yield store.get("k1")))

    @defer.inlineCallbacks
    def test_items_count_clear(self):
        store = self.store()
        for i in range(30):
            yield store.set(f"10.0.0.{i}", "m" + str(i % 3))
        self.assertEqual((yield store.count()), 30)
        items = yield store.items()
        self.assertEqual(sorted(k for k, _, _ in items), sorted(f"10.0.0.{i}" for i in range(30)))
        self.assertTrue(all(0 <= age < 5 for _, _, age in items))
        yield store.clear()
        self.assertEqual((yield store.count()), 0)

    def test_config_errors_name_the_key(self):
        for lines, key in (("redis_timeout = soon", "redis_timeout"),
                           ("redis_tiemout = 1s", "redis_tiemout")):
            with self.assertRaises(ConfigError) as e:
                self.store(**dict([lines.split(" = ")]))
            self.assertIn(f"[persistence t] {key}", str(e.exception))
        text = self.site_text(free_port(), [1]).replace(
            f"redis://127.0.0.1:{self.redis.port}/3", "redis://127.0.0.1:6379/zero")
        with self.assertRaises(ConfigError) as e:
            build_runtime(parse_site(text), self.plugins, reactor)
        self.assertIn("[persistence shared] store", str(e.exception))

    def redis_get(self, db, key):
        return self._in_db(db, "GET", key)

    def redis_ttl(self, db, key) -> int:
        return int(self._in_db(db, "TTL", key).split(b"\r\n")[-2].lstrip(b":"))

    def redis_expire(self, db, key, seconds):
        return self._in_db(db, "EXPIRE", key, seconds)

    def _in_db(self, db, *args):
        args = [a.decode() if isinstance(a, bytes) else a for a in args]
        parts = []
        for cmd in (("SELECT", db), args):
            parts.append(f"*{len(cmd)}\r\n".encode())
            for a in cmd:
                a = str(a).encode()
                parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        with socket.create_connection(("127.0.0.1", self.redis.port), timeout=2) as s:
            s.sendall(b"".join(parts))
            data = b""
            while data.count(b"\r\n") < 2 or (b"$" in data.split(b"\r\n", 1)[1][:1]
                                                and data.count(b"\r\n") < 3):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data


class SharedTableTests(RedisTestCase):
    @defer.inlineCallbacks
    def test_two_sites_share_one_table(self):
        """In one process, two runtimes (two 'nodes'): a session placed by
        the first is honoured by the second, whose round robin would have
        chosen another member."""
        ports = self.members("a", "b", "c")
        v1, v2 = free_port(), free_port()
        self.start_site(self.site_text(v1, ports))
        self.start_site(self.site_text(v2, ports))
        first = yield ask(v1, "127.0.0.11")
        self.assertEqual(first, "a")
        placed = yield ask(v1, "127.0.0.12")
        self.assertEqual(placed, "b")
        for _ in range(10):
            self.assertEqual((yield ask(v2, "127.0.0.12")), "b")
        self.assertEqual((yield ask(v2, "127.0.0.13")), "a")  # a new client: v2's own pick

    @defer.inlineCallbacks
    def test_two_lbframe_processes_share_one_redis(self):
        ports = self.members("a", "b", "c")
        v1, v2 = free_port(), free_port()
        lb1 = self.run_lbframe(self.site_text(v1, ports))
        lb2 = self.run_lbframe(self.site_text(v2, ports))
        yield self.until_listening(lb1, v1)
        yield self.until_listening(lb2, v2)
        placed = {}
        for source in ("127.0.0.21", "127.0.0.22", "127.0.0.23"):
            placed[source] = yield ask(v1, source)
        self.assertEqual(sorted(placed.values()), ["a", "b", "c"])  # round robin spread them
        # The second process has never seen these clients. Asking in an
        # order round robin cannot reproduce (one client twice in a row):
        # only the shared table gives these answers.
        for source in ("127.0.0.23", "127.0.0.23", "127.0.0.21", "127.0.0.21", "127.0.0.22",
                       "127.0.0.22", "127.0.0.23", "127.0.0.21"):
            self.assertEqual((yield ask(v2, source)), placed[source])

    def run_lbframe(self, text: str) -> subprocess.Popen:
        folder = tempfile.mkdtemp(prefix="lbframe-redis-")
        self.addCleanup(shutil.rmtree, folder, True)
        config = os.path.join(folder, "site.ini")
        with open(config, "w") as f:
            f.write(text)
        # lbframe as the test process imports it (installed, or the checkout)
        root = os.path.dirname(os.path.dirname(os.path.abspath(lbframe.__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (SRC, root, os.environ.get("PYTHONPATH", "")) if p))
        log = open(os.path.join(folder, "twistd.log"), "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen(TWISTD + ["-n", "--pidfile=", "lbframe", "--config", config],
                                cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.logs = getattr(self, "logs", []) + [os.path.join(folder, "twistd.log")]

        def stop():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.addCleanup(stop)
        return proc

    @defer.inlineCallbacks
    def until_listening(self, proc, port, deadline=20.0):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if proc.poll() is not None:
                with open(self.logs[-1], "rb") as f:
                    self.fail(f"lbframe exited with {proc.returncode}: {f.read()[-2000:]!r}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                yield task.deferLater(reactor, 0.05, lambda: None)
        self.fail(f"lbframe did not listen on {port}")


class OutageTests(RedisTestCase):
    @defer.inlineCallbacks
    def test_outage_degrades_to_scheduler_picks_with_one_warning(self):
        warnings = []

        def observe(event):
            if event.get("log_namespace") == "lbframe.redis":
                warnings.append(event)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

        ports = self.members("a", "b", "c")
        vport = free_port()
        runtime = self.start_site(self.site_text(vport, ports))
        self.assertEqual((yield ask(vport, "127.0.0.31")), "a")
        for _ in range(3):
            self.assertEqual((yield ask(vport, "127.0.0.31")), "a")

        self.redis.stop()
        # Every request is still served: the scheduler decides (round robin
        # moves on), one warning says why.
        seen = []
        started = time.monotonic()
        for _ in range(12):
            seen.append((yield ask(vport, "127.0.0.31")))
        elapsed = time.monotonic() - started
        self.assertEqual(set(seen), {"a", "b", "c"})
        self.assertLess(elapsed, 5.0)
        down = [e for e in warnings if "failed" in e.get("log_format", "")]
        self.assertEqual(len(down), 1, warnings)
        store = runtime.persistence_stores["shared"]
        self.assertTrue(store.down)

        # Redis comes back (empty): after redis_retry the table is used again.
        self.redis.start()
        deadline = time.monotonic() + 10
        while store.down:
            if time.monotonic() > deadline:
                self.fail("the store did not come back")
            yield ask(vport, "127.0.0.32")
            yield task.deferLater(reactor, 0.1, lambda: None)
        placed = yield ask(vport, "127.0.0.33")
        for _ in range(5):
            self.assertEqual((yield ask(vport, "127.0.0.33")), placed)
        self.assertTrue(any("again" in e.get("log_format", "") for e in warnings))

    @defer.inlineCallbacks
    def test_unreachable_from_the_start(self):
        """A Redis that never answers (nothing listens): requests are served."""
        self.redis.stop()
        ports = self.members("a", "b")
        vport = free_port()
        self.start_site(self.site_text(vport, ports))
        seen = []
        for _ in range(4):
            seen.append((yield ask(vport, "127.0.0.41")))
        self.assertEqual(sorted(set(seen)), ["a", "b"])
