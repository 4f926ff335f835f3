"""``site.ini`` text → :class:`~lbframe.config.model.Site`.

Three steps, each raising the first :class:`~lbframe.errors.ConfigError` it
meets:

1. :func:`read_sections` reads the INI with :mod:`configparser` (the contract
   promises its semantics) and finds the line of every header and key, which
   configparser does not keep.
2. One builder per section kind turns the raw strings into model objects. Keys
   are handed out through :class:`_Keys`, so whatever the builder did not take
   is known: an error for ``[lbframe]`` and ``[rule]``, and ``options`` (for the
   plugin to validate) everywhere else.
3. :func:`_check_references` makes sure every name one section gives another
   exists, once all sections are known.
"""

from __future__ import annotations

import configparser
import io
import ipaddress
import os
import re
import stat
import sys
from functools import partial
from typing import Callable, Iterable, Mapping, TypeVar

import attrs

from lbframe.config.model import (
    Address, Global, MemberSpec, Monitor, Persistence, Pool, Redundancy, Rule, Site, Source,
    Virtual,
)
from lbframe.config.values import (
    MEMBER_WEIGHT, is_loopback_endpoint, is_ssl_endpoint, is_udp_endpoint, parse_address,
    parse_bool, parse_duration, parse_endpoint, parse_hostname, parse_int, parse_list,
    parse_name,
)
from lbframe.errors import ConfigError, did_you_mean
from lbframe.tls import policy

T = TypeVar("T")

#: The keys the contract defines for each section kind (``member NAME`` aside).
KEYS: Mapping[str, tuple[str, ...]] = {
    "lbframe": ("admin", "admin_token", "admin_token_file", "admin_insecure", "plugins",
                "access_log", "log_format", "stop_grace", "max_connections", "workers"),
    "virtual": ("listen", "protocol", "pool", "persistence", "rules", "sorry",
                "sorry_status", "max_connections", "max_connections_per_source",
                "accept_proxy", "timeout_connect",
                "timeout_client", "timeout_server", "forwarded_for", "certificates",
                "ssl_ciphers", "ssl_ciphersuites", "ssl_min_version", "ssl_prefer_server_ciphers"),
    "pool": ("scheduler", "monitor", "priority_threshold", "queue_timeout", "send_proxy",
             "slow_start", "max_fails", "fail_timeout", "tls", "tls_ca", "tls_verify",
             "tls_server_name", "tls_ciphers", "tls_min_version"),
    "monitor": ("type", "interval", "timeout", "fall", "rise", "port", "request", "body",
                "headers", "expect_status", "expect", "user", "password", "command"),
    "persistence": ("method", "timeout", "cookie", "parameter", "mask", "store"),
    "rule": ("match", "pool"),
    "redundancy": ("driver", "vips", "interface", "vrid", "priority", "advert_interval",
                   "preempt", "version", "peer", "interval", "dead_after", "failback"),
}
#: Section kinds written ``[kind NAME]``; the others stand alone (``[lbframe]``).
NAMED_KINDS = ("virtual", "pool", "monitor", "persistence", "rule")

# configparser treats its default section ("DEFAULT") as defaults for every
# other section; lbframe has no such thing, so we name it something no header
# can be and "[DEFAULT]" becomes an ordinary (unknown) section.
_NO_DEFAULT_SECTION = "\0"


# -- step 1: INI with line numbers --------------------------------------------

@attrs.frozen
class RawSection:
    """One section as read: header split into kind and name, raw string values."""

    kind: str
    name: str | None
    #: lower-cased key → value, in file order
    values: Mapping[str, str]
    #: lower-cased key → the key as the user wrote it (for messages, member names)
    spelling: Mapping[str, str]
    source: Source


@attrs.define
class _Located:
    line: int
    trailing: str = ""
    keys: dict[str, tuple[int, str]] = attrs.field(factory=dict)


def _new_parser() -> configparser.ConfigParser:
    return configparser.ConfigParser(
        interpolation=None, comment_prefixes=("#", ";"), inline_comment_prefixes=(";", "#"),
        strict=True, empty_lines_in_values=True, default_section=_NO_DEFAULT_SECTION)


def _strip_comment(parser: configparser.RawConfigParser, line: str) -> str:
    """configparser's own comment stripping (``RawConfigParser._read``), verbatim.

    An inline comment needs whitespace before it, so ``expect = a#b`` keeps
    its ``#``; a whole-line comment may start after indentation.
    """
    comment_start = sys.maxsize
    inline_prefixes = {p: -1 for p in parser._inline_comment_prefixes}
    while comment_start == sys.maxsize and inline_prefixes:
        next_prefixes = {}
        for prefix, index in inline_prefixes.items():
            index = line.find(prefix, index + 1)
            if index == -1:
                continue
            next_prefixes[prefix] = index
            if index == 0 or (index > 0 and line[index - 1].isspace()):
                comment_start = min(comment_start, index)
        inline_prefixes = next_prefixes
    if any(line.strip().startswith(p) for p in parser._comment_prefixes):
        comment_start = 0
    return line[:comment_start if comment_start != sys.maxsize else None].strip()


def _locate(parser: configparser.RawConfigParser, lines: list[str]) -> dict[str, _Located]:
    """Find the line of each section header and key.

    configparser keeps no line numbers, so this walks the lines with the same
    rules it uses (its own regexes, comment prefixes and indentation test for
    continuation lines) and records, for the first occurrence of each section
    and key, where it starts. Anything configparser rejects it raises itself.
    """
    found: dict[str, _Located] = {}
    section: _Located | None = None
    option: str | None = None
    indent_level = 0
    for lineno, line in enumerate(lines, start=1):
        value = _strip_comment(parser, line)
        if not value:
            continue  # blank lines belong to a value (empty_lines_in_values)
        nonspace = parser.NONSPACECRE.search(line)
        indent = nonspace.start() if nonspace else 0
        if section is not None and option and indent > indent_level:
            continue  # a continuation line
        indent_level = indent
        header = parser.SECTCRE.match(value)
        if header:
            section = found.setdefault(header.group("header"),
                                       _Located(lineno, value[header.end():].strip()))
            option = None
        elif section is not None:
            match = parser._optcre.match(value)
            if match and match.group("option"):
                spelled = match.group("option").rstrip()
                option = parser.optionxform(spelled)
                section.keys.setdefault(option, (lineno, spelled))
    return found


def read_sections(text: str, path: str) -> list[RawSection]:
    """Parse INI ``text`` into :class:`RawSection` objects, in file order."""
    # Lines as configparser counts them (it splits on "\n" only), and as an
    # editor counts them (a lone "\r" ends a line too).
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    parser = _new_parser()
    lines = list(io.StringIO(text))
    located = _locate(parser, lines)
    try:
        parser.read_string(text, source=path)
    except configparser.DuplicateSectionError as exc:
        first = located[exc.section].line
        raise ConfigError(f"duplicate section (first at line {first})",
                          path=path, line=exc.lineno, section=exc.section.strip()) from None
    except configparser.DuplicateOptionError as exc:
        first = located[exc.section].keys[exc.option][0]
        raise ConfigError(f"duplicate key (first at line {first})", path=path,
                          line=exc.lineno, section=exc.section.strip(), key=exc.option) from None
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError(f"{exc.line.strip()!r} is outside any section "
                          "(start with a header such as [virtual NAME])",
                          path=path, line=exc.lineno) from None
    except configparser.ParsingError as exc:
        lineno = exc.errors[0][0]
        raise ConfigError(f"cannot parse {lines[lineno - 1].strip()!r} (expected "
                          "'key = value', '[section]' or an indented continuation line)",
                          path=path, line=lineno) from None
    sections = []
    for header in parser.sections():
        where = located.get(header) or _Located(1)
        title = header.strip()
        if where.trailing:
            raise ConfigError(f"unexpected text {where.trailing!r} after the section header",
                              path=path, line=where.line, section=title)
        values = {key: value.strip() for key, value in parser.items(header, raw=True)}
        source = Source(path, title, where.line,
                        {key: where.keys.get(key, (where.line, key))[0] for key in values})
        spelling = {key: where.keys.get(key, (0, key))[1] for key in values}
        kind, name = _split_header(title, source)
        sections.append(RawSection(kind, name, values, spelling, source))
    return sections


def _split_header(title: str, source: Source) -> tuple[str, str | None]:
    """``pool web`` → ``("pool", "web")``; ``lbframe`` → ``("lbframe", None)``."""
    if not title:
        raise source.error(None, "empty section header")
    word, *rest = title.split(None, 1)
    kind, name = word.lower(), (rest[0].strip() if rest else None)
    if kind not in KEYS:
        raise source.error(None, f"unknown section {word!r}{did_you_mean(kind, KEYS)}")
    if kind in NAMED_KINDS and name is None:
        raise source.error(None, f"needs a name: [{kind} NAME]")
    if kind not in NAMED_KINDS and name is not None:
        raise source.error(None, f"takes no name: write [{kind}]")
    if name is not None:
        try:
            name = parse_name(name)
        except ValueError as exc:
            raise source.error(None, str(exc)) from None
    return kind, name


# -- step 2: sections → model ------------------------------------------------

class _Keys:
    """The keys of one section, handed out once each, converted or refused.

    A converter raises :class:`ValueError`; its message becomes a
    :class:`ConfigError` at that key's line.
    """

    def __init__(self, section: RawSection, base_dir: str):
        self.section = section
        self.source = section.source
        self.base_dir = base_dir
        self._left = dict(section.values)

    def error(self, key: str | None, message: str) -> ConfigError:
        spelled = self.section.spelling.get(key, key) if key is not None else None
        return self.source.error(spelled, message)

    def __contains__(self, key: str) -> bool:
        return key in self.section.values

    def take(self, key: str, convert: Callable[[str], T] = str, default: T | None = None):
        if key not in self._left:
            return default
        raw = self._left.pop(key)
        if not raw:
            raise self.error(key, "empty value (remove the key to get the default)")
        try:
            return convert(raw)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - a value must never crash the loader
            raise self.error(key, f"bad value: {unexpected(exc)}") from None

    def require(self, key: str, convert: Callable[[str], T] = str) -> T:
        if key not in self._left:
            for other in self._left:  # "listn" is more likely a typo than a plugin's key
                if other not in KEYS[self.section.kind] and did_you_mean(other, [key]):
                    raise self.error(other, f"unknown key {other!r} (did you mean {key!r}?)")
            raise self.error(key, "required key is missing")
        return self.take(key, convert)

    def starting_with(self, word: str) -> list[str]:
        """Keys left whose first word is ``word`` (``member a``), in file order."""
        return [key for key in self._left if key.split()[0] == word]

    def rest(self) -> dict[str, str]:
        """What no builder took: a plugin's keys, kept as raw strings."""
        rest, self._left = self._left, {}
        return rest

    def refuse_unknown(self, known: Iterable[str]) -> None:
        """For sections no plugin extends: any key not in ``known`` is an error."""
        for key in self._left:
            if key not in known:
                raise self.error(key, f"unknown key {key!r}{did_you_mean(key, known)}")


def unexpected(exc: BaseException) -> str:
    """Words for an exception a converter did not mean to raise.

    The converters raise :class:`ValueError` with a message written for the
    user; anything else (a regex too deep to compile, a number too large for
    a float, a bug) still becomes one line at the key, never a traceback.
    The value itself is not repeated: it may be a password or a token.
    """
    if isinstance(exc, RecursionError):
        return "too deeply nested"
    if isinstance(exc, MemoryError):
        return "too large"
    return str(exc) or type(exc).__name__


# converters for _Keys.take; each raises ValueError with a message for the user

def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"bad duration {text!r} (must be more than 0)")
    return seconds


def _int(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    return partial(parse_int, low=low, high=high)


def _names(text: str) -> tuple[str, ...]:
    """A list of section names, each valid and listed once."""
    names = tuple(parse_name(item) for item in parse_list(text))
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ValueError(f"{name!r} is listed twice")
    return names


def _choice(what: str, options: tuple[str, ...]) -> Callable[[str], str]:
    def convert(text: str) -> str:
        word = text.strip().lower()
        if word in options:
            return word
        hint = did_you_mean(word, options) or f" (use {', '.join(options[:-1])} or {options[-1]})"
        raise ValueError(f"unknown {what} {text.strip()!r}{hint}")
    return convert


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: header, cookie names


def _token(what: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if _TOKEN.fullmatch(text) is None:
            raise ValueError(f"bad {what} {text!r}")
        return text
    return convert


def _word(what: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if len(text.split()) != 1:
            raise ValueError(f"bad {what} {text!r} (one word, no blanks)")
        return text
    return convert


def _path(base_dir: str, text: str) -> str:
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(text.strip())))


def _readable_file(base_dir: str, what: str) -> Callable[[str], str]:
    """A file that must exist and be readable now; returned as an absolute path."""
    def convert(text: str) -> str:
        path = _path(base_dir, text)
        if os.path.isdir(path):
            raise ValueError(f"{what} {path!r} is a folder, not a file")
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ValueError(f"cannot read {what} {path!r}: {exc.strerror}") from None
        return path
    return convert


def _folder(base_dir: str, what: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        path = _path(base_dir, text)
        if not os.path.isdir(path):
            problem = "is not a folder" if os.path.exists(path) else "does not exist"
            raise ValueError(f"{what} {path!r} {problem}")
        return path
    return convert


def _endpoints(base_dir: str, text: str) -> tuple[str, ...]:
    endpoints = tuple(parse_endpoint(item, base_dir) for item in parse_list(text))
    for index, endpoint in enumerate(endpoints):
        if endpoint in endpoints[:index]:
            raise ValueError(f"{endpoint!r} is listed twice")
    return endpoints


# [lbframe]

_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def _package_folder(base_dir: str, text: str) -> str:
    """A plugin package's folder: named like a module, with an ``__init__.py``."""
    path = _path(base_dir, text)
    if not _MODULE.fullmatch(os.path.basename(path)) or \
            not os.path.isfile(os.path.join(path, "__init__.py")):
        raise ValueError(f"plugin folder {path!r} is not a Python package "
                         "(a folder named like a module, with an __init__.py)")
    return path


def _plugins(base_dir: str, text: str) -> tuple[str, ...]:
    """Module names stay as they are; paths (a ``.py`` file, or a plugin
    package's folder) become absolute."""
    plugins = []
    for item in parse_list(text):
        if item.endswith(".py") or os.sep in item or "/" in item:
            if os.path.isdir(_path(base_dir, item)):
                item = _package_folder(base_dir, item)
            else:
                item = _readable_file(base_dir, "plugin file")(item)
        elif _MODULE.fullmatch(item) is None:
            raise ValueError(f"bad plugin {item!r} (use a module name, a path to a .py file "
                             "or a plugin package's folder)")
        if item in plugins:
            raise ValueError(f"plugin {item!r} is listed twice")
        plugins.append(item)
    return tuple(plugins)


#: a token file larger than this is not a token file
MAX_TOKEN_FILE = 4096


def _admin_token(text: str, where: str = "admin_token") -> str:
    """A bearer token: what can be sent in an ``Authorization`` header.

    Visible ASCII only (no blanks, no control characters): anything else
    could never be sent, or would be cut by the client. The message never
    repeats the token.
    """
    if len(text) > MAX_TOKEN_FILE:
        raise ValueError(f"{where} is longer than {MAX_TOKEN_FILE} characters")
    for index, char in enumerate(text):
        if not "\x21" <= char <= "\x7e":
            raise ValueError(f"{where} has a character that cannot be sent in an HTTP header "
                             f"at position {index + 1} (use visible ASCII, no blanks)")
    return text


def _check_private(path: str, info: os.stat_result) -> None:
    """Refuse a token file others could read or change, as ssh does with keys.

    Any permission bit for group or others (``mode & 0o077``) is refused;
    ``chmod 600`` (or ``400``) is the fix. The owner is not checked: the file
    is read once as root (at start, before ``twistd --uid``) and again as the
    unprivileged user (at a reload), so either may rightly own it.
    """
    if os.name != "posix":
        return
    mode = info.st_mode & 0o777
    if mode & 0o077:
        raise ValueError(f"token file {path!r} is open to group or others (mode {mode:04o}): "
                         f"run chmod 600 {path}")


def _read_token_file(path: str) -> bytes:
    """At most ``MAX_TOKEN_FILE + 1`` bytes of a regular file.

    Anything else is refused before it is read: ``/dev/zero`` never ends, a
    FIFO blocks the open (and then the read) until some writer comes. The
    open is non-blocking all the same, in case the path is swapped for a
    FIFO between the ``stat`` and the ``open``; ``fstat`` then checks what
    was actually opened."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError(f"token file {path!r} is not a regular file")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ValueError(f"cannot read token file {path!r}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"token file {path!r} is not a regular file")
        _check_private(path, info)
        return handle.read(MAX_TOKEN_FILE + 1)


def _token_file(base_dir: str, text: str) -> str:
    path = _path(base_dir, text)
    if os.path.isdir(path):
        raise ValueError(f"token file {path!r} is a folder, not a file")
    data = _read_token_file(path)
    if len(data) > MAX_TOKEN_FILE:
        raise ValueError(f"token file {path!r} is larger than {MAX_TOKEN_FILE} bytes")
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"token file {path!r} is not UTF-8 text") from None
    if not token:
        raise ValueError(f"token file {path!r} is empty")
    return _admin_token(token, f"the token in {path!r}")


def _log_path(base_dir: str, text: str) -> str:
    if text == "-":
        return text
    path = _path(base_dir, text)
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError(f"folder {os.path.dirname(path)!r} does not exist")
    return path


def build_global(keys: _Keys) -> Global:
    keys.refuse_unknown(KEYS["lbframe"])
    base = keys.base_dir
    admin = keys.take("admin", partial(parse_endpoint, base_dir=base))
    if admin is not None and is_udp_endpoint(admin):
        raise keys.error("admin", "the admin server needs a stream endpoint "
                                  "(tcp:, ssl:, unix:), not udp:")
    token = keys.take("admin_token", _admin_token)
    if token is not None and "admin_token_file" in keys:
        raise keys.error("admin_token_file", "set admin_token or admin_token_file, not both")
    token = keys.take("admin_token_file", partial(_token_file, base), token)
    insecure = keys.take("admin_insecure", parse_bool, False)
    if insecure and admin is None:
        raise keys.error("admin_insecure", "has no effect without admin")
    if admin is not None and not is_loopback_endpoint(admin):
        if token is None:
            raise keys.error("admin", f"{admin!r} is reachable from other hosts, so it needs "
                                      "admin_token or admin_token_file (or interface=127.0.0.1)")
        if not is_ssl_endpoint(admin) and not insecure:
            raise keys.error("admin", f"{admin!r} is reachable from other hosts without TLS: "
                                      "the token would cross the network in clear. Use an ssl: "
                                      "endpoint or interface=127.0.0.1, or set "
                                      "admin_insecure = yes")
    return Global(
        admin=admin,
        admin_token=token,
        admin_insecure=insecure,
        plugins=keys.take("plugins", partial(_plugins, base), ()),
        access_log=keys.take("access_log", partial(_log_path, base)),
        log_format=keys.take("log_format", _choice("log format", ("text", "json")), "text"),
        stop_grace=keys.take("stop_grace", parse_duration, 30.0),
        max_connections=keys.take("max_connections", _int(1)),
        workers=keys.take("workers", _workers, 1),
        source=keys.source,
    )


def _workers(text: str) -> int:
    """``workers``: a count (1-64), or ``auto``: one per core this process may use."""
    if text.strip().lower() == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return max(1, os.cpu_count() or 1)
    return parse_int(text, low=1, high=64)


# [virtual NAME]

#: Built-in protocols that are not http: rules and sorry pages mean nothing there.
_NOT_HTTP = ("tcp", "udp", "ssl", "routed", "nat")


def _sorry(base_dir: str, text: str) -> tuple[str | None, str | None]:
    """``page:PATH`` → ``(None, path)``; a pool name → ``(name, None)``."""
    if text.startswith("page:"):
        return None, _readable_file(base_dir, "sorry page")(text[len("page:"):])
    return parse_name(text), None


#: Protocols whose ``listen`` names traffic to steer (an interface and
#: filters), not sockets: the protocol plugin parses it (lbframe.protocols.routed).
ROUTED_PROTOCOLS = ("routed",)


def _traffic(text: str) -> tuple[str, ...]:
    items = parse_list(text)
    for index, item in enumerate(items):
        if item in items[:index]:
            raise ValueError(f"{item!r} is listed twice")
    return items


def build_virtual(name: str, keys: _Keys) -> Virtual:
    base = keys.base_dir
    protocol = keys.take("protocol", parse_name, "tcp")
    listen = keys.require("listen", _traffic if protocol in ROUTED_PROTOCOLS
                          else partial(_endpoints, base))
    pool = keys.require("pool", parse_name)
    for endpoint in listen:
        if protocol == "udp" and not is_udp_endpoint(endpoint):
            raise keys.error("listen", f"protocol udp needs udp: endpoints, not {endpoint!r}")
        if protocol in ("tcp", "http", "ssl") and is_udp_endpoint(endpoint):
            raise keys.error("listen", f"{endpoint!r} is a udp: endpoint, but protocol is "
                                       f"{protocol} (set protocol = udp)")
    if protocol == "udp" and "max_connections_per_source" in keys:
        raise keys.error("max_connections_per_source", "protocol udp has no connections to "
                                                       "count (tcp, ssl and http have)")
    rules = keys.take("rules", _names, ())
    if rules and protocol in _NOT_HTTP:
        raise keys.error("rules", f"rules need protocol http (this virtual server is {protocol})")
    sorry_pool, sorry_page = keys.take("sorry", partial(_sorry, base), (None, None))
    if sorry_page is not None and protocol in _NOT_HTTP:
        raise keys.error("sorry", f"a sorry page needs protocol http "
                                  f"(this virtual server is {protocol}); name a pool instead")
    if sorry_pool is not None and sorry_pool == pool:
        raise keys.error("sorry", f"the sorry pool is the virtual server's own pool {pool!r}")
    return Virtual(
        name=name,
        listen=listen,
        pool=pool,
        protocol=protocol,
        persistence=keys.take("persistence", parse_name),
        rules=rules,
        sorry_pool=sorry_pool,
        sorry_page=sorry_page,
        sorry_status=keys.take("sorry_status", _int(100, 599), 503),
        max_connections=keys.take("max_connections", _int(1)),
        max_connections_per_source=keys.take("max_connections_per_source", _int(1)),
        accept_proxy=keys.take("accept_proxy", parse_bool, False),
        timeout_connect=keys.take("timeout_connect", _positive_duration, 5.0),
        # udp flows are idle sooner (nginx proxy_timeout, conntrack's 30 s)
        timeout_client=keys.take("timeout_client", _positive_duration,
                                 30.0 if protocol == "udp" else 60.0),
        timeout_server=keys.take("timeout_server", _positive_duration, 60.0),
        forwarded_for=keys.take("forwarded_for", parse_bool, True),
        certificates=keys.take("certificates", _folder(base, "certificates folder")),
        **_tls_policy(keys, protocol, listen),
        options=keys.rest(),
        source=keys.source,
    )


def _tls_policy(keys: _Keys, protocol: str, listen: tuple[str, ...]) -> dict:
    """``ssl_ciphers``, ``ssl_ciphersuites``, ``ssl_min_version``,
    ``ssl_prefer_server_ciphers``: checked against this OpenSSL now, and
    refused where lbframe terminates no TLS (they would silently do nothing)."""
    values = dict(
        ssl_ciphers=keys.take("ssl_ciphers", policy.check_ciphers),
        ssl_ciphersuites=keys.take("ssl_ciphersuites", policy.check_ciphersuites),
        ssl_min_version=keys.take("ssl_min_version", policy.check_min_version, "TLSv1.2"),
        ssl_prefer_server_ciphers=keys.take("ssl_prefer_server_ciphers", parse_bool, False),
    )
    terminates = "certificates" in keys or any(e.startswith("ssl:") for e in listen)
    for key in ("ssl_ciphers", "ssl_ciphersuites", "ssl_min_version", "ssl_prefer_server_ciphers"):
        if key in keys and (protocol in _NOT_HTTP or not terminates):
            raise keys.error(key, f"{key} needs a virtual server that terminates TLS "
                                  "(protocol http with certificates or an ssl: endpoint)")
    return values


# [pool NAME]

_MEMBER_OPTIONS = {"weight": MEMBER_WEIGHT, "priority": (1, None), "maxconn": (1, None)}
_MEMBER_WORDS = (*_MEMBER_OPTIONS, "backup")


def _member(name: str, text: str) -> MemberSpec:
    """``ADDRESS [weight=N] [priority=N] [maxconn=N] [backup]``."""
    address, *words = text.split()
    settings: dict[str, object] = {}
    for word in words:
        option, equals, value = word.partition("=")
        option = option.lower()
        if option in settings:
            raise ValueError(f"member option {option!r} is given twice")
        if option == "backup" and not equals:
            settings["backup"] = True
        elif option in _MEMBER_OPTIONS and equals:
            low, high = _MEMBER_OPTIONS[option]
            try:
                settings[option] = parse_int(value, low, high)
            except ValueError as exc:
                raise ValueError(f"{option}: {exc}") from None
        elif option in _MEMBER_OPTIONS:
            raise ValueError(f"member option {option!r} needs a value: {option}=N")
        else:
            hint = (did_you_mean(option, _MEMBER_WORDS)
                    or " (use weight=N, priority=N, maxconn=N, backup)")
            raise ValueError(f"unknown member option {word!r}{hint}")
    return MemberSpec(name, _member_address(address), **settings)


def _member_address(text: str) -> Address:
    """``HOST:PORT``; an IPv4 address alone or ``[IPV6]`` is a next hop of a
    routed pool (port 0), refused for other protocols by
    :func:`_check_references`."""
    literal = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        return parse_address(text)
    if address.version == 6 and literal == text:
        return parse_address(text)  # "::1:8080": brackets needed, as for any address
    return Address(str(address), 0)


def _members(keys: _Keys) -> tuple[MemberSpec, ...]:
    members = []
    for key in keys.starting_with("member"):
        words = keys.section.spelling.get(key, key).split()
        if len(words) == 1:
            raise keys.error(key, "needs a name: member NAME = ADDRESS")
        if len(words) > 2:
            raise keys.error(key, f"bad member name {' '.join(words[1:])!r} "
                                  "(use letters, digits, '.', '-' and '_')")
        try:
            name = parse_name(words[1])
        except ValueError as exc:
            raise keys.error(key, str(exc).replace("name", "member name", 1)) from None
        members.append(keys.take(key, partial(_member, name)))
    if not members:
        raise keys.error(None, "needs at least one member: member NAME = ADDRESS")
    return tuple(members)


def build_pool(name: str, keys: _Keys) -> Pool:
    base = keys.base_dir
    members = _members(keys)
    tls = keys.take("tls", parse_bool, False)
    if not tls:
        for key in ("tls_ca", "tls_verify", "tls_server_name", "tls_ciphers", "tls_min_version"):
            if key in keys:
                raise keys.error(key, "has no effect without tls = yes")
    result = Pool(
        name=name,
        members=members,
        scheduler=keys.take("scheduler", parse_name, "round-robin"),
        monitors=keys.take("monitor", _names, ()),
        priority_threshold=keys.take("priority_threshold", _int(1)),
        queue_timeout=keys.take("queue_timeout", parse_duration, 0.0),
        send_proxy=keys.take("send_proxy", _choice("PROXY protocol version", ("v1", "v2", "no")),
                             "no"),
        slow_start=keys.take("slow_start", parse_duration, 0.0),
        max_fails=keys.take("max_fails", _int(0, 1000), 3),
        fail_timeout=keys.take("fail_timeout", _positive_duration, 10.0),
        tls=tls,
        tls_ca=keys.take("tls_ca", _readable_file(base, "CA bundle")),
        tls_verify=keys.take("tls_verify", parse_bool, True),
        tls_server_name=keys.take("tls_server_name", parse_hostname),
        tls_ciphers=keys.take("tls_ciphers", policy.check_ciphers),
        tls_min_version=keys.take("tls_min_version", policy.check_min_version),
        options=keys.rest(),
        source=keys.source,
    )
    for key in result.options:
        first, *rest = key.split(None, 1)
        if rest:  # plugin keys are single words: this is a misspelt member
            hint = f" (did you mean 'member {rest[0]}'?)" if did_you_mean(first, ["member"]) else ""
            raise keys.error(key, f"unknown key {key!r}{hint}")
    return result


# [monitor NAME]

def _request(text: str) -> tuple[str, str]:
    words = text.split()
    if len(words) != 2 or _TOKEN.fullmatch(words[0]) is None or not words[1].startswith("/"):
        raise ValueError(f"bad request {text!r} (use METHOD PATH, e.g. GET /health)")
    return words[0], words[1]


def _headers(text: str) -> tuple[tuple[str, str], ...]:
    headers = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or _TOKEN.fullmatch(name.strip()) is None or name != name.strip():
            raise ValueError(f"bad header line {line.strip()!r} (use 'Name: value', one per line)")
        headers.append((name, value.strip()))
    return tuple(headers)


def _status_ranges(text: str) -> tuple[tuple[int, int], ...]:
    ranges = []
    for item in parse_list(text):
        match = re.fullmatch(r"([0-9]{3})(?:-([0-9]{3}))?", item)
        low, high = (int(match[1]), int(match[2] or match[1])) if match else (0, 0)
        if not match or not 100 <= low <= high <= 599:
            raise ValueError(f"bad status {item!r} "
                             "(use 200, 200-399 or a list such as 200,204,300-302)")
        ranges.append((low, high))
    return tuple(ranges)


def _regex(text: str) -> str:
    """A regex that compiles; the ways ``re.compile`` fails are all errors here.

    ``re.error`` for bad syntax, ``OverflowError`` for a repeat count too
    large (``a{99999999999}``), ``RecursionError`` for groups nested too deep,
    ``MemoryError`` for one too large to hold.
    """
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"bad regex {_short(text)}: {exc}") from None
    except (OverflowError, RecursionError, MemoryError) as exc:
        raise ValueError(f"bad regex {_short(text)}: {unexpected(exc)}") from None
    return text


def _short(text: str, limit: int = 60) -> str:
    """``repr`` of a value, cut to ``limit`` characters for a one-line message."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def build_monitor(name: str, keys: _Keys) -> Monitor:
    type_ = keys.require("type", parse_name)
    if type_ == "script" and "command" not in keys:
        raise keys.error("command", "required for type script")
    if "password" in keys and "user" not in keys:
        raise keys.error("password", "needs user")
    method, path = keys.take("request", _request, ("GET", "/"))
    return Monitor(
        name=name,
        type=type_,
        interval=keys.take("interval", _positive_duration, 10.0),
        timeout=keys.take("timeout", _positive_duration, 3.0),
        fall=keys.take("fall", _int(1), 3),
        rise=keys.take("rise", _int(1), 2),
        port=keys.take("port", _int(1, 65535)),
        request_method=method,
        request_path=path,
        body=keys.take("body"),
        headers=keys.take("headers", _headers, ()),
        expect_status=keys.take("expect_status", _status_ranges, ((200, 399),)),
        expect=keys.take("expect", _regex),
        user=keys.take("user"),
        password=keys.take("password"),
        command=keys.take("command"),
        options=keys.rest(),
        source=keys.source,
    )


# [persistence NAME]

def _store(text: str) -> str:
    if text == "memory" or re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://\S*", text):
        return text
    raise ValueError(f"bad store {text!r} (use memory or a URL such as redis://127.0.0.1:6379/0)")


def build_persistence(name: str, keys: _Keys) -> Persistence:
    method = keys.require("method", parse_name)
    if method == "cookie-learn" and "cookie" not in keys:
        raise keys.error("cookie", "required for method cookie-learn "
                                   "(the application's cookie, e.g. JSESSIONID)")
    default_cookie = "LBSERVER" if method == "cookie-insert" else None
    return Persistence(
        name=name,
        method=method,
        timeout=keys.take("timeout", _positive_duration, 1800.0),
        cookie=keys.take("cookie", _token("cookie name"), default_cookie),
        parameter=keys.take("parameter", _token("parameter name"), "jsessionid"),
        mask=keys.take("mask", _int(0, 128)),
        store=keys.take("store", _store, "memory"),
        options=keys.rest(),
        source=keys.source,
    )


# [rule NAME]

_SUBJECTS = ("path", "host", "method", "header", "cookie", "query")
_SUBJECTS_WITH_NAME = ("header", "cookie", "query")
_OPERATORS = ("=", "~", "^=", "$=")


def _match(text: str) -> tuple[str, str | None, str, str]:
    """``SUBJECT OP VALUE`` → ``(subject, subject_arg, op, value)``."""
    words = text.split(None, 2)
    if len(words) < 3 or "\n" in text:
        raise ValueError(f"bad match {text!r} (use SUBJECT OP VALUE on one line, "
                         "e.g. path ^= /api/)")
    subject, op, value = words
    base, colon, arg = subject.partition(":")
    base = base.lower()
    if base not in _SUBJECTS:
        hint = did_you_mean(base, _SUBJECTS) or (
            " (use path, host, method, header:NAME, cookie:NAME or query:NAME)")
        raise ValueError(f"unknown subject {subject!r}{hint}")
    if base in _SUBJECTS_WITH_NAME and (not arg or _TOKEN.fullmatch(arg) is None):
        raise ValueError(f"subject {subject!r} needs a name: {base}:NAME")
    if base not in _SUBJECTS_WITH_NAME and colon:
        raise ValueError(f"subject {base!r} takes no name")
    if op not in _OPERATORS:
        raise ValueError(f"unknown operator {op!r} (use =, ~, ^= or $=)")
    if op == "~":
        _regex(value)
    return base, arg or None, op, value


def build_rule(name: str, keys: _Keys) -> Rule:
    keys.refuse_unknown(KEYS["rule"])
    subject, arg, op, value = keys.require("match", _match)
    return Rule(name=name, subject=subject, subject_arg=arg, op=op, value=value,
                pool=keys.require("pool", parse_name), source=keys.source)


# [redundancy]

def _vips(text: str) -> tuple[str, ...]:
    vips = []
    for item in parse_list(text):
        try:
            if "/" not in item:
                raise ValueError
            vips.append(str(ipaddress.ip_interface(item)))
        except ValueError:
            raise ValueError(f"bad VIP {item!r} (use CIDR form, e.g. 192.0.2.10/24)") from None
    return tuple(vips)


def _peer(text: str) -> str:
    if text.startswith("udp:"):
        parse_address(text[len("udp:"):])
    elif not text.startswith("/"):
        raise ValueError(f"bad peer {text!r} "
                         "(use udp:HOST:PORT or a serial device path such as /dev/ttyS0)")
    return text


_DRIVER_NEEDS = {"vrrp": ("vips", "interface", "vrid"), "heartbeat": ("vips", "interface", "peer")}


def build_redundancy(keys: _Keys) -> Redundancy:
    driver = keys.take("driver", parse_name, "none")
    for key in _DRIVER_NEEDS.get(driver, ()):
        if key not in keys:
            raise keys.error(key, f"required for driver {driver}")
    version = keys.take("version", _int(2, 3), 3)
    advert = keys.take("advert_interval", _positive_duration, 1.0)
    if version == 3 and not 0.01 <= advert <= 40.95:
        raise keys.error("advert_interval", "VRRPv3 adverts go every 10ms to 40.95s")
    if version == 2 and (advert != int(advert) or not 1 <= advert <= 255):
        raise keys.error("advert_interval", "VRRPv2 adverts go every whole second, 1s to 255s")
    interval = keys.take("interval", _positive_duration, 1.0)
    dead_after = keys.take("dead_after", _positive_duration, 3.0)
    if dead_after <= interval:
        raise keys.error("dead_after", "must be longer than interval")
    return Redundancy(
        driver=driver,
        vips=keys.take("vips", _vips, ()),
        interface=keys.take("interface", _word("interface name")),
        vrid=keys.take("vrid", _int(1, 255)),
        priority=keys.take("priority", _int(1, 255), 100),
        advert_interval=advert,
        preempt=keys.take("preempt", parse_bool, True),
        version=version,
        peer=keys.take("peer", _peer),
        interval=interval,
        dead_after=dead_after,
        failback=keys.take("failback", _choice("failback", ("manual", "auto")), "manual"),
        options=keys.rest(),
        source=keys.source,
    )


_BUILDERS = {"virtual": build_virtual, "pool": build_pool, "monitor": build_monitor,
             "persistence": build_persistence, "rule": build_rule}


def build_site(text: str, path: str) -> Site:
    """The whole pipeline; relative paths in values are relative to ``path``'s folder."""
    base_dir = os.path.dirname(os.path.abspath(path))
    named: dict[str, dict] = {kind: {} for kind in NAMED_KINDS}
    single: dict[str, object] = {}
    for section in _read_sections_safely(text, path):
        keys = _Keys(section, base_dir)
        if section.kind in NAMED_KINDS:
            table = named[section.kind]
            if section.name in table:
                first = table[section.name].source.line
                raise section.source.error(
                    None, f"duplicate {section.kind} {section.name!r} (first at line {first})")
            table[section.name] = _build_safely(_BUILDERS[section.kind], section, keys,
                                                section.name)
        else:
            if section.kind in single:
                first = single[section.kind].source.line
                raise section.source.error(None, f"duplicate section (first at line {first})")
            builder = build_global if section.kind == "lbframe" else build_redundancy
            single[section.kind] = _build_safely(builder, section, keys)
    if not named["virtual"]:
        raise ConfigError("no [virtual NAME] section: nothing to serve", path=path)
    site = Site(
        path=path,
        lbframe=single.get("lbframe") or Global(),
        virtuals=named["virtual"],
        pools=named["pool"],
        monitors=named["monitor"],
        persistence=named["persistence"],
        rules=named["rule"],
        redundancy=single.get("redundancy") or Redundancy(),
    )
    _check_references(site)
    return site


def _read_sections_safely(text: str, path: str) -> list[RawSection]:
    """:func:`read_sections`, whose only way to fail is a :class:`ConfigError`."""
    try:
        return read_sections(text, path)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - configparser's or ours: one line, no traceback
        raise ConfigError(f"cannot read the file: {unexpected(exc)}", path=path) from None


def _build_safely(builder, section: RawSection, keys: _Keys, *args):
    """Run a section builder; whatever it raises becomes a ConfigError at the section.

    Keys are converted in :meth:`_Keys.take`, which already locates its own
    errors; this is the net under the checks between keys.
    """
    try:
        return builder(*args, keys)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise section.source.error(None, f"bad section: {unexpected(exc)}") from None


# -- step 3: references between sections --------------------------------------

def _refer(source: Source, key: str, kind: str, name: str | None,
           existing: Mapping[str, object]) -> None:
    if name is not None and name not in existing:
        raise source.error(key, f"{kind} {name!r} does not exist{did_you_mean(name, existing)}")


def _check_references(site: Site) -> None:
    """Every name a section gives must be a section of that kind; first in file order wins."""
    references = []  # (source, key, kind, name, existing)
    for virtual in site.virtuals.values():
        references += [(virtual.source, "pool", "pool", virtual.pool, site.pools),
                       (virtual.source, "persistence", "persistence", virtual.persistence,
                        site.persistence),
                       (virtual.source, "sorry", "pool", virtual.sorry_pool, site.pools)]
        references += [(virtual.source, "rules", "rule", rule, site.rules)
                       for rule in virtual.rules]
    for pool in site.pools.values():
        references += [(pool.source, "monitor", "monitor", monitor, site.monitors)
                       for monitor in pool.monitors]
    for rule in site.rules.values():
        references.append((rule.source, "pool", "pool", rule.pool, site.pools))
    references.sort(key=lambda ref: ref[0].line_of(ref[1]))
    for reference in references:
        _refer(*reference)
    for virtual in site.virtuals.values():
        if virtual.protocol not in ROUTED_PROTOCOLS:
            for pool_name in (virtual.pool, virtual.sorry_pool):
                pool = site.pools.get(pool_name)
                for member in pool.members if pool is not None else ():
                    if member.address.port == 0:
                        # Only a routed pool's next hops go without a port.
                        shown = member.address.host if ":" not in member.address.host \
                            else f"[{member.address.host}]"
                        raise pool.source.error(
                            f"member {member.name}",
                            f"bad address {shown!r} (missing port: use HOST:PORT)")
        profile = site.persistence.get(virtual.persistence)
        if profile is not None and profile.method == "ssl-session-id" \
                and virtual.protocol != "ssl":
            raise virtual.source.error(
                "persistence", f"persistence {profile.name!r} uses method ssl-session-id, "
                               f"which needs protocol = ssl (this virtual server is "
                               f"{virtual.protocol})")
