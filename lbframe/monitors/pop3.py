"""``type = pop3`` (F7c): the member greets with ``+OK``, optionally lets the
monitor's account log in, and is told ``QUIT``.

The dialogue (RFC 1939): ``+OK`` greeting, then with ``user`` set ``USER`` →
``+OK``, ``PASS`` → ``+OK``, then ``QUIT``. A ``-ERR`` anywhere fails with the
server's line, e.g. ``POP3: -ERR Authentication failed``. ``expect`` is
searched in the greeting. Logging in locks the account's maildrop for the
length of the check (RFC 1939 §8), which is one more reason to use an
account of its own.
"""

from __future__ import annotations

from zope.interface import implementer

from lbframe import hookimpl
from lbframe.errors import OptionError, reject_unknown_options
from lbframe.interfaces import IMonitor
from lbframe.monitoring import BaseMonitor
from lbframe.monitors._dialogue import Failed, check_line_safe, clip, converse, match_greeting


async def status(client) -> str:
    """One POP3 status line; ``-ERR`` or anything else but ``+OK`` fails."""
    line = await client.read_line()
    if line.startswith("+OK"):
        return line
    if line.startswith("-ERR"):
        raise Failed(f"POP3: {clip(line)}")
    raise Failed(f"POP3: unexpected reply {clip(line)!r}")


@implementer(IMonitor)
class POP3Monitor(BaseMonitor):
    def __init__(self, spec, options, reactor):
        reject_unknown_options(options, "monitor type pop3")
        if spec.user is not None and spec.password is None:
            raise OptionError("user", "needs password (a POP3 login sends USER and PASS)")
        check_line_safe(spec)
        self.spec = spec
        self.reactor = reactor

    def check(self, member):
        return converse(self.reactor, self.spec, member, "POP3", self.talk)

    async def talk(self, client) -> None:
        greeting = await status(client)
        match_greeting(self.spec, greeting)
        if self.spec.user is not None:
            client.send(f"USER {self.spec.user}")
            await status(client)
            client.send(f"PASS {self.spec.password}")
            await status(client)
        await client.quit()


@hookimpl
def lbframe_register_monitors(registry):
    registry.add("pop3", POP3Monitor)
