"""The built-in monitor plugins (F7), one module per monitor type.

Only plugins live here. The runner that schedules checks, and what monitor
plugins build on (:class:`~lbframe.monitoring.CheckResult`,
:func:`~lbframe.monitoring.check_port`,
:class:`~lbframe.monitoring.BaseMonitor`), are core: :mod:`lbframe.monitoring`.

``CheckResult`` and ``check_port`` are still importable from here because
plugin API 1.0's reference (``docs/plugins/interfaces.md``) told third-party
monitors to import them from ``lbframe.monitors``; new code imports them
from :mod:`lbframe.monitoring`.
"""

from lbframe.monitoring import CheckResult, check_port

__all__ = ["CheckResult", "check_port"]
