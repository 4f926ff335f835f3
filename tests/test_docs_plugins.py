"""The plugin docs cannot go stale: every hook in lbframe.hookspecs and every
method and attribute of every interface in lbframe.interfaces has its heading
in docs/plugins/, with its current signature (datasette's
``test_plugin_hooks_are_documented`` is the idea). Both are read at run time,
so a hook or interface method added tomorrow fails here until documented."""

from __future__ import annotations

import inspect
import os
import re

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.interface import InterfaceClass, Method

import lbframe.hookspecs
import lbframe.interfaces
from lbframe import PROJECT

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                    "plugins")


def headings(name: str) -> dict[str, str]:
    """``{heading text in backticks: the section's text}`` of a page."""
    with open(os.path.join(DOCS, name)) as f:
        text = f.read()
    out = {}
    parts = re.split(r"^#{2,4} `([^`]+)`[^\n]*$", text, flags=re.M)
    for title, body in zip(parts[1::2], parts[2::2]):
        out[title] = re.split(r"^#{1,4} ", body, maxsplit=1, flags=re.M)[0]
    return out


def hookspecs() -> dict[str, tuple[str, dict]]:
    """``{name: (signature, options)}`` of every hook spec."""
    marker = PROJECT + "_spec"
    return {name: (f"{name}{inspect.signature(func)}", getattr(func, marker))
            for name, func in vars(lbframe.hookspecs).items()
            if callable(func) and hasattr(func, marker)}


def interface_entries() -> dict[str, str]:
    """``{"IScheduler.pick(context, exclude)": "IScheduler.pick", ...}`` for
    every name each interface of lbframe.interfaces defines."""
    out = {}
    for iname, iface in vars(lbframe.interfaces).items():
        if not isinstance(iface, InterfaceClass) or iface.__module__ != lbframe.interfaces.__name__:
            continue
        out[iname] = iname
        for name in iface.names():
            desc = iface[name]
            sig = desc.getSignatureString() if isinstance(desc, Method) else ""
            out[f"{iname}.{name}{sig}"] = f"{iname}.{name}"
    return out


class HookDocsTests(SynchronousTestCase):
    def test_every_hook_is_documented_with_its_signature(self):
        documented = headings("hooks.md")
        specs = hookspecs()
        self.assertGreaterEqual(len(specs), 10)
        missing = [sig for sig, _ in specs.values() if sig not in documented]
        self.assertEqual(missing, [], "hooks missing from docs/plugins/hooks.md (a heading "
                                      "### `name(args)` each, with the current arguments)")

    def test_documented_hooks_exist(self):
        """A hook removed or renamed in the code goes from the docs too."""
        specs = {sig for sig, _ in hookspecs().values()}
        stale = [h for h in headings("hooks.md") if h.startswith("lbframe_") and h not in specs]
        self.assertEqual(stale, [])

    def test_each_hook_says_when_and_how_it_is_called(self):
        documented = headings("hooks.md")
        for name, (sig, opts) in hookspecs().items():
            section = documented.get(sig, "")
            self.assertIn("**Called:**", section, name)
            words = (f"firstresult: {'yes' if opts['firstresult'] else 'no'}",
                     f"historic: {'yes' if opts['historic'] else 'no'}")
            for w in words:
                self.assertIn(w, section, f"{name}: the docs must say {w!r}")
            for arg in inspect.signature(getattr(lbframe.hookspecs, name)).parameters:
                self.assertIn(f"`{arg}`", section, f"{name}: argument {arg} is not described")


class InterfaceDocsTests(SynchronousTestCase):
    def test_every_interface_name_is_documented_with_its_signature(self):
        documented = headings("interfaces.md")
        entries = interface_entries()
        self.assertIn("IScheduler.pick(context, exclude)", entries)
        missing = [e for e in entries if e not in documented]
        self.assertEqual(missing, [], "interface names missing from docs/plugins/interfaces.md "
                                      "(a heading ### `IName.method(args)` or `IName.attr` each)")

    def test_documented_names_exist(self):
        entries = interface_entries()
        stale = [h for h in headings("interfaces.md") if h.startswith("I") and h not in entries]
        self.assertEqual(stale, [])


class GuideTests(SynchronousTestCase):
    def test_pages_exist_and_are_linked(self):
        for page in ("index.md", "writing.md", "hooks.md", "interfaces.md", "testing.md"):
            self.assertTrue(os.path.exists(os.path.join(DOCS, page)), page)
        with open(os.path.join(DOCS, "index.md")) as f:
            index = f.read()
        for page in ("writing.md", "hooks.md", "interfaces.md", "testing.md"):
            self.assertIn(f"]({page})", index)
        with open(os.path.join(DOCS, "..", "index.md")) as f:
            self.assertIn("](plugins/index.md)", f.read())

    def test_testing_page_covers_the_kit(self):
        """Every public name of lbframe.testing is in docs/plugins/testing.md."""
        import lbframe.testing
        with open(os.path.join(DOCS, "testing.md")) as f:
            text = f.read()
        missing = [n for n in lbframe.testing.__all__ if f"`{n}" not in text]
        self.assertEqual(missing, [])
