"""What the targets share: how a finding is raised, known findings, and
how an input is cut into reads.

A target returns normally when the parser behaved (accepted with a
consistent result, or refused with its own documented error) and raises
:class:`Finding` (an ``AssertionError``) when it did not; any other
exception escaping a target is a finding too.

Known findings: a finding that is filed for someone else to fix is listed in
:data:`KNOWN` by name. While it is listed, :func:`finding` does not raise for
it (so a coverage-guided run goes on looking for new ones instead of
stopping at the first known one); ``tests/test_fuzz.py`` runs its reproducer
with :func:`strict` on, as a ``todo`` test, so it stays visible. Remove the
name once it is fixed: the todo test then succeeds unexpectedly, which fails
the suite until the test loses its ``todo``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import traceback
import zlib

#: names of findings reported and left to their owners (see the module docstring);
#: each has a ``todo`` test in tests/test_fuzz.py and a ``finding-*`` corpus file
KNOWN: set[str] = set()

#: False, True (every known finding raises) or the set of those that do
_strict: bool | set = False
#: names of known findings seen since the last :func:`seen_known` call
_seen: set[str] = set()


class Finding(AssertionError):
    """The parser broke its contract on this input."""

    def __init__(self, name: str, message: str):
        super().__init__(f"[{name}] {message}")
        self.name = name


def finding(name: str, message: str) -> None:
    """Raise :class:`Finding` ``name``, unless it is a known one (and not strict)."""
    if name in KNOWN and not (_strict is True or (_strict and name in _strict)):
        _seen.add(name)
        return
    raise Finding(name, message)


def check(condition: bool, name: str, message) -> None:
    """``finding(name, message)`` unless ``condition``; ``message`` may be a
    callable, so that building it costs nothing on the good path."""
    if not condition:
        finding(name, message() if callable(message) else message)


@contextlib.contextmanager
def strict(only: set[str] | None = None):
    """Known findings raise too, inside this block (only those named in
    ``only``, when given: a reproducer then fails on its own finding, not on
    another known one it meets first)."""
    global _strict
    before, _strict = _strict, True if only is None else set(only)
    try:
        yield
    finally:
        _strict = before


def seen_known() -> set[str]:
    """The known findings met since the last call (and forget them)."""
    found = set(_seen)
    _seen.clear()
    return found


def rng_for(data: bytes) -> random.Random:
    """A random generator seeded by the input: the same input always makes
    the same choices, so a crash reproduces from the input file alone."""
    return random.Random(zlib.crc32(data))


def cuts(data: bytes, rng: random.Random, most: int = 8) -> list[bytes]:
    """``data`` cut into reads at a few places chosen by ``rng`` (one-byte
    reads now and then, the hardest case for an incremental parser)."""
    if len(data) < 2:
        return [data]
    if rng.random() < 0.1 and len(data) <= 512:
        return [data[i:i + 1] for i in range(len(data))]
    points = sorted(set(rng.randrange(1, len(data)) for _ in range(rng.randrange(1, most + 1))))
    pieces, start = [], 0
    for p in points:
        pieces.append(data[start:p])
        start = p
    pieces.append(data[start:])
    return pieces


def crash_name(prefix: str, exc: BaseException) -> str:
    """A name for an unexpected exception: its type and the innermost
    lbframe function it came from, so one bug is one finding however many
    inputs reach it."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}lbframe{os.sep}" in f.filename] or frames
    where = f"{os.path.basename(ours[-1].filename)}:{ours[-1].name}" if ours else "?"
    return f"{prefix}-crash:{type(exc).__name__}:{where}"


def guarded(prefix: str):
    """Wrap a target so that any exception but a :class:`Finding` becomes the
    finding :func:`crash_name` names (with its traceback as the message)."""
    def wrap(function):
        @functools.wraps(function)
        def TestOneInput(data: bytes) -> None:
            try:
                function(data)
            except Finding:
                raise
            except Exception as e:
                finding(crash_name(prefix, e), traceback.format_exc())
        return TestOneInput
    return wrap
