"""``bisman-ratelimit config``: check a limits file and write its tuning table.

``config docs`` renders the table from the file itself, so the document that
people read and the limits the app runs with cannot disagree; ``--check`` lets
CI fail when someone edits one without the other.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

from bisman_ratelimit.core import Limit
from bisman_ratelimit.stores import NamespaceRegistry, default_registry
from bisman_ratelimit.web import Exemptions, Policy, RateLimitConfig, load_config

_COLUMNS = ("route", "methods", "limits", "algorithm", "key", "cost", "shadow", "exemptions", "description")


def register(subparsers: Any) -> None:
    """Add the ``config`` group and its ``check`` and ``docs`` commands."""
    group = subparsers.add_parser("config", help="check a per-route limits file or write its docs")
    commands = group.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    commands.required = True

    check = commands.add_parser("check", help="validate a limits file and print a one-line summary")
    check.add_argument("file", metavar="FILE", help="limits file (.toml, .yaml or .yml)")
    check.set_defaults(func=_check)

    docs = commands.add_parser("docs", help="write the rate-limit tuning table (markdown) from a limits file")
    docs.add_argument("file", metavar="FILE", help="limits file (.toml, .yaml or .yml)")
    target = docs.add_mutually_exclusive_group()
    target.add_argument("-o", "--output", metavar="OUT", help="write the table to OUT instead of stdout")
    target.add_argument(
        "--check",
        metavar="OUT",
        dest="check_path",
        help="exit 1 if OUT differs from what would be written (for CI)",
    )
    docs.set_defaults(func=_docs)


def _check(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    print(summary(config))
    for warning in ttl_warnings(config):
        print(f"warning: {warning}")
    return 0


def _docs(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    text = render_docs(config)
    if args.check_path is not None:
        return _compare(args.file, args.check_path, text)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, encoding="utf-8", newline="\n")
    except OSError as exc:
        print(f"bisman-ratelimit: error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} from {args.file}")
    return 0


def _compare(source: str, out: str, expected: str) -> int:
    regenerate = f"run: bisman-ratelimit config docs {source} -o {out}"
    try:
        current = Path(out).read_text(encoding="utf-8")
    except FileNotFoundError:
        print(f"bisman-ratelimit: {out} does not exist; {regenerate}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"bisman-ratelimit: error: cannot read {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if current == expected:
        print(f"{out} is up to date with {source}")
        return 0
    print(f"bisman-ratelimit: {out} is out of date with {source}; {regenerate}", file=sys.stderr)
    diff = difflib.unified_diff(
        current.splitlines(keepends=True), expected.splitlines(keepends=True), out, f"{out} (expected)"
    )
    sys.stderr.writelines(diff)
    return 1


# --- rendering (pure) ----------------------------------------------------------------------------------


def summary(config: RateLimitConfig) -> str:
    """One line saying what a valid file sets up."""
    count = len(config.routes)
    parts = [f"{count} route{'s' if count != 1 else ''}"]
    defaults = config.defaults
    if defaults.limits:
        parts.append(f"defaults {_limits(defaults.limits)} ({defaults.algorithm} by {defaults.key})")
    else:
        parts.append("no default limit")
    if config.global_limit is not None:
        parts.append(f"global {_limits(config.global_limit.limits)} ({config.global_limit.algorithm})")
    else:
        parts.append("no global limit")
    return f"{config.source}: OK: {', '.join(parts)}"


def _namespace_of(key: str) -> str:
    # The web layer stores a route's counters under rl:<kind>:<identity>...
    kind = key.split(":", 1)[0] if key.startswith("header:") else key
    return f"rl:{kind}"


def ttl_warnings(config: RateLimitConfig, registry: NamespaceRegistry = default_registry) -> list[str]:
    """A line for each limit whose window outlives the TTL of the namespace its keys live in."""
    entries: list[tuple[str, tuple[Limit, ...], str]] = []
    if config.defaults.limits and not config.defaults.exempt.all:
        entries.append(("defaults", config.defaults.limits, _namespace_of(config.defaults.key)))
    if config.global_limit is not None:
        entries.append(("global", config.global_limit.limits, "rl:global"))
    for index, route in enumerate(config.routes):
        if route.policy.exempt.all:
            continue
        methods = " ".join(sorted(route.methods)) + " " if route.methods is not None else ""
        entries.append(
            (f"routes[{index}] ({methods}{route.path})", route.policy.limits, _namespace_of(route.policy.key))
        )
    lines = []
    for where, limits, prefix in entries:
        namespace = registry.find(prefix)
        if namespace is None or namespace.ttl is None:
            continue
        for limit in limits:
            if limit.period > namespace.ttl:
                lines.append(
                    f"{where}: the window of {limit} ({limit.period:g} s) outlives the TTL of its "
                    f"namespace {namespace.prefix} ({namespace.ttl:g} s); the window wins: the limiter sets "
                    f"each key's TTL from its window, so these keys live longer than {namespace.prefix}'s "
                    "policy says"
                )
    return lines


def render_docs(config: RateLimitConfig) -> str:
    """The rate-limit tuning document for ``config``, as markdown."""
    rows: list[tuple[str, ...]] = [_policy_row("(defaults)", "any", config.defaults, _DEFAULTS_NOTE)]
    if config.global_limit is not None:
        limit = config.global_limit
        rows.append(
            (
                "(global)",
                "any",
                _limits(limit.limits),
                limit.algorithm,
                "one counter",
                "1",
                _yes_no(limit.shadow),
                "none",
                "Shared by every request, checked before the route's own limits",
            )
        )
    for route in config.routes:
        methods = ", ".join(sorted(route.methods)) if route.methods is not None else "any"
        rows.append(_policy_row(f"`{route.path}`", methods, route.policy, route.description))

    name = Path(config.source).name
    lines = [
        "# Rate limit tuning",
        "",
        f"<!-- Generated from {name} by `bisman-ratelimit config docs`. Edit {name}, then regenerate. -->",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + " --- |" * len(_COLUMNS),
    ]
    lines.extend("| " + " | ".join(_cell(value) for value in row) + " |" for row in rows)
    return "\n".join(lines) + "\n"


_DEFAULTS_NOTE = "Routes not listed below, and every field a route leaves out"


def _policy_row(route: str, methods: str, policy: Policy, description: str) -> tuple[str, ...]:
    if policy.exempt.all:
        return (route, methods, "-", "-", "-", "-", "-", "all (never limited)", description)
    if not policy.limits:
        return (route, methods, "none", "-", "-", "-", "-", _exemptions(policy.exempt), description)
    cost = str(policy.cost)
    if policy.deduct_when:
        cost += f" on status {', '.join(str(code) for code in policy.deduct_when)}"
    return (
        route,
        methods,
        _limits(policy.limits),
        policy.algorithm,
        policy.key,
        cost,
        _yes_no(policy.shadow),
        _exemptions(policy.exempt),
        description,
    )


def _limits(limits: tuple[Limit, ...]) -> str:
    return "; ".join(str(limit) for limit in limits)


def _exemptions(exempt: Exemptions) -> str:
    parts = []
    if exempt.ips:
        parts.append("ips " + ", ".join(str(network) for network in exempt.ips))
    if exempt.users:
        parts.append("users " + ", ".join(exempt.users))
    return "; ".join(parts) or "none"


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _cell(value: str) -> str:
    # A pipe or a line break would end the cell or the row.
    return " ".join(value.split()).replace("|", "\\|")
