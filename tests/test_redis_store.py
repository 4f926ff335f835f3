"""The Redis persistence store plugin (``plugins/lbframe-redis``), run by the
README's test command.

The plugin is packaged on its own, with its own tests; this module runs them
from the checkout (or from an installed ``lbframe-redis``) so that CI runs
them too. They start ``redis-server`` on 127.0.0.1 and skip when it is not
installed, unless ``LBFRAME_SYSTEM_TESTS=required``.
"""

import importlib.util
import os
import sys

if importlib.util.find_spec("lbframe_redis") is None:  # not installed: the checkout's
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "plugins", "lbframe-redis", "src"))

from lbframe_redis.test.test_store import (  # noqa: E402
    OutageTests, SharedTableTests, StoreTests,
)

__all__ = ["OutageTests", "SharedTableTests", "StoreTests"]
