"""``[rule X]`` content switching, compiled once at load time.

A rule reads one *subject* of the request head (``path``, ``host``,
``method``, ``header:NAME``, ``cookie:NAME``, ``query:NAME``) and compares it
with one operator: ``=`` equal, ``~`` regex search, ``^=`` prefix, ``$=``
suffix. Host names compare case-insensitively (the head's host is already
lower-cased and has no port); everything else is compared as sent. A
request that lacks the subject (no such header, cookie or parameter) does
not match. ``header:NAME`` matches when any of the header's values does.

``path`` is the *normalised* path (:func:`lbframe.messages.normalize_path`):
absolute-form, percent-escapes of unreserved characters, repeated slashes,
backslashes and dot segments are written one way, so ``path ^= /admin``
sees ``//admin``, ``/x/../admin``, ``/%61dmin`` and ``http://h/admin``
alike. The member still gets the target as it was sent.
"""

from __future__ import annotations

import re
from typing import Callable

import attrs

from lbframe.config.model import Rule
from lbframe.messages import RequestHead


def _comparison(op: str, value: str) -> Callable[[str], bool]:
    if op == "=":
        return value.__eq__
    if op == "^=":
        return lambda text: text.startswith(value)
    if op == "$=":
        return lambda text: text.endswith(value)
    if op == "~":
        search = re.compile(value).search
        return lambda text: search(text) is not None
    raise ValueError(f"unknown operator {op!r}")


def _subject(subject: str, arg: str | None) -> Callable[[RequestHead], list]:
    """A function giving the values of ``subject`` in a head (empty: absent)."""
    if subject == "path":
        return lambda head: [head.normalized_path]
    if subject == "method":
        return lambda head: [head.method]
    if subject == "host":
        return lambda head: [] if head.host is None else [head.host]
    if subject == "header":
        return lambda head: head.header_values(arg)
    if subject == "cookie":
        def cookie(head):
            value = head.cookie(arg)
            return [] if value is None else [value]
        return cookie
    if subject == "query":
        def query(head):
            value = head.query_param(arg)
            return [] if value is None else [value]
        return query
    raise ValueError(f"unknown subject {subject!r}")


@attrs.define(frozen=True, eq=False)
class CompiledRule:
    """A rule ready to test requests: ``rule.matches(head)``."""

    name: str
    pool: str
    _values: Callable = attrs.field(repr=False)
    _compare: Callable = attrs.field(repr=False)

    @classmethod
    def compile(cls, spec: Rule) -> "CompiledRule":
        value = spec.value.lower() if spec.subject == "host" and spec.op != "~" else spec.value
        return cls(spec.name, spec.pool, _subject(spec.subject, spec.subject_arg),
                   _comparison(spec.op, value))

    def matches(self, head: RequestHead) -> bool:
        compare = self._compare
        return any(compare(value) for value in self._values(head))
