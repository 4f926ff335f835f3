"""``protocol = routed`` and ``protocol = nat``: the kernel's data plane,
registered as lbframe plugins (see docs/routed.md and docs/sandwich.md).

This module only registers the two protocols; the code lives in its
modules, none of which imports this package back:

- :mod:`.protocol`: ``RoutedProtocol`` (validation of a routed virtual server);
- :mod:`.nat`: ``NatProtocol``, its plan and its dnat rules;
- :mod:`.listener`: ``RoutedVirtualServer``, the running listener of both;
- :mod:`.program`: the one programmer per process (nft and policy routing);
- :mod:`.ruleset`, :mod:`.routing`, :mod:`.traffic`: the pure parts.
"""

from __future__ import annotations

from lbframe import hookimpl
from lbframe.protocols.routed.nat import NatProtocol
from lbframe.protocols.routed.protocol import RoutedProtocol


@hookimpl
def lbframe_register_protocols(registry):
    registry.add("routed", RoutedProtocol)
    registry.add("nat", NatProtocol)
