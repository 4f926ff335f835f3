"""Small builders shared by the tests."""

from __future__ import annotations

import socket

from twisted.internet import defer, reactor, task

from lbframe.config.model import Address, MemberSpec, Pool
from lbframe.runtime import PoolState


def member_spec(name: str, port: int = 1, **kw) -> MemberSpec:
    return MemberSpec(name, Address("127.0.0.1", port), **kw)


def pool_state(scheduler, *specs: MemberSpec, name: str = "web") -> PoolState:
    return PoolState.build(Pool(name, tuple(specs)), scheduler)


class WaitMixin:
    """For TestCases on the real reactor: wait for a condition, bounded."""

    @defer.inlineCallbacks
    def wait_until(self, predicate, timeout: float = 5.0):
        """Let the reactor run until ``predicate()`` holds (at most ``timeout`` s)."""
        deadline = reactor.seconds() + timeout
        while not predicate():
            if reactor.seconds() > deadline:
                self.fail(f"condition not reached in {timeout}s")
            yield task.deferLater(reactor, 0.002, lambda: None)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def serve_canned(response: bytes, backlog: int = 20) -> socket.socket:
    """A member on 127.0.0.1 that reads a request and answers ``response`` on
    every connection, then closes it — in a thread, so that it answers while a
    test's reactor (or a subprocess under test) is busy. Close the returned
    listening socket to stop it."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.settimeout(5)
            try:
                conn.recv(65536)
                conn.sendall(response)
            except OSError:
                pass
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return listener
