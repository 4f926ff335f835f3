"""``site.ini`` → the frozen model (:class:`Site`), or the first error in it.

This room imports nothing of lbframe but :mod:`lbframe.errors`, and never the
Twisted reactor: ``lbframe check`` and a reload validate a file without
starting anything. Plugins' own keys (in ``[virtual]``, ``[pool]``,
``[monitor]``, ``[persistence]``, ``[redundancy]``) are kept as raw strings in
each section's ``options``; :func:`check_options` is how the plugin step
refuses the ones no plugin claims.
"""

from __future__ import annotations

from typing import Iterable

from lbframe.config.model import (
    Address, Global, MemberSpec, Monitor, Persistence, Pool, Redundancy, Rule, Site, Source,
    Virtual,
)
from lbframe.config.parser import KEYS, build_site
from lbframe.config.values import (
    parse_address, parse_bool, parse_duration, parse_endpoint, parse_int, parse_list,
)
from lbframe.errors import ConfigError, did_you_mean

__all__ = [
    "load_site", "parse_site", "check_options", "KEYS", "ConfigError",
    "Address", "Global", "MemberSpec", "Monitor", "Persistence", "Pool", "Redundancy",
    "Rule", "Site", "Source", "Virtual",
    "parse_address", "parse_bool", "parse_duration", "parse_endpoint", "parse_int",
    "parse_list",
]


def parse_site(text: str, path: str = "site.ini") -> Site:
    """Parse ``site.ini`` text; ``path`` names it in errors and anchors relative paths."""
    return build_site(text, path)


def load_site(path: str) -> Site:
    """Read and parse the file at ``path``; any problem is a :class:`ConfigError`."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=path) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text (byte {data[exc.start]:#04x})",
                          path=path, line=line) from None
    return parse_site(text, path)


def check_options(section: object, allowed: Iterable[str]) -> None:
    """Refuse the first key of ``section.options`` that is not in ``allowed``.

    For the plugin step: a plugin names the keys it understands; anything else
    is a typo, reported at its line with a "did you mean" among the built-in
    keys of that section and the plugin's own.
    """
    allowed = set(allowed)
    kind = section.source.section.split()[0].lower()
    for key in section.options:
        if key not in allowed:
            known = [*KEYS.get(kind, ()), *allowed]
            raise section.source.error(key, f"unknown key {key!r}{did_you_mean(key, known)}")
