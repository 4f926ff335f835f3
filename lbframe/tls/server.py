"""Terminating TLS: certificates, SNI, and the defaults we offer clients.

Two ways to give a virtual server certificates:

- an ``ssl:`` endpoint in ``listen`` (``privateKey=``, ``certKey=``,
  ``extraCertChain=``): one certificate;
- ``certificates = FOLDER``: one PEM file per host name, ``NAME.pem`` holding
  the private key and the chain (leaf first); ``_.example.com.pem`` serves
  ``*.example.com``; ``default.pem`` answers clients that send no name or a
  name no file matches (else the ``ssl:`` endpoint's certificate does).
  ``NAME.rsa.pem`` and ``NAME.ecdsa.pem`` give one name both key types;
  OpenSSL picks per client.

Beside any certificate file, ``FILE.ocsp`` is an OCSP response to staple
(:mod:`lbframe.tls.ocsp`).

Every file is read and checked when the site is loaded — by ``lbframe
check`` too — so a key that does not match its certificate, an expired
certificate or an unreadable file is an error naming the file, not a
handshake failure at 3 a.m.

Versions, cipher suites and options come from :mod:`lbframe.tls.policy`
(Mozilla's "intermediate" profile unless the site says otherwise); ALPN
``http/1.1``; session resumption by session id and by ticket.
"""

from __future__ import annotations

import binascii
import datetime
import os
import re

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.logger import Logger
from zope.interface import implementer

from lbframe.tls.ocsp import Staple, load_staple
from lbframe.tls.policy import TLSPolicy

log = Logger(namespace="lbframe.tls")

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_PEM_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----.+?-----END (?:[A-Z]+ )?PRIVATE KEY-----",
                      re.S)


class CertificateError(ValueError):
    """A certificate file we cannot serve; the message names the file."""


@attrs.frozen(eq=False)
class ServedCertificate:
    """A key and its chain, checked (compared by identity: each load is new)."""

    path: str
    key: crypto.PKey = attrs.field(repr=False)
    leaf: crypto.X509 = attrs.field(repr=False)
    chain: tuple = attrs.field(repr=False)
    not_after: datetime.datetime
    names: tuple  # DNS names the certificate itself covers
    #: ``rsa``, ``ecdsa`` or another key type's name (OpenSSL's slot)
    key_type: str = "rsa"
    #: the OCSP response to staple, from ``path + ".ocsp"``
    staple: Staple | None = attrs.field(default=None, repr=False)


def _key_type(key) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ecdsa"
    return type(key).__name__.replace("PrivateKey", "").lower()


def load_certificate(path: str, key_path: str | None = None,
                     chain_path: str | None = None, now: datetime.datetime | None = None
                     ) -> ServedCertificate:
    """Read ``path`` (certificate chain, and the key unless ``key_path``
    names another file), check it, and return it; raises CertificateError."""
    def read(p):
        try:
            with open(p, "rb") as f:
                return f.read()
        except OSError as e:
            raise CertificateError(f"{p}: cannot read: {e.strerror}") from None

    pem = read(path)
    key_pem = read(key_path) if key_path else pem
    chain_pem = read(chain_path) if chain_path else b""
    blocks = _PEM_CERT.findall(pem) + _PEM_CERT.findall(chain_pem)
    if not blocks:
        raise CertificateError(f"{path}: no PEM certificate in it")
    keys = _PEM_KEY.findall(key_pem)
    if not keys:
        raise CertificateError(f"{key_path or path}: no PEM private key in it")
    try:
        certs = [x509.load_pem_x509_certificate(block) for block in blocks]
        key = serialization.load_pem_private_key(keys[0], password=None)
    except (ValueError, TypeError) as e:
        raise CertificateError(f"{path}: unreadable: {e}") from None
    leaf = certs[0]
    if leaf.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CertificateError(f"{key_path or path}: the private key does not match the "
                               f"certificate {leaf.subject.rfc4514_string()}")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if leaf.not_valid_after_utc < now:
        raise CertificateError(f"{path}: the certificate {leaf.subject.rfc4514_string()} "
                               f"expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(n.lower() for n in san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return ServedCertificate(
        path=path,
        key=crypto.PKey.from_cryptography_key(key),
        leaf=crypto.X509.from_cryptography(leaf),
        chain=tuple(crypto.X509.from_cryptography(c) for c in certs[1:]),
        not_after=leaf.not_valid_after_utc,
        names=names,
        key_type=_key_type(key),
        staple=load_staple(path, leaf, certs[1:], now),
    )


@attrs.frozen
class ClientAuth:
    """``client_ca``: ask clients for a certificate signed by one of these
    CAs; ``required`` refuses the handshake without one."""

    path: str
    ca_certs: tuple = attrs.field(repr=False)
    required: bool = True

    @classmethod
    def load(cls, path: str, required: bool = True) -> "ClientAuth":
        try:
            with open(path, "rb") as f:
                pem = f.read()
        except OSError as e:
            raise CertificateError(f"{path}: cannot read: {e.strerror}") from None
        blocks = _PEM_CERT.findall(pem)
        if not blocks:
            raise CertificateError(f"{path}: no PEM certificate in it")
        try:
            certs = [crypto.X509.from_cryptography(x509.load_pem_x509_certificate(b))
                     for b in blocks]
        except ValueError as e:
            raise CertificateError(f"{path}: unreadable: {e}") from None
        return cls(path, tuple(certs), required)


def _leaf_der(cert) -> bytes:
    if isinstance(cert, crypto.X509):
        cert = cert.to_cryptography()
    return cert.public_bytes(serialization.Encoding.DER)


def _ocsp_callback(certs):
    """The OCSP stapling callback for a context serving ``certs``: staple
    the response of the certificate OpenSSL chose for this handshake (with
    an RSA and an ECDSA certificate, it depends on the client)."""
    staples = {_leaf_der(c.leaf): c.staple for c in certs if c.staple is not None}
    if not staples:
        return None

    def staple(connection, _data) -> bytes:
        chosen = connection.get_certificate(as_cryptography=True)
        found = staples.get(_leaf_der(chosen)) if chosen is not None else None
        return found.response() if found is not None else b""

    return staple


def _select_http11(connection, offered):
    """ALPN: ``http/1.1`` when offered; else no ALPN answer (the client
    may still speak HTTP/1.1)."""
    return b"http/1.1" if b"http/1.1" in offered else SSL.NO_OVERLAPPING_PROTOCOLS


def _on_server_name(select):
    def callback(connection):
        try:
            context = select(connection.get_servername())
        except Exception:
            log.failure("while choosing a certificate for SNI {name!r}",
                        name=connection.get_servername())
            app = connection.get_app_data()
            if app is not None:
                app.abortConnection()
            return
        if context is not None:
            connection.set_context(context)
    return callback


def make_context(certs, policy: TLSPolicy | None = None, client_auth: ClientAuth | None = None,
                 select=None) -> SSL.Context:
    """A server context serving ``certs`` (one, or several of different key
    types for the same names) under ``policy``.

    With one certificate its chain is the context's extra chain. With
    several, each is loaded with its own chain into its key type's slot
    (``use_certificate_chain_file``: OpenSSL keeps a chain per slot only when
    read that way) and OpenSSL picks one per handshake from the client's
    signature algorithms and cipher suites. ``select(server_name)`` → a
    context makes this one the SNI dispatcher.
    """
    policy = policy or TLSPolicy()
    context = policy.new_context()
    if len(certs) == 1:
        context.use_certificate(certs[0].leaf.to_cryptography())
        context.use_privatekey(certs[0].key.to_cryptography_key())
        for extra in certs[0].chain:
            context.add_extra_chain_cert(extra.to_cryptography())
    else:
        for served in certs:
            try:
                context.use_certificate_chain_file(served.path)
                context.use_privatekey(served.key.to_cryptography_key())
            except SSL.Error as e:
                raise CertificateError(f"{served.path}: cannot load: {e}") from None
    context.check_privatekey()
    if client_auth is not None:
        store = context.get_cert_store()
        for ca in client_auth.ca_certs:
            store.add_cert(ca)
        flags = SSL.VERIFY_PEER
        if client_auth.required:
            flags |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        context.set_verify(flags)
    # Needed for session resumption with client certificates; names this
    # context's sessions (a random value: a reload starts a new cache).
    context.set_session_id(binascii.hexlify(os.urandom(7)))
    context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    context.set_alpn_select_callback(_select_http11)
    if select is not None:
        context.set_tlsext_servername_callback(_on_server_name(select))
    staple = _ocsp_callback(certs)
    if staple is not None:
        context.set_ocsp_server_callback(staple)
    return policy.finish(context)


class ServerTLS:
    """A built context, handed to Twisted for every new connection."""

    def __init__(self, context: SSL.Context):
        self.context = context

    def getContext(self) -> SSL.Context:
        return self.context


def server_options(served: ServedCertificate, context_for_server_name=None,
                   client_auth: ClientAuth | None = None,
                   policy: TLSPolicy | None = None) -> ServerTLS:
    """Our TLS defaults (or ``policy``) around one certificate."""
    return ServerTLS(make_context((served,), policy, client_auth, context_for_server_name))


def peer_subject(transport) -> str | None:
    """The subject of the certificate a TLS client presented (RFC 4514,
    e.g. ``CN=alice,O=Example``), or None."""
    get = getattr(transport, "getPeerCertificate", None)
    cert = get() if get is not None else None
    if cert is None:
        return None
    subject = cert.to_cryptography().subject.rfc4514_string()
    # It goes into a header: no control character may reach the member raw.
    return "".join(c if c.isprintable() else f"\\{ord(c):02x}" for c in subject)


#: ``NAME.rsa.pem`` / ``NAME.ecdsa.pem``: the same NAME, one key type each
_KEY_TYPE_SUFFIXES = {".rsa.pem": "rsa", ".ecdsa.pem": "ecdsa"}


def _name_of(filename: str) -> tuple[str, str | None]:
    """``www.example.com.pem`` → (``www.example.com``, None);
    ``_.example.com.pem`` → ``*.example.com``; ``x.ecdsa.pem`` → (``x``,
    ``ecdsa``)."""
    lowered = filename.lower()
    kind = None
    for suffix, key_type in _KEY_TYPE_SUFFIXES.items():
        if lowered.endswith(suffix):
            lowered, kind = lowered[:-len(suffix)], key_type
            break
    else:
        lowered = lowered[:-len(".pem")]
    return ("*" + lowered[1:] if lowered.startswith("_.") else lowered), kind


def _group(certs: list[ServedCertificate]) -> tuple[ServedCertificate, ...]:
    """The certificates of one name: at most one per key type (OpenSSL has
    one slot per type), RSA first."""
    by_type: dict[str, ServedCertificate] = {}
    for served in certs:
        other = by_type.get(served.key_type)
        if other is not None:
            raise CertificateError(f"{served.path}: a second {served.key_type.upper()} "
                                   f"certificate for the same name as {other.path} "
                                   "(one RSA and one ECDSA certificate per name)")
        by_type[served.key_type] = served
    return tuple(sorted(by_type.values(), key=lambda c: c.key_type != "rsa"))


@implementer(IOpenSSLContextFactory)
class ReloadableOptions:
    """The TLS options a listening port keeps: a reload swaps what is
    inside, so certificates change without closing the socket (Twisted asks
    for the context at every new connection)."""

    def __init__(self, options):
        self.options = options

    def getContext(self):
        return self.options.getContext()

    def swap(self, options) -> None:
        self.options = options


class CertificateFolder:
    """``certificates = FOLDER``: the certificates for each SNI name.

    ``NAME.pem`` serves NAME; ``NAME.rsa.pem`` and ``NAME.ecdsa.pem`` serve
    it too, so a name may have an RSA and an ECDSA certificate (any file's
    key type is read from the key itself; the suffix must agree). Every
    context is built here, at load time, so that a certificate OpenSSL
    would refuse is a configuration error, not a failed handshake."""

    def __init__(self, folder: str, fallback: ServedCertificate | None = None,
                 client_auth: ClientAuth | None = None, policy: TLSPolicy | None = None):
        self.folder = folder
        self.client_auth = client_auth
        self.policy = policy or TLSPolicy()
        try:
            files = sorted(f for f in os.listdir(folder) if f.lower().endswith(".pem"))
        except OSError as e:
            raise CertificateError(f"{folder}: cannot list: {e.strerror}") from None
        found: dict[str, list[ServedCertificate]] = {}
        for filename in files:
            name, kind = _name_of(filename)
            served = load_certificate(os.path.join(folder, filename))
            if kind is not None and served.key_type != kind:
                raise CertificateError(f"{served.path}: holds an {served.key_type.upper()} key, "
                                       f"not {kind.upper()} as its name says")
            found.setdefault(name, []).append(served)
        groups = {name: _group(certs) for name, certs in found.items()}
        default = groups.pop("default", None)
        self.by_name: dict[str, tuple[ServedCertificate, ...]] = groups
        if default is None and fallback is not None:
            default = (fallback,)
        if default is None:
            if not self.by_name:
                raise CertificateError(f"{folder}: no NAME.pem files in it")
            # No default.pem: clients without SNI get the first name's.
            default = self.by_name[min(self.by_name)]
        self.default = default
        self._contexts = {certs: self._make(certs) for certs in {default, *groups.values()}}

    def _make(self, certs, select=None) -> SSL.Context:
        return make_context(certs, self.policy, self.client_auth, select)

    def certificates_for(self, server_name: str | None) -> tuple[ServedCertificate, ...]:
        """Exact name, then the wildcard one label up, then the default."""
        if server_name:
            name = server_name.lower().rstrip(".")
            certs = self.by_name.get(name)
            if certs is None and "." in name:
                certs = self.by_name.get("*." + name.split(".", 1)[1])
            if certs is not None:
                return certs
        return self.default

    def certificate_for(self, server_name: str | None) -> ServedCertificate:
        """The first (RSA when there is one) certificate for a name."""
        return self.certificates_for(server_name)[0]

    def _context_for(self, server_name: bytes | None):
        name = server_name.decode("idna") if server_name else None
        return self._contexts[self.certificates_for(name)]

    def options(self) -> ServerTLS:
        """The context a listener starts every handshake with: the default
        certificates, switching to a name's own once SNI is read."""
        return ServerTLS(self._make(self.default, self._context_for))
