"""Keyspace audits: cardinality and memory per namespace, and hot keys.

Each audit is a thin I/O shell (:func:`sample_keyspace`,
:func:`audit_hotkeys`) around pure code that can be tested without a server
(:class:`NamespaceGrouper`, :func:`parse_monitor_line`, :func:`keys_of`,
:func:`summarize_hotkeys`, :func:`suggest_split`).

The hot-key audit follows the operations review: keyspace notifications on
for the duration only (the previous setting is restored on every exit,
Ctrl-C and errors included), ``MONITOR`` sampled for a bounded time,
operations counted per key and per namespace, and keys above a share of all
operations (5% by default) flagged with a way to split them.
"""

from __future__ import annotations

import heapq
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bisman_ratelimit.core import InvalidArgument, StorageError
from bisman_ratelimit.stores import NamespaceRegistry, default_registry

__all__ = [
    "OTHER_NAMESPACE",
    "CommandKeys",
    "HotKey",
    "HotKeyReport",
    "KeyspaceSample",
    "MonitorCost",
    "NamespaceGrouper",
    "NamespaceStats",
    "audit_hotkeys",
    "command_table",
    "keys_of",
    "parse_monitor_line",
    "sample_keyspace",
    "suggest_split",
    "summarize_hotkeys",
]

OTHER_NAMESPACE = "other"

Progress = Callable[[float, float], None]
"""Called with (done, total) as long work advances."""


def _text(key: bytes | str) -> str:
    return key if isinstance(key, str) else key.decode("utf-8", "backslashreplace")


class NamespaceGrouper:
    """Which namespace a key belongs to, out of a bounded set.

    A key goes to its registered namespace (longest prefix), else to the
    domain (first segment) of a registered namespace, such as the limiter's
    own ``rl:{id}:...`` keys going to ``rl``. Other keys go to ``other``,
    or with ``open_domains`` to their own first segment (for audits, where a
    person reads the table; metrics keep the bounded form).
    """

    def __init__(self, registry: NamespaceRegistry = default_registry, *, open_domains: bool = False) -> None:
        self.registry = registry
        self.domains = frozenset(namespace.prefix.split(":", 1)[0] for namespace in registry)
        self.open_domains = open_domains

    def group(self, key: str) -> str:
        namespace = self.registry.find(key)
        if namespace is not None:
            return namespace.prefix
        domain, colon, _ = key.partition(":")
        if colon and (domain in self.domains or (self.open_domains and domain)):
            return domain
        return OTHER_NAMESPACE

    def labels(self) -> tuple[str, ...]:
        """Every group a key can fall into when ``open_domains`` is off."""
        return (
            *sorted(namespace.prefix for namespace in self.registry),
            *sorted(self.domains),
            OTHER_NAMESPACE,
        )

    def is_ephemeral(self, group: str) -> bool:
        for namespace in self.registry:
            if namespace.prefix == group:
                return namespace.ephemeral
        return False


# --- cardinality ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamespaceStats:
    """Keys and memory of one namespace, as scanned and as estimated for the whole database."""

    namespace: str
    keys_scanned: int
    keys_estimated: int
    memory_sampled: int
    memory_samples: int
    memory_estimated: int
    no_ttl: int
    ephemeral: bool


@dataclass(frozen=True)
class KeyspaceSample:
    """What one SCAN pass (complete, or cut at ``max_keys``) found."""

    total_keys: int
    scanned: int
    complete: bool
    namespaces: tuple[NamespaceStats, ...]
    no_ttl_keys: tuple[str, ...]
    biggest: tuple[tuple[str, int], ...]

    def namespace(self, name: str) -> NamespaceStats | None:
        for stats in self.namespaces:
            if stats.namespace == name:
                return stats
        return None

    @property
    def no_ttl_total(self) -> int:
        """Keys without a TTL in ephemeral namespaces: each one breaks the TTL policy."""
        return sum(stats.no_ttl for stats in self.namespaces)


class _Tally:
    """Running counts while a scan goes on."""

    def __init__(self, grouper: NamespaceGrouper, *, memory_samples: int | None, keep: int) -> None:
        self.grouper = grouper
        self.memory_samples = memory_samples
        self.keep = keep
        self.keys: Counter[str] = Counter()
        self.memory: Counter[str] = Counter()
        self.measured: Counter[str] = Counter()
        self.no_ttl: Counter[str] = Counter()
        self.no_ttl_keys: list[str] = []
        self.biggest: list[tuple[int, str]] = []

    def wants_memory(self, group: str) -> bool:
        return self.memory_samples is None or self.measured[group] < self.memory_samples

    def add(self, key: str, group: str, pttl: int | None, memory: int | None) -> None:
        self.keys[group] += 1
        # PTTL -1: the key exists and never expires.
        if pttl == -1 and self.grouper.is_ephemeral(group):
            self.no_ttl[group] += 1
            if len(self.no_ttl_keys) < self.keep:
                self.no_ttl_keys.append(key)
        if memory is not None:
            self.memory[group] += memory
            self.measured[group] += 1
            item = (memory, key)
            if len(self.biggest) < self.keep:
                heapq.heappush(self.biggest, item)
            elif item > self.biggest[0]:
                heapq.heapreplace(self.biggest, item)

    def result(self, total_keys: int, complete: bool) -> KeyspaceSample:
        scanned = sum(self.keys.values())
        scale = 1.0 if complete or scanned == 0 else total_keys / scanned
        stats = []
        for group, count in self.keys.most_common():
            estimated = count if complete else round(count * scale)
            measured = self.measured[group]
            average = self.memory[group] / measured if measured else 0.0
            stats.append(
                NamespaceStats(
                    namespace=group,
                    keys_scanned=count,
                    keys_estimated=estimated,
                    memory_sampled=self.memory[group],
                    memory_samples=measured,
                    memory_estimated=round(average * estimated),
                    no_ttl=self.no_ttl[group],
                    ephemeral=self.grouper.is_ephemeral(group),
                )
            )
        biggest = tuple((key, memory) for memory, key in sorted(self.biggest, reverse=True))
        return KeyspaceSample(
            total_keys=total_keys,
            scanned=scanned,
            complete=complete,
            namespaces=tuple(stats),
            no_ttl_keys=tuple(self.no_ttl_keys),
            biggest=biggest,
        )


def sample_keyspace(
    client: Any,
    *,
    max_keys: int | None = 1000,
    memory_samples: int | None = 50,
    grouper: NamespaceGrouper | None = None,
    batch: int = 500,
    check_ttl: bool = True,
    keep: int = 20,
    progress: Progress | None = None,
) -> KeyspaceSample:
    """SCAN at most ``max_keys`` keys (``None``: all) of the client's database.

    For each key the TTL is read (``check_ttl``) and, for up to
    ``memory_samples`` keys per namespace (``None``: every key), ``MEMORY
    USAGE``; both in one pipeline per SCAN batch. When the scan stops early
    the counts are scaled to ``DBSIZE``: SCAN walks the hash table in an
    order unrelated to key names, so its first keys are a fair sample.
    """
    if max_keys is not None and max_keys < 1:
        raise InvalidArgument(f"max_keys must be >= 1 or None, got {max_keys!r}")
    tally = _Tally(grouper or NamespaceGrouper(), memory_samples=memory_samples, keep=keep)
    total_keys = int(client.dbsize())
    cursor: int = 0
    scanned = 0
    while True:
        cursor, raw_keys = client.scan(cursor, count=batch)
        if max_keys is not None:
            raw_keys = raw_keys[: max_keys - scanned]
        _measure(client, tally, raw_keys, check_ttl)
        scanned += len(raw_keys)
        if progress is not None:
            progress(scanned, max(total_keys, scanned) if max_keys is None else min(max_keys, total_keys))
        if int(cursor) == 0:
            return tally.result(total_keys, complete=True)
        if max_keys is not None and scanned >= max_keys:
            return tally.result(max(total_keys, scanned), complete=False)


def _measure(client: Any, tally: _Tally, raw_keys: Sequence[bytes | str], check_ttl: bool) -> None:
    if not raw_keys:
        return
    pipe = client.pipeline(transaction=False)
    plan: list[tuple[str, str, bool]] = []
    for raw in raw_keys:
        key = _text(raw)
        group = tally.grouper.group(key)
        measure = tally.wants_memory(group)
        if check_ttl:
            pipe.pttl(raw)
        if measure:
            pipe.memory_usage(raw)
            # Reserve the sample now so one batch does not overshoot the cap.
            tally.measured[group] += 1
        plan.append((key, group, measure))
    answers = iter(pipe.execute(raise_on_error=False))
    for key, group, measure in plan:
        pttl = _int_or_none(next(answers)) if check_ttl else None
        memory = _int_or_none(next(answers)) if measure else None
        if measure:
            tally.measured[group] -= 1
        if pttl == -2:  # expired between SCAN and PTTL
            continue
        tally.add(key, group, pttl, memory)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) else None


# --- hot keys: pure parts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandKeys:
    """Where a command's keys are, from the server's ``COMMAND`` table."""

    first: int
    last: int
    step: int
    write: bool


_KEYNUM_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})


def command_table(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, CommandKeys]:
    """Key positions per command from redis-py's parsed ``COMMAND`` answer."""
    table = {}
    for name, info in raw.items():
        flags = {_text(flag) for flag in info.get("flags", ())}
        table[_text(name).lower()] = CommandKeys(
            first=int(info.get("first_key_pos", 0)),
            last=int(info.get("last_key_pos", 0)),
            step=int(info.get("step_count", 0)),
            write="write" in flags,
        )
    return table


def keys_of(args: Sequence[str], table: Mapping[str, CommandKeys]) -> tuple[list[str], bool]:
    """The keys one command touches, and whether it writes."""
    if not args:
        return [], False
    name = args[0].lower()
    spec = table.get(name)
    if name in _KEYNUM_COMMANDS:
        # EVAL script numkeys key... arg...
        try:
            count = int(args[2])
        except (IndexError, ValueError):
            return [], False
        return list(args[3 : 3 + count]), True
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
    return out.decode("utf-8", "backslashreplace")


def parse_monitor_line(line: str | bytes) -> tuple[int, str, list[str]] | None:
    """``(db, client, args)`` from one ``MONITOR`` line, or ``None`` if it is not a command line.

    ``client`` is ``host:port``, ``lua`` for calls made inside scripts, or
    ``unix:path``.
    """
    text = _text(line)
    match = _MONITOR_LINE.match(text)
    if match is None:
        return None
    return (
        int(match.group(2)),
        match.group(3),
        [_unescape(arg) for arg in _MONITOR_ARG.findall(match.group(4))],
    )


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

    @property
    def overhead(self) -> float | None:
        """Extra server CPU per command while monitoring (0.25 = 25% more), when both are known."""
        if not self.baseline_cpu_per_kcmd or self.monitor_cpu_per_kcmd is None:
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


def suggest_split(key: str, namespace: str, reads: int, writes: int) -> str:
    """How to take the load off one hot key."""
    if namespace == "chat:ctx":
        return "split the thread into windows: chat:ctx:thread:<id>:w:<n> (redis_keys.chat_thread_window)"
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
    client's database are counted, and commands that scripts run are
    counted once, as the ``EVAL``/``EVALSHA`` that ran them.
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

    previous = _text(client.config_get("notify-keyspace-events").get("notify-keyspace-events", ""))
    ops: Counter[str] = Counter()
    reads: Counter[str] = Counter()
    writes: Counter[str] = Counter()
    events: Counter[tuple[str, str]] = Counter()
    commands = 0
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
                            parsed = parse_monitor_line(connection.read_response())
                            if parsed is None or parsed[0] != db or parsed[1] == "lua":
                                continue
                            commands += 1
                            keys, write = keys_of(parsed[2], table)
                            for key in keys:
                                ops[key] += 1
                                (writes if write else reads)[key] += 1
                        while (message := pubsub.get_message(timeout=0)) is not None:
                            channel = _text(message["channel"]).split(":", 1)[1]
                            events[(grouper.group(channel), _text(message["data"]))] += 1
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
    )
    return summarize_hotkeys(
        ops, reads, writes, commands=commands, grouper=grouper, threshold=threshold, top=top,
        duration=elapsed, events=events, cost=cost, notify_setting=previous, interrupted=interrupted,
    )  # fmt: skip


def _restore_notify(client: Any, previous: str) -> None:
    try:
        client.config_set("notify-keyspace-events", previous)
    except Exception as exc:
        raise StorageError(
            f"could not restore notify-keyspace-events to {previous!r} ({exc}); "
            f"run: CONFIG SET notify-keyspace-events {previous!r}"
        ) from exc
