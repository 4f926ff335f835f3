"""The ftp, smtp and pop3 monitors (F7c) against real servers on 127.0.0.1.

The passing and login cases talk to Twisted's own FTP, ESMTP and POP3
servers; odd servers (wrong codes, multi-line greetings, hang-ups, silence)
are tiny scripted ones. Every server connection is waited for in cleanup,
so a connection a check forgets to close shows up as a dirty reactor.
"""

from __future__ import annotations

import random

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet import defer, protocol, reactor, ssl, task, tcp
from twisted.mail import pop3, smtp
from twisted.protocols import ftp
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import WrappingFactory
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from lbframe.config.model import Monitor
from lbframe.errors import OptionError
from lbframe.interfaces import IMonitor
from lbframe.monitoring import CheckResult, MonitorRunner
from lbframe.monitors._dialogue import MAX_LINE, clip
from lbframe.monitors.ftp import FTPMonitor
from lbframe.monitors.pop3 import POP3Monitor
from lbframe.monitors.smtp import SMTPMonitor
from lbframe.plugins import load_plugins
from lbframe.schedulers.round_robin import RoundRobin
from tests.helpers import free_port, member_spec, pool_state


class Tracked(WrappingFactory):
    """Wraps a server factory and can wait until all its connections are gone."""

    def __init__(self, wrapped):
        super().__init__(wrapped)
        self.accepted = 0
        self._idle: list[defer.Deferred] = []
        self._first: list[defer.Deferred] = []

    def registerProtocol(self, p):
        super().registerProtocol(p)
        self.accepted += 1
        waiters, self._first = self._first, []
        for d in waiters:
            d.callback(p)

    def unregisterProtocol(self, p):
        super().unregisterProtocol(p)
        if not self.protocols:
            waiters, self._idle = self._idle, []
            for d in waiters:
                d.callback(None)

    def connected(self) -> defer.Deferred:
        """Fires once a connection has been accepted."""
        if self.accepted:
            return defer.succeed(None)
        d = defer.Deferred()
        self._first.append(d)
        return d

    def idle(self) -> defer.Deferred:
        if not self.protocols:
            return defer.succeed(None)
        d = defer.Deferred()
        self._idle.append(d)
        return d


class Scripted(LineReceiver):
    """A fake server: sends ``factory.greeting``, then answers each command
    by its first word from ``factory.answers`` (bytes to send, or ``None``
    to hang up); unknown commands get ``500 what``."""

    def connectionMade(self):
        if self.factory.greeting:
            self.transport.write(self.factory.greeting)

    def lineReceived(self, line):
        self.factory.commands.append(line.decode())
        word = line.split(b" ", 1)[0].upper().decode()
        answer = self.factory.answers.get(word, b"500 what\r\n")
        if answer is None:
            self.transport.loseConnection()
        else:
            self.transport.write(answer)
            if word == "QUIT":
                self.transport.loseConnection()


def scripted(greeting: bytes, **answers) -> protocol.ServerFactory:
    factory = protocol.ServerFactory.forProtocol(Scripted)
    factory.greeting = greeting
    factory.answers = {"QUIT": b"221 bye\r\n", **answers}
    factory.commands = []
    return factory


# Twisted's own servers.

def credentials(user, password):
    """One account; Twisted's FTP server passes str, its POP3 server bytes."""
    checker = InMemoryUsernamePasswordDatabaseDontUse()
    checker.addUser(user, password)
    return checker


def ftp_server(root: FilePath) -> protocol.ServerFactory:
    root.child("lbcheck").makedirs()
    realm = ftp.FTPRealm(root.path, userHome=root.path)
    return ftp.FTPFactory(Portal(realm, [credentials("lbcheck", "s3cret")]))


@implementer(pop3.IMailbox)
class EmptyMailbox(pop3.Mailbox):
    def listMessages(self, i=None):
        return [] if i is None else 0

    def getUidl(self, i):
        raise ValueError(i)


class MailRealm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        return pop3.IMailbox, EmptyMailbox(), lambda: None


class POP3Factory(protocol.ServerFactory):
    protocol = pop3.POP3

    def buildProtocol(self, addr):
        p = super().buildProtocol(addr)
        p.portal = Portal(MailRealm(), [credentials(b"lbcheck", b"s3cret")])
        return p


class ESMTPFactory(smtp.SMTPFactory):
    """Twisted's ESMTP server; with a TLS context it offers STARTTLS."""

    protocol = smtp.ESMTP
    domain = b"mx.test"

    def __init__(self, context=None):
        super().__init__()
        self.context = context

    def buildProtocol(self, addr):
        p = super().buildProtocol(addr)
        p.ctx = self.context
        return p


_tls = []


def server_tls_options():
    """A self-signed certificate for the STARTTLS server, made once."""
    if not _tls:
        key = ssl.KeyPair.generate(size=2048)
        _tls.append(key.selfSignedCert(1, CN="mx.test").options())
    return _tls[0]


class DialogueTestCase(TestCase):
    timeout = 20

    def setUp(self):
        self.pool = pool_state(RoundRobin(), member_spec("a"))
        self.member = self.pool.members["a"]

    def serve(self, factory) -> int:
        """Listen on a free port of 127.0.0.1; cleanup waits for every
        connection to end, then stops listening."""
        tracked = Tracked(factory)
        port = reactor.listenTCP(0, tracked, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(tracked.idle)
        self.tracked = tracked
        return port.getHost().port

    def check(self, monitor_class, port, options=None, **keys) -> defer.Deferred:
        spec = Monitor("m", monitor_class.__name__[:-7].lower(), port=port, **keys)
        return monitor_class(spec, options or {}, reactor).check(self.member)


class FTPTests(DialogueTestCase):
    def setUp(self):
        super().setUp()
        self.port = self.serve(ftp_server(FilePath(self.mktemp())))

    @defer.inlineCallbacks
    def test_greeting_passes(self):
        result = yield self.check(FTPMonitor, self.port)
        self.assertEqual(result, CheckResult(True))

    @defer.inlineCallbacks
    def test_login_passes(self):
        result = yield self.check(FTPMonitor, self.port, user="lbcheck", password="s3cret")
        self.assertEqual(result, CheckResult(True))

    @defer.inlineCallbacks
    def test_bad_login(self):
        result = yield self.check(FTPMonitor, self.port, user="lbcheck", password="wrong")
        self.assertEqual(result, CheckResult(False, "FTP: 530 Sorry, Authentication failed."))

    @defer.inlineCallbacks
    def test_expect_matches_banner(self):
        result = yield self.check(FTPMonitor, self.port, expect=r"^220 Twisted \S+ FTP")
        self.assertEqual(result, CheckResult(True))

    @defer.inlineCallbacks
    def test_expect_fails(self):
        result = yield self.check(FTPMonitor, self.port, expect="vsFTPd")
        self.assertEqual(result, CheckResult(False, "greeting does not match 'vsFTPd'"))

    @defer.inlineCallbacks
    def test_member_port_used_without_override(self):
        self.member = pool_state(RoundRobin(), member_spec("b", self.port)).members["b"]
        result = yield self.check(FTPMonitor, None)
        self.assertEqual(result, CheckResult(True))

    @defer.inlineCallbacks
    def test_port_override(self):
        # F7e: the member listens elsewhere (nothing there); the monitor's port is probed
        self.member = pool_state(RoundRobin(), member_spec("b", free_port())).members["b"]
        result = yield self.check(FTPMonitor, self.port)
        self.assertEqual(result, CheckResult(True))
        self.assertEqual(self.tracked.accepted, 1)


class FTPScriptedTests(DialogueTestCase):
    @defer.inlineCallbacks
    def test_wrong_code(self):
        port = self.serve(scripted(b"421 service not available\r\n"))
        result = yield self.check(FTPMonitor, port)
        self.assertEqual(result, CheckResult(False, "FTP: 421 service not available"))

    @defer.inlineCallbacks
    def test_multiline_greeting(self):
        # RFC 959 §4.2: lines between the first and the last may hold any text
        factory = scripted(b"220-first\r\n second, no code\r\n220-third\r\n220 ready\r\n",
                           USER=b"331 pass?\r\n", PASS=b"230 in\r\n")
        port = self.serve(factory)
        result = yield self.check(FTPMonitor, port, user="u", password="p",
                                  expect="(?m)^220 ready$")
        self.assertEqual(result, CheckResult(True))
        self.assertEqual(factory.commands, ["USER u", "PASS p", "QUIT"])

    @defer.inlineCallbacks
    def test_120_then_220(self):
        port = self.serve(scripted(b"120 in 1 minute\r\n220 ready\r\n"))
        result = yield self.check(FTPMonitor, port)
        self.assertEqual(result, CheckResult(True))

    @defer.inlineCallbacks
    def test_user_accepted_without_password(self):
        factory = scripted(b"220 hi\r\n", USER=b"230 welcome\r\n")
        port = self.serve(factory)
        result = yield self.check(FTPMonitor, port, user="u", password="p")
        self.assertEqual(result, CheckResult(True))
        self.assertEqual(factory.commands, ["USER u", "QUIT"])

    @defer.inlineCallbacks
    def test_server_closes_mid_dialogue(self):
        port = self.serve(scripted(b"220 hi\r\n", USER=None))
        result = yield self.check(FTPMonitor, port, user="u", password="p")
        self.assertEqual(result, CheckResult(False, "connection closed during the dialogue"))


class SMTPTests(DialogueTestCase):
    @defer.inlineCallbacks
    def test_passes(self):
        result = yield self.check(SMTPMonitor, self.serve(ESMTPFactory()))
        self.assertEqual(result, CheckResult(True))

    @defer.inlineCallbacks
    def test_port_override(self):
        port = self.serve(ESMTPFactory())
        self.member = pool_state(RoundRobin(), member_spec("b", free_port())).members["b"]
        result = yield self.check(SMTPMonitor, port)
        self.assertEqual(result, CheckResult(True))
        self.assertEqual(self.tracked.accepted, 1)

    @defer.inlineCallbacks
    def test_expect_on_banner(self):
        port = self.serve(ESMTPFactory())
        passed = yield self.check(SMTPMonitor, port, expect=r"^220 mx\.test .*ESMTP$")
        failed = yield self.check(SMTPMonitor, port, expect="Postfix")
        self.assertEqual((passed, failed),
                         (CheckResult(True),
                          CheckResult(False, "greeting does not match 'Postfix'")))

    @defer.inlineCallbacks
    def test_starttls(self):
        port = self.serve(ESMTPFactory(server_tls_options()))
        result = yield self.check(SMTPMonitor, port, {"starttls": "yes"})
        self.assertEqual(result, CheckResult(True))

    @defer.inlineCallbacks
    def test_starttls_not_offered(self):
        port = self.serve(ESMTPFactory())
        result = yield self.check(SMTPMonitor, port, {"starttls": "yes"})
        self.assertEqual(result, CheckResult(False, "SMTP: STARTTLS not offered"))

    @defer.inlineCallbacks
    def test_starttls_refused(self):
        port = self.serve(scripted(b"220 hi\r\n", EHLO=b"250-hi\r\n250 starttls\r\n",
                                   STARTTLS=b"454 TLS not available\r\n"))
        result = yield self.check(SMTPMonitor, port, {"starttls": "yes"})
        self.assertEqual(result, CheckResult(False, "SMTP: 454 TLS not available"))

    @defer.inlineCallbacks
    def test_starttls_handshake_fails(self):
        class NotTLS(Scripted):
            def lineReceived(self, line):
                if line == b"STARTTLS":
                    self.transport.write(b"220 go ahead\r\n")
                    self.setRawMode()
                else:
                    super().lineReceived(line)

            def rawDataReceived(self, data):
                self.transport.write(b"this is not TLS\r\n" * 10)

        factory = scripted(b"220 hi\r\n", EHLO=b"250-hi\r\n250 STARTTLS\r\n")
        factory.protocol = NotTLS
        result = yield self.check(SMTPMonitor, self.serve(factory), {"starttls": "yes"})
        self.assertFalse(result.ok)
        # e.g. "TLS handshake failed: wrong version number"; the words are OpenSSL's
        self.assertRegex(result.reason, r"^TLS handshake failed: \S")

    @defer.inlineCallbacks
    def test_ehlo_name(self):
        factory = scripted(b"220 hi\r\n", EHLO=b"250 hi\r\n")
        port = self.serve(factory)
        yield self.check(SMTPMonitor, port)
        yield self.check(SMTPMonitor, port, {"ehlo": "lb1.example.com"})
        yield self.check(SMTPMonitor, port, {"ehlo": "192.0.2.7"})
        self.assertEqual(factory.commands,
                         ["EHLO lbframe-check.invalid", "QUIT",
                          "EHLO lb1.example.com", "QUIT",
                          "EHLO [192.0.2.7]", "QUIT"])

    @defer.inlineCallbacks
    def test_wrong_code(self):
        port = self.serve(scripted(b"421 service not available\r\n"))
        result = yield self.check(SMTPMonitor, port)
        self.assertEqual(result, CheckResult(False, "SMTP: 421 service not available"))

    @defer.inlineCallbacks
    def test_ehlo_refused(self):
        port = self.serve(scripted(b"220 hi\r\n", EHLO=b"550-no\r\n550 go away\r\n"))
        result = yield self.check(SMTPMonitor, port)
        self.assertEqual(result, CheckResult(False, "SMTP: 550 go away"))

    @defer.inlineCallbacks
    def test_multiline_greeting(self):
        factory = scripted(b"220-first\r\n220-second\r\n220 ready\r\n",
                           EHLO=b"250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        port = self.serve(factory)
        result = yield self.check(SMTPMonitor, port, expect="second")
        self.assertEqual(result, CheckResult(True))
        # one greeting, one EHLO reply: had a continuation line been taken
        # for a whole reply, the dialogue would have run out of step
        self.assertEqual(factory.commands, ["EHLO lbframe-check.invalid", "QUIT"])

    @defer.inlineCallbacks
    def test_server_closes_mid_dialogue(self):
        port = self.serve(scripted(b"220 hi\r\n", EHLO=None))
        result = yield self.check(SMTPMonitor, port)
        self.assertEqual(result, CheckResult(False, "connection closed during the dialogue"))

    @defer.inlineCallbacks
    def test_not_smtp(self):
        port = self.serve(scripted(b"HTTP/1.1 400 Bad Request\r\n"))
        result = yield self.check(SMTPMonitor, port)
        self.assertEqual(result,
                         CheckResult(False, "SMTP: unexpected reply 'HTTP/1.1 400 Bad Request'"))

    @defer.inlineCallbacks
    def test_line_too_long(self):
        port = self.serve(scripted(b"220 " + b"x" * (MAX_LINE + 10)))
        result = yield self.check(SMTPMonitor, port)
        self.assertEqual(result, CheckResult(False, "SMTP: reply line longer than 4096 bytes"))

    @defer.inlineCallbacks
    def test_quit_reply_not_judged(self):
        port = self.serve(scripted(b"220 hi\r\n", EHLO=b"250 hi\r\n", QUIT=None))
        result = yield self.check(SMTPMonitor, port)
        self.assertEqual(result, CheckResult(True))

    @defer.inlineCallbacks
    def test_connect_refused(self):
        result = yield self.check(SMTPMonitor, free_port())
        self.assertEqual(result, CheckResult(False, "connect refused"))


class POP3Tests(DialogueTestCase):
    def setUp(self):
        super().setUp()
        self.port = self.serve(POP3Factory())

    @defer.inlineCallbacks
    def test_greeting_passes(self):
        result = yield self.check(POP3Monitor, self.port)
        self.assertEqual(result, CheckResult(True))

    @defer.inlineCallbacks
    def test_login_passes(self):
        result = yield self.check(POP3Monitor, self.port, user="lbcheck", password="s3cret")
        self.assertEqual(result, CheckResult(True))

    @defer.inlineCallbacks
    def test_bad_login(self):
        result = yield self.check(POP3Monitor, self.port, user="lbcheck", password="wrong")
        self.assertEqual(result, CheckResult(False, "POP3: -ERR Authentication failed"))

    @defer.inlineCallbacks
    def test_expect_on_banner(self):
        passed = yield self.check(POP3Monitor, self.port, expect=r"^\+OK <[^>]+>$")
        failed = yield self.check(POP3Monitor, self.port, expect="Dovecot")
        self.assertEqual((passed, failed),
                         (CheckResult(True),
                          CheckResult(False, "greeting does not match 'Dovecot'")))

    @defer.inlineCallbacks
    def test_port_override(self):
        self.member = pool_state(RoundRobin(), member_spec("b", free_port())).members["b"]
        result = yield self.check(POP3Monitor, self.port)
        self.assertEqual(result, CheckResult(True))


class POP3ScriptedTests(DialogueTestCase):
    @defer.inlineCallbacks
    def test_err_greeting(self):
        port = self.serve(scripted(b"-ERR maildrop busy\r\n"))
        result = yield self.check(POP3Monitor, port)
        self.assertEqual(result, CheckResult(False, "POP3: -ERR maildrop busy"))

    @defer.inlineCallbacks
    def test_not_pop3(self):
        port = self.serve(scripted(b"220 this is SMTP\r\n"))
        result = yield self.check(POP3Monitor, port)
        self.assertEqual(result, CheckResult(False, "POP3: unexpected reply '220 this is SMTP'"))

    @defer.inlineCallbacks
    def test_commands(self):
        factory = scripted(b"+OK hi\r\n", USER=b"+OK\r\n", PASS=b"+OK in\r\n",
                           QUIT=b"+OK bye\r\n")
        result = yield self.check(POP3Monitor, self.serve(factory), user="u", password="p w")
        self.assertEqual(result, CheckResult(True))
        self.assertEqual(factory.commands, ["USER u", "PASS p w", "QUIT"])

    @defer.inlineCallbacks
    def test_server_closes_mid_dialogue(self):
        port = self.serve(scripted(b"+OK hi\r\n", USER=b"+OK\r\n", PASS=None))
        result = yield self.check(POP3Monitor, port, user="u", password="p")
        self.assertEqual(result, CheckResult(False, "connection closed during the dialogue"))


class CancellationTests(DialogueTestCase):
    """The runner's timeout cancels the check: the connection must be gone
    by the time the cancelled Deferred fires."""

    def client_connections(self):
        return {s for s in reactor.getReaders() + reactor.getWriters()
                if isinstance(s, tcp.Client)}

    @defer.inlineCallbacks
    def until(self, condition):
        """Real sockets give no event to wait on here, so poll (briefly)."""
        for _ in range(1000):
            if condition():
                return
            yield task.deferLater(reactor, 0.002, lambda: None)
        self.fail("the check never got there")

    @defer.inlineCallbacks
    def cancel_while_waiting(self, monitor_class, factory, ready=None, **keys):
        port = self.serve(factory)
        d = self.check(monitor_class, port, **keys)
        yield self.tracked.connected()
        yield self.until(ready or (lambda: any(c.connected for c in self.client_connections())))
        self.assertEqual(len(self.client_connections()), 1)
        d.cancel()
        yield self.assertFailure(d, defer.CancelledError)
        self.assertEqual(self.client_connections(), set())
        yield self.tracked.idle()

    def test_silent_ftp(self):
        return self.cancel_while_waiting(FTPMonitor, scripted(b""))

    def test_silent_smtp(self):
        return self.cancel_while_waiting(SMTPMonitor, scripted(b""))

    def test_silent_pop3(self):
        return self.cancel_while_waiting(POP3Monitor, scripted(b""))

    @defer.inlineCallbacks
    def test_cancel_while_connecting(self):
        port = self.serve(scripted(b"220 hi\r\n"))
        d = self.check(SMTPMonitor, port)
        d.cancel()
        yield self.assertFailure(d, defer.CancelledError)
        self.assertEqual(self.client_connections(), set())

    @defer.inlineCallbacks
    def test_cancel_mid_reply(self):
        # greeting and USER answered, the PASS reply never comes
        factory = scripted(b"220-a\r\n220 b\r\n", USER=b"331 pass?\r\n", PASS=b"")
        yield self.cancel_while_waiting(FTPMonitor, factory, user="u", password="p",
                                        ready=lambda: "PASS p" in factory.commands)
        self.assertEqual(factory.commands, ["USER u", "PASS p"])


    @defer.inlineCallbacks
    def test_runner_timeout(self):
        """Through the runner: its timeout cancels the check, the member goes
        down with the runner's reason, and the connection is gone."""
        port = self.serve(scripted(b""))
        spec = Monitor("m", "pop3", port=port, timeout=0.2, interval=60.0, fall=1)
        runner = MonitorRunner(reactor, rng=FirstAtOnce())
        runner.add(self.pool, self.member, spec, POP3Monitor(spec, {}, reactor))
        runner.startService()
        self.addCleanup(runner.stopService)
        yield self.until(lambda: "m" in self.member.checks)
        self.assertEqual(self.member.down_reason, "m: timeout after 0.2s (1/1)")
        self.assertEqual(self.client_connections(), set())


class FirstAtOnce(random.Random):
    def uniform(self, a, b):
        return a


class OptionTests(SynchronousTestCase):
    def make(self, cls, options=None, **keys):
        return cls(Monitor("m", "x", **keys), options or {}, reactor)

    def assertOptionError(self, key, message, cls, options=None, **keys):
        e = self.assertRaises(OptionError, self.make, cls, options, **keys)
        self.assertEqual((e.key, e.message), (key, message))

    def test_interface(self):
        for cls in (FTPMonitor, SMTPMonitor, POP3Monitor):
            self.assertTrue(verifyObject(IMonitor, self.make(cls)))

    def test_registered(self):
        monitors = load_plugins(entry_points=False).monitors
        self.assertEqual([monitors.get(n).factory for n in ("ftp", "smtp", "pop3")],
                         [FTPMonitor, SMTPMonitor, POP3Monitor])

    def test_unknown_keys(self):
        self.assertOptionError("starttls", "unknown key 'starttls' for monitor type ftp",
                               FTPMonitor, {"starttls": "yes"})
        self.assertOptionError("ehlo", "unknown key 'ehlo' for monitor type pop3",
                               POP3Monitor, {"ehlo": "x"})
        self.assertOptionError("helo", "unknown key 'helo' for monitor type smtp",
                               SMTPMonitor, {"helo": "x"})

    def test_bad_values(self):
        self.assertOptionError("starttls", "bad boolean 'maybe' (use yes or no)",
                               SMTPMonitor, {"starttls": "maybe"})
        self.assertOptionError("ehlo", "bad host name 'not a name'",
                               SMTPMonitor, {"ehlo": "not a name"})

    def test_starttls_parsed(self):
        self.assertEqual([self.make(SMTPMonitor, {"starttls": v}).starttls
                          for v in ("yes", "no", "on", "0")], [True, False, True, False])

    def test_user_needs_password(self):
        self.assertOptionError("user", "needs password (an FTP login always sends one)",
                               FTPMonitor, user="u")
        self.assertOptionError("user", "needs password (a POP3 login sends USER and PASS)",
                               POP3Monitor, user="u")

    def test_no_line_breaks(self):
        # an ini continuation line must not smuggle a second command in
        self.assertOptionError("password", "must be a single line",
                               FTPMonitor, user="u", password="p\nDELE x")
        self.assertOptionError("user", "must be a single line",
                               POP3Monitor, user="u\nDELE 1", password="p")

    def test_reasons_are_clipped(self):
        self.assertEqual(clip("x" * 500), "x" * 199 + "…")
        self.assertEqual(clip("short"), "short")
