"""The ``bisman-ratelimit`` command.

Each command group lives in its own module and adds itself to the parser
through ``register(subparsers)``; the groups are listed in ``_GROUPS``.
A command function takes the parsed arguments and returns the exit code
(see ``_common`` for what each code means).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bisman_ratelimit import __version__
from bisman_ratelimit.core import BismanRateLimitError
from bisman_ratelimit.ops.cli._common import (
    EXIT_FAILED,
    EXIT_USAGE,
    Signals,
    UsageError,
    explain,
)

__all__ = ["main"]

# Modules under bisman_ratelimit.ops.cli that define register(subparsers).
_GROUPS: tuple[str, ...] = ("_config_cmd", "_flags_cmd", "_ops_cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bisman-ratelimit",
        description="Rate limits, sessions and short-lived state on Redis: configuration and operations.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in _GROUPS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def _error(message: str) -> None:
    print(f"bisman-ratelimit: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    signals = Signals()
    try:
        with signals.installed():
            code: int = args.func(args)
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bisman-ratelimit: interrupted", file=sys.stderr)
        return signals.exit_code() or 130
    except BismanRateLimitError as exc:
        explained = explain(exc, getattr(args, "url", None))
        if explained is not None:
            _error(explained[1])
            return explained[0]
        _error(str(exc))
        return EXIT_FAILED
    return signals.exit_code() or code
