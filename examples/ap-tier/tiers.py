"""The web tier and the AP tier of the example, in one Twisted process.

AP servers keep sessions: a request without a known ``JSESSIONID`` (cookie,
or ``;jsessionid=`` in the URL) starts one, answered with ``Set-Cookie``. The
answer is JSON: which server, which session, whether it was new.

Web servers are the AP tier's only clients: for each page a user asks for,
a web server calls VIP-AP, passing the user's AP session on (as a cookie, or
in the URL for ``/url/``), and hands the AP session back to the user. Each
web server calls from its own source address (127.0.0.2, 127.0.0.3), as two
machines would. ``/cookie/...`` goes through VIP-AP with cookie persistence,
``/url/...`` the one with URL persistence, ``/srcip/...`` the one with
source-ip persistence.

    python examples/ap-tier/tiers.py [site.ini]      # run until Ctrl-C
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import reactor
from twisted.internet.endpoints import HostnameEndpoint
from twisted.web import client, resource, server
from twisted.web.http_headers import Headers

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = {"web1": "127.0.0.2", "web2": "127.0.0.3"}


class APServer(resource.Resource):
    isLeaf = True

    def __init__(self, name):
        super().__init__()
        self.name = name
        self.sessions: set[str] = set()
        self.requests = 0

    def render_GET(self, request):
        if request.path == b"/alive":
            return b"ok"
        self.requests += 1
        sid = None
        path = request.uri.decode("latin-1").split("?", 1)[0]
        if ";jsessionid=" in path:
            sid = path.split(";jsessionid=", 1)[1].split(";", 1)[0].split("/", 1)[0]
        cookie = request.getCookie(b"JSESSIONID")
        if sid is None and cookie is not None:
            sid = cookie.decode("latin-1")
        new = sid not in self.sessions
        if new:  # unknown here: a new session (the old one's state is lost)
            sid = f"{self.name}.{len(self.sessions) + 1}"
            self.sessions.add(sid)
            request.addCookie(b"JSESSIONID", sid.encode(), path=b"/")
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"server": self.name, "session": sid, "new": new}).encode()


class WebServer(resource.Resource):
    """Calls VIP-AP for each page from its own source address."""

    isLeaf = True

    def __init__(self, name, vips):
        super().__init__()
        self.name = name
        self.vips = vips  # mode -> (host, port)
        source = SOURCES[name]

        class Factory:
            def endpointForURI(self, uri):
                return HostnameEndpoint(reactor, uri.host, uri.port, bindAddress=(source, 0))
        self.agent = client.Agent.usingEndpointFactory(
            reactor, Factory(), pool=client.HTTPConnectionPool(reactor, persistent=False))

    def render_GET(self, request):
        parts = request.path.decode().strip("/").split("/")
        mode = parts[0] if parts and parts[0] in self.vips else "cookie"
        host, port = self.vips[mode]
        sid = (request.getCookie(b"APSESSION") or b"").decode()
        path = "/page"
        headers = Headers()
        if sid and mode == "url":
            path += ";jsessionid=" + sid
        elif sid:
            headers.addRawHeader("Cookie", "JSESSIONID=" + sid)
        d = self.agent.request(b"GET", f"http://{host}:{port}{path}".encode(), headers)
        d.addCallback(client.readBody)

        def answered(body):
            info = json.loads(body)
            info["web"] = self.name
            request.addCookie(b"APSESSION", info["session"].encode(), path=b"/")
            request.setHeader(b"content-type", b"application/json")
            request.write(json.dumps(info).encode())
            request.finish()

        def failed(failure):
            request.setResponseCode(502)
            request.write(f"AP tier: {failure.getErrorMessage()}".encode())
            request.finish()
        d.addCallbacks(answered, failed)
        return server.NOT_DONE_YET


def tiers(site, site_class=server.Site):
    """Start the servers ``site`` (an lbframe Site) puts in its pools;
    returns ({name: (port, resource)} of AP servers, web listening ports)."""
    def vip(name):
        listen = site.virtuals[name].listen[0]
        port = int(listen.split(":")[1])
        return ("127.0.0.1", port)
    vips = {"cookie": vip("ap"), "url": vip("ap-url"), "srcip": vip("ap-srcip")}
    aps, webs = {}, []
    for name, member in {m.name: m for m in site.pools["ap"].members}.items():
        res = APServer(name)
        port = reactor.listenTCP(member.address.port, site_class(res), interface="127.0.0.1")
        aps[name] = (port, res)
    for member in site.pools["web"].members:
        webs.append(reactor.listenTCP(member.address.port,
                                      server.Site(WebServer(member.name, vips)),
                                      interface="127.0.0.1"))
    return aps, webs


def main():
    from lbframe.config import load_site
    site = load_site(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "site.ini"))
    tiers(site)
    print("web and AP tiers running; Ctrl-C stops them")
    reactor.run()


if __name__ == "__main__":
    main()
