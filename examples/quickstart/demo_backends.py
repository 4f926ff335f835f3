"""A one-off lbframe plugin for the quickstart: tiny demo HTTP backends.

It shows the smallest kind of plugin there is, a ``.py`` file named by
``plugins =`` in ``site.ini``. When the site starts, it starts one web
server for each member of the pool ``web`` (all on 127.0.0.1), each
answering with its member name, so that ``curl http://127.0.0.1:8080/``
shows the round robin at work.
"""

from twisted.internet import reactor
from twisted.web import resource, server

from lbframe import hookimpl

DEMO_POOL = "web"


class Hello(resource.Resource):
    isLeaf = True

    def __init__(self, name):
        super().__init__()
        self.name = name

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return f"hello from backend {self.name}\n".encode()


@hookimpl
def lbframe_site_started(site):
    for member in site.pools[DEMO_POOL].members:
        reactor.listenTCP(member.address.port, server.Site(Hello(member.name)),
                          interface=member.address.host)
