"""A one-off lbframe plugin for the web example: a tiny shop to balance.

When the site starts it starts, on 127.0.0.1, one application server per
member of the pool ``app`` and one static server per member of ``static``.
An application server keeps shopping carts *in its own memory*, keyed by a
``JSESSIONID`` cookie it sets — like a Java application server — so a cart
survives only if every request of the user reaches the same member. That
is what the ``cart`` persistence profile (``cookie-learn``) is for, across
http and https.

    GET /cart/add?item=NAME   add to the cart (starts a session if needed)
    GET /cart                 show the cart
    GET /health               the monitor's check
"""

import secrets

from twisted.internet import reactor
from twisted.web import resource, server

from lbframe import hookimpl


class Shop(resource.Resource):
    isLeaf = True

    def __init__(self, name):
        super().__init__()
        self.name = name
        self.carts = {}

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        path = request.path.decode()
        if path == "/health":
            return b"ok\n"
        session = (request.getCookie(b"JSESSIONID") or b"").decode()
        if session not in self.carts:
            if path != "/cart/add":
                return f"{self.name}: no cart here for session {session or '-'}\n".encode()
            session = f"{self.name}.{secrets.token_hex(8)}"
            self.carts[session] = []
            request.addCookie(b"JSESSIONID", session.encode(), path=b"/", httpOnly=True)
        if path == "/cart/add":
            item = (request.args.get(b"item") or [b"something"])[0].decode()
            self.carts[session].append(item)
        scheme = (request.getHeader(b"x-forwarded-proto") or b"?").decode()
        return (f"{self.name} ({scheme}): cart of {session}: "
                f"{', '.join(self.carts[session]) or 'empty'}\n").encode()


class Static(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return b"static content for " + request.path + b"\n"


@hookimpl
def lbframe_site_started(site):
    for pool, make in (("app", Shop), ("static", lambda name: Static())):
        for member in site.pools[pool].members:
            reactor.listenTCP(member.address.port, server.Site(make(member.name)),
                              interface=member.address.host)
