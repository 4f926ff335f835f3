"""``method = cookie-learn`` (F6c): learn the application's own session cookie.

When a member answers with ``Set-Cookie: JSESSIONID=ID``, the profile
remembers ``ID`` → that member; a request carrying ``Cookie: JSESSIONID=ID``
goes back to it. A request carrying an id lbframe does not know (learned
before a restart, or expired) is scheduled, and the member that answers it
owns the id from then on.
"""

from __future__ import annotations

from lbframe import hookimpl
from lbframe.persistence import NO_HEADERS, PersistenceMethod


class CookieLearn(PersistenceMethod):
    learns = True

    def __init__(self, profile, options):
        self.cookie = profile.cookie

    def key_for(self, context):
        head = context.head
        if head is None:
            return None
        return head.cookie(self.cookie) or None

    def learn(self, context, response):
        set_cookies = getattr(response, "set_cookies", None)
        if set_cookies is None:
            return NO_HEADERS
        # An empty value is the application deleting its cookie: nothing to learn.
        return [value for name, value in set_cookies() if name == self.cookie and value]


@hookimpl
def lbframe_register_persistence_methods(registry):
    registry.add("cookie-learn", CookieLearn)
