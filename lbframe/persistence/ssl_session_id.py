"""``method = ssl-session-id`` (F6d): TLS passed through stays on the member
that holds its session.

Only with ``protocol = ssl`` virtual servers (lbframe reads the ClientHello
and the member's ServerHello without terminating TLS). The key is the
session id, in hex: a ClientHello offering a non-empty session id (a client
resuming) goes to the member the id is stored for; the member's ServerHello
teaches the id it chose (a full handshake) → that member. A client whose
offered id the member did not resume teaches only the new id.

No usable session id, so the scheduler places the connection (logged once
per virtual server and reason): TLS 1.3 (its session id is a random echo;
resumption uses opaque PSK tickets), clients presenting a session ticket
(RFC 5077: the id they send is their own), and members that answer with an
empty session id (no session cache).
"""

from __future__ import annotations

from twisted.logger import Logger

from lbframe import hookimpl
from lbframe.persistence import PersistenceMethod

log = Logger(namespace="lbframe.persistence")

_REASONS = {
    "tls13": "TLS 1.3 was negotiated: it has no usable session id (resumption uses "
             "tickets lbframe cannot read)",
    "ticket": "a client resumes with a session ticket (or a TLS 1.3 pre-shared key): the "
              "session id it sends is not the server's",
    "no-id": "a member answered with an empty session id (no server-side session cache)",
}


class SSLSessionID(PersistenceMethod):
    learns = True
    option_keys = ()

    def __init__(self, profile, options):
        self.profile = profile.name
        self._warned: set = set()

    def _fallback(self, context, reason: str) -> None:
        """Say once per virtual server and reason that the scheduler decides."""
        what = (context.virtual, reason)
        if what in self._warned:
            return
        self._warned.add(what)
        log.warn("virtual {virtual}: persistence {profile} (ssl-session-id): {why}; such "
                 "connections are placed by the scheduler (logged once)",
                 virtual=context.virtual, profile=self.profile, why=_REASONS[reason])

    def key_for(self, context):
        hello = context.tls_hello
        if hello is None or not context.tls_session_id:
            return None
        if hello.session_ticket or hello.pre_shared_key:
            self._fallback(context, "ticket")
            return None
        return context.tls_session_id.hex()

    def learn(self, context, response):
        """``response`` is the member's :class:`lbframe.tls.hello.ServerHello`."""
        session_id = getattr(response, "session_id", None)
        if session_id is None:
            return ()
        if response.is_tls13:
            self._fallback(context, "tls13")
            learned = None
        elif not session_id:
            self._fallback(context, "no-id")
            learned = None
        else:
            learned = session_id.hex()
        # The profile remembers the request's own key for whoever answered
        # (right for cookies). Here an offered id the member did not resume
        # (or a TLS 1.3 random echo) names no session: keep it out of the table.
        lookup = context.persistence
        if lookup is not None and lookup.key is not None and lookup.key != learned:
            lookup.key = None
        return () if learned is None else (learned,)


@hookimpl
def lbframe_register_persistence_methods(registry):
    registry.add("ssl-session-id", SSLSessionID)
