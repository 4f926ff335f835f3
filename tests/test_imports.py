"""The import graph of ``lbframe/``: no cycle, and no import pointing up the
rooms table of ``docs/design.md`` (a module imports only from its own row
and the rows above it).

The graph is read with :mod:`ast` from the source, every ``import``
counted wherever it is (a function-level import is an import too), so it
sees what an import at run time would do. The rooms are the table's rows,
in order: the first cell of each row names its paths (``lbframe/config/``,
``lbframe/service.py``); a module belongs to the row naming the longest
prefix of its path. A module no row names is an error too, so a new module
gets its place in the table.
"""

from __future__ import annotations

import ast
import os
import re

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "lbframe")
DESIGN = os.path.join(ROOT, "docs", "design.md")


def modules() -> dict[str, str]:
    """``{"lbframe.config.parser": "lbframe/config/parser.py", ...}``"""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), ROOT)
                dotted = rel[:-3].replace(os.sep, ".")
                if dotted.endswith(".__init__"):
                    dotted = dotted[: -len(".__init__")]
                found[dotted] = rel
    return found


def imports(module: str, path: str, known: dict[str, str]) -> set[str]:
    """The lbframe modules ``module`` imports. ``from pkg import name`` is an
    import of ``pkg.name`` when that is a module, else of ``pkg``."""
    tree = ast.parse(open(os.path.join(ROOT, path)).read(), path)
    is_package = path.endswith("__init__.py")
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                if not is_package:
                    parts = parts[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                     for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
    return targets


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, path, known) for m, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def rooms() -> list[list[str]]:
    """The paths under ``lbframe/`` each row of the rooms table names, in order."""
    text = open(DESIGN).read()
    table = text.split("\n## Rooms", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        paths = [p for p in re.findall(r"`([^`]+)`", first) if p.startswith("lbframe/")]
        if paths:
            rows.append(paths)
    return rows


def rank_of(path: str, table: list[list[str]]) -> int | None:
    best, rank = -1, None
    for i, paths in enumerate(table):
        for p in paths:
            if (path == p or (p.endswith("/") and path.startswith(p))) and len(p) > best:
                best, rank = len(p), i
    return rank


#: Cycles known and waiting for their fix, each with why it is here. Any
#: other cycle fails; so does an entry here that no longer is one.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


class ImportGraphTests(SynchronousTestCase):
    def test_no_cycle(self):
        found = {tuple(c) for c in cycles(graph())}
        self.assertEqual(sorted(found - KNOWN_CYCLES), [], "import cycles")
        self.assertEqual(sorted(KNOWN_CYCLES - found), [],
                         "fixed: take these out of KNOWN_CYCLES")

    def test_no_import_points_up_the_rooms_table(self):
        table = rooms()
        self.assertGreater(len(table), 10, "the rooms table was not found in docs/design.md")
        known = modules()
        unplaced = [path for path in known.values() if rank_of(path, table) is None]
        self.assertEqual(unplaced, [], "modules no row of the rooms table names")
        upward = []
        for module, targets in graph().items():
            here = rank_of(known[module], table)
            for target in targets:
                there = rank_of(known[target], table)
                if there > here:
                    upward.append(f"{known[module]} imports {known[target]} "
                                  f"(row {there + 1} is below row {here + 1})")
        self.assertEqual(sorted(upward), [])

    def test_nothing_below_twistd_imports_tap(self):
        importers = sorted(m for m, targets in graph().items() if "lbframe.tap" in targets)
        self.assertEqual(importers, [])

    def test_the_check_sees_a_cycle_and_an_upward_import(self):
        """The checks themselves: a made-up graph with a cycle is caught, and
        so is an import from a lower row (config importing the service)."""
        self.assertEqual(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}),
                         [["a", "b", "c"]])
        table = rooms()
        self.assertLess(rank_of("lbframe/config/parser.py", table),
                        rank_of("lbframe/service.py", table))
        self.assertLess(rank_of("lbframe/service.py", table), rank_of("lbframe/site.py", table))
        self.assertLess(rank_of("lbframe/site.py", table), rank_of("lbframe/tap.py", table))
