"""``type = tcp`` (F7b): the member accepts a TCP connection, which is then closed."""

from __future__ import annotations

from twisted.internet import protocol
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from zope.interface import implementer

from lbframe import hookimpl
from lbframe.errors import describe_connect_error, reject_unknown_options
from lbframe.interfaces import IMonitor
from lbframe.monitoring import BaseMonitor, CheckResult, check_port


def client_endpoint(reactor, host: str, port: int, timeout: float):
    """A client endpoint for a literal address or a host name."""
    if ":" in host:
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    if host.replace(".", "").isdigit():
        return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    return HostnameEndpoint(reactor, host.encode("idna"), port, timeout=timeout)


@implementer(IMonitor)
class TCPMonitor(BaseMonitor):
    def __init__(self, spec, options, reactor):
        reject_unknown_options(options, "monitor type tcp")
        self.spec = spec
        self.reactor = reactor
        # One quiet factory: a noisy one logs two lines per check.
        self._factory = protocol.Factory.forProtocol(protocol.Protocol)
        self._factory.noisy = False

    def check(self, member):
        endpoint = client_endpoint(self.reactor, member.address.host,
                                   check_port(self.spec, member), self.spec.timeout)
        d = endpoint.connect(self._factory)

        def connected(proto):
            proto.transport.loseConnection()
            return CheckResult(True)

        def failed(failure):
            return CheckResult(False, describe_connect_error(failure))

        return d.addCallbacks(connected, failed)


@hookimpl
def lbframe_register_monitors(registry):
    registry.add("tcp", TCPMonitor)
