"""``driver = vrrp``: VRRP (RFC 5798 / RFC 3768) for lbframe's own VIPs.

:mod:`.packet` (the wire format), :mod:`.machine` (the RFC state machine),
:mod:`.net` (raw socket, netlink, gratuitous ARP), :mod:`.driver` (the plugin).
"""
