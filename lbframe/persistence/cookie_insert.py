"""``method = cookie-insert`` (F6b): lbframe adds a cookie naming the member.

The first answer to a client gets ``Set-Cookie: LBSERVER=<token>; Path=/;
HttpOnly``; later requests carrying the token go to that member. The token is
an HMAC of the member's *name* under the profile's ``secret``: it reveals no
address, is the same after a restart and on every worker and node that share
the secret, and needs no table at all.

Keys of its own: ``secret`` (or ``secret_file``), ``samesite``
(``Strict``/``Lax``/``None``), ``secure`` (``yes``/``no``).
"""

from __future__ import annotations

import hashlib
import hmac

from lbframe import hookimpl
from lbframe.errors import OptionError
from lbframe.persistence import NO_HEADERS, PersistenceMethod

_SAMESITE = {"strict": "Strict", "lax": "Lax", "none": "None"}
_BOOL = {"yes": True, "true": True, "on": True, "1": True,
         "no": False, "false": False, "off": False, "0": False}
#: hex digits of the HMAC kept in the cookie (64 bits: not guessable, short)
TOKEN_LENGTH = 16


def _read_secret(options, profile) -> bytes:
    if "secret" in options and "secret_file" in options:
        raise OptionError("secret_file", "give secret or secret_file, not both")
    if "secret" in options:
        secret = options["secret"].strip()
        if not secret:
            raise OptionError("secret", "secret must not be empty")
        return secret.encode("utf-8")
    if "secret_file" in options:
        path = options["secret_file"].strip()
        try:
            with open(path, "rb") as f:
                secret = f.read().strip()
        except OSError as e:
            raise OptionError("secret_file", f"cannot read {path!r}: {e.strerror}") from None
        if not secret:
            raise OptionError("secret_file", f"{path!r} is empty")
        return secret
    # No secret: a fixed one. Tokens still hide addresses and survive restarts,
    # but whoever knows a member's name can compute its token.
    return b"lbframe cookie-insert " + profile.name.encode("utf-8")


class CookieInsert(PersistenceMethod):
    stateless = True
    option_keys = ("secret", "secret_file", "samesite", "secure")

    def __init__(self, profile, options):
        self.cookie = profile.cookie or "LBSERVER"
        self._secret = _read_secret(options, profile)
        attributes = "; Path=/; HttpOnly"
        if "samesite" in options:
            value = options["samesite"].strip().lower()
            if value not in _SAMESITE:
                raise OptionError("samesite", f"samesite must be Strict, Lax or None, not "
                                              f"{options['samesite']!r}")
            attributes += "; SameSite=" + _SAMESITE[value]
        if "secure" in options:
            value = options["secure"].strip().lower()
            if value not in _BOOL:
                raise OptionError("secure", f"secure must be yes or no, not {options['secure']!r}")
            if _BOOL[value]:
                attributes += "; Secure"
        self._attributes = attributes
        self._tokens: dict[str, str] = {}  # member name -> token
        self._headers: dict[str, tuple] = {}  # member name -> ((b"Set-Cookie", ...),)
        self._members: dict[int, tuple] = {}  # id(pool) -> (member names, {token: Member})

    def token(self, member_name: str) -> str:
        """The cookie value that names ``member_name``."""
        token = self._tokens.get(member_name)
        if token is None:
            digest = hmac.new(self._secret, member_name.encode("utf-8"), hashlib.sha256)
            token = self._tokens[member_name] = digest.hexdigest()[:TOKEN_LENGTH]
        return token

    def key_for(self, context):
        head = context.head
        return head.cookie(self.cookie) if head is not None else None

    def member_for(self, key, pool):
        cached = self._members.get(id(pool))
        if cached is not None:
            member = cached[1].get(key)
            if member is not None and pool.members.get(member.name) is member:
                return member
            if cached[0] == tuple(pool.members):
                return None  # a token of no member of this pool
        # First use, or the pool's members changed (reload): map tokens again.
        tokens = {self.token(name): m for name, m in pool.members.items()}
        self._members[id(pool)] = (tuple(pool.members), tokens)
        return tokens.get(key)

    def response_headers(self, context, member, key):
        name = member.name
        if key is not None and key == self._tokens.get(name):
            return NO_HEADERS
        headers = self._headers.get(name)
        if headers is None:
            value = f"{self.cookie}={self.token(name)}{self._attributes}"
            headers = self._headers[name] = ((b"Set-Cookie", value.encode("latin-1")),)
        return headers


@hookimpl
def lbframe_register_persistence_methods(registry):
    registry.add("cookie-insert", CookieInsert)
