"""``method = last-hop`` (F11b): replies go back through the next hop their
flow arrived from.

A routed virtual server (``protocol = routed``, see docs/sandwich.md) whose
``persistence`` names a ``last-hop`` profile makes the kernel remember, in
the flow's conntrack mark, the next hop (a pool member: a firewall) the
flow's *first* packet came from — the link it arrived on. Every later packet
of that flow the virtual server takes (the replies) is routed back to that
same next hop, whatever the scheduler would pick. Flows the virtual server
itself starts are pinned in the conntrack mark to the scheduler's pick, so
the next hop never changes mid-flow either (unless that next hop dies).

Unlike ``symmetric-hash`` this needs no agreement between the two load
balancers and moves no flow when the set of firewalls changes. It needs
each next hop on a link of its own (an interface per firewall, or a VLAN),
since the arriving interface names the next hop.

The table is the kernel's conntrack table: nothing is kept in lbframe, so
``timeout`` and ``store`` mean nothing here; in user-space protocols (tcp,
http) this method finds no key and has no effect.
"""

from __future__ import annotations

from lbframe import hookimpl
from lbframe.persistence import PersistenceMethod


class LastHop(PersistenceMethod):
    """Read by the routed protocol (it programs the kernel); no key in user space."""

    #: the routed protocol looks for this to program the conntrack learning rules
    kernel = "last-hop"

    def __init__(self, profile, options):
        self.profile = profile

    def key_for(self, context):
        return None


@hookimpl
def lbframe_register_persistence_methods(registry):
    registry.add("last-hop", LastHop)
