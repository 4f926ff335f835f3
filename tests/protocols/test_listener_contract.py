"""The listener contract (lbframe.testing.ListenerContract) against the
built-in listeners: tcp, http and ssl (passed-through TLS to real TLS members)."""

from __future__ import annotations

from twisted.internet import ssl
from twisted.internet.endpoints import wrapClientTLS
from twisted.trial.unittest import TestCase

from lbframe.protocols.http import HTTPProtocol
from lbframe.protocols.ssl import SSLProtocol
from lbframe.protocols.tcp import TCPProtocol
from lbframe.testing import ListenerContract
from tests.tlskit import cert_pem, key_pem, make_ca


class TCPListenerContract(ListenerContract, TestCase):
    protocol = "tcp"
    factory = TCPProtocol


class HTTPListenerContract(ListenerContract, TestCase):
    protocol = "http"
    factory = HTTPProtocol


class SSLListenerContract(ListenerContract, TestCase):
    """TLS passes through: members are TLS servers, clients speak TLS."""

    protocol = "ssl"
    factory = SSLProtocol

    _member_tls = None

    def contract_member(self, factory):
        from twisted.internet import reactor

        cls = type(self)
        if cls._member_tls is None:
            key, cert = make_ca("member.test")
            cls._member_tls = ssl.PrivateCertificate.loadPEM(
                cert_pem(cert) + key_pem(key)).options()
        return reactor.listenSSL(0, factory, cls._member_tls, interface="127.0.0.1")

    def contract_client_endpoint(self, port: int):
        # Which member answered is in the body; the certificate is not checked.
        return wrapClientTLS(ssl.CertificateOptions(),
                             super().contract_client_endpoint(port))
