#!/usr/bin/env python3
"""``dig @127.0.0.1 -p 5353 www.example.test +short`` for machines without
dig, with dnspython (an lbframe requirement):

    python examples/dns/ask.py [NAME] [COUNT]

Asks COUNT times (default 6), each from a new source port, and prints each
answer (or the rcode, or "no answer").
"""

from __future__ import annotations

import sys

import dns.exception
import dns.message
import dns.query
import dns.rcode

VIP, PORT = "127.0.0.1", 5353


def ask(name: str) -> str:
    query = dns.message.make_query(name, "A")
    try:
        reply = dns.query.udp(query, VIP, port=PORT, timeout=2)
    except dns.exception.Timeout:
        return "no answer (timeout)"
    if reply.rcode() != dns.rcode.NOERROR:
        return dns.rcode.to_text(reply.rcode())
    return " ".join(rd.to_text() for rrset in reply.answer for rd in rrset) or "NOERROR, empty"


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "www.example.test"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    for _ in range(count):
        print(ask(name))
