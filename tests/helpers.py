"""Small builders shared by the tests."""

from __future__ import annotations

import socket

from lbframe.config.model import Address, MemberSpec, Pool
from lbframe.runtime import PoolState


def member_spec(name: str, port: int = 1, **kw) -> MemberSpec:
    return MemberSpec(name, Address("127.0.0.1", port), **kw)


def pool_state(scheduler, *specs: MemberSpec, name: str = "web") -> PoolState:
    return PoolState.build(Pool(name, tuple(specs)), scheduler)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
