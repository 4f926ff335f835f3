"""Reading the committed seed corpus, and the hypothesis strategy that
mutates it (shared by tests/test_fuzz.py and the fallback runner)."""

from __future__ import annotations

import importlib
import os

from hypothesis import strategies as st

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def corpus_dir(target: str) -> str:
    return os.path.join(CORPUS, target)


def corpus(target: str) -> list[tuple[str, bytes]]:
    """(file name, content) of each seed of ``target``, sorted by name."""
    folder = corpus_dir(target)
    out = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            out.append((name, f.read()))
    return out


def target_function(target: str):
    return importlib.import_module(f"fuzz.targets.{target}").TestOneInput


def _mutate(seed: bytes, edits) -> bytes:
    data = bytearray(seed)
    for op, where, blob in edits:
        pos = where % (len(data) + 1)
        if op == "flip" and data:
            data[pos % len(data)] ^= 1 << (where % 8)
        elif op == "insert":
            data[pos:pos] = blob
        elif op == "delete":
            del data[pos:pos + 1 + where % 16]
        elif op == "truncate":
            del data[pos:]
        elif op == "replace":
            data[pos:pos + len(blob)] = blob
        elif op == "repeat":
            data[pos:pos] = bytes(data[pos:pos + 1 + where % 32]) * (1 + where % 4)
    return bytes(data)


_SPECIAL = st.sampled_from([b"\r\n", b"\n", b"\r", b"\x00", b" ", b"\t", b":", b";", b"0",
                            b"\xff", b"chunked", b"Content-Length: 1", b"\r\n\r\n", b"%",
                            b"\\", b"=", b"[", b"]", b"9" * 20, b"-", b"."])
_EDITS = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate", "replace",
                                             "repeat"]),
                            st.integers(0, 1 << 16),
                            st.one_of(_SPECIAL, st.binary(min_size=1, max_size=8))),
                  min_size=1, max_size=6)


def inputs(seeds: list[bytes]):
    """Corpus seeds with a few edits (most examples), or plain random bytes."""
    mutated = st.builds(_mutate, st.sampled_from(seeds), _EDITS)
    return st.one_of(mutated, mutated, mutated, st.binary(max_size=300))
