"""Who may use the admin API: a bearer token, and where the API listens.

- A token configured: changes (every method but GET and HEAD) need
  ``Authorization: Bearer TOKEN``.
- The admin endpoint not loopback-only: every request needs it (and a token
  must be configured: the config rejects such a site without one).
- No token and loopback-only: open.

Without the header the answer is 401, with a wrong token 403.

Browsers get two more checks, because a web page can make a browser send
requests to a loopback port that a bearer token does not protect:

- a change (POST, DELETE) carrying an ``Origin`` header that is not the
  admin server itself is refused (cross-site request forgery);
- on a loopback-only endpoint, a ``Host`` header that names anything but a
  loopback address or ``localhost`` is refused (DNS rebinding).

``curl`` and ``lbframe status``/``member`` send no ``Origin`` and a loopback
``Host``, so they never meet these checks.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from twisted.internet import endpoints

#: methods that only read
READ_METHODS = frozenset({b"GET", b"HEAD"})


class _NoReactor:
    """serverFromString only stores the reactor; parsing needs none."""


def _is_loopback_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def endpoint_is_loopback(endpoint) -> bool:
    """True when a server endpoint (a string or an endpoint object) accepts
    connections only from this host: TCP, TCP6 or SSL bound to a loopback
    interface, or a UNIX socket. Anything else counts as reachable from
    outside."""
    if isinstance(endpoint, str):
        try:
            endpoint = endpoints.serverFromString(_NoReactor(), endpoint)
        except (TypeError, ValueError, OSError):
            return False
    if isinstance(endpoint, endpoints.UNIXServerEndpoint):
        return True
    if isinstance(endpoint, (endpoints.TCP4ServerEndpoint, endpoints.TCP6ServerEndpoint,
                             endpoints.SSL4ServerEndpoint)):
        # Twisted keeps the interface only in this attribute; "" means all.
        interface = getattr(endpoint, "_interface", "")
        return bool(interface) and _is_loopback_host(interface)
    return False


def _host_of(authority: str) -> str:
    """``host`` of ``host:port``, ``[v6]:port`` or ``host``."""
    if authority.startswith("["):
        return authority[1:].split("]", 1)[0]
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


class Auth:
    """Decides whether one request may go on.

    ``everything``: every request needs the token (the endpoint is not
    loopback-only); otherwise only changes do, and the ``Host`` check applies.
    """

    def __init__(self, token: str | None, everything: bool):
        if everything and not token:
            raise ValueError("an admin endpoint that is not loopback-only needs admin_token")
        self._token = token.encode("utf-8") if token else None
        self.everything = everything

    def needs_token(self, request) -> bool:
        if self._token is None:
            return False
        return self.everything or request.method not in READ_METHODS

    def check(self, request) -> tuple[int, str] | None:
        """``None`` when ``request`` may go on, else ``(status, message)``
        (401 without a bearer token, 403 with a wrong one or from a foreign
        web page)."""
        host = (request.getHeader(b"host") or b"").decode("latin-1").strip().lower()
        if not self.everything and host and not _is_loopback_host(_host_of(host)):
            return 403, (f"Host {host!r} refused: this admin server listens on loopback "
                         "only; use 127.0.0.1, [::1] or localhost")
        if request.method not in READ_METHODS:
            origin = request.getHeader(b"origin")
            if origin is not None:
                netloc = urlsplit(origin.decode("latin-1").strip()).netloc.lower()
                if not netloc or netloc != host:
                    return 403, "cross-origin request refused"
        return self._check_token(request)

    def _check_token(self, request) -> tuple[int, str] | None:
        if not self.needs_token(request):
            return None
        header = request.getHeader(b"authorization")
        scheme, _, given = (header or b"").strip().partition(b" ")
        if header is None or scheme.lower() != b"bearer" or not given.strip():
            return 401, "this request needs the admin token (Authorization: Bearer TOKEN)"
        if not hmac.compare_digest(given.strip(), self._token):
            return 403, "wrong admin token"
        return None
