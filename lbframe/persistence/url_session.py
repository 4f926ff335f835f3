"""``method = url-session`` (F6e): a session id carried in the URL.

Either a path parameter (``/cart;jsessionid=ID?x=1``, the servlet way for
clients without cookies) or a query parameter (``/cart?jsessionid=ID``);
``parameter`` names it (default ``jsessionid``, matched without regard to
case in the path). The first request carrying a new id is scheduled, and the
member that answers it owns the id from then on. The answer that starts a
session teaches its id too: a ``Location`` header carrying it (a redirect),
or a ``Set-Cookie`` of the same name (servlet containers send the cookie and
rewrite their links with ``;jsessionid=`` in the same answer), so the
client's next URL already goes to the right member.
"""

from __future__ import annotations

from lbframe import hookimpl
from lbframe.persistence import PersistenceMethod


def path_parameter(path: str, name: str) -> str | None:
    """The value of ``;name=VALUE`` in the last segment that has it."""
    if ";" not in path:
        return None
    wanted = name.lower()
    found = None
    for segment in path.split("/"):
        params = segment.split(";")
        for param in params[1:]:
            key, sep, value = param.partition("=")
            if sep and key.lower() == wanted and value:
                found = value
    return found


class URLSession(PersistenceMethod):
    learns = True

    def __init__(self, profile, options):
        self.parameter = profile.parameter

    def key_for(self, context):
        head = context.head
        if head is None:
            return None
        return self._from_target(head.path, head)

    def _from_target(self, path, head=None):
        value = path_parameter(path, self.parameter)
        if value is None and head is not None:
            value = head.query_param(self.parameter)
        return value or None

    def learn(self, context, response):
        learned = []
        set_cookies = getattr(response, "set_cookies", None)
        if set_cookies is not None:
            wanted = self.parameter.lower()
            learned = [value for name, value in set_cookies() if name.lower() == wanted and value]
        header = getattr(response, "header", None)
        location = header("location") if header is not None else None
        if not location:
            return learned
        path, _, query = location.partition("?")
        value = path_parameter(path, self.parameter)
        if value is None and query:
            prefix = self.parameter + "="
            for pair in query.split("&"):
                if pair.startswith(prefix) and len(pair) > len(prefix):
                    value = pair[len(prefix):]
                    break
        return learned + [value] if value else learned


@hookimpl
def lbframe_register_persistence_methods(registry):
    registry.add("url-session", URLSession)
