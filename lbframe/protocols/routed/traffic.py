"""The ``listen`` of a routed virtual server: which packets it takes.

One item per traffic class (several items, comma- or space-separated, are
alternatives)::

    iface:NAME[:saddr=NETS][:daddr=NETS][:proto=PROTOS][:sport=PORTS][:dport=PORTS]

- ``NAME``: the interface the packets arrive on (as ``ip link`` shows it);
- ``saddr``/``daddr``: addresses or networks, several joined by ``+``
  (``daddr=198.18.8.0/24+198.18.9.7``); IPv6 ones in brackets
  (``daddr=[2001:db8::]/64``);
- ``proto``: ``tcp``, ``udp``, ``sctp``, ``icmp``, ``icmpv6`` or a protocol
  number, several joined by ``+``;
- ``sport``/``dport``: ports or ranges (``80+443+8000-8080``); they need
  ``proto`` limited to tcp, udp or sctp.

Packets to the node's own addresses are never taken (they are for it).
Pure parsing: nothing here touches the kernel.
"""

from __future__ import annotations

import ipaddress
import re

import attrs

KEYS = ("saddr", "daddr", "proto", "sport", "dport")
#: protocol words nftables knows, and their numbers
PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58, "gre": 47,
             "esp": 50, "ah": 51}
_PORTED = {6, 17, 132}
_IFNAME = re.compile(r"[A-Za-z0-9_.@-]{1,15}")


@attrs.frozen
class Traffic:
    """One parsed ``listen`` item."""

    interface: str
    saddr: tuple = ()  # ipaddress networks
    daddr: tuple = ()
    protocols: tuple[int, ...] = ()
    sport: tuple[tuple[int, int], ...] = ()  # inclusive ranges
    dport: tuple[tuple[int, int], ...] = ()

    @property
    def families(self) -> set[int]:
        """4 and/or 6: the address families the item restricts to (both when no address)."""
        nets = self.saddr + self.daddr
        return {n.version for n in nets} if nets else {4, 6}


def _split(text: str) -> list[str]:
    """Split on ``:`` outside ``[...]``."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _networks(key: str, text: str) -> tuple:
    nets = []
    for item in text.split("+"):
        literal = re.sub(r"^\[([^\]]*)\]", r"\1", item.strip())
        try:
            nets.append(ipaddress.ip_network(literal, strict=False))
        except ValueError:
            raise ValueError(f"{key}: {item!r} is not an address or network "
                             "(IPv6 in brackets: [2001:db8::]/64)") from None
    return tuple(nets)


def _protocols(text: str) -> tuple[int, ...]:
    out = []
    for item in text.split("+"):
        word = item.strip().lower()
        if word in PROTOCOLS:
            out.append(PROTOCOLS[word])
        elif word.isdigit() and 0 <= int(word) <= 255:
            out.append(int(word))
        else:
            raise ValueError(f"proto: {item!r} is not a protocol "
                             f"({', '.join(PROTOCOLS)} or a number 0-255)")
    return tuple(out)


def _ports(key: str, text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in text.split("+"):
        m = re.fullmatch(r"([0-9]{1,5})(?:-([0-9]{1,5}))?", item.strip())
        if m is None:
            raise ValueError(f"{key}: {item!r} is not a port or a range such as 8000-8080")
        low, high = int(m[1]), int(m[2] or m[1])
        if not (1 <= low <= high <= 65535):
            raise ValueError(f"{key}: {item!r} must be ports 1-65535, low to high")
        out.append((low, high))
    return tuple(out)


def parse_traffic(text: str) -> Traffic:
    """One ``listen`` item; ValueError with the reason."""
    kind, *rest = _split(text.strip())
    if kind != "iface" or not rest:
        raise ValueError(f"bad listen {text!r}: protocol routed takes "
                         "iface:NAME[:daddr=NETS][:proto=tcp][:dport=PORTS]...")
    name, *options = rest
    if _IFNAME.fullmatch(name) is None:
        raise ValueError(f"bad listen {text!r}: {name!r} is not an interface name")
    values: dict = {}
    for option in options:
        key, equals, value = option.partition("=")
        if not equals or key not in KEYS:
            raise ValueError(f"bad listen {text!r}: unknown option {option!r} "
                             f"(use {', '.join(k + '=' for k in KEYS)})")
        if key in values or (key == "proto" and "protocols" in values):
            raise ValueError(f"bad listen {text!r}: {key} is given twice")
        try:
            if key in ("saddr", "daddr"):
                values[key] = _networks(key, value)
            elif key == "proto":
                values["protocols"] = _protocols(value)
            else:
                values[key] = _ports(key, value)
        except ValueError as exc:
            raise ValueError(f"bad listen {text!r}: {exc}") from None
    traffic = Traffic(name, **values)
    if (traffic.sport or traffic.dport) and (
            not traffic.protocols or not set(traffic.protocols) <= _PORTED):
        raise ValueError(f"bad listen {text!r}: ports need proto=tcp, udp or sctp")
    if traffic.saddr and traffic.daddr and not (
            {n.version for n in traffic.saddr} & {n.version for n in traffic.daddr}):
        raise ValueError(f"bad listen {text!r}: saddr and daddr are of different "
                         "address families, so no packet could match")
    return traffic
