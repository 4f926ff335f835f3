"""TLS toward members (https monitors, ``tls = yes`` pools): connection creators, the CA bundle, and words
for handshake failures.

Verification is Twisted's ``optionsForClientTLS`` (service-identity checks
the name; SNI is the name checked), never a hand-made hostname match. Two
additions, each for a reason:

- :func:`verify_error` reads why OpenSSL refused the chain: OpenSSL's error
  only says ``certificate verify failed``, and an operator needs to tell an
  expired certificate from an untrusted CA. It only reads; the checks stay
  Twisted's.
- :class:`NoVerify` is ``tls_verify = no``: no checks, but SNI is still sent
  so that a member hosting several names answers with the right one.

Toward members (``tls = yes`` pools) lbframe offers what it accepts from
clients (:mod:`lbframe.tls.policy`: TLS 1.2 or later, forward-secret AEAD
suites for TLS 1.2), not Twisted's client defaults (TLS 1.0 and CBC and
static-RSA suites); ``tls_ciphers`` and ``tls_min_version`` on the pool
change it for members that need something else.
"""

from __future__ import annotations

import ipaddress
import os
import re

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from lbframe.errors import OptionError
from lbframe.tls.policy import DEFAULT_CIPHERS


def member_options(ciphers: str | None = None, min_version: str | None = None) -> dict:
    """Twisted CertificateOptions arguments for our connections to members."""
    version = {"tlsv1.3": ssl.TLSVersion.TLSv1_3}.get((min_version or "").lower(),
                                                        ssl.TLSVersion.TLSv1_2)
    return dict(
        acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(
            ciphers or DEFAULT_CIPHERS),
        raiseMinimumTo=version,
    )


@implementer(IOpenSSLClientConnectionCreator)
class NoVerify:
    """TLS without checking the certificate; SNI still sent for host names."""

    def __init__(self, name: str, options: dict | None = None):
        self.context = ssl.CertificateOptions(verify=False, **(options or {})).getContext()
        try:
            ipaddress.ip_address(name)
            self.sni = None  # SNI carries host names only (RFC 6066)
        except ValueError:
            self.sni = name.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol):
        connection = SSL.Connection(self.context, None)
        connection.set_app_data(tlsProtocol)
        if self.sni is not None:
            connection.set_tlsext_host_name(self.sni)
        connection.set_connect_state()
        return connection



def load_ca(path: str, base_dir: str | None):
    """``tls_ca``: a PEM bundle (relative paths are from the site file's
    folder) → a Twisted trust root; :class:`OptionError` when unusable."""
    path = os.path.expanduser(path)
    if base_dir is not None:
        path = os.path.join(base_dir, path)
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise OptionError("tls_ca", f"cannot read CA bundle {path!r}: {e.strerror}") from None
    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)
    if not blocks:
        raise OptionError("tls_ca", f"no PEM certificate in {path!r}")
    try:
        certs = [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception as e:
        raise OptionError("tls_ca", f"bad certificate in {path!r}: {e}") from None
    return ssl.trustRootFromCertificates(certs)


def describe_tls_error(reason, verify_error: str | None) -> str | None:
    """``TLS: ...`` for a handshake or verification failure, else None."""
    if reason.check(VerificationError):
        names = []
        for mismatch in reason.value.errors:
            wanted = getattr(mismatch, "mismatched_id", None)
            name = getattr(wanted, "hostname", None) or getattr(wanted, "ip", None) or mismatch
            names.append(name.decode("ascii", "replace") if isinstance(name, bytes) else str(name))
        return f"TLS: certificate does not match {', '.join(names)}"
    if reason.check(SSL.Error):
        details = [d[2] for d in (reason.value.args[0] if reason.value.args else [])
                   if isinstance(d, tuple) and len(d) == 3 and d[2]]
        text = "; ".join(details) or reason.getErrorMessage()
        if verify_error is not None:
            text += f" ({verify_error})"
        return f"TLS: {text}"
    return None


def verify_error(connection) -> str | None:
    """Why OpenSSL refused ``connection``'s certificate chain, e.g.
    ``certificate has expired``; None when unknown.

    pyOpenSSL has no public call for this, so it is read through its
    bindings, best effort: on any surprise the reason just lacks the detail.
    """
    try:
        from OpenSSL._util import ffi, lib
        errno = lib.SSL_get_verify_result(connection._ssl)
        if errno == 0:  # X509_V_OK
            return None
        return ffi.string(lib.X509_verify_cert_error_string(errno)).decode("ascii", "replace")
    except Exception:
        return None


class PoolTLS:
    """``tls = yes`` on a pool: how the data path connects to its members
    (re-encryption). Verification is the same as the https monitor's:
    ``optionsForClientTLS`` against ``tls_ca`` (else the system's CAs),
    service-identity checking ``tls_server_name`` (else the member's host);
    ``tls_verify = no`` checks nothing but still sends SNI."""

    def __init__(self, trust_root, verify: bool, server_name: str | None,
                 options: dict | None = None):
        self.trust_root = trust_root
        self.verify = verify
        self.server_name = server_name
        self.options = options if options is not None else member_options()
        self._creators: dict[str, object] = {}

    @classmethod
    def from_pool(cls, pool) -> "PoolTLS":
        """From a :class:`lbframe.config.model.Pool`; OptionError on a bad ``tls_ca``."""
        trust = load_ca(pool.tls_ca, None) if pool.tls_ca else None
        options = member_options(getattr(pool, "tls_ciphers", None),
                                 getattr(pool, "tls_min_version", None))
        return cls(trust, pool.tls_verify, pool.tls_server_name, options)

    def creator(self, host: str):
        """The connection creator for a member at ``host``."""
        creator = self._creators.get(host)
        if creator is None:
            name = self.server_name or host
            if self.verify:
                creator = ssl.optionsForClientTLS(
                    name, trustRoot=self.trust_root or ssl.platformTrust(),
                    extraCertificateOptions=self.options)
            else:
                creator = NoVerify(name, self.options)
            self._creators[host] = creator
        return creator
