"""The bounded map behind the in-memory backends (limits and stores).

It starts no thread. An entry expires lazily when next read; a sweep drops
expired entries once the keys added since the last sweep reach half the
entries held (amortised constant time per write). At ``max_keys`` it
sweeps, and if more than seven eighths of the cap are still live it drops
the oldest created entries down to that mark. Those clients start afresh:
at the cap a backend errs towards forgetting, never towards growing, and
the next cap-driven sweep is at least ``max_keys / 8`` additions away.

Entries are ``[expires_at, value]`` lists, changed in place by the owner;
``expires_at`` is ``None`` for an entry that never expires, else a time in
the owner's unit (microseconds for limits, milliseconds for stores). The
map takes no lock: each owner holds its own around every operation.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any, Generic, TypeVar

from bisman_ratelimit.core import InvalidArgument

K = TypeVar("K", bound=Hashable)

# A sweep before this many additions would cost more than it frees.
_MIN_SWEEP = 1024


class BoundedMap(Generic[K]):
    """Keys to ``[expires_at, value]`` entries, never more than ``max_keys``."""

    def __init__(self, *, max_keys: int) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 8:
            raise InvalidArgument(f"max_keys must be a whole number >= 8, got {max_keys!r}")
        self.max_keys = max_keys
        self._entries: dict[K, list[Any]] = {}
        self._added_since_sweep = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._entries))

    def entry(self, key: K, now: float) -> list[Any] | None:
        """The live entry of ``key``, or ``None``; an expired one is dropped."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] is not None and entry[0] <= now:
            del self._entries[key]
            return None
        return entry

    def add(self, key: K, entry: list[Any], now: float) -> None:
        """Store a new entry for ``key`` (which holds no live one), making room first."""
        entries = self._entries
        entries.pop(key, None)
        self._added_since_sweep += 1
        if len(entries) >= self.max_keys:
            self._sweep(now, evict=True)
        elif self._added_since_sweep > max(_MIN_SWEEP, len(entries) // 2):
            self._sweep(now, evict=False)
        entries[key] = entry

    def pop(self, key: K) -> list[Any] | None:
        return self._entries.pop(key, None)

    def rename(self, old: K, new: K) -> None:
        """Move the entry of ``old`` to ``new``, replacing what ``new`` held."""
        self._entries[new] = self._entries.pop(old)

    def clear(self) -> None:
        self._entries.clear()

    def _sweep(self, now: float, evict: bool) -> None:
        entries = self._entries
        self._added_since_sweep = 0
        for key in [k for k, entry in entries.items() if entry[0] is not None and entry[0] <= now]:
            del entries[key]
        low_mark = self.max_keys * 7 // 8
        if evict and len(entries) > low_mark:
            # dicts keep insertion order: the first keys are the oldest.
            for key in list(entries)[: len(entries) - low_mark]:
                del entries[key]
