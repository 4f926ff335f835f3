"""The access log (``[lbframe] access_log = PATH`` or ``-`` for stdout).

One line per request (http), or per connection when it closes (tcp, ssl),
with who asked, where it went and how long each
step took, as ``key=value`` pairs that both people and ``awk``/Loki/Vector
read (or one JSON object per line when ``log_format = json``). Virtual
servers naming the same file share one writer. ``-`` is the process's
standard output as it was at start (not twistd's redirected ``sys.stdout``),
so the lines come out as written, without a log prefix.

Timings are milliseconds: ``queue`` (waiting for a member under maxconn),
``connect`` (to the member; 0 when a kept-alive connection was reused),
``first_byte`` (from the request's start to the member's first response
byte) and ``total``.
"""

from __future__ import annotations

import json
import sys
import time

_open: dict[str, "AccessLog"] = {}

FIELDS = ("time", "client", "virtual", "rule", "pool", "member", "method", "target",
          "version", "status", "bytes_in", "bytes_out", "queue_ms", "connect_ms",
          "first_byte_ms", "total_ms", "outcome")
#: written only by the protocols that fill them in (udp: datagrams each way)
EXTRA_FIELDS = ("datagrams_in", "datagrams_out")


def _text_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    if not text or any(c in text for c in ' "\\=') or not text.isprintable():
        return json.dumps(text)
    return text


class AccessLog:
    """Writes access log lines to one file (or stdout)."""

    def __init__(self, path: str, json_lines: bool = False):
        self.path = path
        self.json_lines = json_lines
        if path == "-":
            # The process's real standard output: under twistd, sys.stdout
            # is twistd's log (each line would get its timestamp and
            # "[stdout#info]" prefix in front of ours).
            self.file = sys.__stdout__ or sys.stdout
            self._owned = False
        else:
            self.file = open(path, "a", encoding="utf-8", buffering=1)
            self._owned = True

    def write(self, entry: dict) -> None:
        """Log one request; ``entry`` has (some of) :data:`FIELDS`."""
        entry.setdefault("time", _timestamp())
        fields = FIELDS
        if "datagrams_in" in entry:
            fields = FIELDS + EXTRA_FIELDS
        if self.json_lines:
            line = json.dumps({k: entry.get(k) for k in fields}, separators=(",", ":"))
        else:
            line = " ".join(f"{k}={_text_value(entry.get(k))}" for k in fields)
        try:
            self.file.write(line + "\n")
            if not self._owned:
                # stdout to a pipe (journald, a container's log) is block
                # buffered: a line is sent when it is written.
                self.file.flush()
        except (OSError, ValueError):
            pass  # a full disk must not take the data path down

    def close(self) -> None:
        if self._owned:
            self.file.close()


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def access_log_setting(site) -> tuple | None:
    """``(path, json_lines)`` from a site's ``[lbframe]``, or None."""
    glob = getattr(site, "lbframe", None)
    if glob is None or glob.access_log is None:
        return None
    return (glob.access_log, glob.log_format == "json")


def access_log_for(path: str | None, json_lines: bool = False) -> AccessLog | None:
    """The shared writer for ``path`` (None: no access log)."""
    if path is None:
        return None
    log = _open.get(path)
    if log is None or log.file.closed:
        log = _open[path] = AccessLog(path, json_lines)
    return log
