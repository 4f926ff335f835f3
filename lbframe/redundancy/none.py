"""``driver = none``: a single node that always serves (state ``standalone``)."""

from twisted.application import service
from zope.interface import implementer

from lbframe import hookimpl
from lbframe.errors import reject_unknown_options
from lbframe.interfaces import IRedundancyDriver


@implementer(IRedundancyDriver)
class Standalone:
    state = "standalone"

    def __init__(self, redundancy=None, options=None, reactor=None):
        reject_unknown_options(options, "redundancy driver none")
        self.service = service.Service()
        self.service.setName("redundancy")


@hookimpl
def lbframe_register_redundancy_drivers(registry):
    registry.add("none", Standalone)
