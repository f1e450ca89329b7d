"""The cardinality audit: key count, memory and TTLs per namespace, from a bounded sample.

:func:`sample_keyspace` is a thin I/O shell around pure tallying.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bisman_ratelimit.core import InvalidArgument
from bisman_ratelimit.ops._grouping import NamespaceGrouper, Progress, as_text


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
