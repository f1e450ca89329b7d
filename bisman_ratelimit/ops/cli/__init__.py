"""The ``bisman-ratelimit`` command.

Each command group lives in its own module and adds itself to the parser
through ``register(subparsers)``; the groups are listed in ``_GROUPS``.
A command function takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bisman_ratelimit.core import BismanRateLimitError

__all__ = ["main"]

# Modules under bisman_ratelimit.ops.cli that define register(subparsers).
_GROUPS: tuple[str, ...] = ("_config_cmd", "_flags_cmd", "_ops_cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bisman-ratelimit",
        description="Rate limits, sessions and short-lived state on Redis: configuration and operations.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in _GROUPS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except BismanRateLimitError as exc:
        print(f"bisman-ratelimit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bisman-ratelimit: interrupted", file=sys.stderr)
        return 130
    return code
