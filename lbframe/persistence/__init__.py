"""Persistence (F6): methods that find a key in a request, stores that map keys to member names.

A ``[persistence X]`` section becomes one :class:`lbframe.profiles.Profile`
(a method and a store) shared by every virtual server that names it, so a
session learned on the http virtual server is honoured on the https one (F6f).
One module per method (``source_ip``, ``cookie_insert``, ``cookie_learn``,
``url_session``) and per store (``memory``); the Redis store is a plugin
packaged on its own (``plugins/lbframe-redis``).
"""

from __future__ import annotations

from zope.interface import implementer

from lbframe.interfaces import IPersistenceMethod

NO_HEADERS: tuple = ()


@implementer(IPersistenceMethod)
class PersistenceMethod:
    """Defaults for a persistence method: a key from the request, nothing
    learned from responses, nothing added to them. Subclass and override."""

    learns = False
    stateless = False
    #: the profile's own keys this method reads (the rest are refused)
    option_keys: tuple[str, ...] = ()

    def key_for(self, context):
        return None

    def learn(self, context, response):
        return NO_HEADERS

    def member_for(self, key, pool):
        return None

    def response_headers(self, context, member, key):
        return NO_HEADERS
