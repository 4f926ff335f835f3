"""OCSP stapling from a response file (HAProxy's convention).

Beside a certificate file ``NAME.pem`` an operator (or a cron job running
``openssl ocsp ... -respout NAME.pem.ocsp``) puts the CA's DER-encoded OCSP
response for that certificate in ``NAME.pem.ocsp``. lbframe reads it when
the site loads and at every reload, and staples it to handshakes of clients
that ask (``status_request``), so they need not ask the CA themselves.

A response is stapled only while it is worth stapling:

- it parses, its status is ``successful``, and one of its answers is for
  this certificate (serial number, issuer name hash and, when the issuer is
  in the chain, issuer key hash);
- that answer is ``good`` or ``revoked`` (a revoked certificate's clients
  should learn it); ``unknown`` is not stapled;
- it is current: ``thisUpdate`` not in the future (5 minutes' slack for
  clocks), ``nextUpdate`` (when given) not passed. This is checked at every
  handshake, so a response that expires while lbframe runs stops being
  stapled.

Anything else is not a configuration error — an OCSP file that a cron job
failed to refresh must not stop a reload that renews certificates — but a
warning, logged once per file and problem. The responder's signature is
not verified here (clients do; a response from the CA's responder via
``openssl ocsp`` is checked by that tool).
"""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.x509 import ocsp
from twisted.logger import Logger

log = Logger(namespace="lbframe.tls")

#: clock skew tolerated for ``thisUpdate``
SKEW = datetime.timedelta(minutes=5)
#: a response file bigger than this is not an OCSP response
MAX_SIZE = 64 * 1024


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Staple:
    """One certificate's OCSP response, and whether to staple it now."""

    def __init__(self, path: str, der: bytes, this_update: datetime.datetime,
                 next_update: datetime.datetime | None, status: str):
        self.path = path
        self.der = der
        self.this_update = this_update
        self.next_update = next_update
        self.status = status
        self._warned = False

    def response(self, now: datetime.datetime | None = None) -> bytes:
        """The DER to staple, or ``b""`` once the response is out of date
        (logged the first time)."""
        now = now or _now()
        if self.next_update is not None and now > self.next_update:
            if not self._warned:
                self._warned = True
                log.warn("{path}: OCSP response expired on {when}; no longer stapled "
                         "(refresh the file and reload)", path=self.path,
                         when=f"{self.next_update:%Y-%m-%d %H:%M} UTC")
            return b""
        if now + SKEW < self.this_update:
            return b""
        return self.der


def _warn(path: str, problem: str) -> None:
    log.warn("{path}: OCSP response not stapled: {problem}", path=path, problem=problem)


def _matches(single, leaf: x509.Certificate, issuer: x509.Certificate | None) -> bool:
    """Is this single response about ``leaf``? Compared as RFC 6960's CertID:
    serial, issuer name hash, and issuer key hash when we know the issuer."""
    if single.serial_number != leaf.serial_number:
        return False
    algorithm = single.hash_algorithm
    if issuer is not None:
        request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, algorithm).build()
        return (request.issuer_name_hash == single.issuer_name_hash
                and request.issuer_key_hash == single.issuer_key_hash)
    from cryptography.hazmat.primitives import hashes
    digest = hashes.Hash(algorithm)
    digest.update(leaf.issuer.public_bytes())
    return digest.finalize() == single.issuer_name_hash


def load_staple(cert_path: str, leaf: x509.Certificate, chain: list[x509.Certificate],
                now: datetime.datetime | None = None) -> Staple | None:
    """The staple for the certificate in ``cert_path``, from
    ``cert_path + ".ocsp"``; None (with a warning, unless there is no file)
    when there is nothing worth stapling."""
    path = cert_path + ".ocsp"
    if not os.path.exists(path):
        return None
    try:
        if os.path.getsize(path) > MAX_SIZE:
            _warn(path, f"bigger than {MAX_SIZE} bytes")
            return None
        with open(path, "rb") as f:
            der = f.read()
    except OSError as e:
        _warn(path, f"cannot read: {e.strerror}")
        return None
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as e:
        _warn(path, f"not a DER OCSP response ({e})")
        return None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        _warn(path, f"the responder answered {response.response_status.name.lower()}")
        return None
    issuer = next((c for c in chain if c.subject == leaf.issuer), None)
    single = next((s for s in response.responses if _matches(s, leaf, issuer)), None)
    if single is None:
        _warn(path, f"it is about another certificate, not serial {leaf.serial_number:x} "
                    f"({leaf.subject.rfc4514_string()})")
        return None
    status = single.certificate_status
    if status == ocsp.OCSPCertStatus.UNKNOWN:
        _warn(path, "the responder does not know the certificate (status unknown)")
        return None
    this_update = single.this_update_utc
    next_update = single.next_update_utc
    now = now or _now()
    if next_update is not None and now > next_update:
        _warn(path, f"expired on {next_update:%Y-%m-%d %H:%M} UTC")
        return None
    if this_update > now + SKEW:
        _warn(path, f"not valid before {this_update:%Y-%m-%d %H:%M} UTC (check the clock)")
        return None
    if status == ocsp.OCSPCertStatus.REVOKED:
        log.warn("{path}: the CA says the certificate {subject} is REVOKED; clients that "
                 "ask are told so", path=path, subject=leaf.subject.rfc4514_string())
    return Staple(path, der, this_update, next_update, status.name.lower())
