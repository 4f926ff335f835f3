"""Errors that users see, each able to say where in which file it comes from."""

from __future__ import annotations

import difflib
from typing import Iterable


class LBFrameError(Exception):
    """Base of lbframe's own errors."""


class ConfigError(LBFrameError):
    """A problem in ``site.ini``, located by file, line, section and key.

    ``str(err)`` is the line ``lbframe check`` prints::

        site.ini:12: [pool web] scheduler: unknown scheduler 'round-robbin' (did you mean 'round-robin'?)
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 section: str | None = None, key: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.section = section
        self.key = key

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        what = ""
        if self.section is not None:
            what = f"[{self.section}] "
        if self.key is not None:
            what += f"{self.key}: "
        return f"{where}{what}{self.message}"


class OptionError(LBFrameError):
    """Raised by a plugin factory about one of its own keys.

    The site builder turns it into a :class:`ConfigError` carrying the file,
    line and section of that key, so plugins never need to know where their
    configuration came from.
    """

    def __init__(self, key: str | None, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


class PluginError(LBFrameError):
    """A plugin could not be loaded or registered (duplicate name, bad hook, ...)."""


class ListenError(LBFrameError):
    """A virtual server could not listen on one of its endpoints.

    ``str(err)``: ``virtual web: cannot listen on tcp:80:interface=192.0.2.1:
    Cannot assign requested address``.
    """

    def __init__(self, virtual: str, endpoint: str, why: str):
        super().__init__(f"virtual {virtual}: cannot listen on {endpoint}: {why}")
        self.virtual = virtual
        self.endpoint = endpoint
        self.why = why


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def reject_unknown_options(options, what: str | None = None, known=()) -> None:
    """For plugin factories: raise :class:`OptionError` for the first key of
    ``options`` not in ``known``, e.g. ``unknown key 'x' for monitor type tcp``."""
    for key in options or {}:
        if key not in known:
            where = f" for {what}" if what else ""
            raise OptionError(key, f"unknown key {key!r}{where}{did_you_mean(key, known)}")


def describe_connect_error(failure) -> str:
    """Operator-facing words for a failed connect (a Twisted ``Failure``), the
    same from a monitor and from the data path: ``connect refused``,
    ``connect timeout``, ``no route to host``, else ``connect failed: …``."""
    from twisted.internet import error  # not at import: the config room stays free of Twisted

    if failure.check(error.ConnectionRefusedError):
        return "connect refused"
    if failure.check(error.TimeoutError):
        return "connect timeout"
    if failure.check(error.NoRouteError):
        return "no route to host"
    return f"connect failed: {failure.getErrorMessage()}"
