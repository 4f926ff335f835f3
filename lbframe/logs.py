"""``log_format = json``: lbframe's own events as one JSON object a line.

Every event lbframe logs goes through Twisted's logger with its facts as
fields (``pool``, ``member``, ``state``, ``reason``, …) and, for the events
an operator acts on, an ``lbframe_event`` name:

========================  ===============================================
``member_state``          a member changed state (up, down, draining, …)
``admin_change``          a change through the admin API
``reload``                a reload was applied (``changes`` says what)
``reload_refused``        a reload was refused (``error``: the check message)
``stopping``              a graceful stop began
``connections_closed``    connections still open when ``stop_grace`` ended
========================  ===============================================

:class:`JSONLinesObserver` writes each event as one line: ``time`` (UTC,
ISO 8601), ``level``, ``namespace``, ``event`` (the ``lbframe_event``, or
null), ``message`` (the event's text, as the text log says it) and then the
event's own fields. Twisted's ``jsonFileLogObserver`` is not used because it
writes record-separated JSON text sequences (RFC 7464) with Twisted's
internal keys, which line-based tools (``jq``, Loki, Vector) read less well.

Under ``twistd``, :func:`twistd_observer` writes to the file twistd would
have written to (``--logfile``, stdout with ``-n``, ``twistd.log``).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer

#: keys of the line itself; an event field of the same name is left out
RESERVED = frozenset({"time", "level", "namespace", "event", "message", "failure"})
#: keys of Twisted's legacy log events, which say nothing the message does not
LEGACY = frozenset({"message", "isError", "system", "time", "format", "why", "printed",
                    "log_legacy"})


def _jsonable(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth > 4:
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def event_as_dict(event: dict) -> dict[str, Any]:
    """The JSON object for one Twisted log event."""
    when = event.get("log_time")
    level = event.get("log_level")
    out: dict[str, Any] = {
        "time": datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds")
        if when is not None else None,
        "level": getattr(level, "name", None) or ("error" if event.get("isError") else "info"),
        "namespace": event.get("log_namespace") or event.get("system"),
        "event": event.get("lbframe_event"),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in RESERVED or key in LEGACY or key == "lbframe_event":
            continue
        out[key] = _jsonable(value)
    failure = event.get("log_failure") or event.get("failure")
    if failure is not None:
        try:
            out["failure"] = failure.getTraceback()
        except Exception:  # a failure that cannot format itself still gets logged
            out["failure"] = repr(failure)
    return out


def json_line(event: dict) -> str:
    """One line of JSON (no newline inside) for a log event."""
    return json.dumps(event_as_dict(event), ensure_ascii=False, separators=(",", ":"))


@implementer(ILogObserver)
class JSONLinesObserver:
    """Writes every event to ``out`` as a JSON line."""

    def __init__(self, out: IO[str]):
        self.out = out

    def __call__(self, event: dict) -> None:
        try:
            line = json_line(event)
        except Exception as e:  # never lose an event to a field that will not serialise
            line = json.dumps({"level": "error", "event": "log_error",
                               "message": f"cannot write a log event as JSON: {e!r}"})
        self.out.write(line + "\n")
        self.out.flush()


def twistd_log_file(server_options, reactor=None) -> IO[str] | None:
    """The file ``twistd`` would log to with these (top-level) options;
    None when it logs to syslog or through a ``--logger`` of its own."""
    get = getattr(server_options, "get", lambda key, default=None: default)
    if get("syslog") or get("logger"):
        return None
    logfile, nodaemon = get("logfile"), get("nodaemon")
    if logfile == "-" or (nodaemon and not logfile):
        return sys.stdout
    from twisted.python.logfile import LogFile

    out = LogFile.fromFullPath(logfile or "twistd.log")
    if reactor is not None:
        # As twistd does for its own log file: SIGUSR1 rotates it.
        import signal

        signal.signal(signal.SIGUSR1, lambda *a: reactor.callFromThread(out.rotate))
    return out


def twistd_observer(server_options, reactor=None) -> JSONLinesObserver | None:
    """A JSON-lines observer for twistd's log file, or None (see
    :func:`twistd_log_file`)."""
    out = twistd_log_file(server_options, reactor)
    return None if out is None else JSONLinesObserver(out)
