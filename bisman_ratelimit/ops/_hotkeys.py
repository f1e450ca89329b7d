"""The hot-key audit.

Keyspace notifications on for the duration only (the previous setting is
restored on every exit, Ctrl-C and errors included), ``MONITOR`` sampled
for a bounded time, operations counted per key and per namespace, and keys
above a share of all operations (5% by default) flagged with a way to split
them. A script's operations are the commands it runs, which ``MONITOR``
shows on lines of their own (client ``lua``): each counts for the keys it
names, as a read or a write by what that command does. The keys a script
declares would miss those it names at run time (a chat thread's windows)
and could not tell a read from a write.

:func:`audit_hotkeys` is the I/O shell; :func:`parse_monitor_line`,
:func:`keys_of`, :class:`KeyTally`, :func:`summarize_hotkeys` and
:func:`suggest_split` are pure.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bisman_ratelimit.core import InvalidArgument, StorageError
from bisman_ratelimit.ops._grouping import NamespaceGrouper, Progress, as_text


@dataclass(frozen=True)
class CommandKeys:
    """Where a command's keys are, from the server's ``COMMAND`` table."""

    first: int
    last: int
    step: int
    write: bool


SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})


def command_table(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, CommandKeys]:
    """Key positions per command from redis-py's parsed ``COMMAND`` answer."""
    table = {}
    for name, info in raw.items():
        flags = {as_text(flag) for flag in info.get("flags", ())}
        table[as_text(name).lower()] = CommandKeys(
            first=int(info.get("first_key_pos", 0)),
            last=int(info.get("last_key_pos", 0)),
            step=int(info.get("step_count", 0)),
            write="write" in flags,
        )
    return table


def keys_of(args: Sequence[str], table: Mapping[str, CommandKeys]) -> tuple[list[str], bool]:
    """The keys one command touches, and whether it writes.

    A script call (``EVAL``, ``EVALSHA``, ``FCALL``...) gives none: the
    commands the script runs come on ``lua`` lines of their own, each with
    its keys.
    """
    if not args:
        return [], False
    name = args[0].lower()
    spec = table.get(name)
    if name in SCRIPT_COMMANDS:
        return [], False
    if spec is None or spec.first <= 0 or spec.step <= 0:
        return [], spec.write if spec else False
    last = len(args) + spec.last if spec.last < 0 else spec.last
    return list(args[spec.first : last + 1 : spec.step]), spec.write


_MONITOR_LINE = re.compile(r"^(\d+\.\d+) \[(\d+) ([^\]]*)\] (.*)$", re.DOTALL)
_MONITOR_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "a": b"\a", "b": b"\b", '"': b'"', "\\": b"\\"}


def _unescape(text: str) -> str:
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            following = text[i + 1]
            if following == "x" and i + 3 < len(text):
                out.append(int(text[i + 2 : i + 4], 16))
                i += 4
                continue
            out += _ESCAPES.get(following, following.encode())
            i += 2
            continue
        out += char.encode()
        i += 1
    return out.decode("utf-8", "surrogateescape")  # as as_text: show_key prints such bytes as \\xHH


def parse_monitor_line(line: str | bytes) -> tuple[int, str, list[str]] | None:
    """``(db, client, args)`` from one ``MONITOR`` line, or ``None`` if it is not a command line.

    ``client`` is ``host:port``, ``lua`` for calls made inside scripts, or
    ``unix:path``.
    """
    text = as_text(line)
    match = _MONITOR_LINE.match(text)
    if match is None:
        return None
    return (
        int(match.group(2)),
        match.group(3),
        [_unescape(arg) for arg in _MONITOR_ARG.findall(match.group(4))],
    )


class KeyTally:
    """Operations per key, read or write, from ``MONITOR`` lines of one database.

    ``commands`` counts what clients sent (a script call once); the commands
    scripts run count only as key operations.
    """

    def __init__(self, table: Mapping[str, CommandKeys], db: int = 0) -> None:
        self.table = table
        self.db = db
        self.commands = 0
        self.ops: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()

    def add(self, line: str | bytes) -> None:
        parsed = parse_monitor_line(line)
        if parsed is None or parsed[0] != self.db:
            return
        _, client, args = parsed
        if client != "lua":
            self.commands += 1
        keys, write = keys_of(args, self.table)
        for key in keys:
            self.ops[key] += 1
            (self.writes if write else self.reads)[key] += 1


@dataclass(frozen=True)
class HotKey:
    """One key's share of the operations seen."""

    key: str
    namespace: str
    ops: int
    share: float
    reads: int
    writes: int
    suggestion: str


# Below this many commands in either window, INFO's CPU counters (10 ms
# steps) and the audit's own commands swamp the figure: +250% from 7 commands.
MIN_COST_COMMANDS = 1000


@dataclass(frozen=True)
class MonitorCost:
    """What sampling ``MONITOR`` cost the server.

    CPU figures are server CPU seconds per 1000 commands, from ``INFO``,
    before (baseline) and while ``MONITOR`` ran; ``None`` when no command ran.
    """

    baseline_seconds: float
    baseline_cpu_per_kcmd: float | None
    monitor_cpu_per_kcmd: float | None
    monitor_cpu_seconds: float
    monitor_commands: int
    output_buffer_bytes: int | None
    baseline_commands: int | None = None

    @property
    def too_small(self) -> bool:
        """Whether either window saw too few commands for the comparison to mean anything."""
        return self.monitor_commands < MIN_COST_COMMANDS or (
            self.baseline_commands is not None and self.baseline_commands < MIN_COST_COMMANDS
        )

    @property
    def overhead(self) -> float | None:
        """Extra server CPU per command while monitoring (0.25 = 25% more), when both can be judged."""
        if self.too_small or not self.baseline_cpu_per_kcmd or self.monitor_cpu_per_kcmd is None:
            return None
        return self.monitor_cpu_per_kcmd / self.baseline_cpu_per_kcmd - 1.0


@dataclass(frozen=True)
class HotKeyReport:
    """The result of :func:`audit_hotkeys`."""

    duration: float
    threshold: float
    commands: int
    keyed_ops: int
    top: tuple[HotKey, ...]
    hot: tuple[HotKey, ...]
    namespaces: tuple[tuple[str, int, float], ...]
    events: tuple[tuple[str, str, int], ...]
    cost: MonitorCost | None
    notify_setting: str
    interrupted: bool = False


# A thread as ChatContext keeps it: its windows and its message counter.
_CHAT_THREAD_PART = re.compile(r":(?:w:\d+|seq)$")


def suggest_split(key: str, namespace: str, reads: int, writes: int) -> str:
    """How to take the load off one hot key."""
    if namespace == "chat:ctx":
        if _CHAT_THREAD_PART.search(key) is None:
            return (
                "split the thread into windows: chat:ctx:thread:{<id>}:w:<n> (redis_keys.chat_thread_window)"
            )
        # Every append and read of the thread reaches its counter and newest window, in one slot by design.
        return (
            "one busy thread, already in windows: cache its last messages in-process for a moment "
            "and batch its appends with extend()"
        )
    if namespace == "rl:global":
        return (
            "shard the global counter into N keys (rl:global:minute:<m>:s:<0..N-1>) each allowing 1/N, "
            "or count in-process and sync every few hundred ms"
        )
    if namespace == "call:room":
        return "split the participant set by member hash: call:room:<id>:participants:<0..N-1>"
    if namespace == "flags:config" or (reads and reads >= 10 * writes):
        return (
            "read-mostly: cache it in-process for a few seconds or use client-side caching (CLIENT TRACKING)"
        )
    if namespace == "auth:sess":
        return "read on every request: cache the session in-process for a moment and renew its TTL less often"
    return "shard by suffix (<key>:<0..N-1>) and combine with one Lua script or a pipeline"


def summarize_hotkeys(
    ops: Counter[str],
    reads: Counter[str],
    writes: Counter[str],
    *,
    commands: int,
    grouper: NamespaceGrouper,
    threshold: float = 0.05,
    top: int = 20,
    duration: float = 0.0,
    events: Counter[tuple[str, str]] | None = None,
    cost: MonitorCost | None = None,
    notify_setting: str = "",
    interrupted: bool = False,
) -> HotKeyReport:
    """Rank keys by operations and flag those above ``threshold`` of all keyed operations."""
    total = sum(ops.values())
    by_namespace: Counter[str] = Counter()
    for key, count in ops.items():
        by_namespace[grouper.group(key)] += count

    def entry(key: str, count: int) -> HotKey:
        namespace = grouper.group(key)
        return HotKey(
            key=key,
            namespace=namespace,
            ops=count,
            share=count / total if total else 0.0,
            reads=reads[key],
            writes=writes[key],
            suggestion=suggest_split(key, namespace, reads[key], writes[key]),
        )

    ranked = sorted(ops.items(), key=lambda item: (-item[1], item[0]))
    hot = tuple(entry(key, count) for key, count in ranked if total and count / total > threshold)
    return HotKeyReport(
        duration=duration,
        threshold=threshold,
        commands=commands,
        keyed_ops=total,
        top=tuple(entry(key, count) for key, count in ranked[:top]),
        hot=hot,
        namespaces=tuple(
            (name, count, count / total) for name, count in sorted(by_namespace.items(), key=lambda i: -i[1])
        ),
        events=tuple((ns, event, n) for (ns, event), n in sorted((events or Counter()).items())),
        cost=cost,
        notify_setting=notify_setting,
        interrupted=interrupted,
    )


# --- hot keys: I/O shell --------------------------------------------------------------------------------

NOTIFY_SETTING = "KEA"


def _cpu_and_commands(client: Any) -> tuple[float, int]:
    info = client.info("all")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"]), int(info["total_commands_processed"])


def _per_kcmd(cpu: float, commands: int) -> float | None:
    return cpu / commands * 1000 if commands > 0 else None


def _monitor_buffer(client: Any) -> int | None:
    for entry in client.client_list():
        if "O" in str(entry.get("flags", "")):
            return int(entry.get("omem", 0))
    return None


def audit_hotkeys(
    client: Any,
    *,
    duration: float,
    threshold: float = 0.05,
    baseline: float = 1.0,
    top: int = 20,
    grouper: NamespaceGrouper | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> HotKeyReport:
    """Sample ``MONITOR`` for ``duration`` seconds and report the hottest keys.

    Keyspace notifications are set to ``KEA`` for the sample, and the
    previous value is written back on every way out. Only commands on the
    client's database are counted; a script's key operations are the
    commands it runs, each a read or a write by what it does.
    """
    if not duration > 0:
        raise InvalidArgument(f"duration must be > 0 seconds, got {duration!r}")
    if not 0 < threshold < 1:
        raise InvalidArgument(f"threshold must be between 0 and 1 (0.05 = 5%), got {threshold!r}")
    grouper = grouper or NamespaceGrouper(open_domains=True)
    table = command_table(client.command())
    db = int(client.connection_pool.connection_kwargs.get("db", 0))

    cost_baseline: tuple[float, int] | None = None
    if baseline > 0:
        cpu0, commands0 = _cpu_and_commands(client)
        time.sleep(baseline)
        cpu1, commands1 = _cpu_and_commands(client)
        cost_baseline = (cpu1 - cpu0, commands1 - commands0)

    previous = as_text(client.config_get("notify-keyspace-events").get("notify-keyspace-events", ""))
    tally = KeyTally(table, db)
    events: Counter[tuple[str, str]] = Counter()
    interrupted = False
    client.config_set("notify-keyspace-events", NOTIFY_SETTING)
    try:
        cpu_start, commands_start = _cpu_and_commands(client)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.psubscribe(f"__keyspace@{db}__:*")
            with client.monitor() as monitor:
                connection = monitor.connection
                start = clock()
                deadline = start + duration
                try:
                    while (now := clock()) < deadline:
                        if progress is not None:
                            progress(now - start, duration)
                        # Read what has arrived, then give the notifications a turn.
                        budget = 2000
                        while budget and connection.can_read(timeout=0.05 if budget == 2000 else 0):
                            budget -= 1
                            tally.add(connection.read_response())
                        while (message := pubsub.get_message(timeout=0)) is not None:
                            channel = as_text(message["channel"]).split(":", 1)[1]
                            events[(grouper.group(channel), as_text(message["data"]))] += 1
                except KeyboardInterrupt:
                    interrupted = True
                elapsed = clock() - start
                buffer = _monitor_buffer(client)
        finally:
            pubsub.close()
        cpu_end, commands_end = _cpu_and_commands(client)
    finally:
        _restore_notify(client, previous)

    cost = MonitorCost(
        baseline_seconds=baseline,
        baseline_cpu_per_kcmd=_per_kcmd(*cost_baseline) if cost_baseline else None,
        monitor_cpu_per_kcmd=_per_kcmd(cpu_end - cpu_start, commands_end - commands_start),
        monitor_cpu_seconds=cpu_end - cpu_start,
        monitor_commands=commands_end - commands_start,
        output_buffer_bytes=buffer,
        baseline_commands=cost_baseline[1] if cost_baseline else None,
    )
    return summarize_hotkeys(
        tally.ops, tally.reads, tally.writes, commands=tally.commands, grouper=grouper,
        threshold=threshold, top=top, duration=elapsed, events=events, cost=cost,
        notify_setting=previous, interrupted=interrupted,
    )  # fmt: skip


def _restore_notify(client: Any, previous: str) -> None:
    try:
        client.config_set("notify-keyspace-events", previous)
    except Exception as exc:
        raise StorageError(
            f"could not restore notify-keyspace-events to {previous!r} ({exc}); "
            f"run: CONFIG SET notify-keyspace-events {previous!r}"
        ) from exc
