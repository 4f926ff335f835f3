"""The service that runs a VIP-owning redundancy driver (vrrp, heartbeat).

Both drivers need the same three moments: before any listener binds, let
sockets bind the VIPs this node does not own yet (``IP_FREEBIND``, see
:func:`lbframe.protocols.endpoints.allow_nonlocal`); after start, run the
driver; on stop, stop it (which hands the VIPs over).
"""

from __future__ import annotations

from twisted.application import service

from lbframe.protocols import endpoints


class DriverService(service.Service):
    """``driver`` needs ``vip_hosts``, ``start()`` and ``stop()``."""

    def __init__(self, driver):
        self.driver = driver
        self.setName("redundancy")

    def privilegedStartService(self):
        # before any listener binds (twistd binds them here, before --uid)
        endpoints.allow_nonlocal(self.driver, self.driver.vip_hosts)
        super().privilegedStartService()

    def startService(self):
        super().startService()
        self.driver.start()

    def stopService(self):
        super().stopService()
        self.driver.stop()
