"""Terminating TLS: certificates, SNI, and the defaults we offer clients.

Two ways to give a virtual server certificates:

- an ``ssl:`` endpoint in ``listen`` (``privateKey=``, ``certKey=``,
  ``extraCertChain=``): one certificate;
- ``certificates = FOLDER``: one PEM file per host name, ``NAME.pem`` holding
  the private key and the chain (leaf first); ``_.example.com.pem`` serves
  ``*.example.com``; ``default.pem`` answers clients that send no name or a
  name no file matches (else the ``ssl:`` endpoint's certificate does).

Every file is read and checked when the site is loaded — by ``lbframe
check`` too — so a key that does not match its certificate, an expired
certificate or an unreadable file is an error naming the file, not a
handshake failure at 3 a.m.

Defaults: TLS 1.2 and 1.3 only, Twisted's cipher list (forward-secret AEAD
first) with the server's preference, ALPN ``http/1.1``, session resumption
by session id and by ticket.
"""

from __future__ import annotations

import datetime
import os
import re

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_PEM_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----.+?-----END (?:[A-Z]+ )?PRIVATE KEY-----",
                      re.S)


class CertificateError(ValueError):
    """A certificate file we cannot serve; the message names the file."""


@attrs.frozen
class ServedCertificate:
    """A key and its chain, checked."""

    path: str
    key: crypto.PKey = attrs.field(repr=False)
    leaf: crypto.X509 = attrs.field(repr=False)
    chain: tuple = attrs.field(repr=False)
    not_after: datetime.datetime
    names: tuple  # DNS names the certificate itself covers


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


def server_options(served: ServedCertificate, context_for_server_name=None,
                   client_auth: ClientAuth | None = None) -> ssl.CertificateOptions:
    """Our TLS defaults around one certificate."""
    verify = {}
    if client_auth is not None:
        verify = dict(verify=True, caCerts=list(client_auth.ca_certs),
                      requireCertificate=client_auth.required)
    return ssl.CertificateOptions(
        privateKey=served.key,
        certificate=served.leaf,
        extraCertChain=list(served.chain),
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        acceptableProtocols=[b"http/1.1"],
        enableSessions=True,
        enableSessionTickets=True,
        contextForServerName=context_for_server_name,
        **verify,
    )


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


def _name_of(filename: str) -> str:
    """``www.example.com.pem`` → ``www.example.com``; ``_.example.com.pem``
    → ``*.example.com``."""
    name = filename[:-len(".pem")].lower()
    return "*" + name[1:] if name.startswith("_.") else name


@implementer(IOpenSSLContextFactory)
class ReloadableOptions:
    """The TLS options a listening port keeps: a reload swaps what is
    inside, so certificates change without closing the socket (Twisted asks
    for the context at every new connection)."""

    def __init__(self, options: ssl.CertificateOptions):
        self.options = options

    def getContext(self):
        return self.options.getContext()

    def swap(self, options: ssl.CertificateOptions) -> None:
        self.options = options


class CertificateFolder:
    """``certificates = FOLDER``: the certificate for each SNI name."""

    def __init__(self, folder: str, fallback: ServedCertificate | None = None,
                 client_auth: ClientAuth | None = None):
        self.folder = folder
        self.client_auth = client_auth
        self.by_name: dict[str, ServedCertificate] = {}
        self.default = None
        try:
            files = sorted(f for f in os.listdir(folder) if f.endswith(".pem"))
        except OSError as e:
            raise CertificateError(f"{folder}: cannot list: {e.strerror}") from None
        for filename in files:
            served = load_certificate(os.path.join(folder, filename))
            if filename == "default.pem":
                self.default = served
            else:
                self.by_name[_name_of(filename)] = served
        if self.default is None:
            self.default = fallback
        if self.default is None:
            if not self.by_name:
                raise CertificateError(f"{folder}: no NAME.pem files in it")
            # No default.pem: clients without SNI get the first name's.
            self.default = self.by_name[min(self.by_name)]
        self._contexts: dict[str, object] = {}

    def certificate_for(self, server_name: str | None) -> ServedCertificate:
        """Exact name, then the wildcard one label up, then the default."""
        if server_name:
            name = server_name.lower().rstrip(".")
            served = self.by_name.get(name)
            if served is None and "." in name:
                served = self.by_name.get("*." + name.split(".", 1)[1])
            if served is not None:
                return served
        return self.default

    def _context_for(self, server_name: bytes | None):
        name = server_name.decode("idna") if server_name else None
        served = self.certificate_for(name)
        context = self._contexts.get(served.path)
        if context is None:
            context = self._contexts[served.path] = server_options(
                served, client_auth=self.client_auth).getContext()
        return context

    def options(self) -> ssl.CertificateOptions:
        return server_options(self.default, self._context_for, self.client_auth)
