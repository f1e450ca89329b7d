"""The in-memory backend: process-local, thread-safe, bounded.

It starts no thread and holds at most ``max_keys`` entries (and, if set,
about ``max_bytes``), in the
:class:`~bisman_ratelimit.backends._bounded.BoundedMap` that the stores'
memory backend uses too (lazy expiry, a little upkeep per new key, the
least recently used evicted at the cap). A counter at zero remaining is
marked as denying, so a flood of new keys evicts idle clients before it
evicts a locked-out one: he cannot start afresh by flooding. Clients whose
counters are evicted start afresh: at the cap the backend errs towards
allowing, never towards blocking everybody.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from bisman_ratelimit.backends._base import Check, Spec
from bisman_ratelimit.backends._bounded import BoundedMap
from bisman_ratelimit.core import ALGORITHMS, REFUNDS, Decision, make_decision, pack_state, unpack_state

Clock = Callable[[], float]

# States kept packed as on Redis (core.pack_state): a gcra or token_bucket
# state packs into the time its debt is paid off, on which a refund rounds
# as it does in the Lua script and not as it would on the debt alone.
_REPACKED = frozenset({"gcra", "token_bucket"})


class MemoryStorage:
    """Counters in a :class:`~bisman_ratelimit.backends._bounded.BoundedMap`.

    ``clock`` returns seconds (default ``time.time``).
    """

    def __init__(
        self, *, clock: Clock = time.time, max_keys: int = 100_000, max_bytes: int | None = None
    ) -> None:
        self.clock = clock
        # (key, (algorithm, period)) or ("lease", key) -> [expires_at_us, state]. As on
        # Redis, a key's limits are told apart by algorithm and window only.
        self._map: BoundedMap[tuple[Any, ...]] = BoundedMap(max_keys=max_keys, max_bytes=max_bytes)
        self._lock = threading.Lock()

    @property
    def max_keys(self) -> int:
        return self._map.max_keys

    @property
    def max_bytes(self) -> int | None:
        return self._map.max_bytes

    def __len__(self) -> int:
        return len(self._map)

    def _now(self) -> int:
        return int(self.clock() * 1_000_000)

    def _decide(self, key: str, spec: Spec, cost: int, now: int, commit: bool) -> tuple[bool, int, int, int]:
        algorithm = spec[0]
        data_key = (key, (algorithm, spec[2]))
        entry = self._map.entry(data_key, now)
        state = None if entry is None else entry[1]
        # The window algorithms pack without loss: their tuples compute alike.
        repacked = algorithm in _REPACKED
        if repacked and state is not None:
            state = unpack_state(algorithm, state)
        allowed, remaining, reset, retry, new_state = ALGORITHMS[algorithm](
            state, now, spec[1], spec[2], spec[3], cost, commit
        )
        if repacked and new_state is not None:
            new_state = pack_state(algorithm, new_state)
        # Nothing left for a hit of one: the map keeps this entry longer.
        denying = remaining == 0
        if entry is None:
            if new_state is not None:
                self._map.add(data_key, [now + reset, new_state], now, denying=denying)
        else:
            if new_state is not None:
                entry[0] = now + reset
                entry[1] = new_state
            if denying or self._map.denying:
                self._map.mark(data_key, denying=denying)
        return allowed, remaining, reset, retry

    def check(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision:
        with self._lock:
            allowed, remaining, reset, retry = self._decide(key, spec, cost, int(self.clock() * 1e6), commit)
        return make_decision(allowed, spec[3], remaining, reset, retry, key, spec[0])

    def check_many(self, checks: list[Check], commit: bool) -> tuple[bool, list[Decision]]:
        with self._lock:
            return self._check_many(checks, commit, self._now())

    def _check_many(self, checks: list[Check], commit: bool, now: int) -> tuple[bool, list[Decision]]:
        results = [self._decide(key, spec, cost, now, False) for key, spec, cost in checks]
        ok = all(result[0] for result in results)
        if ok and commit:
            results = [self._decide(key, spec, cost, now, True) for key, spec, cost in checks]
        decisions = [
            make_decision(r[0], spec.capacity, r[1], r[2], r[3], key, spec.algorithm)
            for (key, spec, _), r in zip(checks, results, strict=True)
        ]
        return ok, decisions

    def check_timed(self, checks: list[Check], commit: bool) -> tuple[bool, list[Decision], int | None]:
        """:meth:`check_many`, with the time it ran at (for :meth:`refund`)."""
        with self._lock:
            now = self._now()
            ok, decisions = self._check_many(checks, commit, now)
        return ok, decisions, now

    def refund(self, checks: list[Check], at: int | None) -> list[Decision]:
        """Give back hits that :meth:`check_timed` consumed at ``at``; then look."""
        with self._lock:
            now = self._now()
            if at is not None:
                for key, spec, cost in checks:
                    algorithm = spec[0]
                    entry = self._map.entry((key, (algorithm, spec[2])), now)
                    if entry is not None:
                        repacked = algorithm in _REPACKED
                        state = unpack_state(algorithm, entry[1]) if repacked else entry[1]
                        state = REFUNDS[algorithm](state, at, spec[1], spec[2], spec[3], cost)
                        if state is not None:
                            entry[1] = pack_state(algorithm, state) if repacked else state
            return self._check_many(checks, False, now)[1]

    def sample(
        self, max_keys: int, resolve: Callable[[str, str, int], Spec | None]
    ) -> list[tuple[str, Spec]]:
        """Up to ``max_keys`` (key, limit) pairs counted now (no I/O), in the map's order.

        Counters are kept by algorithm and window, not amount:
        ``resolve(key, algorithm, window_us)`` names the limit, or ``None``
        to pass the counter over.
        """
        with self._lock:
            data_keys = list(self._map)
        found: list[tuple[str, Spec]] = []
        for key, form in reversed(data_keys):
            if len(found) >= max_keys:
                break
            if key != "lease" and isinstance(form, tuple):
                spec = resolve(key, form[0], form[1])
                if spec is not None:
                    found.append((key, spec))
        return found

    def reset(self, key: str, spec: Spec) -> None:
        with self._lock:
            self._map.pop((key, (spec[0], spec[2])))

    def acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool:
        with self._lock:
            now = self._now()
            data_key = ("lease", key)
            entry = self._map.entry(data_key, now)
            leases: dict[str, int] = {} if entry is None else entry[1]
            for held, expires in list(leases.items()):
                if expires <= now:
                    del leases[held]
            if len(leases) >= max_in_flight:
                self._map.mark(data_key, denying=True)
                return False
            leases[lease_id] = now + ttl_us
            expires_at = max(leases.values())
            full = len(leases) >= max_in_flight
            if entry is None:
                self._map.add(data_key, [expires_at, leases], now, denying=full)
            else:
                entry[0] = expires_at
                self._map.mark(data_key, denying=full)
            return True

    def release(self, key: str, lease_id: str) -> None:
        with self._lock:
            data_key = ("lease", key)
            entry = self._map.entry(data_key, self._now())
            if entry is not None and entry[1].pop(lease_id, None) is not None:
                self._map.mark(data_key, denying=False)

    def close(self) -> None:
        with self._lock:
            self._map.clear()
