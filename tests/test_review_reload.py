"""Review: a reload that drops a persistence store (its section changed or
went away) closes it, so a remote store's connection does not outlive it."""

from __future__ import annotations

import os

from tests.test_reload import ReloadCase, free_port, site

PLUGIN = '''
from zope.interface import implementer
from lbframe import hookimpl
from lbframe.interfaces import IPersistenceStore

LOG = {log!r}


@implementer(IPersistenceStore)
class Store:
    asynchronous = False

    def __init__(self, url, profile, reactor):
        self.label = f"{{profile.name}}/{{profile.timeout:g}}"
        self.table = {{}}

    def __len__(self):
        return len(self.table)

    def get(self, key):
        return self.table.get(key)

    def set(self, key, name):
        self.table[key] = name

    def touch(self, key):
        pass

    def delete(self, key):
        self.table.pop(key, None)

    def close(self):
        with open(LOG, "a") as f:
            f.write(self.label + "\\n")


@hookimpl
def lbframe_register_persistence_stores(registry):
    registry.add("remote", lambda url, profile, reactor: Store(url, profile, reactor))
'''


class DroppedStoreTests(ReloadCase):
    def text(self, vport, timeout, with_profile=True):
        plugin = os.path.join(self.dir, "remotestore.py")
        extra = f"[lbframe]\nplugins = {plugin}\n"
        profile = (f"[persistence p]\nmethod = source-ip\nstore = remote://127.0.0.1:1\n"
                   f"timeout = {timeout}\n") if with_profile else ""
        text = site(vport, {"a": 1001}, extra=profile).replace("[lbframe]\n", extra)
        if with_profile:
            text = text.replace("pool = web\n", "pool = web\npersistence = p\n", 1)
        return text

    def closed(self):
        try:
            with open(self.log) as f:
                return f.read().split()
        except FileNotFoundError:
            return []

    def test_changed_and_removed_profiles_close_their_stores(self):
        self.log = os.path.join(self.dir, "closed.log")
        with open(os.path.join(self.dir, "remotestore.py"), "w") as f:
            f.write(PLUGIN.format(log=self.log))
        vport = free_port()
        svc = self.start(self.text(vport, "30m"))
        self.assertTrue(self.reload(svc, self.text(vport, "30m")))
        self.assertEqual(self.closed(), [])  # unchanged: carried, still open
        self.assertTrue(self.reload(svc, self.text(vport, "10m")))
        self.assertEqual(self.closed(), ["p/1800"])
        self.assertTrue(self.reload(svc, self.text(vport, "10m", with_profile=False)))
        self.assertEqual(self.closed(), ["p/1800", "p/600"])
