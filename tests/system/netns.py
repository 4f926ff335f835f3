"""Network namespaces and veth pairs for system tests (root and ``ip`` needed).

Every helper registers its clean-up on the test case *before* it creates
anything, so a failure half-way still deletes what exists (deleting what does
not exist is ignored). Names carry the pid and a counter, so concurrent runs
and several tests in one run do not collide.

The usual shape (:func:`veth_namespace`): a namespace with ``lo`` up and one
end of a veth pair, the other end in the test's own namespace, one small
subnet from 198.51.100.0/24 (TEST-NET-2) and 2001:db8::/32 between them, and
no default route in the namespace, so nothing it sends can leave the pair.
A test that sends from its own namespace must first check with
:func:`assert_routes_via` that the address goes into the veth.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from unittest import SkipTest

import attrs

ENV = "LBFRAME_SYSTEM_TESTS"
_counter = itertools.count()


def system_tests_required() -> bool:
    """CI sets ``LBFRAME_SYSTEM_TESTS=required``: a missing requirement is a failure."""
    return os.environ.get(ENV, "").strip().lower() == "required"


def require(ok: bool, why: str) -> None:
    """Skip the test with ``why`` unless system tests are required, then fail."""
    if ok:
        return
    if system_tests_required():
        raise AssertionError(f"{why} ({ENV}=required)")
    raise SkipTest(why)


def require_system() -> None:
    """Root and iproute2's ``ip`` with ``netns`` support, or skip (or fail, see :func:`require`)."""
    require(sys.platform.startswith("linux"), "system tests need Linux")
    require(os.geteuid() == 0, "system tests need root")
    require(shutil.which("ip") is not None, "system tests need iproute2 (ip)")


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """Run ``ip ARGS`` (inside ``netns`` when given); its stdout."""
    argv = ["ip"] + (["-n", netns] if netns else []) + list(args)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def ns_exec(netns: str, *argv: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Run a program inside ``netns`` (``ip netns exec``)."""
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True,
                          timeout=timeout, **kw)


def unique(tag: str) -> str:
    """A name unique to this run, short enough for an interface (15 characters)."""
    name = f"lb{tag}{os.getpid()}x{next(_counter)}"
    assert len(name) <= 15, name
    return name


def add_netns(test, name: str | None = None) -> str:
    """A new namespace with ``lo`` up, deleted when ``test`` ends."""
    name = name or unique("n")
    test.addCleanup(ip, "netns", "delete", name, check=False)
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)
    return name


def add_veth(test, host_if: str | None = None, peer_if: str | None = None,
             peer_netns: str | None = None) -> tuple[str, str]:
    """A veth pair, ``peer_if`` moved into ``peer_netns``; both ends up.
    Deleting one end deletes both; the clean-up deletes the host end."""
    host_if = host_if or unique("h")
    peer_if = peer_if or unique("p")
    test.addCleanup(ip, "link", "delete", host_if, check=False)
    ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
    if peer_netns:
        ip("link", "set", peer_if, "netns", peer_netns)
    ip("link", "set", host_if, "up")
    ip("link", "set", peer_if, "up", netns=peer_netns)
    return host_if, peer_if


def add_address(dev: str, cidr: str, netns: str | None = None) -> None:
    """Assign ``cidr`` to ``dev``; IPv6 without duplicate address detection,
    so the address works at once."""
    extra = ["nodad"] if ":" in cidr else []
    ip("address", "add", cidr, "dev", dev, *extra, netns=netns)


def route_device(address: str, netns: str | None = None) -> str | None:
    """The device ``ip route get`` picks for ``address``."""
    words = ip("-o", "route", "get", address, netns=netns, check=False).split()
    return words[words.index("dev") + 1] if "dev" in words else None


def assert_routes_via(test, address: str, dev: str) -> None:
    """Fail unless a packet to ``address`` would leave through ``dev``."""
    got = route_device(address)
    test.assertEqual(got, dev,
                     f"{address} routes via {got}, not the test's {dev}: refusing to send")


@attrs.frozen
class VethNamespace:
    """A namespace joined to the test's namespace by one veth pair."""

    netns: str
    host_if: str
    peer_if: str
    #: addresses of the host end and of the namespace end, and one nobody has
    host4: str
    peer4: str
    silent4: str
    host6: str
    peer6: str
    silent6: str


def veth_namespace(test, ipv6: bool = True) -> VethNamespace:
    """The usual topology (see the module docstring), torn down after ``test``."""
    n = next(_counter)
    block = (os.getpid() + n) % 32 * 8  # a /29 of 198.51.100.0/24
    host4, peer4, silent4 = (f"198.51.100.{block + i}" for i in (1, 2, 3))
    tag = f"{os.getpid() & 0xFFFF:x}:{n:x}"
    host6, peer6, silent6 = (f"2001:db8:{tag}::{i}" for i in (1, 2, 3))
    netns = add_netns(test)
    host_if, peer_if = add_veth(test, peer_netns=netns)
    add_address(host_if, f"{host4}/29")
    add_address(peer_if, f"{peer4}/29", netns=netns)
    if ipv6:
        add_address(host_if, f"{host6}/64")
        add_address(peer_if, f"{peer6}/64", netns=netns)
    return VethNamespace(netns, host_if, peer_if, host4, peer4, silent4, host6, peer6, silent6)
