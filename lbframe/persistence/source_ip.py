"""``method = source-ip`` (F6a): one entry per client address, or per prefix.

``mask = 24`` groups the clients of one /24 into one entry (a proxy farm
that rotates source addresses inside its network keeps its server); IPv6
clients are grouped by ``mask6`` (default 128; 64 is one entry per site).
The key is the masked network, e.g. ``192.0.2.0/24``, readable in the admin
API. Weak behind NAT and proxies: every client behind one address shares a
server (see docs/persistence.md).
"""

from __future__ import annotations

import socket

from lbframe import hookimpl
from lbframe.errors import OptionError
from lbframe.persistence import PersistenceMethod

_V4_PREFIX = "::ffff:"


def _prefix(text: str, low: int, high: int, key: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise OptionError(key, f"{key} must be a prefix length ({low}-{high}), not {text!r}") \
            from None
    if not low <= value <= high:
        raise OptionError(key, f"{key} must be between {low} and {high}, not {value}")
    return value


class SourceIP(PersistenceMethod):
    """The client's address, masked to ``mask`` (IPv4) or ``mask6`` (IPv6) bits."""

    option_keys = ("mask6",)

    def __init__(self, profile, options):
        mask = 32 if profile.mask is None else profile.mask
        if mask > 32:
            raise OptionError("mask", f"mask is the IPv4 prefix length (0-32), not {mask}; "
                                      "use mask6 for IPv6 clients")
        self.mask = mask
        self.mask6 = _prefix(options["mask6"], 0, 128, "mask6") if "mask6" in options else 128
        self._bits4 = (0xFFFFFFFF << (32 - mask)) & 0xFFFFFFFF
        self._bits6 = ((1 << 128) - 1) ^ ((1 << (128 - self.mask6)) - 1)

    def key_for(self, context):
        host = context.client_host
        if ":" in host:
            if host.startswith(_V4_PREFIX) and "." in host:
                host = host[len(_V4_PREFIX):]  # an IPv4 client on a dual-stack socket
            else:
                return self._key6(host)
        if self.mask == 32:
            return host
        try:
            packed = socket.inet_aton(host)
        except OSError:
            return None
        net = int.from_bytes(packed, "big") & self._bits4
        return f"{socket.inet_ntoa(net.to_bytes(4, 'big'))}/{self.mask}"

    def _key6(self, host: str):
        try:
            packed = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        except OSError:
            return None
        net = int.from_bytes(packed, "big") & self._bits6
        text = socket.inet_ntop(socket.AF_INET6, net.to_bytes(16, "big"))
        return text if self.mask6 == 128 else f"{text}/{self.mask6}"


@hookimpl
def lbframe_register_persistence_methods(registry):
    registry.add("source-ip", SourceIP)
