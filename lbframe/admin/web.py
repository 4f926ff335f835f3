"""The pieces every admin resource shares: what it reads, and how it answers.

:class:`AdminContext` is the one object the resources hold. They read
``context.runtime`` on every request, so a reload that builds a new
:class:`~lbframe.service.SiteRuntime` only has to set that attribute.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

from twisted.web import server
from twisted.web.resource import Resource

from lbframe.admin.auth import Auth

#: the biggest request body the admin server keeps
MAX_BODY = 64 * 1024

JSON_TYPE = b"application/json"
TEXT_TYPE = b"text/plain; charset=utf-8"


class AdminContext:
    """What the admin resources read: the running site and who may use it."""

    def __init__(self, runtime, auth: Auth):
        self.runtime = runtime
        self.auth = auth
        #: a :class:`lbframe.admin.rates.RateSampler`, for the page's sparklines
        self.rates = None


class AdminRequest(server.Request):
    """A request that keeps at most :data:`MAX_BODY` bytes of its body, in
    memory; ``body_too_large`` tells that more was sent."""

    body_too_large = False
    _body_size = 0

    def gotLength(self, length):
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        self._body_size += len(data)
        if self._body_size > MAX_BODY:
            self.body_too_large = True
        else:
            self.content.write(data)


def client_host(request) -> str:
    return getattr(request.getClientAddress(), "host", "?")


def wants_json(request) -> bool:
    return request.path == b"/api" or request.path.startswith(b"/api/")


def send_json(request, obj: Any, code: int = 200) -> bytes:
    """Set the status and headers of a JSON answer and return its body."""
    return send_body(request, json.dumps(obj).encode("utf-8") + b"\n", JSON_TYPE, code)


def send_body(request, body: bytes, content_type: bytes, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")
    return body


def send_text(request, text: str, code: int = 200, content_type: bytes = TEXT_TYPE) -> bytes:
    return send_body(request, text.encode("utf-8"), content_type, code)


def send_error(request, code: int, message: str) -> bytes:
    """An error answer: ``{"error": message}`` under ``/api``, plain text elsewhere."""
    if code == 401:
        request.setHeader(b"www-authenticate", b'Bearer realm="lbframe"')
    if wants_json(request):
        return send_json(request, {"error": message}, code)
    return send_text(request, message + "\n", code)


class ErrorResource(Resource):
    """Answers every request below it with one error."""

    isLeaf = True

    def __init__(self, code: int, message: str):
        super().__init__()
        self.code = code
        self.message = message

    def render(self, request) -> bytes:
        return send_error(request, self.code, self.message)


def not_found(request) -> ErrorResource:
    path = request.path.decode("utf-8", "replace")
    return ErrorResource(404, f"nothing at {path}")


class Endpoint(Resource):
    """A resource that answers the methods it has ``render_METHOD`` for; any
    other method gets a 405 with an ``Allow`` header.
    Children it does not know are 404; a trailing slash is the same resource."""

    def __init__(self, context: AdminContext):
        super().__init__()
        self.context = context

    @property
    def runtime(self):
        return self.context.runtime

    def allowed_methods(self) -> list[str]:
        """``GET``, ``POST``, … for each ``render_METHOD``; ``HEAD`` with ``GET``."""
        methods = {name[len("render_"):] for name in dir(self)
                   if name.startswith("render_") and name[len("render_"):].isupper()}
        if "GET" in methods:
            methods.add("HEAD")  # twisted.web answers it as GET, without the body
        else:
            methods.discard("HEAD")
        return sorted(methods)

    def getChild(self, path: bytes, request):
        if path == b"" and not request.postpath:
            return self
        return not_found(request)

    def render(self, request) -> bytes:
        method = request.method.decode("ascii", "replace")
        allowed = self.allowed_methods()
        if method not in allowed:
            request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
            return send_error(request, 405, f"method {method} not allowed here "
                                            f"(allowed: {', '.join(allowed)})")
        return getattr(self, "render_" + method)(request)
