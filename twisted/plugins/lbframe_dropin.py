# The twistd dropin: one statement, importing nothing of lbframe, so that a
# broken import can never make the `lbframe` subcommand vanish.
from twisted.application.service import ServiceMaker

lbframe = ServiceMaker(
    "lbframe", "lbframe.tap", "lbframe load balancer (run a site.ini)", "lbframe")
