"""The in-memory backend: process-local, thread-safe, bounded.

It starts no thread. An entry expires lazily when next read; a sweep drops
expired entries once the writes since the last sweep reach half the entries
held (amortised constant time per write). At ``max_keys`` it sweeps, and if
more than seven eighths of the cap are still live it drops the oldest
created entries down to that mark. Those clients start afresh: at the cap
the backend errs towards allowing, never towards blocking everybody, and
the next cap-driven sweep is at least ``max_keys / 8`` writes away.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from bisman_ratelimit.backends._base import Check, Spec
from bisman_ratelimit.core import ALGORITHMS, Decision, InvalidArgument, make_decision

__all__ = ["MemoryStorage"]

Clock = Callable[[], float]


class MemoryStorage:
    """Counters in a dict. ``clock`` returns seconds (default ``time.time``)."""

    def __init__(self, *, clock: Clock = time.time, max_keys: int = 100_000) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 8:
            raise InvalidArgument(f"max_keys must be a whole number >= 8, got {max_keys!r}")
        self.clock = clock
        self.max_keys = max_keys
        # key -> [expires_at_us, state]
        self._data: dict[tuple[Any, ...], list[Any]] = {}
        self._lock = threading.Lock()
        self._writes_since_sweep = 0

    def __len__(self) -> int:
        return len(self._data)

    def _now(self) -> int:
        return int(self.clock() * 1_000_000)

    def _decide(self, key: str, spec: Spec, cost: int, now: int, commit: bool) -> tuple[bool, int, int, int]:
        data_key = (key, spec)
        entry = self._data.get(data_key)
        state = entry[1] if entry is not None and entry[0] > now else None
        allowed, remaining, reset, retry, new_state = ALGORITHMS[spec[0]](
            state, now, spec[1], spec[2], spec[3], cost, commit
        )
        if new_state is not None:
            if entry is None:
                self._insert(data_key, [now + reset, new_state], now)
            else:
                entry[0] = now + reset
                entry[1] = new_state
        return allowed, remaining, reset, retry

    def check(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision:
        with self._lock:
            allowed, remaining, reset, retry = self._decide(key, spec, cost, int(self.clock() * 1e6), commit)
        return make_decision(allowed, spec[3], remaining, reset, retry, key, spec[0])

    def check_many(self, checks: list[Check], commit: bool) -> tuple[bool, list[Decision]]:
        with self._lock:
            now = self._now()
            results = [self._decide(key, spec, cost, now, False) for key, spec, cost in checks]
            ok = all(result[0] for result in results)
            if ok and commit:
                results = [self._decide(key, spec, cost, now, True) for key, spec, cost in checks]
        decisions = [
            make_decision(r[0], spec.capacity, r[1], r[2], r[3], key, spec.algorithm)
            for (key, spec, _), r in zip(checks, results, strict=True)
        ]
        return ok, decisions

    def reset(self, key: str, spec: Spec) -> None:
        with self._lock:
            self._data.pop((key, spec), None)

    def acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool:
        with self._lock:
            now = self._now()
            data_key = ("lease", key)
            entry = self._data.get(data_key)
            leases: dict[str, int] = entry[1] if entry is not None and entry[0] > now else {}
            for held, expires in list(leases.items()):
                if expires <= now:
                    del leases[held]
            if len(leases) >= max_in_flight:
                return False
            leases[lease_id] = now + ttl_us
            expires_at = max(leases.values())
            if entry is None:
                self._insert(data_key, [expires_at, leases], now)
            else:
                entry[0] = expires_at
                entry[1] = leases
            return True

    def release(self, key: str, lease_id: str) -> None:
        with self._lock:
            entry = self._data.get(("lease", key))
            if entry is not None:
                entry[1].pop(lease_id, None)

    def close(self) -> None:
        with self._lock:
            self._data.clear()

    def _insert(self, data_key: tuple[Any, ...], entry: list[Any], now: int) -> None:
        data = self._data
        self._writes_since_sweep += 1
        if len(data) >= self.max_keys:
            self._sweep(now, evict=True)
        elif self._writes_since_sweep > max(1024, len(data) // 2):
            self._sweep(now, evict=False)
        data[data_key] = entry

    def _sweep(self, now: int, evict: bool) -> None:
        data = self._data
        self._writes_since_sweep = 0
        for data_key in [k for k, entry in data.items() if entry[0] <= now]:
            del data[data_key]
        low_mark = self.max_keys * 7 // 8
        if evict and len(data) > low_mark:
            # dicts keep insertion order: the first keys are the oldest.
            for data_key in list(data)[: len(data) - low_mark]:
                del data[data_key]
