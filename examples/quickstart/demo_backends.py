"""A one-off lbframe plugin for the quickstart: three tiny HTTP backends.

It shows the smallest kind of plugin there is, a ``.py`` file named by
``plugins =`` in ``site.ini``: when the site starts, it starts three web
servers on 127.0.0.1:8081-8083, each answering with its own name, so that
``curl http://127.0.0.1:8080/`` shows the round robin at work.
"""

from twisted.internet import reactor
from twisted.web import resource, server

from lbframe import hookimpl

PORTS = {"a": 8081, "b": 8082, "c": 8083}


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
    for name, port in PORTS.items():
        reactor.listenTCP(port, server.Site(Hello(name)), interface="127.0.0.1")
