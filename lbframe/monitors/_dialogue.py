"""The line dialogue shared by the ftp, smtp and pop3 monitors (F7c).

Each of those checks connects, reads a greeting, sends a few commands, each
answered by a reply, and says ``QUIT``. This module holds what they share, so
each type module is only its script:

- :func:`converse` connects and runs a script against a :class:`LineClient`;
  a problem the script raises as :class:`Failed` becomes
  ``CheckResult(False, reason)``; a failed connect is described by
  :func:`lbframe.monitors.tcp.describe_connect_error`.
- :meth:`LineClient.reply` reads a numbered reply, multi-line ones included
  (FTP, RFC 959 §4.2; SMTP, RFC 5321 §4.2.1); :meth:`LineClient.read_line`
  reads one line (POP3).
- Lines are bounded (:data:`MAX_LINE` bytes, :data:`MAX_REPLY_LINES` lines
  per reply), so a member that never sends a newline cannot make a check
  buffer without end.
- The runner enforces ``timeout`` by cancelling the check: the connection is
  then aborted, and the check's Deferred fires only once it is gone, so a
  cancelled check leaves nothing behind.
"""

from __future__ import annotations

import re
from collections import deque

import attrs
from OpenSSL import SSL
from twisted.internet import defer, error, protocol
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from lbframe.errors import OptionError
from lbframe.monitoring import CheckResult, check_port
from lbframe.monitors.tcp import client_endpoint, describe_connect_error

#: longest reply line accepted, in bytes (RFC 5321 allows 512, banners run longer)
MAX_LINE = 4096
#: most lines accepted in one multi-line reply
MAX_REPLY_LINES = 1000
#: a server's reply quoted in a reason is cut to this many characters
REASON_TEXT = 200

CLOSED = "connection closed during the dialogue"


class Failed(Exception):
    """The dialogue went wrong; ``reason`` is what the operator reads."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def clip(text: str) -> str:
    """``text`` cut to :data:`REASON_TEXT` characters for a reason."""
    return text if len(text) <= REASON_TEXT else text[:REASON_TEXT - 1] + "…"


@attrs.frozen
class Reply:
    """A numbered reply: its code and its lines as received (codes included)."""

    code: int
    lines: tuple[str, ...]

    @property
    def last(self) -> str:
        """The final line, which always starts with the code."""
        return self.lines[-1]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


_FIRST = re.compile(r"([0-9]{3})([ -]|$)")


class LineClient(LineReceiver):
    """The client side of a command/reply dialogue over one connection.

    Lines end at LF (a CR before it is dropped) so a sloppy server's bare
    newlines still work; commands are sent with CRLF.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    #: names the protocol in reasons, e.g. ``"SMTP"``
    label = "server"

    def __init__(self):
        self._lines: deque[str] = deque()
        self._waiting: defer.Deferred | None = None
        self._end: Failed | None = None
        self._lost = False
        self._closed_waiters: list[defer.Deferred] = []
        self._tls = False

    # Receiving.

    def lineReceived(self, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        if self._waiting is not None:
            d, self._waiting = self._waiting, None
            d.callback(text)
        else:
            self._lines.append(text)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._finish(Failed(f"{self.label}: reply line longer than {MAX_LINE} bytes"))
        self.abort()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._lost = True
        if self._tls and reason.check(SSL.Error):
            self._finish(Failed(f"TLS handshake failed: {_ssl_words(reason.value)}"))
        else:
            self._finish(Failed(CLOSED))
        waiters, self._closed_waiters = self._closed_waiters, []
        for d in waiters:
            if not d.called:
                d.callback(None)

    def _finish(self, problem: Failed) -> None:
        """No more lines will come: a reader waiting (or coming) gets ``problem``."""
        if self._end is None:
            self._end = problem
        if self._waiting is not None:
            d, self._waiting = self._waiting, None
            d.errback(self._end)

    def read_line(self) -> defer.Deferred:
        """The next line (without its line end); fails with :class:`Failed`
        when the connection ends first. Cancelling it aborts the connection."""
        if self._lines:
            return defer.succeed(self._lines.popleft())
        if self._end is not None:
            return defer.fail(self._end)

        def cancel(d):
            self._waiting = None
            self.abort()

        self._waiting = defer.Deferred(cancel)
        return self._waiting

    async def reply(self) -> Reply:
        """One numbered reply. A multi-line reply starts ``ddd-`` and ends at
        the first line that starts ``ddd `` (RFC 959 §4.2: the lines between
        may hold any text)."""
        first = await self.read_line()
        match = _FIRST.match(first)
        if match is None:
            raise Failed(f"{self.label}: unexpected reply {clip(first)!r}")
        code, more = match.group(1), match.group(2) == "-"
        lines = [first]
        while more:
            if len(lines) >= MAX_REPLY_LINES:
                raise Failed(f"{self.label}: reply longer than {MAX_REPLY_LINES} lines")
            line = await self.read_line()
            lines.append(line)
            more = not (line == code or line.startswith(code + " "))
        return Reply(int(code), tuple(lines))

    async def expect(self, *codes: int) -> Reply:
        """A reply whose code is one of ``codes``; any other fails with the
        server's own reply line, e.g. ``SMTP: 421 service not available``."""
        reply = await self.reply()
        if reply.code not in codes:
            raise Failed(f"{self.label}: {clip(reply.last)}")
        return reply

    # Sending.

    def send(self, command: str) -> None:
        self.transport.write(command.encode("utf-8") + b"\r\n")

    async def command(self, command: str, *codes: int) -> Reply:
        """Send ``command`` and expect one of ``codes`` in reply."""
        self.send(command)
        return await self.expect(*codes)

    async def quit(self) -> None:
        """Say ``QUIT`` and read the answer, whatever it is: the member has
        passed by now, and waiting for the reply lets the server log a clean
        end of session rather than a dropped connection (F7g)."""
        self.send("QUIT")
        try:
            await self.read_line()
        except Failed:
            pass

    def start_tls(self, context_factory) -> None:
        """Switch the connection to TLS (after the server agreed to STARTTLS)."""
        self._tls = True
        self.transport.startTLS(context_factory)

    # Closing.

    def abort(self) -> None:
        if not self._lost and self.transport is not None:
            self.transport.abortConnection()

    def when_closed(self) -> defer.Deferred:
        """Fires once the connection is gone; cancelling it aborts it."""
        if self._lost:
            return defer.succeed(None)
        d = defer.Deferred(lambda _: self.abort())
        self._closed_waiters.append(d)
        return d


def _ssl_words(exc: SSL.Error) -> str:
    """The last OpenSSL reason, e.g. ``wrong version number``."""
    try:
        return exc.args[0][-1][2] or str(exc)
    except (IndexError, TypeError):
        return str(exc) or "unknown error"


def check_line_safe(spec) -> None:
    """A ``user`` or ``password`` spanning lines (an ini continuation line)
    would smuggle a second command into the dialogue: refuse it."""
    for key in ("user", "password"):
        value = getattr(spec, key)
        if value is not None and ("\r" in value or "\n" in value):
            raise OptionError(key, "must be a single line")


def match_greeting(spec, greeting: str) -> None:
    """Apply the monitor's ``expect`` regex (``re.search``) to the greeting."""
    if spec.expect is not None and re.search(spec.expect, greeting) is None:
        raise Failed(f"greeting does not match {spec.expect!r}")


def converse(reactor, spec, member, label: str, script) -> defer.Deferred:
    """Connect to ``member`` (or the monitor's ``port``), run
    ``await script(client)`` and close the connection; a Deferred firing with
    a :class:`CheckResult` once the connection is gone."""
    endpoint = client_endpoint(reactor, member.address.host, check_port(spec, member),
                               spec.timeout)

    def build():
        client = LineClient()
        client.label = label
        return client

    async def run() -> CheckResult:
        try:
            client = await endpoint.connect(protocol.Factory.forProtocol(build))
        except (defer.CancelledError, error.ConnectingCancelledError):
            raise defer.CancelledError() from None
        except Exception:
            return CheckResult(False, describe_connect_error(Failure()))
        try:
            try:
                await script(client)
                result = CheckResult(True)
            except Failed as e:
                result = CheckResult(False, e.reason)
            client.transport.loseConnection()
            await client.when_closed()
            return result
        except Exception:
            # Cancelled (the runner's timeout) or a bug: drop the connection
            # at once, and let the caller see why only once it is gone.
            client.abort()
            await client.when_closed()
            raise

    return defer.Deferred.fromCoroutine(run())
