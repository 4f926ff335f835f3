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
