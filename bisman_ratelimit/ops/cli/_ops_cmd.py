"""Operations commands: ``audit``, ``doctor``, ``flush``, ``inspect``, ``backup``, ``failover``.

Each command is a thin shell over the audits, the doctor and the runbook
operations of :mod:`bisman_ratelimit.ops`: it
parses arguments, opens a client for ``--url`` (any URL the library takes,
read by its own parser), shows progress on a terminal and prints tables.
Redis errors become one line on stderr.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import wraps
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from bisman_ratelimit.backends import translate_errors
from bisman_ratelimit.core import InvalidArgument
from bisman_ratelimit.ops import (
    HotKeyReport,
    KeyspaceSample,
    MemoryLimit,
    NamespaceGrouper,
    audit_hotkeys,
    backup,
    cgroup_memory_limit,
    evaluate,
    exit_code,
    failover,
    flush_namespace,
    gather_facts,
    inspect_key,
    namespace_prefix,
    parse_size,
    sample_keyspace,
)
from bisman_ratelimit.ops._grouping import (
    SHOWN_KEY_CHARS,
    above_policy_reason,
    read_key,
    show_key,
    whole_seconds,
)
from bisman_ratelimit.ops._hotkeys import MIN_COST_COMMANDS
from bisman_ratelimit.ops.cli._common import (
    UsageError,
    add_url,
    connection,
    display_url,
    resolve_url,
    scheme_of,
    whole_number,
)
from bisman_ratelimit.stores import NamespaceRegistry, default_registry

Command = Callable[[argparse.Namespace], int]


# --- argument types (pure) ------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds from ``"10s"``, ``"500ms"``, ``"2m"``, ``"1h"`` or ``"1.5"``."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: expected e.g. 10s, 500ms, 2m")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_share(text: str) -> float:
    """A share from ``"5%"`` or ``"0.05"``; must be between 0 and 1."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad share {text!r}: expected e.g. 5% or 0.05") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"bad share {text!r}: must be between 0 and 100%")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_count = whole_number(0)
_positive = whole_number(1)


def _duration_or_zero(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0s") else parse_duration(text)


# --- output (pure) --------------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows aligned in columns under ``headers``; numbers right-aligned."""
    cells = [[str(value) for value in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        for index, value in enumerate(row):
            widths[index] = max(widths[index], len(value))
    numeric = [
        all(isinstance(row[index], (int, float)) for row in rows) if rows else False
        for index in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if numeric[index] else value.ljust(width)
            for index, (value, width) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * width for width in widths]), *(line(row) for row in cells)])


def _cell(name: str) -> str:
    """A key or namespace name in a table or a list: one line, cut when very long."""
    return show_key(name, limit=SHOWN_KEY_CHARS)


def _bytes(size: float | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None, *, unit: str = "") -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.unit = unit
        self.enabled = self.stream.isatty()
        self._last = 0.0

    def __call__(self, done: float, total: float) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.1:
            return
        self._last = now
        share = min(1.0, done / total) if total else 0.0
        bar = "#" * int(share * 30)
        figures = f"{done:.1f}/{total:.1f}{self.unit}" if self.unit else f"{int(done)}/{int(total)}"
        self.stream.write(f"\r{self.label} [{bar:<30}] {share:4.0%} {figures}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


@contextmanager
def _progress(label: str, *, unit: str = "") -> Iterator[Progress]:
    bar = Progress(label, unit=unit)
    try:
        yield bar
    finally:
        bar.close()


# --- plumbing -------------------------------------------------------------------------------------------


def _redis_command(func: Command) -> Command:
    """Redis errors become our StorageError (one line on stderr)."""

    @wraps(func)
    def run(args: argparse.Namespace) -> int:
        resolve_url(args)
        with translate_errors():
            return func(args)

    return run


def register(subparsers: Any) -> None:
    """Add ``audit``, ``doctor``, ``flush``, ``inspect``, ``backup`` and ``failover``."""
    audit = subparsers.add_parser("audit", help="find hot keys, or count keys and memory per namespace")
    audits = audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    audits.required = True

    hot = audits.add_parser(
        "hotkeys", help="sample MONITOR and flag keys with too large a share of operations"
    )
    add_url(hot)
    hot.add_argument("--duration", type=parse_duration, default=10.0, help="how long to sample (default 10s)")
    hot.add_argument(
        "--threshold", type=parse_share, default=0.05, help="flag keys above this share of operations (5%%)"
    )
    hot.add_argument(
        "--baseline",
        type=_duration_or_zero,
        default=1.0,
        help="measure server CPU this long before MONITOR, to show its cost (default 1s; 0 to skip)",
    )
    hot.add_argument("--top", type=_count, default=20, help="keys to list (default 20)")
    hot.add_argument("--metrics-file", help="also write the findings as Prometheus text (textfile collector)")
    hot.set_defaults(func=_audit_hotkeys)

    card = audits.add_parser(
        "cardinality", help="keys and memory per namespace, keys missing a TTL, biggest keys"
    )
    add_url(card)
    card.add_argument(
        "--max-keys", type=_count, default=0, help="stop the SCAN after this many keys (default 0: all)"
    )
    card.add_argument(
        "--time-limit",
        type=_duration_or_zero,
        default=60.0,
        help="stop the SCAN after this long, and say so (default 60s; 0: no limit)",
    )
    card.add_argument(
        "--memory-samples",
        type=_count,
        default=None,
        help="MEMORY USAGE for at most this many keys per namespace (default: every key scanned)",
    )
    card.add_argument("--top", type=_count, default=10, help="biggest keys to list (default 10)")
    card.set_defaults(func=_audit_cardinality)

    doctor = subparsers.add_parser("doctor", help="check a server against the memory and eviction guardrails")
    add_url(doctor)
    doctor.add_argument(
        "--memory-limit",
        type=_size,
        help="the container's memory limit, e.g. 2Gi (default: this container's cgroup limit)",
    )
    doctor.add_argument(
        "--sample-keys", type=_count, default=10_000, help="keys to sample for namespaces (default 10000)"
    )
    doctor.set_defaults(func=_doctor)

    flush = subparsers.add_parser(
        "flush", help="delete the keys of one namespace (SCAN + UNLINK, never FLUSHALL)"
    )
    add_url(flush)
    flush.add_argument("--namespace", required=True, help="the namespace to empty, e.g. rl: or chat:ctx:")
    flush.add_argument("--dry-run", action="store_true", help="count the keys, delete nothing")
    flush.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    flush.add_argument(
        "--batch", type=_positive, default=500, help="keys per SCAN and UNLINK call (default 500)"
    )
    flush.set_defaults(func=_flush)

    inspect = subparsers.add_parser("inspect", help="type, TTL, memory and size of one key")
    add_url(inspect)
    inspect.add_argument(
        "key", metavar="KEY", help="the exact key name, or as the audits print it (\\xHH, \\n escapes)"
    )
    inspect.set_defaults(func=_inspect)

    save = subparsers.add_parser("backup", help="BGSAVE and wait until the snapshot is written")
    add_url(save)
    save.add_argument(
        "--timeout", type=parse_duration, default=600.0, help="give up waiting after this long (10m)"
    )
    save.set_defaults(func=_backup)

    fail = subparsers.add_parser("failover", help="SENTINEL FAILOVER a master and wait for the new primary")
    add_url(fail, what="the Sentinels, e.g. redis+sentinel://sentinel:26379/NAME or redis://sentinel:26379")
    fail.add_argument(
        "--master",
        help="the master's name in the Sentinel configuration (default: the name in a redis+sentinel:// URL)",
    )
    fail.add_argument("--timeout", type=parse_duration, default=60.0, help="give up after this long (60s)")
    fail.set_defaults(func=_failover)


# --- commands -------------------------------------------------------------------------------------------


@_redis_command
def _audit_hotkeys(args: argparse.Namespace) -> int:
    with (
        connection(args.url, command="audit hotkeys", timeout=max(30.0, args.duration + 10)) as opened,
        _progress("sampling MONITOR", unit="s") as bar,
    ):
        report = audit_hotkeys(
            opened.client,
            duration=args.duration,
            threshold=args.threshold,
            baseline=args.baseline,
            top=args.top,
            progress=bar,
        )
    print(render_hotkeys(report, display_url(args.url)))
    if args.metrics_file:
        write_hotkey_metrics(report, args.metrics_file)
        print(f"wrote {args.metrics_file}")
    return 0


def render_hotkeys(report: HotKeyReport, where: str) -> str:
    """The hot-key report as text."""
    lines = [
        f"MONITOR on {where} for {report.duration:.1f} s: {report.commands} commands, "
        f"{report.keyed_ops} key operations" + (" (interrupted)" if report.interrupted else ""),
        "",
    ]
    if report.hot:
        lines.append(f"HOT KEYS: more than {report.threshold:.0%} of key operations each")
        lines.append(
            format_table(
                ("key", "namespace", "ops", "share", "reads", "writes"),
                [
                    (_cell(h.key), _cell(h.namespace), h.ops, f"{h.share:.1%}", h.reads, h.writes)
                    for h in report.hot
                ],
            )
        )
        lines.append("")
        lines.extend(f"  {_cell(h.key)}: {h.suggestion}" for h in report.hot)
    else:
        lines.append(f"no key above {report.threshold:.0%} of key operations")
    if report.top:
        lines += ["", "Busiest keys", format_table(
            ("key", "namespace", "ops", "share"),
            [(_cell(h.key), _cell(h.namespace), h.ops, f"{h.share:.1%}") for h in report.top],
        )]  # fmt: skip
    if report.namespaces:
        lines += ["", "Operations per namespace", format_table(
            ("namespace", "ops", "share"),
            [(_cell(ns), ops, f"{share:.1%}") for ns, ops, share in report.namespaces],
        )]  # fmt: skip
    if report.events:
        lines += ["", "Keyspace events per namespace", format_table(
            ("namespace", "event", "count"), [(_cell(ns), _cell(event), n) for ns, event, n in report.events]
        )]  # fmt: skip
    cost = report.cost
    if cost is not None:
        lines.append("")
        during = (
            f"{cost.monitor_cpu_per_kcmd * 1000:.2f} ms" if cost.monitor_cpu_per_kcmd is not None else "n/a"
        )
        before = (
            f"{cost.baseline_cpu_per_kcmd * 1000:.2f} ms" if cost.baseline_cpu_per_kcmd is not None else "n/a"
        )
        if cost.too_small:
            seen = f"{cost.monitor_commands} while sampling" + (
                f", {cost.baseline_commands} before" if cost.baseline_commands is not None else ""
            )
            lines.append(
                f"Cost of MONITOR: too few commands to judge ({seen}; "
                f"it takes at least {MIN_COST_COMMANDS} in each)"
            )
        else:
            extra = f" ({cost.overhead:+.0%})" if cost.overhead is not None else ""
            lines.append(
                f"Cost of MONITOR: server CPU per 1000 commands {during} while sampling{extra}, "
                f"{before} before; {cost.monitor_cpu_seconds:.2f} CPU s over {cost.monitor_commands} commands"
            )
        if cost.output_buffer_bytes is not None:
            lines.append(f"MONITOR output buffer at the end: {_bytes(cost.output_buffer_bytes)}")
    lines.append(f"notify-keyspace-events restored to {report.notify_setting!r}")
    return "\n".join(lines)


def write_hotkey_metrics(report: HotKeyReport, path: str) -> None:
    """The report as Prometheus text for node_exporter's textfile collector; labels stay bounded."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    grouper = NamespaceGrouper()
    share = Gauge(
        "redis_hotkey_ops_share",
        "Largest share of key operations taken by one key, per namespace, in the last hot-key audit.",
        ("namespace",),
        registry=registry,
    )
    largest: dict[str, float] = {}
    for key in report.top:
        group = grouper.group(key.key)
        largest[group] = max(largest.get(group, 0.0), key.share)
    for group, value in largest.items():
        share.labels(group).set(value)
    Gauge("redis_hotkey_audit_ops", "Key operations seen by the last hot-key audit.", registry=registry).set(
        report.keyed_ops
    )
    Gauge(
        "redis_hotkey_audit_timestamp_seconds", "When the last hot-key audit finished.", registry=registry
    ).set_to_current_time()
    write_to_textfile(path, registry)


@_redis_command
def _audit_cardinality(args: argparse.Namespace) -> int:
    with connection(args.url, command="audit cardinality") as opened, _progress("scanning keys") as bar:
        sample = sample_keyspace(
            opened.client,
            max_keys=args.max_keys or None,
            memory_samples=args.memory_samples,
            grouper=NamespaceGrouper(open_domains=True),
            keep=max(args.top, 20),
            progress=bar,
            time_limit=args.time_limit or None,
        )
    print(render_cardinality(sample, display_url(args.url), top=args.top))
    return 1 if sample.no_ttl_total else 0


def render_cardinality(
    sample: KeyspaceSample, where: str, *, top: int = 10, registry: NamespaceRegistry = default_registry
) -> str:
    """The cardinality report as text."""
    if sample.stopped == "complete":
        head = f"{where}: scanned all {sample.scanned} keys"
    elif sample.stopped == "time_limit":
        head = (
            f"{where}: stopped at the time limit (--time-limit) after {sample.scanned} of "
            f"{sample.total_keys} keys; figures scaled to the whole, biggest keys only among those scanned"
        )
    else:
        head = f"{where}: scanned {sample.scanned} of {sample.total_keys} keys; figures scaled to the whole"
    rows = [
        (
            _cell(s.namespace), s.keys_estimated, s.keys_scanned, _bytes(s.memory_estimated),
            _bytes(s.memory_sampled / s.memory_samples) if s.memory_samples else "?",
            s.no_ttl if s.ephemeral else "-", s.above_policy if s.above_policy else "-",
            "yes" if s.ephemeral else "no",
        )
        for s in sample.namespaces
    ]  # fmt: skip
    lines = [head, ""]
    lines.append(
        format_table(
            ("namespace", "keys", "scanned", "memory", "per key", "no TTL", "TTL > policy", "ephemeral"), rows
        )
        if rows
        else "no keys"
    )
    if sample.no_ttl_total:
        lines += [
            "",
            f"POLICY VIOLATION: {sample.no_ttl_total} keys without a TTL in ephemeral namespaces, e.g.:",
            *(f"  {_cell(key)}" for key in sample.no_ttl_keys),
        ]
    if sample.above_policy_total:
        lines += [
            "",
            f"TTL ABOVE POLICY: {sample.above_policy_total} keys outlive their namespace's TTL, e.g.:",
            *(
                f"  {_cell(key)}: {whole_seconds(ttl)} s (namespace TTL {policy:g} s)"
                for key, ttl, policy in sample.above_policy_keys
            ),
        ]
        # Why, once per namespace of the keys listed: a rate limit's window, a session's lifetime...
        found = (registry.find(key) for key, _, _ in sample.above_policy_keys)
        namespaces = {namespace.prefix: namespace for namespace in found if namespace is not None}
        lines += [f"  {prefix}: {above_policy_reason(namespaces[prefix])}" for prefix in sorted(namespaces)]
    if sample.biggest:
        lines += ["", "Biggest keys", format_table(
            ("key", "memory"), [(_cell(key), _bytes(size)) for key, size in sample.biggest[:top]]
        )]  # fmt: skip
    return "\n".join(lines)


@_redis_command
def _doctor(args: argparse.Namespace) -> int:
    limit = MemoryLimit(args.memory_limit, "--memory-limit") if args.memory_limit else cgroup_memory_limit()
    with connection(args.url, command="doctor") as opened:
        facts = gather_facts(opened.client, sample_keys=args.sample_keys)
    results = evaluate(facts, limit)
    print(f"doctor: {display_url(args.url)}")
    for result in results:
        print(f"{result.verdict.upper():4}  {result.name}: {result.reason}")
    counts = {verdict: sum(r.verdict == verdict for r in results) for verdict in ("fail", "warn", "pass")}
    print(f"{counts['fail']} fail, {counts['warn']} warn, {counts['pass']} pass")
    return exit_code(results)


def _ask(question: str) -> str:
    sys.stdout.write(question)
    sys.stdout.flush()
    return sys.stdin.readline().strip()


def _confirm(question: str) -> bool:
    return _ask(question).lower() in ("y", "yes")


def _confirm_flush(prefix: str, matched: int, where: str) -> bool:
    """Ask before deleting; a persistent namespace must be typed out, after a word on backups."""
    persistent = default_registry.persistent_within(prefix)
    if not persistent:
        return _confirm(f"Delete {matched} keys under {prefix!r} on {where}? [y/N] ")
    names = ", ".join(namespace.prefix for namespace in persistent)
    print(
        f"{names} is persistent: its keys never expire and nothing writes them back once deleted. "
        "Back up first: bisman-ratelimit backup"
    )
    head = prefix[:-1]
    return _ask(f"Type {head} to delete {matched} keys under {prefix!r} on {where}: ") == head


@_redis_command
def _flush(args: argparse.Namespace) -> int:
    try:
        prefix = namespace_prefix(args.namespace)
    except InvalidArgument as exc:
        raise UsageError(f"--namespace: {exc}") from None
    where = display_url(args.url)
    with connection(args.url, command="flush") as opened:
        client = opened.client
        with _progress("counting (keys walked)") as bar:
            counted = flush_namespace(client, prefix, dry_run=True, batch=args.batch, progress=bar)
        print(f"{counted.matched} keys under {prefix!r} on {where} ({counted.searched})")
        if args.dry_run or counted.matched == 0:
            if counted.matched == 0:
                print("nothing to delete")
            return 0
        if not args.yes and not _confirm_flush(prefix, counted.matched, where):
            print("aborted: nothing deleted")
            return 1
        with _progress("deleting") as bar:
            done = flush_namespace(client, prefix, batch=args.batch, expected=counted.matched, progress=bar)
    print(f"deleted {done.deleted} keys under {prefix!r}")
    return 0


@_redis_command
def _inspect(args: argparse.Namespace) -> int:
    # The key as the reports print it (\xHH for a byte that is not UTF-8, \n...), or as raw bytes.
    try:
        key = read_key(args.key)
    except InvalidArgument as exc:
        raise UsageError(f"KEY: {exc}") from None
    with connection(args.url, command="inspect", cluster=True) as opened:
        report = inspect_key(opened.client, key)
    if report is None:
        print(f"bisman-ratelimit: no such key '{show_key(key)}' on {display_url(args.url)}", file=sys.stderr)
        return 1
    size = f"{report.size} {report.size_unit}" if report.size is not None else "?"
    rows = [
        ("key", show_key(report.key)),
        ("type", f"{report.type} ({report.encoding})"),
        ("ttl", "none (never expires)" if report.ttl is None else f"{report.ttl:g} s"),
        ("memory", f"{report.memory_bytes} bytes" if report.memory_bytes is not None else "?"),
        ("size", size),
        ("namespace", report.namespace or "-"),
        ("policy", report.policy),
    ]
    print("\n".join(f"{name:<10} {value}" for name, value in rows))
    return 0


@_redis_command
def _backup(args: argparse.Namespace) -> int:
    with connection(args.url, command="backup", timeout=max(30.0, args.timeout)) as opened:
        result = backup(opened.client, timeout=args.timeout)
    when = datetime.fromtimestamp(result.lastsave, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    size = f" ({_bytes(result.size)})" if result.size is not None else " (on the server's host)"
    print(f"BGSAVE finished in {result.seconds:.1f} s; LASTSAVE {when}")
    print(f"snapshot: {result.path}{size}")
    return 0


@_redis_command
def _failover(args: argparse.Namespace) -> int:
    named = sentinel_service(args.url)
    if args.master and named and args.master != named:
        raise UsageError(f"--master {args.master!r} and the URL's master {named!r} differ: give one of them")
    master = args.master or named
    if not master:
        raise UsageError(
            "failover needs the master's name: give --master NAME, or --url redis+sentinel://host:26379/NAME"
        )
    with connection(args.url, command="failover") as opened:
        # A redis+sentinel:// URL opens the primary; the failover is asked of its Sentinels.
        sentinel = opened.closing[0] if opened.closing else opened.client
        mode = _text(sentinel.info("server").get("redis_mode", "standalone"))
        if mode != "sentinel":
            raise UsageError(
                f"failover needs a Sentinel, and {display_url(args.url)} is a Redis server ({mode}), "
                f"not a Sentinel: give --url redis+sentinel://SENTINEL-HOST:26379/{master} "
                f"(or --url redis://SENTINEL-HOST:26379 --master {master})"
            )
        result = failover(sentinel, master, timeout=args.timeout)
    old, new = result.old, result.new
    print(
        f"failover of {result.master!r} finished in {result.seconds:.1f} s: "
        f"primary {old[0]}:{old[1]} -> {new[0]}:{new[1]}"
    )
    return 0


def sentinel_service(url: str) -> str | None:
    """The master's name in a ``redis+sentinel://host:port/NAME[/db]`` URL, else ``None``."""
    if scheme_of(url) != "redis+sentinel":
        return None
    try:
        path = [unquote(part) for part in urlsplit(url).path.split("/") if part]
    except ValueError as exc:
        raise UsageError(f"--url: bad storage URL {display_url(url)!r}: it cannot be read ({exc})") from None
    return path[0] if path else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
