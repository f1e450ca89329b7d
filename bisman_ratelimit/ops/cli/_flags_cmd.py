"""``bisman-ratelimit flags``: read and change feature flags on Redis.

With the admin API, this command is the only way flags change: every
change is published, so the apps' cached flags follow within moments.
A new flag needs ``--type``; changing an existing one keeps its type.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bisman_ratelimit.core import InvalidArgument
from bisman_ratelimit.ops.cli._common import UsageError, add_url, resolve_url, scheme_of
from bisman_ratelimit.stores import FLAG_TYPES, Flag, FlagAdmin, parse_flag_value


def register(subparsers: Any) -> None:
    """Add the ``flags`` group and its ``set``, ``get``, ``list`` and ``delete`` commands."""
    group = subparsers.add_parser("flags", help="read and change feature flags (flags:config)")
    commands = group.add_subparsers(dest="flags_command", metavar="SUBCOMMAND")
    commands.required = True

    common = argparse.ArgumentParser(add_help=False)
    # Flags change what every app does: no silent default server.
    add_url(common, what="the Redis server holding the flags", fallback=False)
    common.add_argument("--key", default="flags:config", help="the flags hash (default: flags:config)")

    set_ = commands.add_parser("set", parents=[common], help="set a flag and tell every app")
    set_.add_argument("name", metavar="NAME")
    set_.add_argument("value", metavar="VALUE", help="true/false for bool, any text for str, JSON for json")
    set_.add_argument("--type", choices=FLAG_TYPES, dest="flag_type", help="needed for a new flag")
    set_.set_defaults(func=_set)

    get = commands.add_parser("get", parents=[common], help="print a flag's value as JSON")
    get.add_argument("name", metavar="NAME")
    get.set_defaults(func=_get)

    list_ = commands.add_parser("list", parents=[common], help="print every flag: name, type, JSON value")
    list_.add_argument("--json", action="store_true", help="print one JSON object instead")
    list_.set_defaults(func=_list)

    delete = commands.add_parser("delete", parents=[common], help="delete a flag and tell every app")
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(func=_delete)


def _admin(args: argparse.Namespace) -> FlagAdmin:
    url = resolve_url(args)
    if scheme_of(url) == "memory":
        raise UsageError("flags commands need a Redis URL: memory:// lives inside one process")
    try:
        return FlagAdmin(url, key=args.key)
    except InvalidArgument as exc:
        raise UsageError(f"--url: {exc}") from None


def _value(args: argparse.Namespace, flag_type: str) -> Any:
    try:
        return parse_flag_value(args.value, flag_type)
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from None


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _missing(args: argparse.Namespace) -> InvalidArgument:
    return InvalidArgument(f"no flag named {args.name!r} in {args.key!r}")


def _set(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        flag_type = args.flag_type
        if flag_type is None:
            existing = admin.get(args.name)
            if existing is None:
                raise UsageError(
                    f"{args.name!r} is a new flag: give its type with --type {{{','.join(FLAG_TYPES)}}}"
                )
            flag_type = existing.type
        value = _value(args, flag_type)
        admin.set(args.name, value, flag_type, by="cli")
    print(f"{args.name} = {_json(value)} ({flag_type})")
    return 0


def _get(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        flag = admin.get(args.name)
    if flag is None:
        raise _missing(args)
    print(_json(flag.value))
    return 0


def _list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        flags: dict[str, Flag] = admin.all()
        foreign = admin.foreign()
    for name, raw in foreign.items():
        print(f"{name}: not written by bisman-ratelimit, skipped by flag readers: {raw!r}", file=sys.stderr)
    if args.json:
        print(_json({name: {"type": flag.type, "value": flag.value} for name, flag in flags.items()}))
        return 0
    for name, flag in flags.items():
        print(f"{name}\t{flag.type}\t{_json(flag.value)}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        deleted = admin.delete(args.name, by="cli")
    if not deleted:
        raise _missing(args)
    print(f"deleted {args.name}")
    return 0
