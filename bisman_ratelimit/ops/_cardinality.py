"""The cardinality audit: key count, memory and TTLs per namespace, from a bounded sample.

:func:`sample_keyspace` is a thin I/O shell around pure tallying.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bisman_ratelimit.core import InvalidArgument
from bisman_ratelimit.ops._grouping import NamespaceGrouper, Progress, above_policy, as_text

StopReason = Literal["complete", "max_keys", "time_limit"]


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
    above_policy: int = 0


@dataclass(frozen=True)
class KeyspaceSample:
    """What one SCAN pass found: complete, or cut at ``max_keys`` or at the time limit (``stopped``).

    ``above_policy_keys`` are ``(key, ttl, namespace TTL)`` of keys that
    outlive their namespace's TTL.
    """

    total_keys: int
    scanned: int
    complete: bool
    namespaces: tuple[NamespaceStats, ...]
    no_ttl_keys: tuple[str, ...]
    biggest: tuple[tuple[str, int], ...]
    stopped: StopReason = "complete"
    above_policy_keys: tuple[tuple[str, float, float], ...] = ()

    def namespace(self, name: str) -> NamespaceStats | None:
        for stats in self.namespaces:
            if stats.namespace == name:
                return stats
        return None

    @property
    def no_ttl_total(self) -> int:
        """Keys without a TTL in ephemeral namespaces: each one breaks the TTL policy."""
        return sum(stats.no_ttl for stats in self.namespaces)

    @property
    def above_policy_total(self) -> int:
        """Keys whose TTL is longer than their namespace's."""
        return sum(stats.above_policy for stats in self.namespaces)


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
        self.above: Counter[str] = Counter()
        self.above_keys: list[tuple[str, float, float]] = []
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
        ttl = pttl / 1000 if pttl is not None and pttl >= 0 else None
        policy_ttl = self.grouper.policy_ttl(key)
        if ttl is not None and policy_ttl is not None and above_policy(ttl, policy_ttl):
            self.above[group] += 1
            if len(self.above_keys) < self.keep:
                self.above_keys.append((key, ttl, policy_ttl))
        if memory is not None:
            self.memory[group] += memory
            self.measured[group] += 1
            item = (memory, key)
            if len(self.biggest) < self.keep:
                heapq.heappush(self.biggest, item)
            elif item > self.biggest[0]:
                heapq.heapreplace(self.biggest, item)

    def result(self, total_keys: int, stopped: StopReason) -> KeyspaceSample:
        complete = stopped == "complete"
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
                    above_policy=self.above[group],
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
            stopped=stopped,
            above_policy_keys=tuple(self.above_keys),
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
    time_limit: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> KeyspaceSample:
    """SCAN at most ``max_keys`` keys (``None``: all) of the client's database, for at most ``time_limit`` s.

    For each key the TTL is read (``check_ttl``) and, for up to
    ``memory_samples`` keys per namespace (``None``: every key), ``MEMORY
    USAGE``; both in one pipeline per SCAN batch. When the scan stops early
    the counts are scaled to ``DBSIZE``: SCAN walks the hash table in an
    order unrelated to key names, so its first keys are a fair sample.
    With ``memory_samples=None`` every key is measured, so the biggest keys
    are found as ``redis-cli --memkeys`` finds them.
    """
    if max_keys is not None and max_keys < 1:
        raise InvalidArgument(f"max_keys must be >= 1 or None, got {max_keys!r}")
    if time_limit is not None and not time_limit > 0:
        raise InvalidArgument(f"time_limit must be > 0 seconds or None, got {time_limit!r}")
    deadline = None if time_limit is None else clock() + time_limit
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
            return tally.result(total_keys, "complete")
        if max_keys is not None and scanned >= max_keys:
            return tally.result(max(total_keys, scanned), "max_keys")
        if deadline is not None and clock() >= deadline:
            return tally.result(max(total_keys, scanned), "time_limit")


def _measure(client: Any, tally: _Tally, raw_keys: Sequence[bytes | str], check_ttl: bool) -> None:
    if not raw_keys:
        return
    pipe = client.pipeline(transaction=False)
    plan: list[tuple[str, str, bool]] = []
    for raw in raw_keys:
        key = as_text(raw)
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
