"""The TLS policy lbframe offers clients: versions, cipher suites, options.

The default follows Mozilla's "intermediate" server profile
(https://wiki.mozilla.org/Security/Server_Side_TLS), the one HAProxy's and
nginx's documentation point to for general-purpose servers:

- TLS 1.2 and 1.3 only (RFC 8996 retired 1.0 and 1.1);
- for TLS 1.2, forward-secret AEAD suites only: ECDHE key exchange with an
  ECDSA or RSA certificate, AES-GCM or ChaCha20-Poly1305. No CBC suite
  (LUCKY13 and its kin), no static-RSA key exchange (no forward secrecy).
  Mozilla also lists three DHE-RSA suites; they need DH parameters
  pyOpenSSL cannot set up automatically and add nothing for clients that
  speak ECDHE, so they are left out (add them with ``ssl_ciphers``);
- TLS 1.3 with OpenSSL's suites (all AEAD, all forward-secret);
- the client's cipher preference (every default suite is strong, and a
  phone without AES instructions rightly picks ChaCha20);
- no compression (CRIME), no renegotiation asked by clients (a cheap way
  to make a server do expensive work).

The keys ``ssl_ciphers``, ``ssl_ciphersuites``, ``ssl_min_version`` and
``ssl_prefer_server_ciphers`` change it per virtual server; the checks
here run when the site is loaded, so a typo is a configuration error and
never a server that quietly offers less than it was told to.
"""

from __future__ import annotations

import functools
import re

import attrs
from OpenSSL import SSL

#: Mozilla intermediate, ECDHE suites (TLS 1.2 and below)
DEFAULT_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))

#: ``ssl_min_version`` values → OpenSSL protocol versions
VERSIONS = {"tlsv1.2": SSL.TLS1_2_VERSION, "tlsv1.3": SSL.TLS1_3_VERSION}
_RETIRED = ("sslv3", "tlsv1", "tlsv1.0", "tlsv1.1")
#: how ``ssl_min_version`` is spelled back (canonical case)
_SPELLING = {"tlsv1.2": "TLSv1.2", "tlsv1.3": "TLSv1.3"}

#: A context's options: compression off, client renegotiation refused,
#: the old protocols off even below the minimum version.
BASE_OPTIONS = (SSL.OP_NO_SSLv2 | SSL.OP_NO_SSLv3 | SSL.OP_NO_COMPRESSION
                | SSL.OP_NO_RENEGOTIATION)


def _ciphers_of(context: SSL.Context) -> list[str]:
    return SSL.Connection(context, None).get_cipher_list()


@functools.cache
def _tls13_names() -> frozenset[str]:
    """The TLS 1.3 suites this OpenSSL knows (for checking names): each
    RFC 8446 name is tried alone."""
    names = set()
    for name in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                 "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_CCM_SHA256",
                 "TLS_AES_128_CCM_8_SHA256"):
        probe = SSL.Context(SSL.TLS_METHOD)
        try:
            probe.set_tls13_ciphersuites(name.encode())
        except SSL.Error:
            continue
        if name in _ciphers_of(probe):
            names.add(name)
    return frozenset(names)


def check_ciphers(text: str) -> str:
    """``ssl_ciphers``: an OpenSSL cipher string for TLS 1.2 and below.

    OpenSSL skips words it does not know, so ``ECDHE+AESGCM:ECDHE+AESGMC``
    would quietly drop the second half: here every word that adds suites
    (not ``!X``/``-X`` removals, which may name what this OpenSSL lacks,
    nor ``@`` directives) must match at least one suite, and the whole
    string must leave at least one TLS 1.2 suite. ValueError otherwise."""
    text = text.strip()
    if not text.isascii() or not text.isprintable():
        raise ValueError(f"{text!r}: an OpenSSL cipher string is ASCII words separated by ':'")
    for word in re.split(r"[:, ]+", text):
        if not word or word[0] in "!-@":
            continue
        if word.lstrip("+").startswith("TLS_"):
            raise ValueError(f"{word!r} is a TLS 1.3 suite: those go in ssl_ciphersuites")
        probe = SSL.Context(SSL.TLS_METHOD)
        try:
            probe.set_cipher_list(word.lstrip("+").encode())
        except SSL.Error:
            raise ValueError(f"{word!r} matches no cipher suite this OpenSSL has "
                             f"(see `openssl ciphers -v {word.lstrip('+')!r}`)") from None
    probe = SSL.Context(SSL.TLS_METHOD)
    try:
        probe.set_cipher_list(text.encode())
    except SSL.Error:
        raise ValueError(f"{text!r} leaves no TLS 1.2 cipher suite") from None
    if not [n for n in _ciphers_of(probe) if not n.startswith("TLS_")]:
        raise ValueError(f"{text!r} leaves no TLS 1.2 cipher suite")
    return text


def check_ciphersuites(text: str) -> str:
    """``ssl_ciphersuites``: TLS 1.3 suite names separated by ``:``
    (OpenSSL ignores unknown ones; we refuse them)."""
    text = text.strip()
    known = _tls13_names()
    for name in text.split(":"):
        if name not in known:
            raise ValueError(f"unknown TLS 1.3 cipher suite {name!r} "
                             f"(known: {', '.join(sorted(known))})")
    return text


def check_min_version(text: str) -> str:
    """``ssl_min_version``: ``TLSv1.2`` or ``TLSv1.3``.

    Lower versions are refused on purpose: RFC 8996 forbids TLS 1.0 and
    1.1, OpenSSL 3's default security level cannot complete their
    handshakes anyway (SHA-1 signatures), and a key that claims to allow
    them but does not would mislead. Clients that old need a dedicated
    terminator."""
    word = text.strip().lower()
    if word in VERSIONS:
        return _SPELLING[word]
    if word in _RETIRED:
        raise ValueError(f"{text!r}: TLS 1.1 and older are not offered (RFC 8996); "
                         "use TLSv1.2 or TLSv1.3")
    raise ValueError(f"{text!r}: use TLSv1.2 or TLSv1.3")


@attrs.frozen
class TLSPolicy:
    """What one virtual server offers: checked values, applied to contexts."""

    ciphers: str = DEFAULT_CIPHERS
    #: None: OpenSSL's TLS 1.3 suites
    ciphersuites: str | None = None
    min_version: str = "TLSv1.2"
    prefer_server_ciphers: bool = False

    @classmethod
    def of(cls, virtual) -> "TLSPolicy":
        """From a :class:`lbframe.config.model.Virtual` (values already
        checked by the parser; absent keys mean the defaults)."""
        return cls(
            ciphers=getattr(virtual, "ssl_ciphers", None) or DEFAULT_CIPHERS,
            ciphersuites=getattr(virtual, "ssl_ciphersuites", None),
            min_version=getattr(virtual, "ssl_min_version", None) or "TLSv1.2",
            prefer_server_ciphers=bool(getattr(virtual, "ssl_prefer_server_ciphers", False)),
        )

    def new_context(self) -> SSL.Context:
        """A server context with versions and options set; ciphers are set
        by :meth:`finish` (pyOpenSSL freezes a context once used)."""
        context = SSL.Context(SSL.TLS_METHOD)
        options = BASE_OPTIONS
        if self.prefer_server_ciphers:
            options |= SSL.OP_CIPHER_SERVER_PREFERENCE
        context.set_options(options)
        context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        context.set_min_proto_version(VERSIONS[self.min_version.lower()])
        return context

    def finish(self, context: SSL.Context) -> SSL.Context:
        """Set the cipher suites: the last step of building a context."""
        if self.ciphersuites is not None:
            context.set_tls13_ciphersuites(self.ciphersuites.encode())
        context.set_cipher_list(self.ciphers.encode())
        return context
