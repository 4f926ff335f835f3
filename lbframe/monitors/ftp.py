"""``type = ftp`` (F7c): the member greets with 220, optionally lets the
monitor's account log in, and is told ``QUIT``.

The dialogue (RFC 959 §5.4): ``220`` greeting (a ``120`` "ready in n
minutes" may come first), then with ``user`` set ``USER`` → ``230``, or
``331`` → ``PASS`` → ``230``/``202``, then ``QUIT``. ``expect`` is searched
in the greeting.
"""

from __future__ import annotations

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.errors import OptionError, reject_unknown_options
from lbframe.interfaces import IMonitor
from lbframe.monitoring import BaseMonitor
from lbframe.monitors._dialogue import check_line_safe, converse, match_greeting


@implementer(IMonitor)
class FTPMonitor(BaseMonitor):
    def __init__(self, spec, options, reactor):
        reject_unknown_options(options, "monitor type ftp")
        if spec.user is not None and spec.password is None:
            raise OptionError("user", "needs password (an FTP login always sends one)")
        check_line_safe(spec)
        self.spec = spec
        self.reactor = reactor

    def check(self, member):
        return converse(self.reactor, self.spec, member, "FTP", self.talk)

    async def talk(self, client) -> None:
        greeting = await client.expect(220, 120)
        if greeting.code == 120:
            greeting = await client.expect(220)
        match_greeting(self.spec, greeting.text)
        if self.spec.user is not None:
            reply = await client.command(f"USER {self.spec.user}", 230, 331)
            if reply.code == 331:
                await client.command(f"PASS {self.spec.password}", 230, 202)
        await client.quit()


@hookimpl
def lbframe_register_monitors(registry):
    registry.add("ftp", FTPMonitor)
