"""Move every port an example takes by one offset: ``python examples/shift_ports.py
OFFSET EXAMPLE_DIR DEST_DIR`` copies the example's files into DEST_DIR with
each port in its ``site.ini`` (``listen =``, ``admin =`` and ``member … =``
lines) raised by OFFSET, and prints the new ``site.ini``'s path.

The examples take fixed ports (their READMEs list them); when one is in use
on your machine, move them all at once::

    twistd -n --pidfile= lbframe --config "$(python examples/shift_ports.py 1000 examples/web /tmp/web)"

The quickstart's ``run`` does this for you with ``--port-offset N`` or
``PORT_OFFSET=N``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys

#: the keys whose values hold ports: listen endpoints, the admin endpoint, members
PORT_KEYS = re.compile(r"^\s*(?P<key>listen|admin|member\s+\S+)\s*=")
#: a Twisted endpoint's port: ``tcp:8080:…``, ``ssl:8443:…``, ``udp:53:…``
ENDPOINT_PORT = re.compile(r"(?<![^\s,])([a-z][a-z0-9]*):(\d{1,5})\b")


def _moved(port: str, offset: int) -> str:
    new = int(port) + offset
    if not 0 < new < 65536:
        raise SystemExit(f"error: port {port} + {offset} is out of range")
    return str(new)


def shift_line(line: str, offset: int) -> str:
    match = PORT_KEYS.match(line)
    if match is None:
        return line
    key, _, value = line.partition("=")
    if match.group("key").startswith("member"):
        # ``HOST:PORT [options]``: the port after the address's last colon
        # (``[::1]:8081`` too).
        body = value.rstrip("\r\n")
        end = value[len(body):]
        lead = body[:len(body) - len(body.lstrip())]
        address, sep, rest = body.lstrip().partition(" ")
        host, colon, port = address.rpartition(":")
        if colon and port.isdigit():
            address = f"{host}:{_moved(port, offset)}"
        return key + "=" + lead + address + sep + rest + end
    return key + "=" + ENDPOINT_PORT.sub(
        lambda m: f"{m.group(1)}:{_moved(m.group(2), offset)}", value)


def shift_text(text: str, offset: int) -> str:
    return "".join(shift_line(line, offset) for line in text.splitlines(keepends=True))


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        return 2
    try:
        offset = int(argv[0])
    except ValueError:
        print(f"error: the offset must be a whole number, not {argv[0]!r}", file=sys.stderr)
        return 2
    source, dest = argv[1], argv[2]
    if not os.path.isfile(os.path.join(source, "site.ini")):
        print(f"error: no site.ini in {source}", file=sys.stderr)
        return 2
    shutil.copytree(source, dest, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    path = os.path.join(dest, "site.ini")
    with open(os.path.join(source, "site.ini")) as f:
        text = shift_text(f.read(), offset)
    with open(path, "w") as f:
        f.write(text)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
