"""Certificates made in the tests (cryptography), written as PEM files."""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

_DAY = datetime.timedelta(days=1)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def make_key(kind: str = "ec"):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(name: str = "lbframe test CA"):
    key = make_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - _DAY).not_valid_after(_now() + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_cert(ca, *names: str, kind: str = "ec", days: int = 30, expired: bool = False):
    """A server certificate for ``names`` (DNS names or IP literals) signed by ``ca``."""
    import ipaddress

    ca_key, ca_cert = ca
    key = make_key(kind)
    alt = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    start = _now() - (10 * _DAY if expired else _DAY)
    end = _now() - _DAY if expired else _now() + days * _DAY
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write(path: str, *parts: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"".join(parts))
    return path


def write_bundle(path: str, key, cert, ca) -> str:
    """Key, leaf and CA certificate in one PEM (a ``certificates`` folder file)."""
    return write(path, key_pem(key), cert_pem(cert), cert_pem(ca[1]))


def make_ocsp_response(ca, cert, *, status: str = "good", this_update=None,
                       next_update=None, serial: int | None = None) -> bytes:
    """A DER OCSP response about ``cert`` signed by ``ca`` (the CA answers
    for itself), as ``openssl ocsp -respout`` would save it. ``serial``
    makes it about another certificate."""
    from cryptography.x509 import ocsp

    ca_key, ca_cert = ca
    this_update = this_update or _now() - _DAY
    next_update = next_update if next_update is not None else _now() + 7 * _DAY
    if serial is not None:
        cert = (x509.CertificateBuilder().subject_name(cert.subject)
                .issuer_name(ca_cert.subject).public_key(cert.public_key())
                .serial_number(serial).not_valid_before(cert.not_valid_before_utc)
                .not_valid_after(cert.not_valid_after_utc).sign(ca_key, hashes.SHA256()))
    cert_status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
                   "unknown": ocsp.OCSPCertStatus.UNKNOWN}[status]
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert, issuer=ca_cert, algorithm=hashes.SHA1(), cert_status=cert_status,
        this_update=this_update, next_update=next_update,
        revocation_time=this_update if status == "revoked" else None,
        revocation_reason=None).responder_id(ocsp.OCSPResponderEncoding.HASH, ca_cert)
    response = builder.sign(ca_key, hashes.SHA256())
    return response.public_bytes(serialization.Encoding.DER)
