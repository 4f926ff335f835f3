"""The value forms of ``site.ini``: durations, addresses, lists, endpoints, ...

Each parser takes the raw string of one key and either returns the value the
model stores or raises :class:`ValueError` whose message says what is wrong
and what would be right. The messages name neither file nor key: the section
reader (:mod:`lbframe.config.parser`) knows those and wraps the message into a
:class:`~lbframe.errors.ConfigError`. Keeping these free of location makes
them usable (and property-testable) on their own.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re

from twisted.internet.endpoints import serverFromString

from lbframe.config.model import Address
from lbframe.errors import did_you_mean

__all__ = [
    "parse_duration", "parse_address", "parse_list", "parse_endpoint",
    "parse_bool", "parse_int", "parse_name", "parse_hostname", "split_endpoint",
    "is_loopback_endpoint", "is_udp_endpoint", "is_ssl_endpoint", "MEMBER_WEIGHT",
]

# -- durations ---------------------------------------------------------------

_DURATION = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>ms|s|m|h)?",
                       re.IGNORECASE)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``250ms``, ``10s``, ``2m``, ``1h`` or a bare number of seconds → seconds."""
    text = text.strip()
    match = _DURATION.fullmatch(text)
    if match is None:
        if text.startswith("-") and _DURATION.fullmatch(text[1:].strip()):
            raise ValueError(f"bad duration {text!r} (must not be negative)")
        raise ValueError(f"bad duration {text!r} (use 250ms, 10s, 2m, 1h)")
    number = float(match["num"])
    unit = (match["unit"] or "s").lower()
    # Dividing (not multiplying by 0.001) keeps "250ms" exactly 0.25.
    seconds = number / 1000 if unit == "ms" else number * _UNIT_SECONDS[unit]
    if not math.isfinite(seconds):
        raise ValueError(f"bad duration {text!r} (too large)")
    return seconds


# -- simple scalars ----------------------------------------------------------

_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}


def parse_bool(text: str) -> bool:
    """``yes``/``no``, ``true``/``false``, ``on``/``off``, ``1``/``0``."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"bad boolean {text!r} (use yes or no)")


def parse_int(text: str, low: int | None = None, high: int | None = None) -> int:
    """A whole number, optionally within ``low..high`` (inclusive)."""
    text = text.strip()
    if re.fullmatch(r"-?[0-9]+", text) is None:
        raise ValueError(f"bad number {text!r} (expected a whole number{_range(low, high)})")
    number = int(text)
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"{number} is out of range (expected a whole number{_range(low, high)})")
    return number


#: a member's ``weight=`` in site.ini, and what the admin API accepts for it
MEMBER_WEIGHT = (0, 256)


def _range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" of at least {low}"
    if high is not None:
        return f" of at most {high}"
    return ""


# Names are used in lists (split on commas and blanks), in ``sorry = NAME``
# next to ``page:PATH`` and in admin URLs, hence no blanks, commas, colons, slashes.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def parse_name(text: str) -> str:
    """A section, member or plugin name: letters, digits, ``.``, ``-``, ``_``."""
    text = text.strip()
    if _NAME.fullmatch(text) is None:
        raise ValueError(f"bad name {text!r} (use letters, digits, '.', '-' and '_')")
    return text


def parse_list(text: str) -> tuple[str, ...]:
    """Comma- or whitespace-separated items (newlines count as whitespace)."""
    return tuple(item for item in re.split(r"[\s,]+", text.strip()) if item)


# -- addresses ---------------------------------------------------------------

_HOSTNAME = re.compile(r"(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                       r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?")


def parse_hostname(text: str) -> str:
    """A DNS host name or an IP literal (as sent in SNI and checked in certificates)."""
    text = text.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if _HOSTNAME.fullmatch(text) is None or re.fullmatch(r"[0-9.]+", text):
        raise ValueError(f"bad host name {text!r}")
    return text


def parse_address(text: str) -> Address:
    """``host:port`` or ``[v6]:port``; the host is an IP or a name, never resolved.

    IPv6 literals are stored in their compressed form, so two spellings of one
    address compare equal (a reload must not see a change that is not one).
    """
    text = text.strip()
    if text.startswith("["):
        match = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", text)
        if match is None:
            raise ValueError(f"bad address {text!r} (use [IPV6]:PORT, e.g. [::1]:8080)")
        literal, port = match.groups()
        try:
            host = str(ipaddress.IPv6Address(literal))
        except ValueError:
            raise ValueError(f"bad address {text!r}: {literal!r} is not an IPv6 address") from None
    else:
        host, colon, port = text.rpartition(":")
        if not colon:
            host, port = text, None
        if ":" in host:
            raise ValueError(f"bad address {text!r} (write IPv6 addresses in brackets: [::1]:8080)")
        if re.fullmatch(r"[0-9.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"bad address {text!r}: {host!r} is not an IPv4 address") from None
        elif _HOSTNAME.fullmatch(host) is None:
            raise ValueError(f"bad address {text!r}: {host!r} is neither "
                             "an IP address nor a host name")
    if not port:
        raise ValueError(f"bad address {text!r} (missing port: use HOST:PORT)")
    if re.fullmatch(r"[0-9]{1,5}", port) is None or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad address {text!r}: port {port!r} is not a number from 1 to 65535")
    return Address(host, int(port))


# -- endpoints ---------------------------------------------------------------

#: Options of the endpoint types we check ourselves, positional order first.
#: Any other type (a Twisted plugin's) is left to ``serverFromString`` alone.
ENDPOINT_OPTIONS = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "backlog", "interface"),
    "ssl": ("port", "privateKey", "certKey", "sslmethod", "interface", "backlog",
            "extraCertChain", "dhParameters"),
    "unix": ("address", "mode", "backlog", "lockfile"),
    "udp": ("port", "interface"),
}
_SSL_FILES = ("privateKey", "certKey", "extraCertChain", "dhParameters")


class _NoReactor:
    """Stands in for the reactor: ``serverFromString`` only stores it.

    The config room must never import ``twisted.internet.reactor`` (that would
    install the global reactor before twistd chooses one).
    """


def split_endpoint(text: str) -> tuple[str, list[str], dict[str, str]]:
    """Split an endpoint string into type, positional and keyword arguments.

    Follows ``twisted.internet.endpoints._parse`` (backslash escapes the next
    character; after ``key=`` only ``:`` separates), which is private, so we
    keep our own copy rather than import it.
    """
    tokens: list[list[str]] = [[""]]
    separators = ":="
    chars = iter(text)
    for char in chars:
        if char in separators:
            if char == ":":
                tokens.append([""])
                separators = ":="
            else:
                tokens[-1].append("")
                separators = ":"
        elif char == "\\":
            escaped = next(chars, None)
            if escaped is None:  # Twisted's parser dies of a StopIteration here
                raise ValueError("it ends with a lone '\\' (write '\\\\' for a backslash)")
            tokens[-1][-1] += escaped
        else:
            tokens[-1][-1] += char
    args: list[str] = []
    kw: dict[str, str] = {}
    for token in tokens:
        if len(token) == 1:
            args.append(token[0])
        else:
            kw[token[0]] = token[1]
    if not args:  # "a=b": Twisted's parser fails with an IndexError
        raise ValueError("it does not start with a type (such as tcp:, ssl:, unix:)")
    return args[0], args[1:], kw


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _named_options(kind: str, args: list[str], kw: dict[str, str]) -> dict[str, str]:
    """Map positional and keyword arguments of a known type to option names."""
    names = ENDPOINT_OPTIONS[kind]
    if len(args) > len(names):
        raise ValueError(f"too many arguments for {kind}: (it takes {', '.join(names)})")
    named = dict(zip(names, args))
    for key, value in kw.items():
        if key not in names:
            raise ValueError(f"unknown option {key!r} for {kind}:{did_you_mean(key, names)}")
        if key in named:
            raise ValueError(f"option {key!r} is given twice")
        named[key] = value
    return named


def _check_options(kind: str, named: dict[str, str]) -> None:
    """The checks Twisted would fail with an unhelpful ``int()`` message."""
    first = ENDPOINT_OPTIONS[kind][0]
    if not named.get(first):
        raise ValueError(f"missing {first}")
    if "port" in named:
        port = named["port"]
        if re.fullmatch(r"[0-9]{1,5}", port) is None or int(port) > 65535:
            raise ValueError(f"port {port!r} is not a number from 0 to 65535")
    if named.get("interface") and named["interface"].lower() != "localhost":
        try:
            ipaddress.ip_address(named["interface"])
        except ValueError:
            raise ValueError(f"interface {named['interface']!r} is not an IP address "
                             "(or localhost)") from None
    if "backlog" in named and re.fullmatch(r"[1-9][0-9]*", named["backlog"]) is None:
        raise ValueError(f"backlog {named['backlog']!r} is not a positive number")
    if "mode" in named and re.fullmatch(r"[0-7]{1,4}", named["mode"]) is None:
        raise ValueError(f"mode {named['mode']!r} is not an octal file mode such as 660")
    if "lockfile" in named and named["lockfile"] not in ("0", "1"):
        raise ValueError(f"lockfile {named['lockfile']!r} is not 0 or 1")


#: ``interface=localhost`` is bound to this address, never looked up: the name
#: means loopback whatever the resolver (or /etc/hosts) says.
_LOCALHOST = {"tcp": "127.0.0.1", "ssl": "127.0.0.1", "udp": "127.0.0.1", "tcp6": "::1"}


def _localhost_literal(kind: str, named: dict[str, str]) -> dict[str, str]:
    """``interface=localhost`` → ``127.0.0.1`` (``::1`` for ``tcp6:``)."""
    if named.get("interface", "").lower() != "localhost":
        return named
    return dict(named, interface=_LOCALHOST[kind])


def _unparse(kind: str, named: dict[str, str]) -> str:
    """An endpoint string from a known type's named options (first one positional)."""
    named = dict(named)
    first = named.pop(ENDPOINT_OPTIONS[kind][0])
    return ":".join([kind, _escape(first)] + [f"{key}={_escape(value)}"
                                               for key, value in named.items()])


def _resolve_ssl_files(named: dict[str, str], base_dir: str) -> dict[str, str]:
    """Make the ssl: key/certificate paths relative to the site.ini folder.

    Twisted reads them relative to the process's working directory, which for
    a daemon is not where the user keeps site.ini; ``server.pem`` is Twisted's
    default ``privateKey``.
    """
    named = dict(named)
    named.setdefault("privateKey", "server.pem")
    for key in _SSL_FILES:
        if key in named:
            named[key] = os.path.join(base_dir, named[key])
    return named


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"cannot read {exc.filename!r}: {exc.strerror}"
    if type(exc).__module__.startswith("OpenSSL"):
        return f"cannot load the private key or certificate: {exc}"
    if isinstance(exc, TypeError):
        match = re.search(r"unexpected keyword argument '([^']*)'", str(exc))
        if match:
            return f"unknown option {match[1]!r}"
    return str(exc) or type(exc).__name__


def parse_endpoint(text: str, base_dir: str | None = None) -> str:
    """Check a server endpoint string and return the string to listen with.

    ``udp:PORT[:interface=IP]`` is ours (Twisted's endpoint strings are for
    streams only); everything else must satisfy Twisted's ``serverFromString``,
    whose ``TypeError`` (misspelt option), ``ValueError`` (unknown type) and
    ``OSError`` (missing key file) become one message. With ``base_dir``,
    relative ``ssl:`` file paths are made absolute against it, which is the only
    case where the returned string differs from ``text``.
    """
    text = text.strip()
    try:
        return _parse_endpoint(text, base_dir)
    except ValueError as exc:
        raise ValueError(f"bad endpoint {text!r}: {exc}") from None
    except Exception as exc:  # whatever else a malformed string provokes: never a traceback
        raise ValueError(f"bad endpoint {text!r}: {_describe(exc)}") from None


def _parse_endpoint(text: str, base_dir: str | None) -> str:
    kind, args, kw = split_endpoint(text)
    if kind in ENDPOINT_OPTIONS:
        named = _named_options(kind, args, kw)
        _check_options(kind, named)
        resolved = _localhost_literal(kind, named)
        if kind == "ssl" and base_dir is not None:
            resolved = _resolve_ssl_files(resolved, base_dir)
        if resolved != named:
            text = _unparse(kind, resolved)
        if kind == "udp":
            return text
    try:
        serverFromString(_NoReactor(), text)
    except ValueError as exc:
        if str(exc).startswith("Unknown endpoint type"):
            known = sorted(ENDPOINT_OPTIONS)
            raise ValueError(f"unknown endpoint type {kind!r}{did_you_mean(kind, known)}") from None
        raise ValueError(_describe(exc)) from None
    except Exception as exc:  # a plugin's or OpenSSL's own error: all are config errors
        raise ValueError(_describe(exc)) from None
    return text


def is_udp_endpoint(text: str) -> bool:
    try:
        return split_endpoint(text.strip())[0] == "udp"
    except ValueError:
        return False


def is_ssl_endpoint(text: str) -> bool:
    """True for an ``ssl:`` endpoint: the server end of TLS."""
    try:
        return split_endpoint(text.strip())[0] == "ssl"
    except ValueError:
        return False


def is_loopback_endpoint(text: str) -> bool:
    """True when only this host can connect: a unix socket or a loopback interface."""
    try:
        kind, args, kw = split_endpoint(text.strip())
        interface = _named_options(kind, args, kw).get("interface", "") \
            if kind in ("tcp", "tcp6", "ssl") else ""
    except ValueError:
        return False
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    if interface.lower() == "localhost":  # the name, never resolved
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False
