"""Responses lbframe writes itself: error pages and the sorry page.

They are small, complete, ``Content-Length``-framed responses, so a client
can tell an answer from lbframe apart from a dropped connection and keep its
connection when that is safe.
"""

from __future__ import annotations

import mimetypes
from http import HTTPStatus

#: the largest sorry page we keep in memory
MAX_SORRY_PAGE = 1024 * 1024

_TEMPLATE = ("<!DOCTYPE html>\n<html><head><title>{code} {phrase}</title></head>\n"
             "<body><h1>{code} {phrase}</h1>\n<p>{text}</p></body></html>\n")

_TEXTS = {
    400: "The request could not be understood.",
    408: "The request did not arrive in time.",
    414: "The request line is too long.",
    431: "The request headers are too large.",
    501: "The request method or encoding is not supported.",
    502: "The server behind this address answered badly or not at all.",
    503: "No server is available to handle this request.",
    504: "The server behind this address did not answer in time.",
    505: "Only HTTP/1.0 and HTTP/1.1 are supported.",
}


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def response(status: int, body: bytes, content_type: bytes, close: bool,
             extra: tuple = ()) -> bytes:
    """A whole response: status line, headers, body."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, phrase(status).encode("ascii")),
             b"Content-Type: " + content_type + b"\r\n",
             b"Content-Length: %d\r\n" % len(body),
             b"Cache-Control: no-store\r\n"]
    lines.extend(b"%s: %s\r\n" % pair for pair in extra)
    if close:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


def error_response(status: int, close: bool = True) -> bytes:
    """lbframe's page for ``status`` (400, 408, 502, 503, 504, …)."""
    body = _TEMPLATE.format(code=status, phrase=phrase(status),
                            text=_TEXTS.get(status, "")).encode("ascii")
    return response(status, body, b"text/html; charset=utf-8", close)


class SorryPage:
    """``sorry = page:PATH``: a static page read once at load time."""

    def __init__(self, path: str, status: int, retry_after: int):
        with open(path, "rb") as f:
            body = f.read(MAX_SORRY_PAGE + 1)
        if len(body) > MAX_SORRY_PAGE:
            raise ValueError(f"{path}: a sorry page may be at most {MAX_SORRY_PAGE} bytes")
        kind = mimetypes.guess_type(path)[0] or "text/html"
        if kind.startswith("text/"):
            kind += "; charset=utf-8"
        self.status = status
        self.body = body
        self.content_type = kind.encode("ascii")
        self.retry_after = retry_after

    def render(self, close: bool, head_only: bool = False) -> bytes:
        extra = ((b"Retry-After", b"%d" % self.retry_after),)
        whole = response(self.status, self.body, self.content_type, close, extra)
        return whole[:len(whole) - len(self.body)] if head_only else whole
