"""``type = smtp`` (F7c): the member greets with 220, answers ``EHLO`` with
250 and is told ``QUIT``; with ``starttls = yes`` it must also switch to TLS.

The dialogue (RFC 5321 §3, RFC 3207): ``220`` greeting, ``EHLO name`` →
``250``; with ``starttls`` the 250 reply must list ``STARTTLS``, then
``STARTTLS`` → ``220``, the TLS handshake, ``EHLO name`` again → ``250``;
then ``QUIT``. No mail is sent. ``expect`` is searched in the greeting.

The member's certificate is not verified: the check proves the server can
do TLS, not that clients trust it (members are usually addressed by IP).
"""

from __future__ import annotations

from twisted.internet.ssl import CertificateOptions
from zope.interface import implementer

from lbframe import hookimpl
from lbframe.config.values import parse_bool, parse_hostname
from lbframe.errors import OptionError
from lbframe.interfaces import IMonitor
from lbframe.monitoring import BaseMonitor
from lbframe.monitors._dialogue import Failed, converse, match_greeting

#: the default EHLO name: says who is knocking in the server's log (F7g);
#: ``.invalid`` (RFC 2606) can never be somebody's real name
DEFAULT_EHLO = "lbframe-check.invalid"


def _ehlo_name(text: str) -> str:
    """A host name, or an IP written as an address literal (RFC 5321 §4.1.3)."""
    name = parse_hostname(text)
    if ":" in name:
        return f"[IPv6:{name}]"
    if name.replace(".", "").isdigit():
        return f"[{name}]"
    return name


def _offers(ehlo, keyword: str) -> bool:
    """Whether an EHLO reply lists ``keyword`` (lines after the first)."""
    return any(line[4:].upper().split()[:1] == [keyword] for line in ehlo.lines[1:])


@implementer(IMonitor)
class SMTPMonitor(BaseMonitor):
    def __init__(self, spec, options, reactor):
        self.starttls = False
        self.ehlo = DEFAULT_EHLO
        for key, value in options.items():
            try:
                if key == "starttls":
                    self.starttls = parse_bool(value)
                elif key == "ehlo":
                    self.ehlo = _ehlo_name(value)
                else:
                    raise OptionError(key, f"unknown key {key!r} for monitor type smtp")
            except ValueError as e:
                raise OptionError(key, str(e)) from None
        self.spec = spec
        self.reactor = reactor

    def check(self, member):
        return converse(self.reactor, self.spec, member, "SMTP", self.talk)

    async def talk(self, client) -> None:
        greeting = await client.expect(220)
        match_greeting(self.spec, greeting.text)
        ehlo = await client.command(f"EHLO {self.ehlo}", 250)
        if self.starttls:
            if not _offers(ehlo, "STARTTLS"):
                raise Failed("SMTP: STARTTLS not offered")
            await client.command("STARTTLS", 220)
            client.start_tls(CertificateOptions())
            await client.command(f"EHLO {self.ehlo}", 250)
        await client.quit()


@hookimpl
def lbframe_register_monitors(registry):
    registry.add("smtp", SMTPMonitor)
