"""The ``lbframe`` command: check a config, show status, change members, list plugins."""

from __future__ import annotations

import argparse
import os
import sys

from lbframe.errors import ConfigError, PluginError

DEFAULT_ADMIN = "http://127.0.0.1:8404"

#: ``lbframe --help``: plain text (the module docstring is reStructuredText)
DESCRIPTION = """\
lbframe: check a site.ini, show a running lbframe's status, change its
members, list the plugins it would load. Run the site itself with
`twistd -n lbframe --config site.ini`."""

EPILOG = """\
examples:
  lbframe check site.ini
  lbframe status                      (the admin API at http://127.0.0.1:8404)
  lbframe member web a drain          (then: enable, disable, weight 0-256)
  lbframe plugins site.ini"""


def cmd_check(args) -> int:
    from twisted.internet.testing import MemoryReactorClock

    from lbframe.site import load

    try:
        runtime = load(args.config, MemoryReactorClock())
    except (ConfigError, PluginError) as e:
        print(e, file=sys.stderr)
        return 1
    site = runtime.site
    print(f"{args.config}: OK ({len(site.virtuals)} virtual servers, {len(site.pools)} pools, "
          f"{sum(len(p.members) for p in site.pools.values())} members)")
    return 0


def cmd_plugins(args) -> int:
    """Every plugin, where it came from, its version and what it registered:
    the plugins a site would load (its ``plugins =`` too, when given)."""
    from lbframe import PLUGIN_API, __version__
    from lbframe.plugins import load_plugins

    extra, base = (), None
    if args.config:
        from lbframe.config import load_site
        try:
            site = load_site(args.config)
        except ConfigError as e:
            print(e, file=sys.stderr)
            return 1
        extra, base = site.lbframe.plugins, os.path.dirname(os.path.abspath(args.config))
    try:
        plugins = load_plugins(extra, base_dir=base)
    except PluginError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"lbframe {__version__}, plugin API {'.'.join(map(str, PLUGIN_API))}")
    for info in plugins.infos:
        details = [info.origin]
        if info.version:
            details.append(info.version)
        if info.origin != "built-in" and info.api is not None:
            details.append(f"plugin API {'.'.join(map(str, info.api))}")
        if info.disabled:
            details.append("disabled by LBFRAME_DISABLE_PLUGINS")
        print(f"{info.name} ({', '.join(details)})")
        for noun, names in plugins.registered_by(info.name).items():
            print(f"    {noun}: {', '.join(names)}")
    return 0


def _token(args) -> str | None:
    return args.token or os.environ.get("LBFRAME_ADMIN_TOKEN")


def cmd_status(args) -> int:
    from lbframe.admin.client import AdminClientError, fetch_status, format_status

    try:
        print(format_status(fetch_status(args.admin, _token(args))))
    except AdminClientError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_member(args) -> int:
    from lbframe.admin.client import AdminClientError, change_member

    from lbframe.config.values import MEMBER_WEIGHT

    weight = None
    if args.action == "weight":
        low, high = MEMBER_WEIGHT
        if args.value is None or not (args.value.isascii() and args.value.isdigit()) \
                or not low <= int(args.value) <= high:
            print(f"error: weight needs a whole number from {low} to {high}, e.g. `weight 3`",
                  file=sys.stderr)
            return 2
        weight = int(args.value)
    elif args.value is not None:
        print(f"error: {args.action} takes no value", file=sys.stderr)
        return 2
    try:
        member = change_member(args.admin, _token(args), args.pool, args.member, args.action, weight)
    except AdminClientError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.pool}/{args.member}: state {member.get('state')}, weight {member.get('weight')}")
    return 0


def cmd_redundancy(args) -> int:
    from lbframe.admin.client import AdminClientError, redundancy_command

    try:
        red = redundancy_command(args.admin, _token(args), args.command)
    except AdminClientError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"redundancy: {red.get('driver', '-')} ({red.get('state', '-')})")
    return 0


def parser() -> argparse.ArgumentParser:
    from lbframe import __version__
    from lbframe.config.values import MEMBER_WEIGHT

    p = argparse.ArgumentParser(prog="lbframe", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"lbframe {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("check", help="validate a site.ini")
    c.add_argument("config")
    c.set_defaults(func=cmd_check)

    c = sub.add_parser("plugins", help="list loaded plugins and what they register")
    c.add_argument("config", nargs="?")
    c.set_defaults(func=cmd_plugins)

    for name, func, helptext in (("status", cmd_status, "show a running instance's status"),
                                 ("member", cmd_member, "drain, disable, enable or weight a member"),
                                 ("takeover", cmd_redundancy,
                                  "heartbeat driver: this node takes the shared IP now"),
                                 ("release", cmd_redundancy,
                                  "heartbeat driver: hand the shared IP to the peer")):
        c = sub.add_parser(name, help=helptext)
        if name == "member":
            c.add_argument("pool", help="the pool's name")
            c.add_argument("member", help="the member's name in that pool")
            c.add_argument("action", choices=["drain", "disable", "enable", "weight"],
                           help="drain (no new connections), disable (none at all), "
                                "enable, or weight N")
            c.add_argument("value", nargs="?", metavar="N",
                           help=f"the new weight, a whole number from {MEMBER_WEIGHT[0]} "
                                f"to {MEMBER_WEIGHT[1]} (for weight)")
        c.add_argument("--admin", default=DEFAULT_ADMIN, help=f"admin URL (default {DEFAULT_ADMIN})")
        c.add_argument("--token", help="admin token (default: $LBFRAME_ADMIN_TOKEN)")
        c.set_defaults(func=func)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        rc = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`lbframe plugins | head`): stop quietly, as
        # a command killed by SIGPIPE would, with no traceback. stdout is
        # pointed at /dev/null so that Python's flush at exit fails no more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + 13
    return rc


if __name__ == "__main__":
    sys.exit(main())
